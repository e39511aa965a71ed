# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros fleet``: the sidecar's policy service as a Ray Serve application, for many robots and GPUs.

The same flags as ``cosmos3-ros sidecar`` (``--model``, ``--device``, ``--host``, ``--port``, ``--params-file``, the
token, the limits, the sampling defaults) plus the schema's ``fleet`` settings: ``--num-replicas N`` (default: one
per GPU) or ``--autoscaling`` (``--min-replicas``, ``--max-replicas``, ``--target-ongoing-requests``), batching
across robots (``--max-batch-size``, ``--batch-wait-timeout-s``) and ``--ray-address`` (empty: a local Ray instance
started here, stopped with the command; ``auto`` or ``host:6379``: an existing cluster, where only this application
is deleted on exit). ``--backend fake`` serves the deterministic fake backend (wiring tests, no model).

Every argument is checked before Ray starts (exit 2 with one line). The command stays in the foreground, logs the
replicas' state changes (a replica that died and is restarting, autoscaling) and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from cosmos3_ros.backends import TOKEN_ENV, read_token
from cosmos3_ros.commands.flags import add_model_flags, add_sampling_flags, add_setting_flags, flag_values
from cosmos3_ros.commands.sidecar import MODEL_NAMES, SERVER_NAMES, _check_bindable
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.fleet.config import FLEET_NAMES, PROXY_MAX_MESSAGE_MB, FleetConfig, GatewayLimits, ReplicaSpec

HELP = "serve a Cosmos 3 model to a fleet of robots with Ray Serve: replicas on every GPU, batching across robots"

log = logging.getLogger("cosmos3_ros.fleet")

#: Seconds between two looks at the replicas' state.
WATCH_PERIOD_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    parser.add_argument(
        "--params-file",
        help="the node's parameter file (e.g. config/droid.yaml): its model and sampling settings become the "
        "fleet's; flags given here win",
    )
    add_model_flags(parser, require_model=False)
    add_setting_flags(parser.add_argument_group("replica backend"), ["backend", "fake_latency"])
    group = parser.add_argument_group("server (the sidecar's)")
    add_setting_flags(group, SERVER_NAMES, defaults={"max_message_mb": PROXY_MAX_MESSAGE_MB})
    add_setting_flags(parser.add_argument_group("fleet"), FLEET_NAMES)
    add_sampling_flags(parser)


def resolve(args: argparse.Namespace) -> tuple[ReplicaSpec, FleetConfig, GatewayLimits, PolicySettings, dict]:
    """What to deploy, from the schema defaults, ``--params-file`` and the flags; ValueError before anything starts."""
    from cosmos3_ros.sidecar.limits import check_options

    base: dict = {}
    if args.params_file:
        from cosmos3_ros.core.params_file import read_params_file

        report = read_params_file(args.params_file)
        if report.fatal or report.problems:
            raise ValueError(" ".join("; ".join(report.warnings()).split()))
        for warning in report.warnings():
            log.warning("%s", warning)
        base = report.values
    values = flag_values(args, MODEL_NAMES + SERVER_NAMES + FLEET_NAMES, base)
    if not hasattr(args, "max_message_mb") and "max_message_mb" not in base:
        values["max_message_mb"] = PROXY_MAX_MESSAGE_MB
    kind = flag_values(args, ["backend", "fake_latency"])  # the node's own backend setting is not the fleet's
    if kind["backend"] == "sidecar":
        raise ValueError("--backend sidecar: a fleet replica runs the model itself (in_process) or the fake backend")
    if hasattr(args, "num_replicas") and values["autoscaling"]:
        raise ValueError("give --num-replicas N or --autoscaling (with --min-replicas/--max-replicas), not both")
    if hasattr(args, "token") and not args.token:
        raise ValueError(f"--token is empty; give a token, or leave --token out (then ${TOKEN_ENV} or --token_file)")
    token = args.token if getattr(args, "token", "") else read_token(values["token_file"])
    spec = ReplicaSpec(
        kind=kind["backend"],
        model=values["model"],
        device=values["device"],
        dtype=values["dtype"],
        guardrail=values["guardrail"],
        warmup=values["warmup"],
        fake_latency=kind["fake_latency"],
    )
    config = FleetConfig.from_values(values)
    limits = GatewayLimits.from_values(values, token)
    check_options(
        token=token,
        max_message_bytes=limits.max_message_bytes,
        queue_size=limits.queue,
        max_connections=limits.max_connections,
        idle_timeout=limits.idle_timeout,
        request_timeout=limits.request_timeout,
    )
    defaults = PolicySettings(**flag_values(args, PolicySettings.field_names(), base))
    return spec, config, limits, defaults, values


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Check the arguments, start or join Ray, deploy, serve until SIGINT/SIGTERM, then stop."""
    from cosmos3_ros.sidecar import redact

    redact.install()
    spec, config, limits, defaults, values = resolve(args)
    redact.install([limits.token])
    if not config.ray_address:
        _check_bindable(values["host"], values["port"])  # the proxy runs here: fail before Ray starts
    from cosmos3_ros.fleet.app import Fleet

    d = defaults
    log.info(
        "request defaults: domain %s, chunk %d x %d, %g fps, %d steps, guidance %g, shift %g, %s, %s, use_state %s",
        *(d.domain_name, d.action_chunk_size, d.action_width, d.fps, d.num_steps, d.guidance, d.shift),
        *(d.view_point, d.conditioning, d.use_state),
    )
    fleet = Fleet(spec, config, limits, defaults, host=values["host"], port=values["port"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, _interrupt)  # during the start, a SIGTERM ends like Ctrl-C
    try:
        try:
            fleet.start()
        except RuntimeError as exc:
            log.error("the fleet did not start: %s", exc)
            return 1
        if values["host"] not in ("127.0.0.1", "localhost", "::1") and limits.token is None:
            log.warning("listening on %s without a token: anyone who can reach it can use the model", values["host"])
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        _watch(fleet, stop)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping now: a second Ctrl-C changes nothing
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping the fleet")
        fleet.stop()
    return 0


def _watch(fleet: object, stop: threading.Event) -> None:
    """Log each change of the replicas' states until ``stop`` is set."""
    last: dict = {}
    while not stop.wait(WATCH_PERIOD_S):
        try:
            states = fleet.replica_states()  # type: ignore[attr-defined]
        except Exception as exc:  # the controller restarting: keep serving, try again
            log.warning("cannot read the replica states: %s", exc)
            continue
        if states != last:
            text = "; ".join(
                f"{name}: " + ", ".join(f"{n} {s}" for s, n in sorted(st.items())) for name, st in states.items()
            )
            log.info("replicas: %s", text or "none")
            last = states
