# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The policy node against the MuJoCo Panda (``cosmos3-ros sim``) for a fixed simulated duration: how well the arm
followed, how smooth the commands were, what it cost.

Usage:
  python bench/sim_loop.py --preset isaac --backend fake --duration 30
  python bench/sim_loop.py --preset droid --backend fake --set fake_latency=0.3 --set rtc=true
  python bench/sim_loop.py --preset isaac --model /tmp/cosmos3-tiny --real-time-factor 0.5 --width 160 --height 120
  python bench/sim_loop.py ... --json out.json                  # also write the report

Prints, over the measured window (simulated seconds, after the first chunk arrived): command tracking error
(measured arm joint positions minus the reference the drives follow, rad), joint jerk (second difference of the
measured joint velocities at ``--monitor-rate``, rad/s^3), chunk boundary jumps (largest per-joint difference
between the new chunk and the running one where the new one takes over, rad), holds, chunks, the achieved real-time
factor, and the CPU used by the simulator process and by this process (node + model). ``--set NAME=VALUE`` (YAML
value) overrides any node parameter, ``--sim-set NAME=VALUE`` any simulator parameter; ``--repeat`` runs each
configuration that many times. Importable: ``run(config, duration)`` returns the report as a dict.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cosmos3_ros.sim.harness import LoopConfig, SimLoop


def run(
    config: LoopConfig, duration: float, *, warmup_chunks: int = 1, startup_timeout: float = 600.0
) -> dict[str, Any]:
    """One run: start everything, wait for ``warmup_chunks`` chunks, measure ``duration`` simulated seconds."""
    t0 = time.monotonic()
    with SimLoop(config) as loop:
        loop.wait_chunks(warmup_chunks, startup_timeout)
        report = loop.measure(duration)
        report["startup_s"] = round(time.monotonic() - t0 - report["wall_s"], 1)
        report["configure_s"] = round(loop.configure_s, 1)
        summary = loop.close()
    report["sim_summary"] = {k: v for k, v in summary.items() if k not in ("commands",)}
    report["sim_commands"] = summary.get("commands", {})
    report["config"] = {
        "preset": config.preset,
        "backend": config.backend,
        "model": config.model,
        "real_time_factor": config.real_time_factor,
        "camera_rate": config.camera_rate,
        "width": config.width,
        "height": config.height,
        "joint_state_rate": config.joint_state_rate,
        "monitor_rate": config.monitor_rate,
        "node_overrides": config.node_overrides,
        "sim_overrides": config.sim_overrides,
        "duration_sim_s": duration,
    }
    return report


def _pairs(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE")
        out[name.strip()] = yaml.safe_load(raw)
    return out


def _line(report: dict[str, Any]) -> str:
    def stat(key: str, unit: str) -> str:
        s = report.get(key) or {}
        if not s or not s.get("n"):
            return f"{key}: -"
        return f"{key}: rms {s['rms']:.4g} p95 {s['p95']:.4g} max {s['max']:.4g} {unit} (n={s['n']})"

    return "\n".join(
        [
            stat("tracking_error_rad", "rad"),
            stat("joint_jerk_rad_s3", "rad/s^3"),
            stat("chunk_boundary_jump_rad", "rad"),
            f"chunks {report['chunks']}, holds {report['holds']}, joint commands {report['joint_commands']}, "
            f"non-finite {report['non_finite_commands']}, outside limits {report['commands_outside_limits']}",
            f"real-time factor {report['real_time_factor']}, CPU: simulator {report['cpu_sim_fraction_of_one_core']} "
            f"core, node process {report['cpu_node_process_fraction_of_one_core']} core "
            f"(wall {report['wall_s']} s for {report['config']['duration_sim_s']} simulated s)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["isaac", "droid"], default="isaac")
    p.add_argument("--backend", choices=["fake", "in_process", "sidecar"], default="fake")
    p.add_argument("--model", default="", help="checkpoint for in_process (implies --backend in_process)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--duration", type=float, default=30.0, help="simulated seconds measured")
    p.add_argument("--real-time-factor", type=float, default=1.0)
    p.add_argument("--camera-rate", type=float, default=15.0)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--joint-state-rate", type=float, default=60.0, help="/joint_states rate (Isaac: once a frame)")
    p.add_argument("--monitor-rate", type=float, default=200.0, help="rate of the samples the figures come from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="node parameter override")
    p.add_argument("--sim-set", action="append", default=[], metavar="NAME=VALUE", help="simulator parameter")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", help="write the report(s) to this file")
    args = p.parse_args(argv)
    config = LoopConfig(
        preset=args.preset,
        backend="in_process" if args.model and args.backend == "fake" else args.backend,
        model=args.model,
        device=args.device,
        real_time_factor=args.real_time_factor,
        camera_rate=args.camera_rate,
        width=args.width,
        height=args.height,
        seed=args.seed,
        joint_state_rate=args.joint_state_rate,
        monitor_rate=args.monitor_rate,
        node_overrides=_pairs(args.set),
        sim_overrides=_pairs(args.sim_set),
    )
    reports = []
    for i in range(args.repeat):
        report = run(config, args.duration)
        reports.append(report)
        print(f"--- run {i + 1}/{args.repeat}: {args.preset}, backend {config.backend}, {config.node_overrides or ''}")
        print(_line(report))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "runs": reports}, indent=2, default=str))
    ok = all(r["chunks"] > 0 and r["non_finite_commands"] == 0 and r["commands_outside_limits"] == 0 for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
