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

    def clipped(self, actions: np.ndarray) -> int:
        """How many values of ``actions`` (model space) the joint limits clamp in :meth:`apply`."""
        raw = np.asarray(actions, dtype=np.float64) * self.scale + self.offset
        return int(((raw < self.lower) | (raw > self.upper)).sum())


@dataclass(frozen=True)
class Trajectory:
    """A timed command sequence: point k is to be reached at ``stamp + times[k]`` (seconds).

    ``stamp`` None means "start on receipt" (used for holds). ``velocities`` [T, N] (and optionally
    ``accelerations``) make it a cubic (quintic) spline, as ros2_control's joint_trajectory_controller interpolates
    it; without them it is piecewise linear. With the ``ee_pose`` action space, ``poses`` [T, 7] holds the absolute
    end-effector pose of every point (``x, y, z, qx, qy, qz, qw`` in ``frame_id``), computed from the first 9 action
    dimensions (see :mod:`cosmos3_ros.core.poses`).
    """

    joint_names: tuple[str, ...]
    positions: np.ndarray  # [T, N] float64
    times: np.ndarray  # [T] seconds from stamp, strictly increasing, >= 0
    stamp: float | None
    chunk_id: int
    kind: str = "chunk"  # "chunk" or "hold"
    poses: np.ndarray | None = None
    frame_id: str = ""
    velocities: np.ndarray | None = None  # [T, N]
    accelerations: np.ndarray | None = None  # [T, N]
    reason: str = ""  # holds: why (chunk_expired, backend_failure, invalid_chunk, disarmed, clock_jump, ...)

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
        """Command at ``now``: cubic Hermite between points when velocities are given, else linear.

        Before the first point, interpolates linearly from ``before`` (the previous command) at ``stamp`` to
        point 0, or holds point 0 when there is no previous command; after the last point, holds it.
        """
        return self.sample_with_velocity(now, before)[0]

    def sample_with_velocity(self, now: float, before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(position, velocity) at ``now`` (see :meth:`sample`); the velocity is 0 outside the points."""
        zero = np.zeros(self.positions.shape[1])
        if self.stamp is None:
            return self.positions[-1].copy(), zero
        t = self.point_times()
        if now >= t[-1]:
            return self.positions[-1].copy(), zero
        if now <= t[0]:
            if before is None or now <= self.stamp or t[0] <= self.stamp:
                return (before if before is not None else self.positions[0]).copy(), zero
            w = (now - self.stamp) / (t[0] - self.stamp)
            return before + w * (self.positions[0] - before), (self.positions[0] - before) / (t[0] - self.stamp)
        i = int(np.searchsorted(t, now, side="right"))
        h = t[i] - t[i - 1]
        p0, p1 = self.positions[i - 1], self.positions[i]
        if self.velocities is None:
            w = (now - t[i - 1]) / h
            return p0 + w * (p1 - p0), (p1 - p0) / h
        return hermite(p0, self.velocities[i - 1], p1, self.velocities[i], h, now - t[i - 1])


def hermite(
    p0: np.ndarray, v0: np.ndarray, p1: np.ndarray, v1: np.ndarray, h: float, s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Hermite segment of length ``h`` from (p0, v0) to (p1, v1), evaluated ``s`` into it: (position,
    velocity). This is the cubic joint_trajectory_controller uses between points with positions and velocities."""
    u = s / h
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    pos = h00 * p0 + h10 * h * v0 + h01 * p1 + h11 * h * v1
    d00, d10, d01, d11 = 6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1, -6 * u**2 + 6 * u, 3 * u**2 - 2 * u
    vel = (d00 * p0 + d01 * p1) / h + d10 * v0 + d11 * v1
    return pos, vel


def point_velocities(positions: np.ndarray, times: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
    """Velocities consistent with ``positions`` at ``times`` (strictly increasing): the three-point derivative of
    the interpolating parabola at interior points (central differences on a uniform grid), limited as in
    Fritsch-Carlson so the cubic never overshoots (0 where a joint turns, at most 3x the smaller neighbouring
    slope), ``first`` (the command stream's velocity where the trajectory starts) or a one-sided difference at
    point 0, and 0 at the last point (where joint_trajectory_controller requires the motion to end at rest)."""
    p = np.asarray(positions, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    v = np.zeros_like(p)
    n = len(p)
    if n >= 3:
        h0 = (t[1:-1] - t[:-2])[:, None]
        h1 = (t[2:] - t[1:-1])[:, None]
        v[1:-1] = (h0 * (p[2:] - p[1:-1]) / h1 + h1 * (p[1:-1] - p[:-2]) / h0) / (h0 + h1)
        # Monotone (Fritsch-Carlson): 0 at a local extremum, at most 3x the smaller neighbouring slope, so the cubic
        # through the points never overshoots them (and never leaves joint limits the points respect).
        d0, d1 = (p[1:-1] - p[:-2]) / h0, (p[2:] - p[1:-1]) / h1
        cap = 3 * np.minimum(np.abs(d0), np.abs(d1))
        v[1:-1] = np.where(d0 * d1 > 0, np.sign(v[1:-1]) * np.minimum(np.abs(v[1:-1]), cap), 0.0)
    if n >= 2:
        v[0] = first if first is not None else (p[1] - p[0]) / (t[1] - t[0])
    return v


def point_accelerations(velocities: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Accelerations consistent with ``velocities`` (the same three-point rule), 0 at the last point."""
    return point_velocities(velocities, times)


@dataclass(frozen=True)
class RateLimits:
    """Per-joint velocity and acceleration limits (robot units per second, per second squared; inf: none).

    A safety net that clamps each commanded step, not a planner: a clamped command lags the chunk and catches up
    when the chunk slows down.
    """

    max_velocity: np.ndarray
    max_acceleration: np.ndarray

    @classmethod
    def build(
        cls, width: int, max_velocity: Sequence[float] = (), max_acceleration: Sequence[float] = ()
    ) -> RateLimits:
        """Validate lengths and values (positive); empty lists mean no limit."""

        def arr(name: str, values: Sequence[float]) -> np.ndarray:
            if len(values) == 0:
                return np.full(width, np.inf)
            a = np.asarray(values, dtype=np.float64)
            if a.shape != (width,):
                raise ValueError(f"{name} has {a.size} values but there are {width} joints")
            if not (a > 0).all():
                raise ValueError(f"{name} must be > 0 for every joint, got {a.tolist()}")
            return a

        return cls(arr("max_velocity", max_velocity), arr("max_acceleration", max_acceleration))

    @property
    def active(self) -> bool:
        """Whether any limit is finite."""
        return bool(np.isfinite(self.max_velocity).any() or np.isfinite(self.max_acceleration).any())

    def apply(
        self, start: np.ndarray, start_velocity: np.ndarray, start_time: float, positions: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, int, int]:
        """``positions`` at absolute ``times`` after the command (``start``, ``start_velocity``) at ``start_time``,
        clamped so that each step's mean velocity stays within max_velocity and changes by at most
        max_acceleration * step from the previous step's: (clamped positions, velocity clamps, acceleration clamps),
        clamps counted per joint and point."""
        out = np.array(positions, dtype=np.float64, copy=True)
        p_prev, v_prev, t_prev = np.asarray(start, float), np.asarray(start_velocity, float), float(start_time)
        n_vel = n_acc = 0
        for k in range(len(out)):
            h = float(times[k]) - t_prev
            if h <= 0:
                continue
            v = (out[k] - p_prev) / h
            v_lim = np.clip(v, -self.max_velocity, self.max_velocity)
            n_vel += int((v_lim != v).sum())
            dv = np.clip(v_lim - v_prev, -self.max_acceleration * h, self.max_acceleration * h)
            v_acc = v_prev + dv
            n_acc += int((v_acc != v_lim).sum())
            out[k] = p_prev + v_acc * h
            p_prev, v_prev, t_prev = out[k], v_acc, float(times[k])
        return out, n_vel, n_acc


def chunk_times(n_points: int, fps: float) -> np.ndarray:
    """``time_from_start`` of each action: action k is reached (k + 1) / fps after the observation."""
    return (np.arange(n_points, dtype=np.float64) + 1.0) / float(fps)
