# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros sidecar``: serve a Cosmos 3 model over openpi's websocket protocol.

The process owns the GPU; robots (the ROS node's sidecar backend, or any ``openpi-client``)
connect over websockets. The sampling settings given here are the defaults; a request may
override the keys listed in ``cosmos3_ros.sidecar.protocol.SETTINGS_KEYS`` per call.
SIGINT and SIGTERM stop the server cleanly: queued requests get an ``unavailable`` error,
the running model call finishes and is answered, connections close with 1001.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

from cosmos3_ros.commands.predict import add_model_arguments, add_settings_arguments, settings_from_args
from cosmos3_ros.sidecar.server import DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT, DEFAULT_QUEUE_SIZE

HELP = "serve a Cosmos 3 model to robots over openpi's websocket protocol (msgpack-numpy), with /healthz"

TOKEN_ENV = "COSMOS3_ROS_SIDECAR_TOKEN"

log = logging.getLogger("cosmos3_ros.sidecar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    add_model_arguments(parser)
    g = parser.add_argument_group("server")
    g.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default loopback; 0.0.0.0 for all interfaces)"
    )
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0 picks a free one)")
    g.add_argument(
        "--token",
        default=None,
        help=f"require this token from clients (Authorization: Bearer T, or ?token=T); default ${TOKEN_ENV} if set. "
        "Prefer the environment variable: arguments are visible to other local users",
    )
    g.add_argument(
        "--max-message-mb",
        type=float,
        default=DEFAULT_MAX_MESSAGE_BYTES / 2**20,
        help="largest request accepted, MiB (larger ones close the connection with 1009)",
    )
    g.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        help="requests that may wait for the model; one more is answered with a 'busy' error",
    )
    add_settings_arguments(parser)


def _check_bindable(host: str, port: int) -> None:
    """Raise ValueError (a clean CLI error) when ``host:port`` cannot be listened on."""
    if port == 0:
        return
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


def run(args: argparse.Namespace) -> int:
    """Load the model, warm up, serve until SIGINT/SIGTERM."""
    from cosmos3_ros.core.backend import BackendError
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime
    from cosmos3_ros.sidecar.server import SidecarServer

    if not getattr(args, "verbose", False):
        logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per request is ours
    defaults = settings_from_args(args)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if not args.max_message_mb * 2**20 >= 1024:
        raise ValueError(f"--max-message-mb must be at least 1 KiB (0.001), got {args.max_message_mb}")
    if args.queue < 1:
        raise ValueError(f"--queue must be >= 1, got {args.queue}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    _check_bindable(args.host, args.port)  # fail before a long model load, not after
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM during the model load ends like Ctrl-C
    runtime = Cosmos3PolicyRuntime(args.model, device=args.device, dtype=args.dtype, guardrail=args.guardrail)
    server = SidecarServer(
        runtime,
        defaults,
        host=args.host,
        port=args.port,
        token=token,
        max_message_bytes=int(args.max_message_mb * 2**20),
        queue_size=args.queue,
    )

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
        runtime.close()
    return 0
