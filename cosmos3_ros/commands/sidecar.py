# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros sidecar``: serve a Cosmos 3 model over openpi's websocket protocol.

The process owns the GPU; robots (the ROS node's sidecar backend, or any ``openpi-client``) connect over
websockets. The sampling settings are the defaults of every request (from ``--params-file``, the node's own
parameter file, and the flags, which win); a request may override the ``request`` settings of the schema per call.
With ``--params-file config/droid.yaml`` the server speaks NVIDIA's released DROID contract to unchanged DROID
clients: the RoboArena keys (three cameras composed as NVIDIA composes them, joint and gripper positions as the first,
given action row), ``action`` [32, 8] back with the gripper as ``1 - g``, UniPC 4 steps, guidance 3, shift 5, 15 fps
(:mod:`cosmos3_ros.sidecar.droid`; the preset's node settings, cameras and joints, do not apply to the server).
Every argument is checked before the model loads (flags, the parameter file, the token or token file, the server's
limits, that the host and port can be listened on): a mistake is one line on stderr and exit code 2, in well under a
second. The server's limits (``max_connections``, ``idle_timeout``, ``request_timeout``, ``max_message_mb``,
``queue``) are the schema's ``server`` settings; :mod:`cosmos3_ros.sidecar.server` says what each bounds. SIGINT and
SIGTERM stop the server cleanly: queued requests get an ``unavailable`` error, the running model call finishes
(within the server's stop timeout) and is answered, connections close with 1001. The token is never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket

from cosmos3_ros.backends import TOKEN_ENV, read_token
from cosmos3_ros.commands.flags import add_model_flags, add_sampling_flags, add_setting_flags, flag_values
from cosmos3_ros.core.schema import settings_in
from cosmos3_ros.core.settings import PolicySettings

HELP = "serve a Cosmos 3 model to robots over openpi's websocket protocol (msgpack-numpy), with /healthz"

log = logging.getLogger("cosmos3_ros.sidecar")

SERVER_NAMES = tuple(s.name for s in settings_in("server"))
MODEL_NAMES = tuple(s.name for s in settings_in("model"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    parser.add_argument(
        "--params-file",
        help="the node's parameter file (e.g. config/droid.yaml): its model and sampling settings become the "
        "server's; flags given here win",
    )
    add_model_flags(parser, require_model=False)
    add_setting_flags(parser.add_argument_group("server"), SERVER_NAMES)
    add_sampling_flags(parser)


def _check_bindable(host: str, port: int) -> None:
    """Raise ValueError (a clean CLI error) when ``host:port`` cannot be listened on (port 0: the host alone)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ValueError(f"--host {host!r}: {exc}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def resolve(args: argparse.Namespace) -> tuple[dict, PolicySettings, str | None]:
    """Model values, default sampling settings and token, from the schema defaults, ``--params-file`` and flags.

    Raises ValueError for anything wrong, before anything is loaded.
    """
    base: dict = {}
    if args.params_file:
        from cosmos3_ros.core.params_file import read_params_file

        report = read_params_file(args.params_file)
        if report.fatal or report.problems:  # a missing or unreadable file, bad YAML, bad values
            raise ValueError(" ".join("; ".join(report.warnings()).split()))  # one line
        for warning in report.warnings():
            log.warning("%s", warning)
        base = report.values
    values = flag_values(args, MODEL_NAMES + SERVER_NAMES, base)
    if not values["model"]:
        raise ValueError("--model is required (or a parameter file that sets model)")
    settings = PolicySettings(**flag_values(args, PolicySettings.field_names(), base))
    if hasattr(args, "token") and not args.token:
        raise ValueError(f"--token is empty; give a token, or leave --token out (then ${TOKEN_ENV} or --token_file)")
    token = args.token if getattr(args, "token", "") else read_token(values["token_file"])
    return values, settings, token


def server_options(values: dict, token: str | None) -> dict:
    """The :class:`~cosmos3_ros.sidecar.server.SidecarServer` keyword arguments the resolved values describe."""
    return {
        "host": values["host"],
        "port": values["port"],
        "token": token,
        "max_message_bytes": int(values["max_message_mb"] * 2**20),
        "queue_size": values["queue"],
        "max_connections": values["max_connections"],
        "idle_timeout": values["idle_timeout"],
        "request_timeout": values["request_timeout"],
        "warmup": values["warmup"],
    }


def run(args: argparse.Namespace) -> int:
    """Check the arguments, load the model, warm up, serve until SIGINT/SIGTERM."""
    from cosmos3_ros.core.backend import BackendError
    from cosmos3_ros.sidecar import redact
    from cosmos3_ros.sidecar.server import SidecarServer, check_options

    redact.install()  # before anything logs: no token in any log line, at any level
    if not getattr(args, "verbose", False):
        logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per request is ours
    values, defaults, token = resolve(args)
    redact.install([token])
    options = server_options(values, token)
    check_options(**{k: v for k, v in options.items() if k not in ("host", "port", "warmup")})
    _check_bindable(values["host"], values["port"])  # fail before a long model load, not after
    from cosmos3_ros.backends import make_runtime

    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM during the model load ends like Ctrl-C
    runtime = make_runtime(values)
    server = SidecarServer(runtime, defaults, **options)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop)

    try:
        asyncio.run(main())
    except BackendError as exc:  # the warm-up call failed: the model cannot serve
        log.error("warm-up failed, not serving: %s", exc)
        return 1
    finally:
        # Stopping now: a second Ctrl-C (a terminal's, then the one ros2 launch forwards) changes nothing.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runtime.close()
    return 0
