# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros sim``: a MuJoCo Franka Panda with the ROS 2 interface of Isaac Sim's bridge.

A Panda with its hand, a table, three cubes and a bowl; offscreen RGB cameras; ``/clock``, ``/joint_states``,
``/joint_command`` and a JointTrajectory input (see :mod:`cosmos3_ros.sim.bridge`). ``--preset isaac`` (default)
publishes the one camera of config/isaac_sim.yaml on ``/rgb``; ``--preset droid`` the wrist and two exterior
cameras of config/droid.yaml and follows the node's JointTrajectory. Headless on a CPU through EGL (default) or
OSMesa (``--gl osmesa``, Debian's libosmesa6). Ctrl-C (or SIGTERM) stops it cleanly; it prints a summary (simulated
time, achieved real-time factor, CPU and render cost, commands received and rejected) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

HELP = "run the MuJoCo Panda simulator with Isaac Sim's ROS 2 bridge interface (/rgb, /clock, /joint_states, ...)"


def _value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments: a preset, one flag per simulator parameter, and run options."""
    from cosmos3_ros.sim.options import PARAMS, PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), default="isaac", help="camera and topic layout")
    for p in PARAMS:
        flag = "--" + p.name.replace("_", "-")
        if p.name == "cameras":
            parser.add_argument(flag, nargs="+", default=None, metavar="TOPIC=CAMERA[@WxH]", help=p.description)
            continue
        parser.add_argument(flag, type=_value, default=None, metavar="VALUE", help=f"{p.description} ({p.default})")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many simulated seconds (0: run)")
    parser.add_argument(
        "--gl", choices=["egl", "osmesa"], default=None, help="OpenGL backend (default: $MUJOCO_GL or egl)"
    )
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's)")
    parser.add_argument("--screenshot", metavar="PNG", help="write what the preset's cameras see to PNG and exit")
    parser.add_argument("--ros-args", nargs=argparse.REMAINDER, default=[], help="ROS arguments (remaps, -p ...)")


def _values(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's values, then ``--ros-args -p`` overrides of simulator parameters, then the flags."""
    from cosmos3_ros.core.params_file import ros_args_params
    from cosmos3_ros.sim.options import BY_NAME, PARAMS, check, preset_values

    ros_p = ros_args_params(["--ros-args", *args.ros_args])[1] if args.ros_args else {}
    values = preset_values(args.preset, **{k: v for k, v in ros_p.items() if k in BY_NAME})
    values.update({p.name: getattr(args, p.name) for p in PARAMS if getattr(args, p.name) is not None})
    check(values)  # ValueError: one line, exit 2
    return values


def screenshot(values: dict[str, Any], path: str | Path, settle_s: float = 0.5) -> Path:
    """Render the cameras of ``values`` side by side (at the first camera's height) after ``settle_s`` simulated
    seconds at home, and write a PNG."""
    import numpy as np
    from PIL import Image

    from cosmos3_ros.sim.drive import JointDrive
    from cosmos3_ros.sim.options import parse_cameras
    from cosmos3_ros.sim.world import CONTROLLED, PandaWorld

    cams = parse_cameras(list(values["cameras"]), int(values["width"]), int(values["height"]))
    with PandaWorld(seed=int(values["seed"]), timestep=1.0 / float(values["physics_rate"])) as world:
        drive = JointDrive(CONTROLLED, world.limits)
        drive.reset(world.home())
        while world.time < settle_s:
            p, v = world.controlled_state()
            world.step(drive.update(world.time, p, v, world.timestep))
        images = [world.render(c.spec) for c in cams]
    h = images[0].shape[0]
    tiles = [np.asarray(Image.fromarray(im).resize((round(im.shape[1] * h / im.shape[0]), h))) for im in images]
    out = Path(path)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(out, optimize=True)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the simulator until Ctrl-C, SIGTERM or ``--duration``; print the summary."""
    from cosmos3_ros.sim.world import select_gl

    gl = select_gl(args.gl)
    values = _values(args)
    if args.screenshot:
        out = screenshot(values, args.screenshot)
        print(f"cosmos3-ros sim: wrote {out} ({', '.join(values['cameras'])}; MUJOCO_GL={gl})")
        return 0
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from cosmos3_ros.sim.bridge import SimBridge

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ctx = Context()
    init: dict[str, Any] = {"context": ctx, "signal_handler_options": SignalHandlerOptions.NO}
    if args.domain_id is not None:
        init["domain_id"] = args.domain_id
    rclpy.init(args=["cosmos3-ros-sim", "--ros-args", *args.ros_args] if args.ros_args else None, **init)
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    node = SimBridge(context=ctx, parameter_overrides=overrides)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    wall0, cpu0 = time.monotonic(), time.process_time()
    code = 0
    try:
        node.start()
        cams = ", ".join(f"{c.topic} ({c.spec.name} {c.spec.width}x{c.spec.height})" for c in node.cameras)
        node.get_logger().info(
            f"simulating the Panda (MUJOCO_GL={gl}, seed {values['seed']}, real-time factor "
            f"{values['real_time_factor']:g}): cameras {cams} at {values['camera_rate']:g} Hz; /clock, "
            f"{values['joint_states_topic']}; commands on {values['joint_command_topic']}"
            + (f" and {values['trajectory_topic']}" if values["trajectory_topic"] else "")
        )
        while not stop.is_set() and ctx.ok():
            executor.spin_once(timeout_sec=0.05)
            if args.duration and node.sim_time >= args.duration:
                break
            if node.error is not None:
                print(
                    f"cosmos3-ros sim: the simulation failed: {type(node.error).__name__}: {node.error}",
                    file=sys.stderr,
                )
                code = 1
                break
    finally:
        node.close()
        summary = node.summary()
        wall = time.monotonic() - wall0
        summary["process_cpu_s"] = round(time.process_time() - cpu0, 3)
        summary["process_wall_s"] = round(wall, 3)
        summary["cpu_fraction_of_one_core"] = round(summary["process_cpu_s"] / wall, 3) if wall > 0 else None
        summary["mujoco_gl"] = os.environ.get("MUJOCO_GL")
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        ctx.try_shutdown()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("cosmos3-ros sim: " + json.dumps(summary, default=str))
    sys.stdout.flush()
    return code
