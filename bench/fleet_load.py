#!/usr/bin/env python3
# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Load generator for ``cosmos3-ros fleet``: N simulated robots on loopback against 1..k model replicas.

Usage::

    python bench/fleet_load.py --robots 8 --replicas 2,1 --batch 1,8 --random nano --device cuda --num-steps 10
    python bench/fleet_load.py --robots 4 --replicas 2,1 --batch 1,4 --backend fake --fake-latency 0.2
    python bench/fleet_load.py --robots 8 --url ws://gpu-host:8000 --token-file ~/.fleet_token   # a running fleet

Without ``--url`` the fleet is deployed here (a local Ray instance, :class:`cosmos3_ros.fleet.app.Fleet`): the
model replicas load (``--model DIR``, ``--random tiny|nano``: random weights built in memory, or ``--backend
fake``) and warm up once (batched calls at the largest ``--batch`` size too), then each phase (every replica count
of ``--replicas`` times every ``--batch`` size, in the order given) is an in-place redeploy (Ray Serve scales the
replicas down and changes the batching without restarting a replica), so list the replica counts largest first.

Robot k replans at its own rate (``--rate`` Hz, spread by ``--rate-spread`` across the robots, staggered start),
with its own prompt, seed and frame (a synthetic scene at its own phase): at each replan tick it sends one request,
unless its previous one is still out (then it sends as soon as that reply arrives, and the ticks in between are
skipped). A reply that arrives after the robot's next tick missed its replan deadline. Over the measured window
(``--duration`` s after ``--settle`` s) each phase reports, per robot, the request latency p50/p95/p99 (send to reply),
requests, missed deadlines and skipped ticks, and for the fleet the throughput (replies per second), the model
calls' batch sizes and each replica's utilisation (the time its batches ran over the window, from the replies'
``fleet`` map). With a local fleet it also reports what Ray itself costs: CPU seconds and memory of every Ray process
(the model replicas' and the driver's apart) while idle (``--idle-s``).

Writes ``--out`` (JSON: every number, the command, versions) and the same path with ``.md`` (the tables).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.sidecar import protocol as proto

TASKS = ("pick up the red cup", "open the drawer", "wipe the table", "stack the blocks", "fold the towel")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--robots", type=int, default=8, help="simulated robots (default 8)")
    p.add_argument("--replicas", default="2,1", help="replica counts, one phase each, largest first (default 2,1)")
    p.add_argument("--batch", default="1,8", help="max_batch_size per phase (1: no batching; default 1,8)")
    p.add_argument("--batch-wait", type=float, default=0.02, help="batch_wait_timeout_s (default 0.02)")
    p.add_argument("--rate", type=float, default=2.0, help="mean replanning rate of a robot, Hz (default 2)")
    p.add_argument("--rate-spread", type=float, default=0.25, help="rates spread +-this fraction (default 0.25)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase (default 30)")
    p.add_argument("--settle", type=float, default=5.0, help="unmeasured seconds first (default 5)")
    p.add_argument("--num-steps", type=int, default=10, help="denoising steps of every request (default 10)")
    p.add_argument("--image-size", type=int, default=480, help="resolution tier (default 480)")
    p.add_argument("--height", type=int, default=480, help="camera frame height (default 480)")
    p.add_argument("--width", type=int, default=640, help="camera frame width (default 640)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running fleet (no deploy; --replicas/--batch are not applied)")
    where.add_argument("--model", help="checkpoint of the replicas")
    where.add_argument("--random", choices=("tiny", "nano"), help="random weights of this size, built in memory")
    where.add_argument("--backend", choices=("fake",), help="the fake backend (no model)")
    p.add_argument("--fake-latency", type=float, default=0.2, help="fake backend: seconds a call (default 0.2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--dtype", default="auto", help="weights dtype (default auto)")
    p.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per replica (default 1)")
    p.add_argument("--token-file", help="--url: file with the fleet's token")
    p.add_argument("--idle-s", type=float, default=10.0, help="local fleet: seconds of idle Ray cost (default 10)")
    p.add_argument("--out", default="bench/results/fleet_load.json", help="JSON result path (.md beside it)")
    return p.parse_args(argv)


# -- robots -------------------------------------------------------------------------------------------------------


class Robot(threading.Thread):
    """One robot's replanning loop (see the module docstring); ``records``: one dict per request."""

    def __init__(self, k: int, n: int, args: argparse.Namespace, url: str, token: str | None) -> None:
        super().__init__(name=f"robot{k}", daemon=True)
        self.k, self.url, self.token = k, url, token
        spread = args.rate_spread * (2 * k / (n - 1) - 1) if n > 1 else 0.0
        self.rate = args.rate * (1 + spread)
        self.period = 1.0 / self.rate
        self.phase = self.period * k / n
        self.prompt = f"robot {k}: {TASKS[k % len(TASKS)]}"
        self.frame = moving_scene_frame(0.7 * k, args.height, args.width)
        self.settings = {"seed": k, "num_steps": args.num_steps, "image_size": args.image_size}
        self.records: list[dict[str, Any]] = []
        self.window = (0.0, 0.0)
        self.error: str | None = None

    def run(self) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        t_start, t_end = self.window
        try:
            with connect(self.url, max_size=None, compression=None, additional_headers=headers) as ws:
                proto.unpackb(ws.recv(timeout=60))
                i = 0
                while True:
                    tick = t_start + self.phase + i * self.period
                    if tick >= t_end:
                        return
                    if time.time() < tick:
                        time.sleep(tick - time.time())
                    sent = time.time()
                    ws.send(proto.packb({"observation/image": self.frame, "prompt": self.prompt,
                                         "settings": self.settings}))  # fmt: skip
                    raw = ws.recv(timeout=600)
                    replied = time.time()
                    deadline = tick + self.period
                    record: dict[str, Any] = {"tick": tick, "sent": sent, "replied": replied, "deadline": deadline}
                    if isinstance(raw, str):
                        record["error"] = raw[:300]
                    else:
                        reply = proto.unpackb(raw)
                        record["fleet"] = reply.get("fleet", {})
                    self.records.append(record)
                    nxt = math.floor((replied - t_start - self.phase) / self.period) + 1
                    i = max(i + 1, nxt)
        except Exception as exc:  # reported in the results
            self.error = f"{type(exc).__name__}: {exc}"


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_phase(args: argparse.Namespace, url: str, token: str | None) -> dict[str, Any]:
    """One phase of load; its numbers (see the module docstring)."""
    robots = [Robot(k, args.robots, args, url, token) for k in range(args.robots)]
    t_start = time.time() + 1.0
    t_end = t_start + args.settle + args.duration
    for robot in robots:
        robot.window = (t_start, t_end)
        robot.start()
    for robot in robots:
        robot.join(args.settle + args.duration + 900)
    w0, w1 = t_start + args.settle, t_end
    per_robot, latencies, batches = [], [], {}
    replies = errors = 0
    for robot in robots:
        measured = [r for r in robot.records if w0 <= r["sent"] < w1]
        ok = [r for r in measured if "error" not in r]
        lat = [(r["replied"] - r["sent"]) * 1e3 for r in ok]
        latencies += lat
        replies += sum(1 for r in ok if r["replied"] < w1)
        errors += len(measured) - len(ok)
        for r in ok:
            f = r["fleet"]
            if f.get("replica") is not None:
                batches[(f["replica"], f["batch"])] = f
        ticks = max(1, int((w1 - w0) * robot.rate))
        per_robot.append(
            {
                "robot": robot.k,
                "rate_hz": round(robot.rate, 3),
                "requests": len(measured),
                "errors": len(measured) - len(ok),
                "missed_deadlines": sum(1 for r in measured if r["replied"] > r["deadline"]),
                "skipped_ticks": max(0, ticks - len(measured)),
                "p50_ms": pct(lat, 50),
                "p95_ms": pct(lat, 95),
                "p99_ms": pct(lat, 99),
                "failure": robot.error,
            }
        )
    window = w1 - w0
    utilisation: dict[str, float] = {}
    for f in batches.values():
        if w0 <= f["started_at"] < w1:
            utilisation[f["replica"]] = utilisation.get(f["replica"], 0.0) + f["batch_ms"] / 1e3 / window
    sizes = [f["batch_size"] for f in batches.values()]
    return {
        "window_s": window,
        "throughput_per_s": replies / window,
        "replies": replies,
        "errors": errors,
        "latency_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99)},
        "worst_robot_p95_ms": max((r["p95_ms"] or 0.0) for r in per_robot),
        "missed_deadlines": sum(r["missed_deadlines"] for r in per_robot),
        "requests": sum(r["requests"] for r in per_robot),
        "model_calls": len(batches),
        "mean_batch_size": float(np.mean(sizes)) if sizes else None,
        "max_batch_size_seen": max(sizes) if sizes else None,
        "replica_utilisation": {k: round(v, 4) for k, v in sorted(utilisation.items())},
        "robots": per_robot,
    }


# -- the fleet and Ray's own cost -----------------------------------------------------------------------------------


def process_sample() -> dict[int, tuple[str, float, float]]:
    """``{pid: (role, CPU seconds, RSS bytes)}`` of this process and its descendants (the local Ray instance), by
    role: ``driver`` (this process: the robots' threads too), ``ray`` (GCS, raylet, agents, Serve controller, HTTP
    proxy, gateway) and ``model_replicas``."""
    import psutil

    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            name = " ".join(p.cmdline()[:1])
            role = "driver" if p.pid == me.pid else "ray"
            if "ServeReplica" in name and ":Policy" in name:
                role = "model_replicas"
            t = p.cpu_times()
            out[p.pid] = (role, t.user + t.system, p.memory_info().rss)
        except psutil.Error:
            continue
    return out


def process_cost(a: dict, b: dict, seconds: float) -> dict[str, Any]:
    """CPU cores kept busy (CPU seconds per second) and resident memory, by role, between two samples."""
    result: dict[str, Any] = {"seconds": round(seconds, 2)}
    for what in ("driver", "ray", "model_replicas"):
        pids = [pid for pid, (r, _, _) in b.items() if r == what]
        cpu = sum(b[pid][1] - a[pid][1] for pid in pids if pid in a)
        result[what] = {
            "processes": len(pids),
            "cpu_cores_busy": round(cpu / seconds, 4),
            "rss_mib": round(sum(b[pid][2] for pid in pids) / 2**20, 1),
        }
    return result


def ray_cost(seconds: float) -> dict[str, Any]:
    """:func:`process_cost` over ``seconds`` of idling."""
    a = process_sample()
    time.sleep(seconds)
    return process_cost(a, process_sample(), seconds)


def start_fleet(args: argparse.Namespace, replicas: int, batch: int) -> tuple[Any, float]:
    from cosmos3_ros.core.settings import PolicySettings
    from cosmos3_ros.fleet.app import Fleet
    from cosmos3_ros.fleet.config import FleetConfig, GatewayLimits, ReplicaSpec

    if args.backend == "fake":
        spec = ReplicaSpec(kind="fake", fake_latency=args.fake_latency)
    elif args.random:
        spec = ReplicaSpec(kind="random", size=args.random, device=args.device, dtype=args.dtype)
    else:
        spec = ReplicaSpec(kind="in_process", model=args.model or "", device=args.device, dtype=args.dtype)
    config = FleetConfig(
        num_replicas=replicas,
        max_batch_size=batch,
        batch_wait_timeout_s=args.batch_wait,
        replica_cpus=args.replica_cpus,
    )
    defaults = PolicySettings(num_steps=args.num_steps, image_size=args.image_size)
    fleet = Fleet(spec, config, GatewayLimits(), defaults, port=0)
    t0 = time.perf_counter()
    fleet.start()
    return fleet, time.perf_counter() - t0


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# Fleet load: {res['robots']} robots, {res['device']}",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Model: {res['model']}; {res['num_steps']} steps, tier {res['image_size']}, frames {res['frame']}; robots "
        f"replan at {res['rate_hz']} Hz +-{res['rate_spread'] * 100:.0f}%; {res['duration_s']:g} s measured per phase.",
        "",
        "| replicas | max batch | throughput /s | p50 ms | p95 ms | p99 ms | worst robot p95 | missed / requests "
        "| mean batch | utilisation |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ph in res["phases"]:
        lat = ph["latency_ms"]
        util = ", ".join(f"{v * 100:.0f}%" for v in ph["replica_utilisation"].values())
        mean_batch = f"{ph['mean_batch_size']:.2f}" if ph["mean_batch_size"] else "-"
        lines.append(
            f"| {ph['replicas']} | {ph['max_batch_size']} | {ph['throughput_per_s']:.2f} | {_ms(lat['p50'])} "
            f"| {_ms(lat['p95'])} | {_ms(lat['p99'])} | {_ms(ph['worst_robot_p95_ms'])} "
            f"| {ph['missed_deadlines']} / {ph['requests']} | {mean_batch} | {util} |"
        )
    for name, value in res.get("scaling", {}).items():
        lines.append(f"\n{name}: **{value}**")
    cost = res.get("ray_idle_cost")
    if cost:
        lines += ["", f"Idle for {cost['seconds']:g} s: " + _cost(cost)]
    for ph in res["phases"]:
        if ph.get("processes"):
            where = f"{ph['replicas']} replica(s), batch {ph['max_batch_size']}"
            lines.append(f"\nUnder load, {where}: " + _cost(ph["processes"]))
    lines += ["", "Per robot (p50 / p95 / p99 ms, missed deadlines) in each phase:", ""]
    for ph in res["phases"]:
        robots = "; ".join(
            f"r{r['robot']} {r['rate_hz']:g} Hz: {_ms(r['p50_ms'])}/{_ms(r['p95_ms'])}/{_ms(r['p99_ms'])}, "
            f"{r['missed_deadlines']} missed" for r in ph["robots"]
        )  # fmt: skip
        lines.append(f"- {ph['replicas']} replica(s), batch {ph['max_batch_size']}: {robots}")
    return "\n".join(lines) + "\n"


def _cost(c: dict[str, Any]) -> str:
    names = {"ray": "Ray (GCS, raylet, agents, controller, proxy, gateway)", "model_replicas": "model replicas",
             "driver": "driver and robots"}  # fmt: skip
    return "; ".join(
        f"{label}: {c[k]['processes']} processes, {c[k]['cpu_cores_busy']:.2f} cores busy, {c[k]['rss_mib']:.0f} MiB"
        for k, label in names.items()
    )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    replica_counts = [int(x) for x in args.replicas.split(",")]
    batch_sizes = [int(x) for x in args.batch.split(",")]
    res: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "command": "python bench/fleet_load.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "robots": args.robots,
        "rate_hz": args.rate,
        "rate_spread": args.rate_spread,
        "duration_s": args.duration,
        "num_steps": args.num_steps,
        "image_size": args.image_size,
        "frame": [args.height, args.width],
        "python": platform.python_version(),
        "phases": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(res, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(res))

    fleet = None
    try:
        if args.url:
            token = Path(args.token_file).expanduser().read_text().strip() if args.token_file else None
            res.update(device="external fleet", model=args.url)
            res["phases"].append(dict(run_phase(args, args.url, token), replicas="?", max_batch_size="?"))
            save()
            return 0
        import ray

        # the largest batch first: its batched warm-up happens before anything is measured
        fleet, res["startup_s"] = start_fleet(args, max(replica_counts), max(batch_sizes))
        res["model"] = fleet.spec.describe()
        res["device"] = _device(fleet)
        res["versions"] = {"ray": ray.__version__, **_versions()}
        if args.idle_s > 0:
            res["ray_idle_cost"] = ray_cost(args.idle_s)
        save()
        from cosmos3_ros.fleet.app import with_batching

        for replicas in replica_counts:
            for batch in batch_sizes:
                config = dataclasses.replace(with_batching(fleet.config, batch), num_replicas=replicas)
                deploy_s = fleet.deploy(config)
                _wait_running(fleet, replicas)
                print(f"phase: {replicas} replica(s), max batch {batch} (redeployed in {deploy_s:.1f} s)", flush=True)
                before, t0 = process_sample(), time.monotonic()
                phase = dict(run_phase(args, fleet.url, None), replicas=replicas, max_batch_size=batch)
                phase["processes"] = process_cost(before, process_sample(), time.monotonic() - t0)
                phase["redeploy_s"] = deploy_s
                res["phases"].append(phase)
                print(markdown(res).split("\n\n")[3], flush=True)
                save()
        res["scaling"] = _scaling(res["phases"])
        save()
    finally:
        if fleet is not None:
            fleet.stop()
    print(markdown(res))
    return 0


def _wait_running(fleet: Any, replicas: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = fleet.replica_states().get("Policy", {})
        if states.get("RUNNING", 0) == replicas and sum(states.values()) == replicas:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the fleet did not reach {replicas} running replica(s): {fleet.replica_states()}")


def _scaling(phases: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    by = {(p["replicas"], p["max_batch_size"]): p for p in phases}
    for batch in sorted({p["max_batch_size"] for p in phases}):
        counts = sorted(r for r, b in by if b == batch)
        if len(counts) >= 2 and by[(counts[0], batch)]["throughput_per_s"]:
            lo, hi = by[(counts[0], batch)], by[(counts[-1], batch)]
            ratio = hi["throughput_per_s"] / lo["throughput_per_s"]
            out[f"throughput {counts[-1]} vs {counts[0]} replica(s), max batch {batch}"] = f"{ratio:.2f}x"
    return out


def _device(fleet: Any) -> str:
    gpus = int(fleet.cluster.get("GPU", 0))
    if gpus:  # nvidia-smi, not torch: the driver process keeps off the GPUs
        import subprocess

        try:
            query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
            names = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.split("\n")
            return f"{gpus}x {names[0].strip()}"
        except (OSError, subprocess.SubprocessError):
            return f"{gpus} GPU(s)"
    return f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def _versions() -> dict[str, str]:
    from cosmos3_ros import __version__

    out = {"cosmos3_ros": __version__}
    for name in ("torch", "diffusers", "websockets"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            continue
    return out


if __name__ == "__main__":
    sys.exit(main())
