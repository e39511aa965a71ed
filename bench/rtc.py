# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Real-time chunking off and on, on the same camera input: what each chunk boundary does to the commands.

Usage:
  python bench/rtc.py                                         # fake backend, bridge-like 2-joint setup, 0.3 s latency
  python bench/rtc.py --preset config/droid.yaml --model /tmp/cosmos3-tiny --device cpu   # the DROID preset, tiny model
  python bench/rtc.py --latency 0.6 --seconds 30 --json bench/results/rtc.json

The policy controller (the same one the node and replay drive) runs in virtual time, so every run is deterministic
and both runs see exactly the same frames: a camera at the preset's fps showing a moving scene (three cameras for
the DROID layout), the robot state equal to the last command (a robot that tracks perfectly), control ticks at
``--rate``. A request made at t is answered at t + ``--latency`` (the model itself runs at once; its wall time is
not part of the virtual clock). Commands are sampled at every tick as a position-controlled robot would receive them.

Printed per run and per boundary (cosmos3_ros.core.motion): the position jump at the switch (the new chunk's command
minus the old chunk's at the same time, largest joint, robot units), the peak velocity and jerk of the executed
command stream around the switch, skipped and repeated actions; and the RTC prefix length given. The real model's
numbers need real weights: with random weights the chunks are noise, so only the joins (not the motions between
them) mean anything.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.backends import make_backend
from cosmos3_ros.control.config import build_controller, values_from_overrides
from cosmos3_ros.core.motion import CommandedChunk, Stop, analyse
from cosmos3_ros.core.params_file import read_params_file
from cosmos3_ros.core.synthetic import moving_scene_frame

#: Camera frame sizes per layout (DROID: the wrist frame and two exteriors that compose to 540x640).
SIZES = {"droid": [(360, 640), (180, 320), (180, 320)]}


def run(values: dict[str, Any], backend: Any, seconds: float, latency: float, rate: float) -> dict[str, Any]:
    """One virtual-time run; returns the motion report as a dict plus counters."""
    controller = build_controller(values)
    settings = controller.settings
    cams = list(controller.config.cameras)
    sizes = SIZES.get(controller.config.camera_layout, [(120, 160)] * len(cams))
    frame_dt, tick = 1.0 / settings.fps, 1.0 / rate
    chunks: list[CommandedChunk] = []
    stops: list[Stop] = []
    pending: tuple[Any, Any, float] | None = None
    next_frame, t = 0.0, 0.0
    mapping = controller.config.mapping
    command = np.clip(np.zeros(mapping.width), mapping.lower, mapping.upper)  # the robot starts at rest here
    prefix_rows: list[int] = []

    def publish(out: list, now: float) -> None:
        for traj in out:
            if traj.kind == "hold":
                stops.append(Stop(now, traj.positions[-1].copy(), "hold"))
            else:
                chunks.append(
                    CommandedChunk(traj.point_times(), traj.positions, now, traj.chunk_id, None, traj.velocities)
                )

    for k in range(int(seconds * rate)):
        t = k * tick
        while next_frame <= t + 1e-12:
            for cam, (h, w) in zip(cams, sizes, strict=True):
                controller.add_frame(cam, next_frame, moving_scene_frame(next_frame, h, w), now=t)
            next_frame += frame_dt
        if controller.settings.use_state:
            controller.add_state(t, command, now=t)
        if pending is not None and t >= pending[2] - 1e-12:
            req, chunk, _ = pending
            pending = None
            publish(controller.complete(req, chunk, None, t), t)
        request, out = controller.step(t)
        publish(out, t)
        if request is not None:
            chunk = backend.policy(
                request.image, request.settings, observation_stamp=request.stamp, state=request.state,
                prefix=request.prefix,
            )  # fmt: skip
            prefix_rows.append(0 if request.prefix is None else len(request.prefix))
            pending = (request, chunk, t + latency)
        cmd = controller.command_at(t)
        if cmd is not None:
            command = cmd
    report = analyse(chunks, stops, rate=rate)
    d = report.to_dict(list(controller.config.mapping.joint_names))
    d.update(
        chunks=len(chunks),
        holds=len(stops),
        prefix_rows=prefix_rows,
        counters={k: v for k, v in controller.counters.snapshot().items() if k.startswith(("rtc.", "clamps."))},
    )
    return d


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", help="a parameter file (e.g. config/droid.yaml); default: a 2-joint pusht setup")
    p.add_argument("--model", default="", help="checkpoint for the in-process backend (default: the fake backend)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--latency", type=float, default=0.3, help="virtual inference latency, seconds")
    p.add_argument("--seconds", type=float, default=20.0, help="virtual duration of each run")
    p.add_argument("--rate", type=float, default=50.0, help="control rate, Hz")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="more node parameters (YAML)")
    p.add_argument("--json", type=Path, help="write both runs here")
    args = p.parse_args(argv)
    import yaml

    over: dict[str, Any] = {"domain_name": "pusht", "action_chunk_size": 16, "fps": 10.0, "replan_every": 4}
    if args.preset:
        report = read_params_file(args.preset)
        if not report.ok:
            print("\n".join(report.warnings()), file=sys.stderr)
            return 2
        over = dict(report.values)
    over.update({"backend": "in_process" if args.model else "fake", "model": args.model, "device": args.device})
    for item in args.set:
        name, _, value = item.partition("=")
        over[name] = yaml.safe_load(value)
    base = values_from_overrides(over)
    backend = make_backend(base)
    results = {}
    try:
        backend.warmup(build_controller(base).settings)
        for rtc in (False, True):
            results["rtc_on" if rtc else "rtc_off"] = run(
                values_from_overrides({**over, "rtc": rtc}), backend, args.seconds, args.latency, args.rate
            )
    finally:
        backend.close()
    replan = build_controller(base).config.replan_every
    print(
        f"backend {base['backend']} {args.model or ''}  latency {args.latency} s  {args.seconds} s virtual  "
        f"chunk {base['action_chunk_size']} @ {base['fps']} Hz, replan every {replan}"
    )
    print(f"{'':8} {'chunks':>6} {'holds':>5} {'jump max':>9} {'jump med':>9} {'peak vel':>9} {'peak jerk':>10} "
          f"{'interior jerk':>13} {'skipped':>7} {'repeated':>8}  prefix rows")  # fmt: skip
    for name, r in results.items():
        print(f"{name:8} {r['chunks']:6d} {r['holds']:5d} {_fmt(r['jump_max']):>9} {_fmt(r['jump_median']):>9} "
              f"{_fmt(r['peak_velocity']):>9} {_fmt(r['peak_jerk']):>10} {_fmt(r['interior_jerk']):>13} "
              f"{r['skipped']:7d} {r['repeated']:8d}  {sorted(set(r['prefix_rows']))}")  # fmt: skip
    off, on = results["rtc_off"]["jump_median"], results["rtc_on"]["jump_median"]
    if off is not None and on is not None:
        print(f"median boundary jump, RTC off / on: {off:.4g} / {on:.3g}" + (f" ({off / on:.3g}x)" if on > 0 else ""))
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "runs": results}, indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
