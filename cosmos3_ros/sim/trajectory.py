# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""JointTrajectory following as ros2_control's joint_trajectory_controller does it. Pure numpy: no ROS, no MuJoCo.

Semantics (joint_trajectory_controller's ``Trajectory::sample`` and ``validate_trajectory_msg``):

* ``header.stamp`` is the trajectory's start; point k is due at ``stamp + time_from_start[k]``. A zero stamp means
  "start when first sampled" (the next control cycle after receipt).
* The state of the robot when the trajectory is first sampled (its measured position and velocity) is the point
  before the trajectory: until the first point is due, the command is interpolated from that state to the first
  point. Points already in the past are skipped: the command is taken on the segment that contains the current time,
  so a trajectory that arrives late continues mid-segment (a jump where it disagrees with the previous one). After
  the last point, the last point is held.
* Between two points: linear when the points have positions only, a cubic from positions and velocities, a quintic
  from positions, velocities and accelerations (both ends must have them; the state before the trajectory has no
  accelerations, so its segment is at most cubic).
* Rejected (with a reason, nothing changes): no joints, no points, unknown or duplicate joints, missing joints (unless
  partial goals are allowed), point sizes that do not match, non-finite values, ``time_from_start`` not strictly
  increasing, a non-zero stamp with the last point already in the past, and a non-zero velocity at the last point
  (unless allowed), as the controller's defaults do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class CommandError(ValueError):
    """A command the simulated controller refuses; ``reason`` is a short key for counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TrajectoryCommand:
    """A JointTrajectory as numbers: ``positions`` [T, n] for ``joint_names`` at ``stamp + times`` (seconds)."""

    joint_names: tuple[str, ...]
    stamp: float
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        joint_names: Sequence[str],
        stamp: float,
        times: Sequence[float],
        positions: Sequence[Sequence[float]],
        velocities: Sequence[Sequence[float]] = (),
        accelerations: Sequence[Sequence[float]] = (),
    ) -> TrajectoryCommand:
        """From per-point lists (as in the message); velocities / accelerations are used only when every point has
        them. Raises :class:`CommandError` when the shapes do not agree."""
        names = tuple(str(n) for n in joint_names)
        n, count = len(names), len(positions)
        if n == 0:
            raise CommandError("no_joints", "trajectory names no joints")
        if count == 0:
            raise CommandError("no_points", "trajectory has no points")
        if len(times) != count:
            raise CommandError("shape", f"{len(times)} times for {count} points")

        def matrix(name: str, rows: Sequence[Sequence[float]], required: bool) -> np.ndarray | None:
            sizes = {len(r) for r in rows}
            if not required and (len(rows) == 0 or sizes == {0}):
                return None
            if len(rows) != count or sizes != {n}:
                raise CommandError("shape", f"trajectory {name} must have {n} values at each of {count} points")
            return np.asarray(rows, dtype=np.float64).reshape(count, n)

        pos = matrix("positions", positions, True)
        assert pos is not None
        vel = matrix("velocities", velocities, False)
        acc = matrix("accelerations", accelerations, False)
        return cls(names, float(stamp), np.asarray(times, dtype=np.float64), pos, vel, acc)


def interpolate(
    t_a: float,
    a: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    t_b: float,
    b: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    t: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, velocity, acceleration) at ``t`` between state ``a`` at ``t_a`` and ``b`` at ``t_b``.

    A state is (positions, velocities or None, accelerations or None). Linear without velocities, cubic with them,
    quintic with velocities and accelerations at both ends; outside [t_a, t_b] the nearer end is held, linearly,
    exactly as joint_trajectory_controller's ``interpolate_between_points``.
    """
    p0, v0, a0 = a
    p1, v1, a1 = b
    span = t_b - t_a
    s = t - t_a
    has_vel = v0 is not None and v1 is not None
    has_acc = has_vel and a0 is not None and a1 is not None
    if s < 0.0:
        s, has_vel, has_acc = 0.0, False, False
    if s > span:
        s, has_vel, has_acc = span, False, False
    if not has_vel:
        slope = (p1 - p0) / span if span != 0.0 else np.zeros_like(p0)
        return p0 + s * slope, slope, np.zeros_like(p0)
    assert v0 is not None and v1 is not None
    if span == 0.0:
        return p0.copy(), v0.copy(), np.zeros_like(p0)
    if not has_acc:
        c2 = (-3.0 * p0 + 3.0 * p1 - 2.0 * v0 * span - v1 * span) / span**2
        c3 = (2.0 * p0 - 2.0 * p1 + v0 * span + v1 * span) / span**3
        pos = p0 + v0 * s + c2 * s**2 + c3 * s**3
        return pos, v0 + 2.0 * c2 * s + 3.0 * c3 * s**2, 2.0 * c2 + 6.0 * c3 * s
    assert a0 is not None and a1 is not None
    c2 = 0.5 * a0
    c3 = (-20.0 * p0 + 20.0 * p1 - 3.0 * a0 * span**2 + a1 * span**2 - 12.0 * v0 * span - 8.0 * v1 * span) / (
        2.0 * span**3
    )
    c4 = (30.0 * p0 - 30.0 * p1 + 3.0 * a0 * span**2 - 2.0 * a1 * span**2 + 16.0 * v0 * span + 14.0 * v1 * span) / (
        2.0 * span**4
    )
    c5 = (-12.0 * p0 + 12.0 * p1 - a0 * span**2 + a1 * span**2 - 6.0 * v0 * span - 6.0 * v1 * span) / (2.0 * span**5)
    pos = p0 + v0 * s + c2 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5
    vel = v0 + 2.0 * c2 * s + 3.0 * c3 * s**2 + 4.0 * c4 * s**3 + 5.0 * c5 * s**4
    acc = 2.0 * c2 + 6.0 * c3 * s + 12.0 * c4 * s**2 + 20.0 * c5 * s**3
    return pos, vel, acc


def validate(
    cmd: TrajectoryCommand,
    known: Sequence[str],
    now: float,
    *,
    allow_partial_joints_goal: bool = False,
    allow_nonzero_velocity_at_trajectory_end: bool = False,
) -> np.ndarray:
    """Check ``cmd`` as joint_trajectory_controller does at ``now``; returns the index in ``known`` of each of its
    joints. Raises :class:`CommandError` naming the first problem."""
    index = {name: i for i, name in enumerate(known)}
    unknown = [n for n in cmd.joint_names if n not in index]
    if unknown:
        raise CommandError("unknown_joints", f"trajectory names joints this robot does not have: {unknown}")
    if len(set(cmd.joint_names)) != len(cmd.joint_names):
        raise CommandError("duplicate_joints", f"trajectory names a joint twice: {list(cmd.joint_names)}")
    if not allow_partial_joints_goal and len(cmd.joint_names) != len(known):
        missing = [n for n in known if n not in cmd.joint_names]
        raise CommandError("partial_goal", f"trajectory lacks joints {missing} (partial goals are not allowed)")
    arrays = [cmd.times, cmd.positions] + [a for a in (cmd.velocities, cmd.accelerations) if a is not None]
    if not (np.isfinite(cmd.stamp) and all(np.isfinite(a).all() for a in arrays)):
        raise CommandError("non_finite", "trajectory has a non-finite stamp, time, position or derivative")
    if cmd.stamp < 0.0 or (cmd.times < 0.0).any():
        raise CommandError("negative_time", "trajectory has a negative stamp or time_from_start")
    if len(cmd.times) > 1 and not (np.diff(cmd.times) > 0.0).all():
        k = int(np.argmax(np.diff(cmd.times) <= 0.0))
        raise CommandError(
            "time_order",
            f"time_from_start of points {k} and {k + 1} is not strictly increasing "
            f"({cmd.times[k]:.6f} s, {cmd.times[k + 1]:.6f} s)",
        )
    if cmd.stamp != 0.0 and cmd.stamp + cmd.times[-1] < now:
        raise CommandError(
            "ends_in_past",
            f"trajectory with start {cmd.stamp:.3f} s ends in the past ({cmd.stamp + cmd.times[-1]:.3f} s < "
            f"{now:.3f} s)",
        )
    if (
        not allow_nonzero_velocity_at_trajectory_end
        and cmd.velocities is not None
        and np.abs(cmd.velocities[-1]).max() > np.finfo(np.float32).eps
    ):
        raise CommandError(
            "end_velocity",
            f"velocity at the last point is not zero ({cmd.velocities[-1].tolist()}); "
            "set allow_nonzero_velocity_at_trajectory_end to accept it",
        )
    return np.array([index[n] for n in cmd.joint_names], dtype=np.int64)


class TrajectoryFollower:
    """Samples one accepted trajectory over time (see the module docstring)."""

    def __init__(self, cmd: TrajectoryCommand, joints: np.ndarray) -> None:
        self.cmd = cmd
        self.joints = joints  # index of each of cmd's joints in the robot's controlled joints
        self.start: float | None = None if cmd.stamp == 0.0 else cmd.stamp
        self.time_before: float | None = None
        self.state_before: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None

    @property
    def started(self) -> bool:
        """Whether it has been sampled (its state before is known)."""
        return self.state_before is not None

    def begin(self, now: float, position: np.ndarray, velocity: np.ndarray | None) -> None:
        """First sample at ``now``: the robot's state (of this trajectory's joints) becomes the point before it."""
        if self.start is None:
            self.start = now
        self.time_before = now
        self.state_before = (
            np.asarray(position, float).copy(),
            None if velocity is None else np.asarray(velocity, float).copy(),
            None,
        )

    def end_time(self) -> float:
        """Absolute time of the last point (after :meth:`begin`)."""
        assert self.start is not None
        return self.start + float(self.cmd.times[-1])

    def _point(self, k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        c = self.cmd
        return (
            c.positions[k],
            None if c.velocities is None else c.velocities[k],
            None if c.accelerations is None else c.accelerations[k],
        )

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(position, velocity, acceleration) of this trajectory's joints at ``now``; None before :meth:`begin`'s
        time (the caller keeps its previous command). After the last point: the last point, at rest."""
        if self.state_before is None or self.time_before is None or self.start is None or now < self.time_before:
            return None
        times = self.start + self.cmd.times
        if now < times[0]:
            return interpolate(self.time_before, self.state_before, float(times[0]), self._point(0), now)
        i = int(np.searchsorted(times, now, side="right"))
        if i >= len(times):
            last = self.cmd.positions[-1].copy()
            return last, np.zeros_like(last), np.zeros_like(last)
        return interpolate(float(times[i - 1]), self._point(i - 1), float(times[i]), self._point(i), now)
