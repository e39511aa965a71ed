# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Per-frame cost of the policy node's own work, without model time: message conversion and composition.

Usage: ``python bench/node_overhead.py [--n 500] [--json out.json]``

Prints a markdown table of p50 / p95 / mean milliseconds per call on 640x480 frames. The bar (issue 3): node
overhead (conversion, buffering, composition, publish) under 10 ms p95 for 640x480 rgb8. ``measure`` is the
reusable timer; add cases to ``cases()``.
"""

from __future__ import annotations

import argparse
import array
import io
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image as PILImage
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from cosmos3_ros.core.compose import compose
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.ros.convert import compressed_msg_to_rgb, image_msg_to_rgb, rgb_to_image_msg

HEIGHT, WIDTH = 480, 640
BAR_P95_MS = 10.0


def measure(fn: Callable[[], Any], n: int, warmup: int = 10) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``n`` times; ``p50_ms``, ``p95_ms``, ``mean_ms`` per call."""
    for _ in range(warmup):
        fn()
    samples = np.empty(n, dtype=np.float64)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - t0
    samples *= 1e3
    return {
        "p50_ms": float(np.percentile(samples, 50)),
        "p95_ms": float(np.percentile(samples, 95)),
        "mean_ms": float(samples.mean()),
    }


def raw_msg(image: np.ndarray, encoding: str) -> Image:
    """A sensor_msgs/Image of ``image`` (RGB) in ``rgb8`` or ``bgr8``, as a driver would publish it."""
    pixels = image if encoding == "rgb8" else image[..., ::-1]
    msg = Image(height=image.shape[0], width=image.shape[1], encoding=encoding, step=image.shape[1] * 3)
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg


def jpeg_msg(image: np.ndarray, quality: int = 90) -> CompressedImage:
    """A sensor_msgs/CompressedImage as image_transport's compressed plugin publishes it."""
    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, "JPEG", quality=quality)
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
    msg.data = array.array("B", buf.getvalue())
    return msg


_PUB: list[Any] = []


def _publisher() -> Any:
    """A real rclpy JointTrajectory publisher (created once)."""
    if not _PUB:
        import rclpy
        from trajectory_msgs.msg import JointTrajectory

        rclpy.init()
        node = rclpy.create_node("node_overhead_bench")
        _PUB.append(node.create_publisher(JointTrajectory, "/bench/joint_trajectory", 10))
    return _PUB[0]


def cases() -> dict[str, Callable[[], Any]]:
    """Named per-frame operations on 640x480 frames."""
    a = moving_scene_frame(0.0, HEIGHT, WIDTH)
    b = moving_scene_frame(1.0, HEIGHT, WIDTH)
    rgb8, bgr8, jpeg = raw_msg(a, "rgb8"), raw_msg(a, "bgr8"), jpeg_msg(a)
    wire = serialize_message(rgb8)
    wire_b = serialize_message(raw_msg(b, "rgb8"))
    two = {"wrist": a, "ext": b}
    three = {"wrist": a, "left": b, "right": a}
    mixed = {"ext": a, "hd": moving_scene_frame(2.0, 720, 1280)}

    def two_camera_path() -> np.ndarray:
        # What one control tick does with two rgb8 cameras: take both messages, decode, compose.
        frames = {
            "wrist": image_msg_to_rgb(deserialize_message(wire, Image)),
            "ext": image_msg_to_rgb(deserialize_message(wire_b, Image)),
        }
        return compose(frames, ["wrist", "ext"], "side_by_side")

    # The whole node path for one rgb8 camera, without model time: take, decode, buffer, build the observation
    # (newest frame, staleness check, composition), turn a chunk into a JointTrajectory and publish it.
    from cosmos3_ros.control.controller import ControllerConfig, PolicyController
    from cosmos3_ros.core.settings import PolicySettings
    from cosmos3_ros.core.trajectory import ActionMapping, Trajectory, chunk_times, default_joint_names
    from cosmos3_ros.ros.convert import trajectory_to_msg

    controller = PolicyController(
        ControllerConfig(("cam",), ActionMapping.build(default_joint_names("bridge_orig_lerobot", 10))),
        PolicySettings(),
    )
    traj = Trajectory(controller.config.mapping.joint_names, np.zeros((16, 10)), chunk_times(16, 5.0), 0.0, 1)
    clock = {"t": 1000.0}

    def node_path() -> None:
        clock["t"] += 0.1
        rgb = image_msg_to_rgb(deserialize_message(wire, Image))
        controller.add_frame("cam", clock["t"], rgb)
        obs, _ = controller.buffer.observation(clock["t"], 0.5, 0.05)
        compose({c: f.image for c, f in obs.frames.items()}, ["cam"], "single")
        _publisher().publish(trajectory_to_msg(traj))

    return {
        "node path: take+decode+buffer+observation+publish JointTrajectory (1 rgb8 cam)": node_path,
        "rclpy take: deserialise rgb8 Image": lambda: deserialize_message(wire, Image),
        "decode rgb8 Image": lambda: image_msg_to_rgb(rgb8),
        "decode bgr8 Image": lambda: image_msg_to_rgb(bgr8),
        "decode jpeg CompressedImage": lambda: compressed_msg_to_rgb(jpeg),
        "compose 2 cams side_by_side": lambda: compose(two, ["wrist", "ext"], "side_by_side"),
        "compose 2 cams wrist_top": lambda: compose(two, ["wrist", "ext"], "wrist_top"),
        "compose 2 cams grid": lambda: compose(two, ["wrist", "ext"], "grid"),
        "compose 3 cams wrist_top (wrist resized 2x)": lambda: compose(three, ["wrist", "left", "right"], "wrist_top"),
        "compose 3 cams wrist_top, max_height=480": lambda: compose(
            three, ["wrist", "left", "right"], "wrist_top", max_height=480
        ),
        "compose 640x480 + 1280x720 side_by_side": lambda: compose(mixed, ["ext", "hd"], "side_by_side"),
        "rgb_to_image_msg (publish a frame)": lambda: rgb_to_image_msg(a, 0.0, "camera"),
        "path: take+decode 2 rgb8 + side_by_side": two_camera_path,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="timed calls per case")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    results = {name: measure(fn, args.n) for name, fn in cases().items()}
    print(
        f"# node overhead, {WIDTH}x{HEIGHT}, n={args.n}, {platform.machine()} {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, Pillow {PILImage.__version__}"
    )
    print("| case | p50 ms | p95 ms | mean ms |\n| --- | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['mean_ms']:.3f} |")
    path = results["path: take+decode 2 rgb8 + side_by_side"]["p95_ms"]
    node = results["node path: take+decode+buffer+observation+publish JointTrajectory (1 rgb8 cam)"]["p95_ms"]
    print(
        f"\nnode path (1 rgb8 cam, buffering and publish included) p95 {node:.2f} ms; two-camera take+decode+compose "
        f"p95 {path:.2f} ms (bar {BAR_P95_MS:.0f} ms p95)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "cpus": os.cpu_count(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
