# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The policy loop's events as ROS messages: the node's sink (trajectories, forecasts, prediction errors)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import Image
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory

from cosmos3_ros.control.events import ForecastFrames, LoopSink
from cosmos3_ros.core.drift import DriftState
from cosmos3_ros.core.forecast import ErrorSample
from cosmos3_ros.core.trajectory import Trajectory
from cosmos3_ros.ros import convert


class NodeSink(LoopSink):
    """The loop's events as ROS messages on the node's publishers; publishing stops for good at :meth:`close`."""

    def __init__(self, node: Any, metric: str, pose_dims: int = 0, dry_run: bool = False) -> None:
        self._log = node.get_logger()
        self._warn = node.warn_throttled
        out = "~/dry_run/" if dry_run else "~/"  # dry_run: what would be commanded, on topics no controller reads
        self._traj = node.create_lifecycle_publisher(JointTrajectory, f"{out}joint_trajectory", 10)
        self._pred = node.create_lifecycle_publisher(Image, "~/predicted_image", 64)  # a forecast is a burst
        self._err = node.create_lifecycle_publisher(Float64, "~/prediction_error", 10)
        self._poses = node.create_lifecycle_publisher(PoseArray, f"{out}ee_poses", 10) if pose_dims else None
        self._destroy = node.destroy_lifecycle_publisher
        self.metric = metric
        self.pose_dims = pose_dims
        self._open = True

    def close(self) -> None:
        """Publish nothing more and destroy the publishers."""
        self._open = False
        for pub in (self._traj, self._pred, self._err, self._poses):
            if pub is not None:
                self._destroy(pub)

    def _publish(self, pub: Any, msg: Any) -> None:
        if self._open:
            try:
                pub.publish(msg)
            except Exception as exc:  # a context shut down under us (Ctrl-C): nothing to publish to any more
                if self._open:
                    self._log.warning(f"publish failed: {exc}")

    def trajectory(self, traj: Trajectory, now: float) -> None:
        if not np.isfinite(traj.positions).all():  # the controller never hands these out; belt and braces
            self._log.error("refusing to publish a non-finite trajectory")
            return
        if traj.poses is not None and self._poses is not None:  # ee_pose: the poses, then the other dimensions
            self._publish(self._poses, convert.pose_array_msg(traj.poses, traj.stamp, traj.frame_id))
            if len(traj.joint_names) > self.pose_dims:
                d = self.pose_dims
                rest = dataclasses.replace(
                    traj,
                    joint_names=traj.joint_names[d:],
                    positions=traj.positions[:, d:],
                    velocities=None if traj.velocities is None else traj.velocities[:, d:],
                    accelerations=None if traj.accelerations is None else traj.accelerations[:, d:],
                )
                self._publish(self._traj, convert.trajectory_to_msg(rest))
        else:
            self._publish(self._traj, convert.trajectory_to_msg(traj))
        if traj.kind == "hold":
            self._warn("hold", "holding: no fresh valid chunk; stopped commanding", 2.0)

    def forecast(self, forecast: ForecastFrames) -> None:
        for stamp, frame in zip(forecast.stamps, forecast.frames, strict=True):
            self._publish(self._pred, convert.rgb_to_image_msg(frame, stamp, f"cosmos3_forecast/{forecast.chunk_id}"))

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        for sample in samples:
            self._publish(self._err, Float64(data=float(sample.value(self.metric))))
        if drift.tripped:
            self._warn("drift", f"prediction error {drift.value:.3f} passed the drift threshold", 2.0)

    def rejected(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        self._warn(f"reject.{camera}", f"rejected input on {camera} ({reason}): {message}")

    def chunk_done(self, record: Any) -> None:
        if record.forecast == "skipped_budget":
            self._warn("forecast", "forecast skipped: it would delay the next policy call", 10.0)
