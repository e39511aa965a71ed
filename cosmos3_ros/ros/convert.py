# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""ROS messages to and from the pure core: images, time stamps, trajectories, commands, diagnostics.

Every ROS message the package builds is built here (the node and the tools only call these). Thin: the decoding
rules live in :mod:`cosmos3_ros.core.images`, the health rules in :mod:`cosmos3_ros.control.diagnostics`. No graph
is needed; only the message packages.
"""

from __future__ import annotations

import array
import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseArray, PoseStamped
from sensor_msgs.msg import CompressedImage, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosmos3_ros.control.diagnostics import Diagnosis
from cosmos3_ros.core.images import DecodeOptions, decode_compressed, decode_raw_with, encode_rgb8
from cosmos3_ros.core.joints import positions_by_name
from cosmos3_ros.core.trajectory import Trajectory

_INT32_MAX = 2**31 - 1
_DEFAULTS = DecodeOptions()


def _buffer(data: Any) -> memoryview | bytes:
    """A zero-copy view of a message's ``uint8[]`` field (rclpy gives ``array.array('B')``); bytes otherwise."""
    try:
        return memoryview(data)
    except TypeError:  # a plain sequence of ints
        return bytes(data)


def image_msg_to_rgb(msg: Image, options: DecodeOptions = _DEFAULTS) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into HxWx3 uint8 RGB (downscaled to ``options.max_side``); raises
    ``ImageDecodeError``.

    For unpadded ``rgb8`` that needs no downscale the result is a view of ``msg.data`` (no copy): copy it before
    writing to it.
    """
    return decode_raw_with(_buffer(msg.data), msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian, options)


def compressed_msg_to_rgb(msg: CompressedImage, options: DecodeOptions = _DEFAULTS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) into HxWx3 uint8 RGB; raises ``ImageDecodeError``."""
    return decode_compressed(_buffer(msg.data), msg.format, max_pixels=options.max_pixels, max_side=options.max_side)


def rgb_to_image_msg(image: np.ndarray, stamp: Time | float, frame_id: str) -> Image:
    """An ``rgb8`` ``sensor_msgs/Image`` of an HxWx3 uint8 RGB array; ``stamp`` is a Time or seconds."""
    data, width, height, step = encode_rgb8(image)
    msg = Image()
    msg.header.stamp = stamp if isinstance(stamp, Time) else sec_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height = height
    msg.width = width
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = step
    # An array.array is taken as is by the field setter (one copy in all, even with ROS_PYTHON_CHECK_FIELDS=1,
    # which would check a bytes value element by element).
    msg.data = array.array("B", data)
    return msg


def stamp_to_sec(stamp: Time) -> float:
    """Seconds of a ``builtin_interfaces/Time``."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    """A ``builtin_interfaces/Time`` of ``seconds`` (nanoseconds rounded to nearest); ValueError if unrepresentable."""
    if not math.isfinite(seconds):
        raise ValueError(f"time stamp must be finite, got {seconds!r}")
    sec = math.floor(seconds)
    nanosec = round((seconds - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    if not -_INT32_MAX - 1 <= sec <= _INT32_MAX:
        raise ValueError(f"time stamp {seconds!r} s is outside the int32 seconds of builtin_interfaces/Time")
    return Time(sec=int(sec), nanosec=int(nanosec))


def sec_to_duration(t: float) -> Duration:
    """Non-negative seconds to builtin_interfaces/Duration (same rounding as :func:`sec_to_stamp`)."""
    stamp = sec_to_stamp(max(0.0, float(t)))
    return Duration(sec=stamp.sec, nanosec=stamp.nanosec)


def trajectory_to_msg(traj: Trajectory) -> JointTrajectory:
    """A JointTrajectory for ``traj`` (positions, and velocities / accelerations where the trajectory has them);
    holds (stamp None) get a zero stamp, meaning "start on receipt"."""
    msg = JointTrajectory()
    msg.header.stamp = sec_to_stamp(traj.stamp) if traj.stamp is not None else Time()
    msg.joint_names = list(traj.joint_names)
    for k, (pos, t) in enumerate(zip(traj.positions, traj.times, strict=True)):
        p = JointTrajectoryPoint()
        p.positions = [float(v) for v in pos]
        if traj.velocities is not None:
            p.velocities = [float(v) for v in traj.velocities[k]]
        if traj.accelerations is not None:
            p.accelerations = [float(v) for v in traj.accelerations[k]]
        p.time_from_start = sec_to_duration(t)
        msg.points.append(p)
    return msg


def joint_state_msg(names: Any, positions: np.ndarray, stamp: float) -> JointState:
    """A JointState command of ``positions`` for ``names`` at ``stamp`` seconds."""
    msg = JointState()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    return msg


def diagnostic_array(diagnosis: Diagnosis, name: str, hardware_id: str, stamp: Time) -> DiagnosticArray:
    """A DiagnosticArray with one status for ``diagnosis``."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, level=bytes([diagnosis.level]))
    status.message = diagnosis.message
    status.values = [KeyValue(key=k, value=v) for k, v in diagnosis.values.items()]
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr


def joint_positions(msg: JointState, names: Any) -> np.ndarray:
    """Positions of ``names`` from a JointState, in that order; ValueError naming what is missing or malformed."""
    return positions_by_name(msg.name, msg.position, names)


def pose_array_msg(poses: np.ndarray, stamp: float | None, frame_id: str) -> PoseArray:
    """A PoseArray of ``poses`` [T, 7] (``x, y, z, qx, qy, qz, qw``); stamp None gives a zero stamp (a hold)."""
    msg = PoseArray()
    msg.header.stamp = sec_to_stamp(stamp) if stamp is not None else Time()
    msg.header.frame_id = frame_id
    for row in np.asarray(poses, dtype=np.float64):
        p = Pose()
        p.position.x, p.position.y, p.position.z = (float(v) for v in row[:3])
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in row[3:7])
        msg.poses.append(p)
    return msg


def pose_from_msg(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray, str]:
    """(position [3], quaternion xyzw [4], frame_id) of a PoseStamped."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]), msg.header.frame_id
