# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulated robot's joint drives and its two command inputs. Pure numpy: no ROS, no MuJoCo.

:class:`JointDrive` turns commands into per-joint drive targets (position, velocity, effort) every physics step:

* ``joint_command`` is Isaac Sim's articulation controller fed by its "ROS2 Subscribe Joint State" node: the named
  joints get the message's positions as position targets, its velocities as velocity targets and its efforts as
  joint efforts, from the next physics step on, with no interpolation; joints not named keep their targets; a
  message without names addresses every joint of the articulation in order. The header stamp is not used for
  timing. A velocity target stays until a message sets another (0 at start), so a position-only stream drives with
  zero target velocity, as Isaac's drive does (``velocity_feedforward`` instead derives it from consecutive
  positions and their header stamps).
* ``trajectory`` is ros2_control's joint_trajectory_controller with position and velocity command interfaces
  (:mod:`cosmos3_ros.sim.trajectory`): the spline's position and velocity become the targets.
* The newest command of either input wins: a JointState command cancels a running trajectory, a trajectory replaces
  JointState targets.

Targets are clamped to the joint limits, and the position target moves towards the commanded one at no more than the
joint's velocity limit (standing in for PhysX's maximum joint velocity, which MuJoCo lacks): a jump in the commands
becomes a ramp. Bad commands (non-finite values, unknown joints, mismatched sizes) are rejected whole, counted by
reason, and change nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cosmos3_ros.sim.trajectory import CommandError, TrajectoryCommand, TrajectoryFollower, validate

#: A velocity derived by ``velocity_feedforward`` lapses when no command came for this many command periods.
FEEDFORWARD_LAPSE = 2.5


@dataclass(frozen=True)
class JointLimits:
    """Per-joint position, velocity and effort limits of the controlled joints (robot units)."""

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_effort: np.ndarray

    def clip(self, positions: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``positions`` (of the joints ``idx``) clamped into the position limits."""
        return np.clip(positions, self.lower[idx], self.upper[idx])


@dataclass(frozen=True)
class DriveTargets:
    """What the drives get this physics step, and the reference they follow (before the velocity limit)."""

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    reference: np.ndarray
    reference_velocity: np.ndarray
    mode: str


class JointDrive:
    """Drive targets for ``joints`` from JointState commands and JointTrajectories (see the module docstring)."""

    def __init__(
        self,
        joints: Sequence[str],
        limits: JointLimits,
        *,
        articulation: Sequence[str] = (),
        aliases: Mapping[str, str] | None = None,
        velocity_feedforward: bool = False,
        allow_partial_joints_goal: bool = False,
        allow_nonzero_velocity_at_trajectory_end: bool = False,
    ) -> None:
        self.joints = tuple(joints)
        self.limits = limits
        self.articulation = tuple(articulation) or self.joints
        self.aliases = dict(aliases or {})
        self.velocity_feedforward = velocity_feedforward
        self.allow_partial_joints_goal = allow_partial_joints_goal
        self.allow_nonzero_velocity_at_trajectory_end = allow_nonzero_velocity_at_trajectory_end
        self._index = {name: i for i, name in enumerate(self.joints)}
        self.counters: Counter[str] = Counter()
        self.last_rejection = ""
        self.reset(np.clip(np.zeros(len(self.joints)), limits.lower, limits.upper))

    def reset(self, positions: np.ndarray) -> None:
        """Hold ``positions``: no trajectory, zero velocity and effort targets."""
        n = len(self.joints)
        self._ref = self.limits.clip(np.asarray(positions, dtype=np.float64).copy())
        self._ref_vel = np.zeros(n)
        self._effort = np.zeros(n)
        self._target = self._ref.copy()
        self._follower: TrajectoryFollower | None = None
        self._pending: TrajectoryFollower | None = None
        self._ff_last: tuple[float, np.ndarray, np.ndarray] | None = None  # stamp, positions, joints set
        self._ff_period = 0.0
        self.mode = "hold"

    def reject(self, exc: CommandError) -> None:
        """Count a rejection (also for commands refused before they reach the drive)."""
        self.counters[f"rejected.{exc.reason}"] += 1
        self.last_rejection = str(exc)

    # -- inputs ---------------------------------------------------------------------------------------------------

    def joint_command(
        self,
        names: Sequence[str],
        positions: Sequence[float] = (),
        velocities: Sequence[float] = (),
        efforts: Sequence[float] = (),
        stamp: float = 0.0,
    ) -> None:
        """An articulation-controller command; raises :class:`CommandError` (counted) when refused."""
        try:
            idx, pos, vel, eff = self._parse_joint_command(names, positions, velocities, efforts)
        except CommandError as exc:
            self.reject(exc)
            raise
        self._follower = self._pending = None
        self.mode = "joint_command"
        self.counters["joint_commands"] += 1
        if pos is not None:
            clipped = self.limits.clip(pos, idx)
            if not np.array_equal(clipped, pos):
                self.counters["clamped_commands"] += 1
            self._ref[idx] = clipped
            if vel is None and self.velocity_feedforward:
                self._feedforward(idx, clipped, stamp)
        if vel is not None:
            self._ref_vel[idx] = np.clip(vel, -self.limits.max_velocity[idx], self.limits.max_velocity[idx])
        if eff is not None:
            self._effort[idx] = np.clip(eff, -self.limits.max_effort[idx], self.limits.max_effort[idx])

    def _parse_joint_command(
        self, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float], efforts: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        names = [str(n) for n in names] or list(self.articulation)
        arrays = {"position": positions, "velocity": velocities, "effort": efforts}
        for field, values in arrays.items():
            if len(values) not in (0, len(names)):
                raise CommandError("shape", f"JointState has {len(names)} joints but {len(values)} {field} values")
        if not any(len(v) for v in arrays.values()):
            raise CommandError("empty", "JointState command has no positions, velocities or efforts")
        unknown = [n for n in names if n not in self._index and n not in self.aliases]
        if unknown:
            raise CommandError("unknown_joints", f"JointState command names joints this robot lacks: {unknown}")
        if len(set(names)) != len(names):
            raise CommandError("duplicate_joints", f"JointState command names a joint twice: {names}")
        # An alias (the mimic finger) counts only when its joint is not named itself.
        keep = [i for i, n in enumerate(names) if n in self._index or self.aliases[n] not in names]
        idx = np.array([self._index[self.aliases.get(names[i], names[i])] for i in keep], dtype=np.int64)
        out = []
        for values in arrays.values():
            if len(values) == 0:
                out.append(None)
                continue
            a = np.asarray(values, dtype=np.float64)[keep]
            if not np.isfinite(a).all():
                raise CommandError("non_finite", "JointState command has a non-finite value")
            out.append(a)
        return idx, out[0], out[1], out[2]

    def _feedforward(self, idx: np.ndarray, positions: np.ndarray, stamp: float) -> None:
        """Velocity targets from consecutive position commands of the same joints (header stamps as their times)."""
        last = self._ff_last
        self._ff_last = (stamp, positions.copy(), idx.copy())
        if last is None or stamp <= 0.0 or not np.array_equal(last[2], idx) or not 0.0 < stamp - last[0] <= 0.25:
            self._ref_vel[idx] = 0.0
            return
        self._ff_period = stamp - last[0]
        v = (positions - last[1]) / self._ff_period
        self._ref_vel[idx] = np.clip(v, -self.limits.max_velocity[idx], self.limits.max_velocity[idx])

    def trajectory(self, cmd: TrajectoryCommand, now: float) -> None:
        """A joint_trajectory_controller goal received at ``now``; it starts at the next :meth:`update`. Raises
        :class:`CommandError` (counted) when refused."""
        try:
            idx = validate(
                cmd,
                self.joints,
                now,
                allow_partial_joints_goal=self.allow_partial_joints_goal,
                allow_nonzero_velocity_at_trajectory_end=self.allow_nonzero_velocity_at_trajectory_end,
            )
        except CommandError as exc:
            self.reject(exc)
            raise
        self._pending = TrajectoryFollower(cmd, idx)
        self.counters["trajectories"] += 1

    # -- every physics step ---------------------------------------------------------------------------------------

    def update(self, now: float, position: np.ndarray, velocity: np.ndarray, dt: float) -> DriveTargets:
        """Targets for the step starting at ``now`` (seconds) from the measured ``position`` / ``velocity``."""
        if self._pending is not None:
            f, self._pending = self._pending, None
            f.begin(now, np.asarray(position)[f.joints], np.asarray(velocity)[f.joints])
            self._follower, self.mode = f, "trajectory"
        f = self._follower
        if f is not None:
            sample = f.sample(now)
            if sample is not None:
                pos, vel, _ = sample
                self._ref[f.joints] = self.limits.clip(pos, f.joints)
                vmax = self.limits.max_velocity[f.joints]
                self._ref_vel[f.joints] = np.clip(vel, -vmax, vmax)
        elif self._ff_last is not None and self._ff_period > 0.0:
            if self._ff_last[0] > 0.0 and now - self._ff_last[0] > FEEDFORWARD_LAPSE * self._ff_period:
                self._ref_vel[self._ff_last[2]] = 0.0  # the stream stopped: no velocity to feed forward
                self._ff_period = 0.0
        step = self.limits.max_velocity * dt
        self._target = self._target + np.clip(self._ref - self._target, -step, step)
        return DriveTargets(
            self._target.copy(), self._ref_vel.copy(), self._effort.copy(), self._ref.copy(), self._ref_vel.copy(),
            self.mode,
        )  # fmt: skip

    @property
    def reference(self) -> np.ndarray:
        """The commanded positions the drives follow (before the velocity limit)."""
        return self._ref.copy()

    @property
    def reference_velocity(self) -> np.ndarray:
        """The commanded velocities (velocity targets)."""
        return self._ref_vel.copy()

    @property
    def following(self) -> TrajectoryFollower | None:
        """The trajectory being followed, if any."""
        return self._follower
