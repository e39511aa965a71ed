# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros settings``: every setting of the package from the one schema, as text, Markdown or a YAML file.

``--yaml`` prints a complete, commented parameter file of the node at its defaults (a starting point for your own);
``--markdown`` prints the README's tables (a test keeps the README equal to it).
"""

from __future__ import annotations

import argparse

HELP = "list every setting (name, default, range, run-time changeable); --yaml writes a full parameter file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--yaml", action="store_true", help="a complete parameter file of the node at its defaults")
    fmt.add_argument("--markdown", action="store_true", help="the README tables, one per scope")
    parser.add_argument("--scope", action="append", help="only these scopes (model, sampling, controller, ...)")


def run(args: argparse.Namespace) -> int:
    """Print the settings."""
    from cosmos3_ros.core.schema import SCOPES, markdown_table, settings_in, yaml_template

    scopes = tuple(args.scope or SCOPES)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; scopes are {list(SCOPES)}")
    if args.yaml:
        print(yaml_template(), end="")
    elif args.markdown:
        print("\n\n".join(f"#### {scope}\n\n{markdown_table([scope])}" for scope in scopes))
    else:
        for scope in scopes:
            print(f"[{scope}]")
            for s in settings_in(scope):
                print(f"  {s.name:<22} {'runtime ' if s.runtime else 'readonly'}  {s.help_text()}")
    return 0
