# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Real-time chunking (RTC) by hard inpainting, and the delay estimate it needs. Pure numpy, no ROS, no torch.

How chunks join (Black et al., "Real-Time Execution of Action Chunking Flow Policies", and lerobot's RTC):

* every chunk the controller executes is a :class:`Plan`: robot-space commands on a time grid,
  ``base + (j + 1) * dt`` for row j (``dt = 1 / fps``);
* when chunk k+1 is requested from an observation at ``t_obs``, its grid continues chunk k's: its base is
  ``t_obs`` rounded to the nearest point of chunk k's grid (at most half a step, 33 ms at 15 fps);
* the first ``d`` rows of chunk k+1 are the rows of chunk k that will still run while the model thinks (the
  inference delay). They go to the model as clean, given rows (the pipeline's action condition mask), in model
  units (the inverse of the action mapping of what was commanded), and come back unchanged: chunk k+1 starts
  exactly where chunk k is when it arrives. Past the end of chunk k the prefix holds its last row (never zeros);
* only hard inpainting: rows after ``d`` are free. Soft, decaying prefix weights (lerobot's prefix attention
  schedules) need guidance through the network's Jacobian, which Cosmos 3's pipeline does not offer; they are
  not used.

The delay ``d`` (policy steps): ``ceil((age + L) / dt) + 1``, where ``age`` is how far the request time is past
the new grid's base and ``L`` the 95th percentile of the last :data:`WINDOW` policy latencies measured on the node
clock (request to result, so it includes queueing and transport). The first result after a start or reset (the
cold call) is never counted: lerobot PR #4223 found that one warm-up spike in a running maximum inflated d for
good. Which rows really ran before the new chunk took over is decided by time when it arrives (measured
consumption), never by the estimate.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from cosmos3_ros.core.trajectory import ActionMapping, RateLimits, Trajectory, point_accelerations, point_velocities

#: Latencies the delay estimate looks at (the newest).
WINDOW = 20
#: Percentile of those latencies used as "the" latency.
QUANTILE = 0.95
#: Rows due sooner than this after the switch are not published (they would be in the past on arrival).
MIN_LEAD_S = 1e-3


class DelayEstimator:
    """Recent policy latencies on the node clock; the first result after :meth:`reset` is skipped (cold call)."""

    def __init__(self, window: int = WINDOW, quantile: float = QUANTILE, skip: int = 1) -> None:
        self._window: deque[float] = deque(maxlen=window)
        self.quantile = quantile
        self.skip = skip
        self._skipped = 0

    def reset(self) -> None:
        """Forget every latency (a restart, a clock jump); the next result is skipped again."""
        self._window.clear()
        self._skipped = 0

    def add(self, latency_s: float) -> None:
        """Record one request-to-result latency (seconds, node clock); negative or non-finite values are ignored."""
        if not math.isfinite(latency_s) or latency_s < 0:
            return
        if self._skipped < self.skip:
            self._skipped += 1
            return
        self._window.append(float(latency_s))

    @property
    def samples(self) -> int:
        """Latencies in the window."""
        return len(self._window)

    def latency(self) -> float | None:
        """The ``quantile`` of the window (the nearest sample: of 20, the second highest), None without samples."""
        if not self._window:
            return None
        return float(np.quantile(np.fromiter(self._window, float), self.quantile, method="nearest"))

    def delay_steps(self, age_s: float, dt: float) -> int | None:
        """Rows of a chunk requested ``age_s`` after its grid base that run before it arrives, plus one (the row
        the command is interpolating towards when it arrives); None without samples."""
        latency = self.latency()
        if latency is None:
            return None
        return max(1, math.ceil((max(0.0, age_s) + latency) / dt - 1e-9) + 1)


@dataclass(frozen=True)
class Plan:
    """A chunk as the controller executes it: ``positions[j]`` (robot units, after mapping, limits and rate
    clamps) is commanded at ``base + (j + 1) * dt``."""

    base: float
    dt: float
    positions: np.ndarray  # [H, N]

    def times(self) -> np.ndarray:
        """Absolute times of the rows."""
        return self.base + (np.arange(len(self.positions)) + 1.0) * self.dt

    def snap(self, stamp: float) -> tuple[float, int]:
        """The point of this grid nearest ``stamp`` as a new grid base, and its offset in rows from this base."""
        m = round((stamp - self.base) / self.dt)
        return self.base + m * self.dt, m

    def rows(self, start: int, count: int) -> np.ndarray:
        """``count`` rows from row ``start``; rows past the end repeat the last one (the position the plan ends
        at, which is also where a hold would leave the robot)."""
        idx = np.clip(np.arange(start, start + count), 0, len(self.positions) - 1)
        return self.positions[idx].copy()


def boundary_jump(old: Plan | None, new: Plan, t_switch: float) -> float | None:
    """Largest joint difference, at the first grid time of ``new`` after ``t_switch``, between the new plan and
    the old one (the command the switch changes); None when there is no old plan or it has ended by then."""
    if old is None:
        return None
    t_new = new.times()
    after = np.nonzero(t_new > t_switch + 1e-9)[0]
    if len(after) == 0:
        return None
    j = int(after[0])
    t_old = old.times()
    if t_new[j] > t_old[-1] + 1e-9:
        return None
    i = int(np.argmin(np.abs(t_old - t_new[j])))
    if abs(t_old[i] - t_new[j]) > 1e-6:  # grids not aligned (RTC off): interpolate the old plan linearly
        old_pos = np.array([np.interp(t_new[j], t_old, old.positions[:, c]) for c in range(old.positions.shape[1])])
    else:
        old_pos = old.positions[i]
    return float(np.abs(new.positions[j] - old_pos).max())


@dataclass(frozen=True)
class Joined:
    """A plan joined to the command stream: the trajectory to publish and what the join did."""

    trajectory: Trajectory
    plan: Plan  # the plan with the published rows as clamped
    kept: np.ndarray  # indices of the plan rows published
    consumed: int  # rows already due at the switch (measured, not estimated)
    prepended: bool  # whether point 0 is the current command
    velocity_clamps: int
    acceleration_clamps: int


def join(
    plan: Plan,
    start: tuple[np.ndarray, np.ndarray] | None,
    now: float,
    chunk_id: int,
    mapping: ActionMapping,
    limits: RateLimits | None = None,
    accelerations: bool = False,
) -> Joined:
    """The trajectory that switches to ``plan`` at ``now``.

    Rows already due are dropped (counted as ``consumed``). With ``start`` (the position and velocity commanded at
    ``now``), point 0 is that command, so the new trajectory continues from it instead of stepping, and the rate
    limits clamp every following step from there (then the joint limits again). Every point carries velocities
    (:func:`~cosmos3_ros.core.trajectory.point_velocities`, 0 at the end), and accelerations when asked.
    """
    t = plan.times()
    keep = t > now + MIN_LEAD_S
    kept = np.nonzero(keep)[0]
    if len(kept) == 0:
        raise ValueError("every row of the plan is already due")
    pos, times = plan.positions[kept], t[kept]
    n_vel = n_acc = 0
    first_v = None
    if start is not None:
        p0, v0 = (np.asarray(a, dtype=np.float64) for a in start)
        if limits is not None and limits.active:
            pos, n_vel, n_acc = limits.apply(p0, v0, now, pos, times)
            pos = np.clip(pos, mapping.lower, mapping.upper)
        all_pos, all_t, first_v = np.vstack([p0[None, :], pos]), np.concatenate([[now], times]), v0
    else:
        all_pos, all_t = pos, times
    new_rows = plan.positions.copy()
    new_rows[kept] = pos
    stamp = min(plan.base, now)
    vel = point_velocities(all_pos, all_t, first=first_v)
    acc = point_accelerations(vel, all_t) if accelerations else None
    traj = Trajectory(mapping.joint_names, all_pos, all_t - stamp, stamp, chunk_id, velocities=vel, accelerations=acc)
    return Joined(traj, Plan(plan.base, plan.dt, new_rows), kept, int((~keep).sum()), start is not None, n_vel, n_acc)
