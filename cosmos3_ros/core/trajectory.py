# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Action chunk to trajectory: de-normalisation, joint limits, timing, interpolation. Pure numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_POSE9 = ["x", "y", "z", "rot6d_0", "rot6d_1", "rot6d_2", "rot6d_3", "rot6d_4", "rot6d_5"]


def default_joint_names(domain_name: str, width: int) -> list[str]:
    """Documented default names for a domain's action dimensions.

    10-D arm domains (bridge, droid, umi, fractal, robomind-franka/ur): xyz, 6-D rotation, gripper.
    9-D (av, camera_pose): xyz + 6-D rotation. pusht: x, y. robomind-franka-dual: ``left_``/``right_``
    prefixed arm names. Anything else: ``a0`` .. ``a{width-1}``.
    """
    if width == 10:
        return [*_POSE9, "gripper"]
    if width == 9:
        return list(_POSE9)
    if domain_name == "pusht" and width == 2:
        return ["x", "y"]
    if domain_name == "robomind-franka-dual" and width == 20:
        arm = [*_POSE9, "gripper"]
        return [f"left_{n}" for n in arm] + [f"right_{n}" for n in arm]
    return [f"a{i}" for i in range(width)]


@dataclass(frozen=True)
class ActionMapping:
    """Model-space actions to commands: ``command = action * scale + offset``, then clamped to limits.

    Empty ``scale``/``offset``/``lower``/``upper`` mean 1, 0, -inf, +inf for every dimension.
    """

    joint_names: tuple[str, ...]
    scale: np.ndarray
    offset: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def build(
        cls,
        joint_names: Sequence[str],
        scale: Sequence[float] = (),
        offset: Sequence[float] = (),
        lower: Sequence[float] = (),
        upper: Sequence[float] = (),
    ) -> ActionMapping:
        """Validate lengths and values; raise ValueError naming the bad parameter."""
        n = len(joint_names)
        if n == 0:
            raise ValueError("joint_names must not be empty")
        if len(set(joint_names)) != n:
            raise ValueError(f"joint_names must be unique, got {list(joint_names)}")

        def arr(name: str, values: Sequence[float], fill: float) -> np.ndarray:
            if len(values) == 0:
                return np.full(n, fill, dtype=np.float64)
            a = np.asarray(values, dtype=np.float64)
            if a.shape != (n,):
                raise ValueError(f"{name} has {a.size} values but there are {n} joint_names")
            if np.isnan(a).any():
                raise ValueError(f"{name} contains NaN")
            return a

        scale_a = arr("action_scale", scale, 1.0)
        offset_a = arr("action_offset", offset, 0.0)
        lower_a = arr("joint_limits.lower", lower, -np.inf)
        upper_a = arr("joint_limits.upper", upper, np.inf)
        if not (np.isfinite(scale_a).all() and np.isfinite(offset_a).all()):
            raise ValueError("action_scale and action_offset must be finite")
        if (lower_a > upper_a).any():
            i = int(np.argmax(lower_a > upper_a))
            raise ValueError(f"joint_limits: lower {lower_a[i]} > upper {upper_a[i]} for joint {joint_names[i]!r}")
        return cls(tuple(joint_names), scale_a, offset_a, lower_a, upper_a)

    @property
    def width(self) -> int:
        """Number of action dimensions / joints."""
        return len(self.joint_names)

    def to_model(self, positions: np.ndarray) -> np.ndarray:
        """Robot positions (in ``joint_names`` order) to the model's action space: the inverse of the affine map.

        Raises ValueError where a scale is 0 (that dimension cannot be inverted).
        """
        if (self.scale == 0).any():
            raise ValueError("action_scale has a 0: the robot state cannot be mapped into the model's action space")
        return ((np.asarray(positions, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def apply(self, actions: np.ndarray) -> np.ndarray:
        """Map [T, width] model-space actions to clamped commands (float64). Raises ValueError if not finite."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.width:
            raise ValueError(f"actions of shape {a.shape} do not match {self.width} joint_names")
        out = np.clip(a * self.scale + self.offset, self.lower, self.upper)
        if not np.isfinite(out).all():
            raise ValueError("de-normalised actions are not finite")
        return out


@dataclass(frozen=True)
class Trajectory:
    """A timed command sequence: point k is to be reached at ``stamp + times[k]`` (seconds).

    ``stamp`` None means "start on receipt" (used for holds). With the ``ee_pose`` action space, ``poses`` [T, 7]
    holds the absolute end-effector pose of every point (``x, y, z, qx, qy, qz, qw`` in ``frame_id``), computed from
    the first 9 action dimensions (see :mod:`cosmos3_ros.core.poses`).
    """

    joint_names: tuple[str, ...]
    positions: np.ndarray  # [T, N] float64
    times: np.ndarray  # [T] seconds from stamp, strictly increasing, > 0
    stamp: float | None
    chunk_id: int
    kind: str = "chunk"  # "chunk" or "hold"
    poses: np.ndarray | None = None
    frame_id: str = ""

    @property
    def end_time(self) -> float:
        """Absolute time of the last point (stamp + last time); +inf for holds without a stamp."""
        return float("inf") if self.stamp is None else self.stamp + float(self.times[-1])

    def point_times(self) -> np.ndarray:
        """Absolute times of the points."""
        return (0.0 if self.stamp is None else self.stamp) + self.times

    def points_due(self, now: float) -> int:
        """How many points' times are at or before ``now``."""
        if self.stamp is None:
            return 0
        return int(np.searchsorted(self.point_times(), now, side="right"))

    def sample(self, now: float, before: np.ndarray | None = None) -> np.ndarray:
        """Linearly interpolated command at ``now``.

        Before the first point, interpolates from ``before`` (the previous command) at ``stamp`` to
        point 0, or holds point 0 when there is no previous command; after the last point, holds it.
        """
        if self.stamp is None:
            return self.positions[-1].copy()
        t = self.point_times()
        if now >= t[-1]:
            return self.positions[-1].copy()
        if now <= t[0]:
            if before is None or now <= self.stamp:
                return (before if before is not None else self.positions[0]).copy()
            w = (now - self.stamp) / (t[0] - self.stamp)
            return before + w * (self.positions[0] - before)
        i = int(np.searchsorted(t, now, side="right"))
        w = (now - t[i - 1]) / (t[i] - t[i - 1])
        return self.positions[i - 1] + w * (self.positions[i] - self.positions[i - 1])


def chunk_times(n_points: int, fps: float) -> np.ndarray:
    """``time_from_start`` of each action: action k is reached (k + 1) / fps after the observation."""
    return (np.arange(n_points, dtype=np.float64) + 1.0) / float(fps)
