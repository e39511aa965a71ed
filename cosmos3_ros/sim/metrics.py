# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""How well the robot followed the policy: tracking error, jerk, chunk boundary jumps. Pure numpy.

All times are simulated seconds. Inputs are plain arrays, so the same functions judge a live run (the harness
records the topics) and a bag.

* **tracking error**: measured joint positions minus the reference the drives were following at the same stamp
  (the simulator publishes both at the same instants), per arm joint, in radians.
* **jerk**: the second time difference of the measured joint velocities (rad/s^3), on the joint-state samples; a
  measure of how hard the commands shake the arm (sensitive to the sample rate: compare runs at the same rate).
* **chunk boundary jump**: when a new chunk takes over, how far its first point after that moment is from where the
  previous chunk would have been at the same time (the discontinuity real-time chunking removes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cosmos3_ros.core.motion import CommandedChunk


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    if v.size == 0:
        return {"rms": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
    return {
        "rms": float(np.sqrt(np.mean(v**2))),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
        "n": int(v.size),
    }


def tracking_error(
    t_measured: np.ndarray, measured: np.ndarray, t_reference: np.ndarray, reference: np.ndarray
) -> dict[str, float]:
    """Statistics of |measured - reference| over the samples whose stamps appear in both (arrays [T, joints])."""
    tm, tr = np.asarray(t_measured, float), np.asarray(t_reference, float)
    common, im, ir = np.intersect1d(np.round(tm, 6), np.round(tr, 6), return_indices=True)
    del common
    err = np.asarray(measured, float)[im] - np.asarray(reference, float)[ir]
    return _stats(err)


def jerk(t: np.ndarray, velocity: np.ndarray) -> dict[str, float]:
    """Statistics of the jerk (second difference of ``velocity`` [T, joints] at times ``t``), in units/s^3.

    Samples with uneven spacing (a gap, a reset) are left out.
    """
    t = np.asarray(t, float)
    v = np.asarray(velocity, float)
    if len(t) < 3:
        return _stats(np.array([]))
    dt = np.diff(t)
    h = np.median(dt)
    even = (np.abs(dt[1:] - h) < 0.25 * h) & (np.abs(dt[:-1] - h) < 0.25 * h)
    j = (v[2:] - 2.0 * v[1:-1] + v[:-2]) / h**2
    return _stats(j[even])


def moves_toward(
    t_measured: np.ndarray,
    measured: np.ndarray,
    t_reference: np.ndarray,
    reference: np.ndarray,
    *,
    min_error: float = 0.05,
    min_speed: float = 0.05,
) -> tuple[float, int]:
    """Whether the joints move towards their reference: the fraction of samples (joint and time, where the
    reference is more than ``min_error`` away and the joint moves faster than ``min_speed``) in which the joint's
    velocity points at the reference, and how many samples that is. 0.5 is chance; a joint that follows is well
    above it even when the reference jumps faster than the joint can go."""
    tm, tr = np.round(np.asarray(t_measured, float), 6), np.round(np.asarray(t_reference, float), 6)
    t, im, ir = np.intersect1d(tm, tr, return_indices=True)
    if len(t) < 3:
        return float("nan"), 0
    q, r = np.asarray(measured, float)[im], np.asarray(reference, float)[ir]
    speed = np.gradient(q, t, axis=0)
    error = r - q
    mask = (np.abs(error) > min_error) & (np.abs(speed) > min_speed)
    n = int(mask.sum())
    return (float((np.sign(speed) == np.sign(error))[mask].mean()) if n else float("nan")), n


@dataclass(frozen=True)
class Chunk:
    """A received JointTrajectory: ``positions`` [T, n] at absolute ``times`` [T] (stamp + time_from_start),
    optional ``velocities``, and when it arrived (simulated seconds). ``hold``: a one-point, zero-stamp hold."""

    received: float
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray | None = None
    hold: bool = False

    def position_at(self, t: float) -> np.ndarray:
        """The position this chunk commands at ``t`` through its own points: its first point before them, its last
        after them, the spline between them (cubic with velocities, else linear; as the report evaluates chunks)."""
        return CommandedChunk(self.times, self.positions, self.received, velocities=self.velocities).at(t)


def boundary_jumps(chunks: Sequence[Chunk], joints: slice = slice(0, 7)) -> dict[str, float]:
    """Statistics of the largest per-joint jump (over ``joints``) where each chunk takes over from the previous one
    still running: at the new chunk's first point after it arrived, its position minus the previous chunk's at that
    time (the definition of cosmos3_ros.control.chunking.boundary_jump). Holds end the running chunk: the next chunk
    after a hold is not a boundary."""
    jumps = []
    previous: Chunk | None = None
    for c in chunks:
        if c.hold:
            previous = None
            continue
        after = np.nonzero(c.times > c.received + 1e-9)[0]
        if previous is not None and len(after) and c.times[after[0]] <= previous.times[-1] + 1e-9:
            t = float(c.times[after[0]])
            jump = np.abs(c.positions[after[0]][joints] - previous.position_at(t)[joints])
            jumps.append(float(jump.max()))
        previous = c
    return _stats(np.array(jumps))


def summarize(values: Sequence[float]) -> dict[str, float]:
    """rms / p95 / max / n of absolute values (for other per-sample figures)."""
    return _stats(np.asarray(values, dtype=np.float64))
