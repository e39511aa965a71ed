# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What a run report shows, as plain data, and the figures computed from it (no matplotlib here).

:class:`ReportData` holds the chunks as commanded, the holds, rejected inputs and drift trips (as :class:`Mark`), the
prediction errors, the per-call timing, the frame strips, the run configuration and the bag's time span.
:func:`summarize` computes the summary once, as a dict with stable keys (the replay prints it as JSON; the report
prints the same dict with the labels of :data:`LABELS`), so the two never disagree. Missing figures are None (JSON
null), never NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.core.motion import CommandedChunk, MotionReport, Stop, analyse

__all__ = [
    "LABELS",
    "ChunkTrace",
    "FrameStrip",
    "LatencyRecord",
    "Mark",
    "ReportData",
    "chunk_traces",
    "error_arrays",
    "latency_records",
    "motion_of",
    "summarize",
]


@dataclass
class ChunkTrace:
    """One published chunk: observed at ``stamp`` (s), ``actions`` [T, N] as commanded (after the action mapping and
    the joint limits), ``dt`` seconds between points; point k is at ``stamp + first_offset + k * dt``.

    ``published``: when it took over (None: at ``stamp``, as in a replay); ``raw``: the model's actions [T, N] before
    the mapping, when known; ``velocities``: point velocities, when the trajectory carried them; ``executed_until``:
    when the loop says it was replaced, if it reports it.
    """

    stamp: float
    actions: np.ndarray
    dt: float
    chunk_id: int | None = None
    first_offset: float | None = None  # time of point 0 after the stamp; None: dt
    published: float | None = None
    raw: np.ndarray | None = None
    velocities: np.ndarray | None = None
    executed_until: float | None = None
    offsets: np.ndarray | None = None  # [T] each point's time after the stamp, when not a uniform grid

    def times(self) -> np.ndarray:
        """Absolute point times."""
        if self.offsets is not None and len(self.offsets) == len(self.actions):
            return self.stamp + np.asarray(self.offsets, dtype=np.float64)
        offset = self.dt if self.first_offset is None else self.first_offset
        return self.stamp + offset + self.dt * np.arange(len(self.actions))

    def raw_times(self) -> np.ndarray:
        """Times of the raw model actions: row k at ``stamp + (k + 1) * dt`` (the model's own timing)."""
        n = 0 if self.raw is None else len(self.raw)
        return self.stamp + self.dt * (1.0 + np.arange(n))

    @property
    def start(self) -> float:
        """When the chunk took over."""
        return self.stamp if self.published is None else self.published


@dataclass
class LatencyRecord:
    """Timing of one policy call: the call, the forecast call (None when skipped or off) and its outcome.

    ``budget_s``: time from the request until the chunk then running had no point left (a call longer than that
    leaves the robot holding); None when nothing was running. ``forecast``: the loop's outcome (``ok``,
    ``not_due``, ``skipped_budget``, ``no_video``, ``error``), None when unknown. ``completed``: the loop's clock
    when the call returned; ``requested``: when it was asked for (None: unknown, see :func:`budgets`).
    """

    stamp: float
    policy_s: float
    forecast_s: float | None = None
    chunk_id: int | None = None
    forecast: str | None = None
    budget_s: float | None = None
    published: bool = True
    error: str | None = None
    completed: float | None = None
    requested: float | None = None


@dataclass
class Mark:
    """Something that happened at ``stamp``: a hold, a rejected input or a drift trip, with its ``reason``."""

    stamp: float
    reason: str
    detail: str = ""
    chunk_id: int | None = None
    position: np.ndarray | None = None  # holds: the held command


@dataclass
class FrameStrip:
    """Predicted frames of one chunk and the real frames they were compared with (None where none matched).

    ``labels`` are per-column captions (e.g. ``"k=3  nmse 0.12"``); frames are HxWx3 uint8 (or float in [0, 1]).
    """

    title: str
    predicted: Sequence[np.ndarray]
    actual: Sequence[np.ndarray | None]
    labels: Sequence[str] | None = None

    @classmethod
    def from_chunk_frames(cls, frames: Any, title: str) -> FrameStrip:
        """From a :class:`cosmos3_ros.core.forecast.ChunkFrames` (the tracker's best/worst chunk)."""
        labels = [
            f"k={k}" + ("" if math.isnan(e) else f"  nmse {e:.3g}")
            for k, e in zip(frames.steps, frames.nmse, strict=True)
        ]
        return cls(title=title, predicted=list(frames.predicted), actual=list(frames.actual), labels=labels)


@dataclass
class ReportData:
    """Everything the report shows. Lists may be empty: the section then says there is nothing to show.

    ``chunks`` take :class:`ChunkTrace` or ``(stamp, actions, dt)`` tuples; ``errors`` take records with ``stamp``,
    ``chunk_id``, ``step`` and the ``metric`` attribute (e.g. ``ErrorSample``) or dicts with those keys;
    ``latencies`` take :class:`LatencyRecord` or ``(stamp, policy_s, forecast_s)`` tuples. ``summary`` is shown
    first (keys of :data:`LABELS` get their labels; see :func:`summarize`); figures it lacks are computed here.
    ``config`` is a :func:`cosmos3_ros.bags.report_config.run_config`. ``span`` is the input's (first, last) stamp:
    the time axes show exactly that. ``control_rate`` is the rate the motion metrics resample at.
    """

    title: str = "cosmos3_ros report"
    chunks: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    latencies: list[Any] = field(default_factory=list)
    strips: list[FrameStrip] = field(default_factory=list)
    threshold: float | None = None
    metric: str = "nmse"
    action_names: list[str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    holds: list[Mark] = field(default_factory=list)
    rejections: list[Mark] = field(default_factory=list)
    drift_trips: list[Mark] = field(default_factory=list)
    config: dict[str, Any] | None = None
    span: tuple[float, float] | None = None
    control_rate: float = 50.0
    strip_note: str = ""
    counters: dict[str, int] | None = None


#: Summary keys and the labels the report prints for them (units in brackets). Keys not listed print as given.
LABELS: dict[str, str] = {
    "in_bag": "input bag",
    "out_bag": "output bag",
    "report": "report",
    "frames": "input frames",
    "rejected_frames": "rejected inputs",
    "rejected_by_reason": "rejected inputs by reason",
    "policy_calls": "policy calls",
    "chunks": "chunks published",
    "holds": "holds",
    "holds_by_reason": "holds by reason",
    "action_dimensions": "action dimensions",
    "forecasts": "forecasts run",
    "forecast_skipped": "forecasts skipped (latency budget)",
    "forecast_errors": "forecasts failed",
    "predicted_frames": "predicted frames",
    "prediction_errors": "predicted frames matched to a real frame",
    "forecast_missed": "predicted frames with no real frame",
    "prediction_error_metric": "prediction error metric",
    "prediction_error_mean": "prediction error mean",
    "prediction_error_median": "prediction error median",
    "prediction_error_worst": "prediction error worst",
    "drift_threshold": "drift threshold",
    "samples_past_threshold": "matched frames past the threshold",
    "drift_trips": "drift trips",
    "policy_latency_s": "policy call latency [s]",
    "forecast_latency_s": "forecast call latency [s]",
    "calls_over_budget": "policy calls longer than their budget",
    "boundary_jump_median": "boundary jump, median [robot units]",
    "boundary_jump_max": "boundary jump, largest [robot units]",
    "skipped_actions": "actions skipped at boundaries",
    "repeated_actions": "actions repeated at boundaries",
    "peak_velocity": "peak command velocity [units/s]",
    "replay_wall_s": "replay wall time [s]",
    "model_load_s": "model load [s]",
    "warmup_s": "warm-up [s]",
}


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def chunk_traces(items: Sequence[Any]) -> list[ChunkTrace]:
    """Chunks as :class:`ChunkTrace` with float64 [T, N] actions; empty or malformed ones are left out."""
    out = []
    for it in items:
        rec = it if isinstance(it, ChunkTrace) else ChunkTrace(float(it[0]), it[1], float(it[2]))
        acts = np.asarray(rec.actions, dtype=np.float64)
        if acts.ndim == 1:
            acts = acts[:, None]
        if acts.ndim != 2 or acts.shape[0] == 0 or not np.isfinite(acts).all() or not rec.dt > 0:
            continue
        raw = None if rec.raw is None else np.asarray(rec.raw, dtype=np.float64)
        if raw is not None and (raw.ndim != 2 or not np.isfinite(raw).all()):
            raw = None
        vel = rec.velocities
        if vel is not None and np.shape(vel) != acts.shape:
            vel = None
        out.append(
            ChunkTrace(
                float(rec.stamp),
                acts,
                float(rec.dt),
                rec.chunk_id,
                rec.first_offset,
                rec.published,
                raw,
                vel,
                rec.executed_until,
                _offsets(rec.offsets, acts.shape[0]),
            )
        )
    return sorted(out, key=lambda c: c.start)


def _offsets(offsets: Any, n: int) -> np.ndarray | None:
    if offsets is None:
        return None
    o = np.asarray(offsets, dtype=np.float64).reshape(-1)
    ok = o.size == n and np.isfinite(o).all() and (o.size < 2 or (np.diff(o) > 0).all())
    return o if ok else None


def latency_records(items: Sequence[Any]) -> list[LatencyRecord]:
    """Timing as :class:`LatencyRecord`."""
    out = []
    for it in items:
        if isinstance(it, LatencyRecord):
            out.append(it)
        else:
            fc = it[2] if len(it) > 2 else None
            out.append(LatencyRecord(float(it[0]), float(it[1]), None if fc is None else float(fc)))
    return out


def _get(rec: Any, name: str, default: Any = None) -> Any:
    if isinstance(rec, Mapping):
        return rec.get(name, default)
    return getattr(rec, name, default)


def error_arrays(items: Sequence[Any], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(stamps, values, chunk_ids, steps) of the finite samples of ``metric``."""
    stamps, values, chunk_ids, steps = [], [], [], []
    for rec in items:
        v = _get(rec, metric)
        if v is None or not math.isfinite(float(v)):
            continue
        stamps.append(float(_get(rec, "stamp")))
        values.append(float(v))
        cid = _get(rec, "chunk_id", -1)
        chunk_ids.append(-1 if cid is None else int(cid))
        steps.append(int(_get(rec, "step", 0) or 0))
    return np.array(stamps), np.array(values), np.array(chunk_ids, dtype=np.int64), np.array(steps, dtype=np.int64)


def motion_of(data: ReportData, chunks: list[ChunkTrace] | None = None) -> MotionReport:
    """The motion metrics (:func:`cosmos3_ros.core.motion.analyse`) of the chunks and holds, at the control rate."""
    chunks = chunk_traces(data.chunks) if chunks is None else chunks
    widths = Counter(c.actions.shape[1] for c in chunks)
    if len(widths) > 1:  # malformed input: measure the chunks of the usual width only
        width = widths.most_common(1)[0][0]
        chunks = [c for c in chunks if c.actions.shape[1] == width]
    commanded = [
        CommandedChunk(
            c.times(),
            c.actions,
            c.start,
            -1 if c.chunk_id is None else int(c.chunk_id),
            c.executed_until,
            c.velocities,
        )
        for c in chunks
    ]
    stops = [Stop(h.stamp, h.position, h.reason) for h in data.holds if math.isfinite(h.stamp)]
    rate = data.control_rate if data.control_rate and data.control_rate > 0 else 50.0
    return analyse(commanded, stops, rate=rate)


def budgets(chunks: list[ChunkTrace], lat: list[LatencyRecord], holds: Sequence[Mark]) -> list[float | None]:
    """Per call: its given ``budget_s``, else the time from its request to the last point of the chunk running then
    (None when none was: the first call, or after a hold). The request time, when not given, is the later of the
    observation and the previous call's return (one call is in flight at a time)."""
    starts = np.array([c.start for c in chunks])
    ends = np.array([float(c.times()[-1]) for c in chunks])
    hold_t = np.sort(np.array([h.stamp for h in holds], dtype=np.float64))
    out: list[float | None] = []
    previous: float | None = None
    for r in lat:
        requested = r.requested
        if requested is None:
            requested = r.stamp if previous is None else max(r.stamp, previous)
        previous = r.completed if r.completed is not None else previous
        if r.budget_s is not None:
            out.append(r.budget_s)
            continue
        i = int(np.searchsorted(starts, requested + 1e-9, side="right")) - 1  # the last chunk running by then
        while i >= 0 and r.chunk_id is not None and chunks[i].chunk_id == r.chunk_id:
            i -= 1  # not the call's own chunk (a replay publishes it at its request time)
        if i < 0:
            out.append(None)
            continue
        held = hold_t[(hold_t > starts[i]) & (hold_t <= requested)]
        out.append(None if held.size else float(ends[i] - requested))
    return out


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def summarize(data: ReportData, motion: MotionReport | None = None) -> dict[str, Any]:
    """The summary figures computed from ``data`` (keys of :data:`LABELS`; None where there is nothing to say).

    ``data.summary`` entries win (a replay knows its frame counts); nothing is given twice.
    """
    from cosmos3_ros.core.metrics import METRICS

    chunks = chunk_traces(data.chunks)
    lat = latency_records(data.latencies)
    _, values, _, _ = error_arrays(data.errors, data.metric)
    motion = motion if motion is not None else motion_of(data, chunks)
    out: dict[str, Any] = {
        "rejected_frames": len(data.rejections),
        "rejected_by_reason": dict(Counter(m.reason for m in data.rejections)),
        "policy_calls": len(lat),
        "chunks": len(chunks),
        "holds": len(data.holds),
        "holds_by_reason": dict(Counter(m.reason for m in data.holds)),
        "action_dimensions": max((c.actions.shape[1] for c in chunks), default=None),
    }
    outcomes = Counter(r.forecast for r in lat)
    if None in outcomes:  # outcomes unknown (plain tuples): a forecast ran where it has a time
        out["forecasts"] = sum(r.forecast_s is not None for r in lat)
    else:
        out["forecasts"] = outcomes["ok"]
        out["forecast_skipped"] = outcomes["skipped_budget"]
        out["forecast_errors"] = outcomes["error"] + outcomes["no_video"]
    higher_is_worse = METRICS.get(data.metric, True)
    out["prediction_errors"] = int(values.size)
    out["prediction_error_metric"] = data.metric
    out["prediction_error_mean"] = float(values.mean()) if values.size else None
    out["prediction_error_median"] = float(np.median(values)) if values.size else None
    out["prediction_error_worst"] = (
        (float(values.max()) if higher_is_worse else float(values.min())) if values.size else None
    )
    out["drift_threshold"] = _finite(data.threshold)
    if data.threshold is not None and values.size:
        worse = values > data.threshold if higher_is_worse else values < data.threshold
        out["samples_past_threshold"] = int(worse.sum())
    else:
        out["samples_past_threshold"] = None
    out["drift_trips"] = len(data.drift_trips)
    out["policy_latency_s"] = _spread([r.policy_s for r in lat])
    out["forecast_latency_s"] = _spread([r.forecast_s for r in lat if r.forecast_s is not None])
    over = [b is not None and r.policy_s > b for r, b in zip(lat, budgets(chunks, lat, data.holds), strict=True)]
    out["calls_over_budget"] = sum(over)
    jumps = [b.jump_max for b in motion.boundaries if math.isfinite(b.jump_max)]
    out["boundary_jump_median"] = float(np.median(jumps)) if jumps else None
    out["boundary_jump_max"] = float(max(jumps)) if jumps else None
    out["skipped_actions"] = sum(b.skipped for b in motion.boundaries)
    out["repeated_actions"] = sum(b.repeated for b in motion.boundaries)
    out["peak_velocity"] = _finite(motion.peak_velocity)
    merged = dict(data.summary)
    for k, v in out.items():
        merged.setdefault(k, v)
    order = {k: i for i, k in enumerate(LABELS)}
    return dict(sorted(merged.items(), key=lambda kv: order.get(kv[0], len(order))))
