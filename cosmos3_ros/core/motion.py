# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Motion quality of the executed command stream: what each chunk boundary does to the commands. Pure numpy.

Inputs are the chunks as commanded (robot units, after the action mapping and the joint limits) and the holds:

* a :class:`CommandedChunk` has points ``positions[k]`` at absolute times ``times[k]`` and takes over at ``start``
  (when it was published; in a replay, the observation time, since inference is instantaneous in bag time);
* a :class:`Stop` (a hold) freezes the command at ``time``.

Ownership of time (:func:`chunk_spans`): chunk i owns ``[start_i, end_i]``, where ``end_i`` is the start of the next
chunk, or the first hold after ``start_i``, or the loop's own ``executed_until`` when it reports one, whichever comes
first (else its last point). Its points are then

* **skipped**: ``t < start_i``: already in the past when it arrived, never commanded;
* **executed**: ``start_i <= t <= end_i``: commanded (at the switch instant itself, the new chunk's point wins: a
  point at ``start_i`` is the new trajectory's anchor, e.g. real-time chunking's "continue from the current command");
* **replaced**: ``t > end_i``: dropped at the next replan (or by the hold).

Comparisons allow :data:`EPS`. Per boundary (:class:`Boundary`, between the command stream before a chunk and that
chunk), with ``b`` the time of the new chunk's first executed point strictly after its takeover and ``a`` the time of
the old chunk's last executed point:

* **jump** (per joint) ``= new(b) - old(b)``: the new chunk's command minus what the old chunk would have commanded
  at the same time (the old chunk interpolated at ``b``, holding its last point past its end; after a hold, the hold
  position). ``jump_max = max_j |jump_j|``, in robot units. A policy that continues its previous chunk gives 0;
* **skipped**: new-chunk points before ``start`` (never commanded);
* **repeated**: new-chunk points after ``start`` with ``t <= a + dt / 2``: a time slot the old chunk had already
  commanded is commanded a second time (``dt`` = the new chunk's point spacing);
* **gap** ``= b - a`` (seconds; ``dt`` when the grids line up; after a hold, ``a`` is the hold's time);
* **peak velocity / jerk**: the largest ``|v|`` and ``|j|`` (any joint) of the executed stream within ``window_s``
  of ``start``.

The executed stream (:func:`executed_stream`) is the executed points of every chunk plus each hold's position at its
time, in time order, interpolated linearly between points (cubic Hermite where the chunk carries point velocities,
as joint_trajectory_controller does) and resampled on a uniform grid ``t_n = t_0 + n h`` with ``h = 1 / rate``
(the control rate). Derivatives are forward finite differences of that grid::

    v_n = (p_{n+1} - p_n) / h                          at t_n + h / 2
    a_n = (p_{n+2} - 2 p_{n+1} + p_n) / h^2            at t_n + h
    j_n = (p_{n+3} - 3 p_{n+2} + 3 p_{n+1} - p_n) / h^3  at t_n + 3 h / 2

They are exact for a cubic sampled on the grid (``j = 6 c`` for ``c t^3``). For a piecewise-linear stream the jerk is
a spike of about ``|dv| / h^2`` at every point where the velocity changes, so jerk figures compare runs only at the
same rate; what they show is a boundary against the points inside chunks (:attr:`MotionReport.interior_jerk`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.core.trajectory import hermite

__all__ = [
    "Boundary",
    "ChunkSpan",
    "CommandedChunk",
    "MotionReport",
    "Stop",
    "Stream",
    "analyse",
    "chunk_spans",
    "derivatives",
    "executed_stream",
]

#: Tolerance (seconds) when comparing point times with takeover times (float stamps from bags are ns-rounded).
EPS = 1e-6


@dataclass(frozen=True)
class CommandedChunk:
    """One published chunk: ``positions`` [T, N] (as commanded) at absolute ``times`` [T] (s, increasing).

    ``start``: when it took over (published); ``executed_until``: when the loop says it was replaced, if it reports
    it; ``velocities`` [T, N]: point velocities when the trajectory carried them.
    """

    times: np.ndarray
    positions: np.ndarray
    start: float
    chunk_id: int = -1
    executed_until: float | None = None
    velocities: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.times, dtype=np.float64).reshape(-1)
        p = np.asarray(self.positions, dtype=np.float64)
        if p.ndim == 1:
            p = p[:, None]
        if p.ndim != 2 or p.shape[0] != t.size or t.size == 0:
            raise ValueError(f"positions of shape {p.shape} do not match {t.size} times")
        if t.size > 1 and not (np.diff(t) > 0).all():
            raise ValueError("chunk times must be strictly increasing")
        if not (np.isfinite(t).all() and np.isfinite(p).all() and math.isfinite(self.start)):
            raise ValueError("chunk times, positions and start must be finite")
        v = None
        if self.velocities is not None:
            v = np.asarray(self.velocities, dtype=np.float64)
            if v.shape != p.shape:
                raise ValueError(f"velocities of shape {v.shape} do not match positions {p.shape}")
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "positions", p)
        object.__setattr__(self, "velocities", v)

    @property
    def dt(self) -> float:
        """Point spacing (median), 0 for a single point."""
        return float(np.median(np.diff(self.times))) if self.times.size > 1 else 0.0

    def at(self, t: float) -> np.ndarray:
        """Command at ``t``: interpolated between points (Hermite with velocities), first/last point outside."""
        times, pos = self.times, self.positions
        if t <= times[0]:
            return pos[0].copy()
        if t >= times[-1]:
            return pos[-1].copy()
        i = int(np.searchsorted(times, t, side="right"))
        h, s = times[i] - times[i - 1], t - times[i - 1]
        if self.velocities is None:
            return pos[i - 1] + (s / h) * (pos[i] - pos[i - 1])
        return hermite(pos[i - 1], self.velocities[i - 1], pos[i], self.velocities[i], h, s)[0]


@dataclass(frozen=True)
class Stop:
    """A hold at ``time``: the command freezes (at ``position``, when known) until the next chunk."""

    time: float
    position: np.ndarray | None = None
    reason: str = ""


@dataclass(frozen=True)
class ChunkSpan:
    """Which points of a chunk ran: ``skipped`` = points [0, first), executed [first, stop), replaced [stop, T)."""

    chunk: CommandedChunk
    end: float  # end of its ownership (next takeover, hold or executed_until; +inf: ran to its last point)
    first: int
    stop: int
    ended_by: str  # "chunk", "hold" (with the hold's reason after a colon), "loop" or "end"

    @property
    def skipped(self) -> int:
        """Points already in the past when the chunk took over."""
        return self.first

    @property
    def executed(self) -> int:
        """Points commanded."""
        return self.stop - self.first

    @property
    def replaced(self) -> int:
        """Points dropped when the chunk was replaced."""
        return self.chunk.times.size - self.stop


@dataclass(frozen=True)
class Boundary:
    """What one switch of chunks did (see the module docstring for the definitions)."""

    chunk_id: int
    previous_id: int
    time: float  # the new chunk's takeover time
    first_time: float | None  # b: the new chunk's first executed point after its takeover (None: none)
    after: str  # "chunk" (a replan while the old chunk ran) or "hold:<reason>"
    jump: np.ndarray | None  # per joint, new(b) - old(b)
    skipped: int
    repeated: int
    gap_s: float | None
    peak_velocity: float = math.nan
    peak_jerk: float = math.nan

    @property
    def jump_max(self) -> float:
        """Largest joint jump in absolute value (NaN when there is none)."""
        return math.nan if self.jump is None or self.jump.size == 0 else float(np.abs(self.jump).max())

    @property
    def jump_joint(self) -> int | None:
        """Index of the joint with the largest jump."""
        return None if self.jump is None or self.jump.size == 0 else int(np.argmax(np.abs(self.jump)))

    def to_dict(self, joint_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-able (non-finite values as None)."""
        j = self.jump_joint
        name = None if j is None else (joint_names[j] if joint_names and j < len(joint_names) else f"a[{j}]")
        return {
            "chunk_id": self.chunk_id,
            "previous_id": self.previous_id,
            "time": _finite(self.time),
            "first_time": _finite(self.first_time),
            "after": self.after,
            "jump_max": _finite(self.jump_max),
            "jump_joint": name,
            "jump": None if self.jump is None else [_finite(x) for x in self.jump.tolist()],
            "skipped": self.skipped,
            "repeated": self.repeated,
            "gap_s": _finite(self.gap_s),
            "peak_velocity": _finite(self.peak_velocity),
            "peak_jerk": _finite(self.peak_jerk),
        }


@dataclass(frozen=True)
class Stream:
    """The executed command stream resampled at ``rate``: ``t`` [M], ``p`` [M, N]."""

    t: np.ndarray
    p: np.ndarray
    rate: float


@dataclass(frozen=True)
class MotionReport:
    """Spans, boundaries and the stream's overall peaks (``interior_*``: away from every boundary window)."""

    spans: list[ChunkSpan]
    boundaries: list[Boundary]
    stream: Stream | None
    rate: float
    window_s: float
    peak_velocity: float = math.nan
    peak_jerk: float = math.nan
    interior_velocity: float = math.nan
    interior_jerk: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, joint_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-able summary with every boundary."""
        jumps = [b.jump_max for b in self.boundaries if math.isfinite(b.jump_max)]
        return {
            "rate_hz": self.rate,
            "window_s": self.window_s,
            "boundaries": len(self.boundaries),
            "jump_max": _finite(max(jumps)) if jumps else None,
            "jump_median": _finite(float(np.median(jumps))) if jumps else None,
            "skipped": sum(b.skipped for b in self.boundaries),
            "repeated": sum(b.repeated for b in self.boundaries),
            "peak_velocity": _finite(self.peak_velocity),
            "peak_jerk": _finite(self.peak_jerk),
            "interior_velocity": _finite(self.interior_velocity),
            "interior_jerk": _finite(self.interior_jerk),
            "per_boundary": [b.to_dict(joint_names) for b in self.boundaries],
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def chunk_spans(chunks: Sequence[CommandedChunk], stops: Sequence[Stop] = ()) -> list[ChunkSpan]:
    """Which part of each chunk ran (module docstring), in takeover order."""
    order = sorted(chunks, key=lambda c: c.start)
    stop_times = np.sort(np.array([s.time for s in stops], dtype=np.float64))
    reasons = {s.time: s.reason for s in stops}
    spans = []
    for i, c in enumerate(order):
        end, ended_by = math.inf, "end"
        if i + 1 < len(order):
            end, ended_by = order[i + 1].start, "chunk"
        k = int(np.searchsorted(stop_times, c.start, side="right"))
        if k < stop_times.size and stop_times[k] <= end:  # a hold at the next takeover ended this chunk
            end, ended_by = float(stop_times[k]), "hold:" + reasons.get(float(stop_times[k]), "")
        if c.executed_until is not None and c.executed_until < end:
            end, ended_by = float(c.executed_until), "loop"
        first = int(np.searchsorted(c.times, c.start - EPS, side="left"))
        stop = c.times.size if math.isinf(end) else int(np.searchsorted(c.times, end + EPS, side="right"))
        spans.append(ChunkSpan(c, end, first, max(first, stop), ended_by))
    return spans


def _stream_points(spans: Sequence[ChunkSpan], stops: Sequence[Stop]) -> tuple[np.ndarray, np.ndarray]:
    """(times, positions) of every executed point and every hold with a known position, in time order."""
    ts: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    for s in spans:
        if s.executed:
            ts.append(s.chunk.times[s.first : s.stop])
            ps.append(s.chunk.positions[s.first : s.stop])
    width = ps[0].shape[1] if ps else None
    for st in stops:
        if st.position is not None and (width is None or np.asarray(st.position).size == width):
            ts.append(np.array([st.time]))
            ps.append(np.asarray(st.position, dtype=np.float64).reshape(1, -1))
    if not ts:
        return np.zeros(0), np.zeros((0, 0))
    t = np.concatenate(ts)
    p = np.concatenate(ps)
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    last = np.append(np.diff(t) > EPS, True)  # one command per instant: a hold wins over a point at its time
    return t[last], p[last]


def executed_stream(spans: Sequence[ChunkSpan], stops: Sequence[Stop] = (), rate: float = 50.0) -> Stream | None:
    """The executed points resampled at ``rate`` Hz (module docstring); None with fewer than two points."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number, got {rate}")
    t, p = _stream_points(spans, stops)
    if t.size < 2:
        return None
    h = 1.0 / rate
    n = math.floor((t[-1] - t[0]) / h + 1e-9) + 1
    grid = t[0] + h * np.arange(n)
    out = np.empty((n, p.shape[1]))
    for j in range(p.shape[1]):
        out[:, j] = np.interp(grid, t, p[:, j])
    hermite = [s for s in spans if s.executed >= 2 and s.chunk.velocities is not None]
    for s in hermite:  # replace the linear pieces inside chunks that carry velocities
        c = s.chunk
        lo, hi = c.times[s.first], c.times[s.stop - 1]
        for m in np.nonzero((grid >= lo) & (grid <= hi))[0]:
            out[m] = c.at(float(grid[m]))
    return Stream(grid, out, float(rate))


def derivatives(stream: Stream) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """((t_v, v), (t_a, a), (t_j, j)): forward differences of the grid (module docstring); arrays [M-k, N]."""
    h = 1.0 / stream.rate
    p, t = stream.p, stream.t
    v = np.diff(p, axis=0) / h
    a = np.diff(p, n=2, axis=0) / h**2
    j = np.diff(p, n=3, axis=0) / h**3
    return (t[:-1] + h / 2, v), (t[:-2] + h, a), (t[:-3] + 1.5 * h, j)


def _peak(times: np.ndarray, values: np.ndarray, lo: float, hi: float) -> float:
    sel = (times >= lo) & (times <= hi)
    return float(np.abs(values[sel]).max()) if sel.any() and values.size else math.nan


def analyse(
    chunks: Sequence[CommandedChunk],
    stops: Sequence[Stop] = (),
    *,
    rate: float = 50.0,
    window_s: float | None = None,
) -> MotionReport:
    """Spans, per-boundary figures and stream peaks. ``window_s`` defaults to two point periods of the chunks."""
    spans = chunk_spans(chunks, stops)
    dts = [s.chunk.dt for s in spans if s.chunk.dt > 0]
    dt = float(np.median(dts)) if dts else 1.0 / rate
    window = 2.0 * dt if window_s is None else float(window_s)
    stops_sorted = sorted(stops, key=lambda s: s.time)
    stream = executed_stream(spans, stops_sorted, rate)
    ders = derivatives(stream) if stream is not None else None
    boundaries = []
    for i in range(1, len(spans)):
        old, new = spans[i - 1], spans[i]
        c = new.chunk
        after_start = [k for k in range(new.first, new.stop) if c.times[k] > c.start + EPS]
        b = float(c.times[after_start[0]]) if after_start else None
        a_point = float(old.chunk.times[old.stop - 1]) if old.executed else None  # last executed point of the old
        a = a_point
        held = [s for s in stops_sorted if old.chunk.start < s.time <= c.start + EPS]
        hold = held[0] if held and old.ended_by.startswith("hold") else None
        if hold is not None:  # the stream held from hold.time at the hold's position
            before = hold.position if hold.position is not None else old.chunk.at(hold.time)
            before = np.asarray(before, dtype=np.float64).reshape(-1)
            a = hold.time if a is None else max(a, hold.time)
        jump = None
        if b is not None:
            ref = before if hold is not None else old.chunk.at(b)
            if ref.size == c.positions.shape[1]:
                jump = c.at(b) - ref
        repeated = 0
        if a_point is not None and after_start:
            executed_t = c.times[after_start]
            repeated = int((executed_t <= a_point + 0.5 * (c.dt or dt) - EPS).sum())
        pv = pj = math.nan
        if ders is not None:
            (tv, v), _, (tj, jk) = ders
            pv = _peak(tv, v, c.start - window, c.start + window)
            pj = _peak(tj, jk, c.start - window, c.start + window)
        boundaries.append(
            Boundary(
                chunk_id=c.chunk_id,
                previous_id=old.chunk.chunk_id,
                time=c.start,
                first_time=b,
                after=old.ended_by if hold is not None else "chunk",
                jump=jump,
                skipped=new.skipped,
                repeated=repeated,
                gap_s=None if (a is None or b is None) else b - a,
                peak_velocity=pv,
                peak_jerk=pj,
            )
        )
    report = MotionReport(spans, boundaries, stream, float(rate), window)
    if ders is None:
        return report
    (tv, v), _, (tj, jk) = ders
    inside_v = np.ones(tv.size, dtype=bool)
    inside_j = np.ones(tj.size, dtype=bool)
    for bd in boundaries:
        inside_v &= np.abs(tv - bd.time) > window
        inside_j &= np.abs(tj - bd.time) > window
    return MotionReport(
        spans,
        boundaries,
        stream,
        float(rate),
        window,
        peak_velocity=float(np.abs(v).max()) if v.size else math.nan,
        peak_jerk=float(np.abs(jk).max()) if jk.size else math.nan,
        interior_velocity=float(np.abs(v[inside_v]).max()) if inside_v.any() and v.size else math.nan,
        interior_jerk=float(np.abs(jk[inside_j]).max()) if inside_j.any() and jk.size else math.nan,
    )
