# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros demo``: the closed loop on one machine, no ROS distro needed.

A synthetic camera publishes a moving scene, the policy node turns it into action chunks, and a
listener prints every chunk it receives; after ``--duration`` seconds a summary is printed. Without
``--model`` a tiny random-weights checkpoint is written to a temporary directory (its actions are
noise: the demo shows the loop, not a skill).

``--sim``: a robot that moves instead of the synthetic camera: the MuJoCo Panda (``cosmos3-ros sim``, Isaac Sim's
bridge interface) in its own process, the node with the shipped preset (``--sim-preset isaac`` or ``droid``) on
simulated time, ``--duration`` simulated seconds; the summary adds how the arm followed (tracking error, jerk, chunk
boundary jumps), the real-time factor and the simulator's CPU cost.
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
    parser.add_argument("--sim", action="store_true", help="run against the MuJoCo Panda simulator instead")
    parser.add_argument("--sim-preset", choices=["isaac", "droid"], default="isaac", help="--sim: which preset")
    parser.add_argument(
        "--real-time-factor",
        type=float,
        default=None,
        help="--sim: simulated seconds per wall second (default 0.5 with the tiny model on a CPU, else 1)",
    )


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
    if args.sim:
        try:
            return _run_sim(args, v, model, tiny)
        finally:
            if tmp is not None:
                tmp.cleanup()
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


def _run_sim(args: argparse.Namespace, v: dict, model: str, tiny: bool) -> int:
    """``--sim``: the node with a shipped preset against ``cosmos3-ros sim``; summary of how the arm followed."""
    from cosmos3_ros.sim.harness import LoopConfig, SimLoop
    from cosmos3_ros.sim.world import select_gl

    select_gl()
    preset = args.sim_preset
    cpu = tiny and v["device"] in ("auto", "cpu")
    node: dict = {
        "prompt": v["prompt"] if hasattr(args, "prompt") else SIM_PROMPT,
        "forecast_every": v["forecast_every"],
    }
    if hasattr(args, "num_steps"):
        node["num_steps"] = v["num_steps"]
    if args.record:
        node["record_path"] = args.record
    if cpu:  # keep a CPU's policy calls and forecasts inside the replan budget
        node["forecast_source"] = "policy_video"
        if preset == "droid":
            node["image_size"] = 256
    size = {"isaac": (160, 120), "droid": (160, 90)}[preset] if cpu else (None, None)
    rtf = args.real_time_factor if args.real_time_factor is not None else (0.5 if cpu else 1.0)
    config = LoopConfig(
        preset=preset,
        backend="in_process",
        model=model,
        device=v["device"],
        real_time_factor=rtf,
        camera_rate=args.camera_hz,
        width=args.width or size[0],
        height=args.height or size[1],
        node_overrides=node,
        domain_id=args.domain_id,
    )
    print(
        f"demo --sim: the MuJoCo Panda with the {preset} preset at real-time factor {rtf:g}, cameras "
        f"{config.width or 'default'}x{config.height or 'default'} @ {args.camera_hz:g} Hz; node overrides {node}"
    )
    with SimLoop(config) as loop:
        print(
            f"demo --sim: model loaded and warmed up in {loop.configure_s:.1f} s; running {args.duration:g} simulated s"
        )
        loop.wait_chunks(1, 900)
        printed = [0]

        def show() -> None:
            chunks = loop.chunks()
            for c in chunks[printed[0] :]:
                if not args.quiet:
                    first = ", ".join(f"{x:+.2f}" for x in c.positions[0][:4])
                    print(f"  [sim {c.received:7.2f} s] chunk: {len(c.positions)} points, first=[{first}, ...]")
            printed[0] = len(chunks)

        wall0, cpu0 = time.monotonic(), loop.sim.cpu_seconds()
        t0 = loop.sim_time()
        while loop.sim_time() < t0 + args.duration:
            if loop.sim.proc is None or loop.sim.proc.poll() is not None:
                print(f"demo --sim: the simulator stopped:\n{loop.sim_log()[-2000:]}")
                return 1
            show()
            time.sleep(0.5)
        report = loop.report(t0, loop.sim_time())
        wall = time.monotonic() - wall0
        report["real_time_factor"] = (loop.sim_time() - t0) / wall
        report["sim_cpu"] = (loop.sim.cpu_seconds() - cpu0) / wall
        loop.close()
    return _sim_summary(report, tiny)


SIM_PROMPT = "put the red cube in the bowl"


def _sim_summary(r: dict, tiny: bool) -> int:
    def stat(key: str, unit: str) -> str:
        s = r.get(key) or {}
        return f"rms {s['rms']:.3g}, p95 {s['p95']:.3g}, max {s['max']:.3g} {unit}" if s.get("n") else "-"

    lat = r.get("policy_latency_s") or {}
    fc = r.get("forecast") or {}
    print("\ndemo summary (simulator)")
    print(
        f"  simulated            {r['window_sim_s'][1] - r['window_sim_s'][0]:.1f} s at real-time factor "
        f"{r['real_time_factor']:.2f}; simulator CPU {r['sim_cpu']:.2f} of a core"
    )
    print(f"  chunks received      {r['chunks']}, holds {r['holds']}, JointState commands {r['joint_commands']}")
    if lat.get("count"):
        p50, p95 = lat["p50"] * 1e3, lat["p95"] * 1e3
        print(f"  inference latency    p50 {p50:.0f} ms, p95 {p95:.0f} ms over {lat['count']} calls")
    toward = r.get("moves_toward_reference") or {}
    print(f"  the arm              joint ranges {r.get('joint_range_rad')} rad; moves towards its commands in "
          f"{100 * toward.get('share', float('nan')):.0f}% of {toward.get('n', 0)} samples (50%: chance)")  # fmt: skip
    print(f"  tracking error       {stat('tracking_error_rad', 'rad')}")
    print(f"  joint jerk           {stat('joint_jerk_rad_s3', 'rad/s^3')}")
    print(f"  boundary jumps       {stat('chunk_boundary_jump_rad', 'rad')}")
    print(
        f"  forecasts            {fc.get('forecasts', 0)} made, {fc.get('forecast_skipped', 0)} skipped, "
        f"{fc.get('forecast_matched', 0)} frames compared with rendered ones; prediction error "
        f"{stat('prediction_error', '')}"
    )
    if tiny:
        print(
            "  note                 the tiny checkpoint's actions are noise: the preset's joint limits clamp them and "
            "the arm is sent back and forth faster than it can follow (large tracking error and jerk by design)"
        )
    print(f"  non-finite values    {r['non_finite_commands']}, outside the joint limits {r['commands_outside_limits']}")
    sys.stdout.flush()
    ok = r["chunks"] > 0 and r["non_finite_commands"] == 0 and r["commands_outside_limits"] == 0
    return 0 if ok else 1
