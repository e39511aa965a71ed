# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Run the real policy node in a real rclpy graph for a while and report what came out.

Usage:
  python bench/node_loop.py --duration 60 --malformed-every 3            # soak: bad frames mixed in (issue 3 bar)
  python bench/node_loop.py --duration 60 --compare-monitoring           # chunk rate, forecasting off vs on (issue 4)
  python bench/node_loop.py --model DIR --device cuda ...                # a real checkpoint on a GPU

A camera publishes an rgb8 moving scene (640x480 by default) at ``--hz``; with ``--malformed-every k`` every k-th
message is replaced by a malformed one (rotating through: unknown encoding, wrong step, truncated data, empty image,
zero width, out-of-order stamp, zero stamp). A listener checks every JointTrajectory (shape, names, finite values).
Prints a JSON summary; exits 1 if the node died, published a malformed or non-finite message, or no chunks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _malformed(kind: int, good: Any, now: float) -> tuple[Any, float]:
    from sensor_msgs.msg import Image

    w, h = good.width, good.height
    data = bytes(good.data)
    bad = [
        Image(height=h, width=w, encoding="yuv422_weird", step=w * 3, data=data),
        Image(height=h, width=w, encoding="rgb8", step=w, data=data),
        Image(height=h, width=w, encoding="rgb8", step=w * 3, data=data[: len(data) // 3]),
        Image(height=0, width=0, encoding="rgb8", step=0, data=b""),
        Image(height=h, width=0, encoding="rgb8", step=w * 3, data=data),
    ]
    if kind % 7 == 5:
        return good, now - 1e3  # out of order (older than the newest buffered frame)
    if kind % 7 == 6:
        return good, 0.0  # unstamped: the node uses its receipt time (counted as zero_stamp_frames)
    return bad[kind % 7], now


def run_once(args: argparse.Namespace, model: str, forecast_every: int) -> dict[str, Any]:
    """One run of the node; returns the summary."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    from cosmos3_ros.core.synthetic import moving_scene_frame
    from cosmos3_ros.ros.convert import rgb_to_image_msg, sec_to_stamp
    from cosmos3_ros.ros.policy_node import PolicyNode

    ctx = Context()
    rclpy.init(context=ctx, domain_id=random.randint(100, 200))
    params = {
        "model": model,
        "device": args.device,
        "camera_topics": ["/cam/image_raw"],
        "num_steps": args.num_steps,
        "image_size": args.image_size,
        "forecast_every": forecast_every,
        "max_observation_age": 1.0,
    }
    node = PolicyNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    io = Node("bench_io", context=ctx)
    pub = io.create_publisher(Image, "/cam/image_raw", qos_profile_sensor_data)
    stats = {"chunks": 0, "holds": 0, "malformed_out": 0, "nonfinite_out": 0}
    lock = threading.Lock()

    def on_traj(msg: JointTrajectory) -> None:
        with lock:
            if len(msg.points) == 1:
                stats["holds"] += 1
                return
            stats["chunks"] += 1
            ok = len(msg.joint_names) == 10 and len(msg.points) == 16
            ok = ok and all(len(p.positions) == 10 for p in msg.points)
            if not ok:
                stats["malformed_out"] += 1
            if not all(np.isfinite(p.positions).all() for p in msg.points):
                stats["nonfinite_out"] += 1

    io.create_subscription(JointTrajectory, "/cosmos3_policy/joint_trajectory", on_traj, 50)
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    executor.add_node(node)
    executor.add_node(io)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    sent = {"good": 0, "malformed": 0}
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(node.backend_error)
        node.trigger_activate()
        t_end = time.monotonic() + args.duration
        k = 0
        while time.monotonic() < t_end:
            now = io.get_clock().now().nanoseconds * 1e-9
            msg = rgb_to_image_msg(moving_scene_frame(now, args.height, args.width), now, "cam")
            if args.malformed_every and k % args.malformed_every == args.malformed_every - 1:
                msg, stamp = _malformed(k // args.malformed_every, msg, now)
                if stamp >= 0:
                    msg.header.stamp = sec_to_stamp(stamp)
                sent["malformed"] += 1
            else:
                sent["good"] += 1
            pub.publish(msg)
            k += 1
            time.sleep(1.0 / args.hz)
        time.sleep(0.5)
        loop = node.loop
        alive = loop is not None and spin.is_alive()
        counters = loop.controller.counters.snapshot() if loop else {}
        lat = loop.policy_latency.summary() if loop else {"p50": float("nan"), "p95": float("nan")}
        monitor = loop.monitor_summary() if loop else {}
    finally:
        node.teardown()
        ctx.try_shutdown()
        executor.shutdown()
        spin.join(timeout=5)
    with lock:
        out = dict(stats)
    return {
        "duration_s": args.duration,
        "forecast_every": forecast_every,
        "frames_sent": sent,
        **out,
        "chunks_per_s": out["chunks"] / args.duration,
        "node_alive": alive,
        "latency_p50_s": lat["p50"],
        "latency_p95_s": lat["p95"],
        "rejected": {k: v for k, v in counters.items() if k.startswith("rejected_frames.")},
        "inference_errors": counters.get("inference_errors", 0),
        "forecasts": monitor.get("forecasts", 0),
        "forecast_skipped": monitor.get("forecast_skipped", 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: a fresh tiny one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640, help="camera width")
    parser.add_argument("--height", type=int, default=480, help="camera height")
    parser.add_argument("--malformed-every", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=480)
    parser.add_argument("--forecast-every", type=int, default=0)
    parser.add_argument("--compare-monitoring", action="store_true", help="run with forecasting off, then on")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args(argv)
    tmp = None
    model = args.model
    if model is None:
        from cosmos3_ros.bench.tiny import make_tiny_model

        tmp = tempfile.TemporaryDirectory()
        model = str(make_tiny_model(Path(tmp.name) / "tiny"))
    if args.compare_monitoring:
        off = run_once(args, model, 0)
        on = run_once(args, model, 1)
        summary: dict[str, Any] = {
            "off": off,
            "on": on,
            "chunk_rate_drop": 1.0 - on["chunks_per_s"] / off["chunks_per_s"] if off["chunks_per_s"] else None,
        }
        ok = all(r["node_alive"] and r["chunks"] > 0 and not r["nonfinite_out"] for r in (off, on))
    else:
        summary = run_once(args, model, args.forecast_every)
        ok = summary["node_alive"] and summary["chunks"] > 0
        ok = ok and not summary["nonfinite_out"] and not summary["malformed_out"]
    text = json.dumps(summary, indent=2, default=float)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
