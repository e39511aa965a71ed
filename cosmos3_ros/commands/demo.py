# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros demo``: the closed loop on one machine, no ROS distro needed.

A synthetic camera publishes a moving scene, the policy node turns it into action chunks, and a
listener prints every chunk it receives; after ``--duration`` seconds a summary is printed. Without
``--model`` a tiny random-weights checkpoint is written to a temporary directory (its actions are
noise: the demo shows the loop, not a skill).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DEMO_PROMPT = "push the white block to the right"
TINY_NOTE = (
    "demo: the tiny checkpoint has random weights: its actions are noise (often nearly the same first action in every "
    "chunk) and its forecasts look nothing like the camera, so the prediction error is high and the drift warning "
    "is expected; with a real checkpoint both mean something"
)

HELP = "run the closed loop (synthetic camera -> policy node -> trajectory listener) and print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    from cosmos3_ros.commands.flags import add_setting_flags

    add_setting_flags(
        parser,
        ["model", "device", "dtype", "prompt", "num_steps", "forecast_every"],
        defaults={"model": "(a fresh tiny checkpoint)", "prompt": DEMO_PROMPT, "num_steps": "30; 10 with the tiny"},
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run after the node is active")
    parser.add_argument("--camera-hz", type=float, default=10.0, help="synthetic camera rate")
    parser.add_argument(
        "--width", type=int, default=None, help="synthetic camera width (default 160 with the tiny model, else 640)"
    )
    parser.add_argument("--height", type=int, default=None, help="synthetic camera height (default 120 / 480)")
    parser.add_argument("--record", help="also record an MCAP bag to this directory")
    parser.add_argument(
        "--domain-id", type=int, default=None, help="ROS_DOMAIN_ID of the demo graph (default: a random isolated one)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print every chunk")


def run(args: argparse.Namespace) -> int:
    """Bring up the graph, run, print the summary; exit 0 when chunks were received."""
    import rclpy
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    from cosmos3_ros.commands.flags import flag_values
    from cosmos3_ros.core.synthetic import moving_scene_frame
    from cosmos3_ros.ros.convert import rgb_to_image_msg
    from cosmos3_ros.ros.executor import DrainingExecutor
    from cosmos3_ros.ros.policy_node import PolicyNode

    v = flag_values(
        args, ["model", "device", "dtype", "prompt", "num_steps", "forecast_every"], {"prompt": DEMO_PROMPT}
    )
    tiny = not v["model"]
    tmp = None
    model = v["model"]
    if tiny:
        from cosmos3_ros.bench.tiny import make_tiny_model

        tmp = tempfile.TemporaryDirectory(prefix="cosmos3-demo-")
        model = str(make_tiny_model(Path(tmp.name) / "tiny"))
        print(f"demo: wrote a tiny random-weights checkpoint to {model} (use --model for a real one)")
        print(TINY_NOTE)
    num_steps = v["num_steps"] if hasattr(args, "num_steps") else (10 if tiny else 30)
    # On a laptop CPU a small frame keeps the forecast (a second model call with a 17-frame VAE decode) inside the
    # replan budget; with a real model on a GPU use the camera's real size.
    args.width = args.width or (160 if tiny else 640)
    args.height = args.height or (120 if tiny else 480)
    domain_id = args.domain_id if args.domain_id is not None else random.randint(100, 200)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    print(
        f"demo: ROS graph on ROS_DOMAIN_ID={domain_id} (isolated); camera {args.width}x{args.height} "
        f"@ {args.camera_hz} Hz; {num_steps} steps"
    )
    params = {
        "model": model,
        "device": v["device"],
        "dtype": v["dtype"],
        "camera_topics": ["/demo/camera/image_raw"],
        "prompt": v["prompt"],
        "num_steps": num_steps,
        "max_observation_age": 1.0,
        "forecast_every": v["forecast_every"],
        "record_path": args.record or "",
        "autostart": False,
    }
    node = PolicyNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    io = Node("cosmos3_demo_io", context=ctx)
    cam_pub = io.create_publisher(Image, "/demo/camera/image_raw", qos_profile_sensor_data)
    received: list[tuple[float, JointTrajectory]] = []
    lock = threading.Lock()
    t_start = time.monotonic()
    ros_start = io.get_clock().now().nanoseconds * 1e-9  # stamps are printed as seconds since the demo started

    done = threading.Event()

    def on_traj(msg: JointTrajectory) -> None:
        if done.is_set():
            return
        with lock:
            received.append((time.monotonic(), msg))
            n = sum(not _is_hold(m) for _, m in received)  # chunks only: holds are counted apart
        if args.quiet:
            return
        if _is_hold(msg):
            print(f"  [{time.monotonic() - t_start:6.2f} s] HOLD at the last command (no fresh chunk in time)")
            return
        first = np.asarray(msg.points[0].positions)
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - ros_start
        lat = node.loop.policy_latency.summary()["last"] if node.loop else float("nan")
        print(
            f"  [{time.monotonic() - t_start:6.2f} s] chunk {n}: {len(msg.points)}x{len(msg.joint_names)} "
            f"observed at {stamp:.2f} s, latency {lat * 1e3:.0f} ms, "
            f"first=[{', '.join(f'{v:+.2f}' for v in first[:4])}, ...]"
        )

    io.create_subscription(JointTrajectory, "/cosmos3_policy/joint_trajectory", on_traj, 10)

    def publish_frame() -> None:
        now = io.get_clock().now()
        t = now.nanoseconds * 1e-9
        cam_pub.publish(rgb_to_image_msg(moving_scene_frame(t, args.height, args.width), now.to_msg(), "demo_camera"))

    cam_timer = io.create_timer(1.0 / args.camera_hz, publish_frame)
    executor = DrainingExecutor(num_threads=4, context=ctx)
    executor.add_node(node)
    executor.add_node(io)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    code = 1
    try:
        t0 = time.monotonic()
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print(f"demo: configure failed: {node.backend_error}")
            return 1
        print(f"demo: model loaded and warmed up in {time.monotonic() - t0:.1f} s; running for {args.duration} s")
        node.trigger_activate()
        t_start = time.monotonic()
        time.sleep(args.duration)
        done.set()
        code = _summary(node, received, args.duration, tiny)
    finally:
        done.set()
        cam_timer.cancel()
        executor.shutdown()
        spin.join(timeout=5)
        node.teardown()
        ctx.try_shutdown()
        if tmp is not None:
            tmp.cleanup()
    return code


def _is_hold(msg) -> bool:
    """A hold is the documented one-point trajectory with a zero stamp ("start on receipt")."""
    return msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0 and len(msg.points) == 1


def _summary(node, received, duration: float, tiny: bool) -> int:
    loop = node.loop
    counters = loop.controller.counters.snapshot() if loop else {}
    chunks = [m for _, m in received if not _is_hold(m)]
    holds = [m for _, m in received if _is_hold(m)]
    lat = loop.policy_latency.summary()
    rates = {t: r.rate() for t, r in node.rates.items()}
    print("\ndemo summary")
    print(f"  chunks received      {len(chunks)} ({len(chunks) / duration:.2f}/s), holds {len(holds)}")
    print(
        f"  inference latency    p50 {lat['p50'] * 1e3:.0f} ms, p95 {lat['p95'] * 1e3:.0f} ms, max "
        f"{lat['max'] * 1e3:.0f} ms over {lat['count']} calls"
    )
    for topic, r in rates.items():
        print(f"  input rate           {topic}: {r:.1f} Hz")
    errors = {k: v for k, v in counters.items() if "error" in k or "rejected" in k or "stale" in k}
    print(f"  errors/rejections    {errors or 'none'}")
    for line in _monitor_lines(loop.monitor_summary()):
        print(f"  {line}")
    if tiny:
        print(f"  note                 {TINY_NOTE.removeprefix('demo: ')}")
    nonfinite = sum(1 for m in chunks for p in m.points if not np.isfinite(p.positions).all())
    print(f"  non-finite values    {nonfinite}")
    sys.stdout.flush()
    return 0 if chunks and nonfinite == 0 else 1


def _monitor_lines(m: dict) -> list[str]:
    return [
        f"forecasts            {m['forecasts']} made, {m['forecast_skipped']} skipped (budget), "
        f"{m['forecast_errors']} failed; p95 {m['forecast_latency_p95_s'] * 1e3:.0f} ms",
        f"prediction error     {m['prediction_error_metric']} last {m['prediction_error_last']:.3f}, "
        f"mean {m['prediction_error_mean']:.3f} over {m['forecast_matched']} matched frames "
        f"({m['forecast_missed']} missed)",
    ]
