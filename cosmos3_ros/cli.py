# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros`` command line: one entry point, one module per subcommand under cosmos3_ros.commands."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

#: Subcommand name -> module with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``, or
#: ``module:KEY`` naming an entry of that module's ``SUBCOMMANDS`` table (HELP, add_arguments, run).
COMMANDS: dict[str, str] = {
    "demo": "cosmos3_ros.commands.demo",
    "make-tiny-model": "cosmos3_ros.commands.make_tiny_model",
    "predict": "cosmos3_ros.commands.predict",
    "replay": "cosmos3_ros.commands.replay",
    "sidecar": "cosmos3_ros.commands.sidecar",
    "bench": "cosmos3_ros.commands.bench",
    "settings": "cosmos3_ros.commands.settings",
    "validate-params": "cosmos3_ros.commands.validate_params",
    "bag": "cosmos3_ros.commands.bag",
    "sim": "cosmos3_ros.commands.sim",
    "fleet": "cosmos3_ros.commands.fleet",
    "topic": "cosmos3_ros.commands.ros_tools:topic",
    "lifecycle": "cosmos3_ros.commands.ros_tools:lifecycle",
    "param": "cosmos3_ros.commands.ros_tools:param",
}


def _command(spec: str) -> tuple[str, object, object] | None:
    """(help, add_arguments, run) of a COMMANDS entry; None when its module is not installed."""
    module_name, _, key = spec.partition(":")
    if importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    if key:
        return module.SUBCOMMANDS[key]
    return module.HELP, module.add_arguments, module.run


def build_parser() -> argparse.ArgumentParser:
    """Parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="cosmos3-ros", description="NVIDIA Cosmos 3 as a ROS 2 robot policy.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        command = _command(spec)
        if command is None:
            continue
        help_text, add_arguments, run = command
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run_command=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cosmos3-ros``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run_command(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as exc:  # BagError and SettingsError are ValueErrors
        print(f"cosmos3-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
