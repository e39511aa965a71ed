# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Build and serialize the messages :class:`cosmos3_ros.bags.recorder.BagRecorder` writes, without rclpy.

Messages are built with the ``rosbags`` typestore of ROS 2 Kilted (same RIHS01 type hashes as the ROS messages) and
serialized to CDR. Each ``*_builder`` function takes copies of the caller's data (done by the recorder) and returns a
callable that builds and serializes the message on the recorder's writer thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "get_ros2_typestore",
    "header",
    "image_builder",
    "joint_state_builder",
    "jsonable",
    "stamp_to_ns",
    "trajectory_builder",
]

Builder = Callable[[], bytes]


@lru_cache(maxsize=1)
def get_ros2_typestore() -> Any:
    """The rosbags typestore of ROS 2 Kilted (the distro the package targets), built once."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def stamp_to_ns(stamp_s: float) -> int:
    """Seconds (float) to integer nanoseconds.

    Splits whole and fractional seconds first (like ``cosmos3_ros.ros.convert.sec_to_stamp``), so a recorded
    header stamp equals the one published live for the same float time.
    """
    stamp_s = float(stamp_s)
    if not math.isfinite(stamp_s) or stamp_s < 0:
        raise ValueError(f"stamp must be a finite, non-negative number of seconds, got {stamp_s}")
    sec = math.floor(stamp_s)
    return sec * 1_000_000_000 + round((stamp_s - sec) * 1e9)


def header(types: Any, sec: int, nanosec: int, frame_id: str) -> Any:
    """A ``std_msgs/msg/Header``."""
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nanosec)), frame_id=str(frame_id)
    )


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values converted, non-finite floats as None and paths as strings (for ``json.dumps``)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _serialize(msg: Any, msgtype: str) -> bytes:
    return bytes(get_ros2_typestore().serialize_cdr(msg, msgtype))


def image_builder(data: np.ndarray, scale: float, ns: int, frame_id: str) -> Builder:
    """``sensor_msgs/msg/Image`` from HxW / HxWx3 / HxWx4 ``data`` (uint8, or float in [0, 1]), area-scaled."""
    sec, nanosec = divmod(ns, 1_000_000_000)

    def build() -> bytes:
        img = data
        if img.dtype != np.uint8:
            img = np.clip(np.rint(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        if scale < 1.0:
            from cosmos3_ros.core.metrics import area_resize

            h, w = img.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = np.clip(np.rint(area_resize(img, size)), 0, 255).astype(np.uint8)
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        channels = 1 if img.ndim == 2 else img.shape[2]
        encoding = {1: "mono8", 3: "rgb8", 4: "rgba8"}[channels]
        types = get_ros2_typestore().types
        msg = types["sensor_msgs/msg/Image"](
            header=header(types, sec, nanosec, frame_id),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=w * channels,
            data=img.reshape(-1),
        )
        return _serialize(msg, "sensor_msgs/msg/Image")

    return build


def trajectory_builder(
    pts: np.ndarray,
    vel: np.ndarray | None,
    names: list[str],
    dt: float,
    offset: float,
    ns: int,
    frame_id: str,
) -> Builder:
    """``trajectory_msgs/msg/JointTrajectory``: point k at ``offset + k * dt`` after the stamp."""
    sec, nanosec = divmod(ns, 1_000_000_000)

    def build() -> bytes:
        types = get_ros2_typestore().types
        point_cls = types["trajectory_msgs/msg/JointTrajectoryPoint"]
        duration_cls = types["builtin_interfaces/msg/Duration"]
        empty = np.zeros(0, np.float64)
        out = []
        for k in range(pts.shape[0]):
            d_sec, d_nsec = divmod(round((offset + k * dt) * 1e9), 1_000_000_000)
            out.append(
                point_cls(
                    positions=pts[k],
                    velocities=empty if vel is None else vel[k],
                    accelerations=empty,
                    effort=empty,
                    time_from_start=duration_cls(sec=int(d_sec), nanosec=int(d_nsec)),
                )
            )
        msg = types["trajectory_msgs/msg/JointTrajectory"](
            header=header(types, sec, nanosec, frame_id), joint_names=names, points=out
        )
        return _serialize(msg, "trajectory_msgs/msg/JointTrajectory")

    return build


def joint_state_builder(
    names: Sequence[str], pos: np.ndarray, vel: np.ndarray, eff: np.ndarray, ns: int, frame_id: str
) -> Builder:
    """``sensor_msgs/msg/JointState``."""
    sec, nanosec = divmod(ns, 1_000_000_000)
    name_list = list(names)

    def build() -> bytes:
        types = get_ros2_typestore().types
        msg = types["sensor_msgs/msg/JointState"](
            header=header(types, sec, nanosec, frame_id), name=name_list, position=pos, velocity=vel, effort=eff
        )
        return _serialize(msg, "sensor_msgs/msg/JointState")

    return build


def float_builder(value: float) -> Builder:
    """``std_msgs/msg/Float64``."""
    return lambda: _serialize(get_ros2_typestore().types["std_msgs/msg/Float64"](data=value), "std_msgs/msg/Float64")


def string_builder(text: str) -> Builder:
    """``std_msgs/msg/String``."""
    return lambda: _serialize(get_ros2_typestore().types["std_msgs/msg/String"](data=text), "std_msgs/msg/String")


def message_builder(msg: Any, msgtype: str) -> Builder:
    """Any message object of the typestore."""
    return lambda: _serialize(msg, msgtype)
