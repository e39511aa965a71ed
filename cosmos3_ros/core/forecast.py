# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Forecast tracking: match real frames to the predicted frames of recent chunks and measure the error.

:class:`ForecastTracker` keeps the predicted frames of recent chunks, each expected at a time stamp, matches the real
frames to them as they arrive, and returns :class:`ErrorSample` records, per-chunk aggregates (:class:`ChunkError`)
and a rolling summary, in bounded memory. The metric is :func:`cosmos3_ros.core.metrics.prediction_error`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos3_ros.core.metrics import DEFAULT_SIZE, METRICS, compare_small, downscale


@dataclass(frozen=True)
class ErrorSample:
    """One predicted frame matched with one real frame.

    ``stamp`` is the time the predicted frame was expected at (s), ``actual_stamp`` the real frame's time.
    """

    chunk_id: int
    step: int
    stamp: float
    actual_stamp: float
    nmse: float
    psnr: float
    mae: float

    def value(self, metric: str) -> float:
        """The value of ``metric`` ("nmse", "psnr" or "mae")."""
        return float(getattr(self, metric))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly)."""
        return {
            "chunk_id": self.chunk_id,
            "step": self.step,
            "stamp": self.stamp,
            "actual_stamp": self.actual_stamp,
            "nmse": self.nmse,
            "psnr": self.psnr,
            "mae": self.mae,
        }


@dataclass(frozen=True)
class ChunkError:
    """Aggregate over one chunk's forecast once every step is resolved (matched or missed).

    Means are over matched steps and NaN when none matched. ``first_stamp`` is the expected time of step 0.
    """

    chunk_id: int
    first_stamp: float
    steps: int
    matched: int
    missed: int
    mean_nmse: float
    mean_psnr: float
    mean_mae: float
    max_nmse: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly; NaN stays NaN)."""
        return dict(self.__dict__)


@dataclass
class ChunkFrames:
    """Predicted and matched real frames of one chunk, at the tracker's ``keep_frames_size`` (uint8 RGB).

    ``score`` is the mean of the tracker's ``metric`` over matched steps (what best/worst are ranked by).
    ``actual[k]`` is None for a step no real frame matched; ``nmse[k]`` is NaN there.
    """

    chunk_id: int
    metric: str
    score: float
    mean_nmse: float
    steps: list[int]
    stamps: list[float]
    predicted: list[np.ndarray]
    actual: list[np.ndarray | None]
    nmse: list[float]


class _Pending:
    """A forecast still waiting for real frames."""

    __slots__ = ("best", "chunk_id", "frames", "resolved", "results", "small", "stamps", "thumbs")

    def __init__(self, chunk_id: int, stamps: list[float], small: list[np.ndarray], thumbs: list[np.ndarray] | None):
        self.chunk_id = chunk_id
        self.stamps = stamps
        self.small = small
        self.thumbs = thumbs
        # Per step: best candidate so far as (abs time difference, actual stamp, actual small frame, actual thumb).
        self.best: list[tuple[float, float, np.ndarray, np.ndarray | None] | None] = [None] * len(stamps)
        self.resolved = [False] * len(stamps)
        self.results: list[ErrorSample | None] = [None] * len(stamps)


def _to_uint8(small: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def _nanmean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


class ForecastTracker:
    """Matches real frames to the predicted frames of recent chunks and measures the error.

    Matching rule: a predicted frame expected at ``s`` takes the real frame whose stamp is closest to ``s`` among those
    within ``tolerance_s`` of it. It is decided as soon as a real frame at or after ``s`` arrives (any later frame can
    only be farther), so a sample comes out at most one camera frame late; a predicted frame that no real frame came
    within the tolerance of is counted as ``missed`` once a real frame later than ``s + tolerance_s`` arrives. Each
    predicted frame is matched at most once; one real frame may match steps of several overlapping chunks. Frames are
    expected in non-decreasing stamp order; a jump back in time (a bag loop) is detected and drops the pending forecasts
    (or call :meth:`reset`).

    Bounded memory: predicted frames are kept only at the metric's size (plus optional thumbnails for the report), at
    most ``max_pending`` forecasts are pending (adding one more evicts the oldest, counted in ``evicted``), completed
    chunk aggregates are kept in a ring of ``keep_chunks``, and error samples in a ring of ``window``.

    Thread-safe (one lock): the node may call :meth:`add_forecast` from its inference thread and :meth:`observe` from
    its camera callback.

    Args:
        tolerance_s: largest |real stamp - expected stamp| that still matches; half the control period is a good value.
        max_pending: most forecasts kept waiting at once.
        size: metric comparison size (width, height).
        window: number of recent samples the rolling summary covers.
        metric: metric of the rolling summary and of best/worst chunk ranking ("nmse", "psnr" or "mae").
        keep_chunks: completed :class:`ChunkError` records kept for :meth:`drain_completed`.
        keep_frames_size: if set (width, height), keep thumbnails and remember the best and worst completed chunk's
            predicted-versus-actual frames (:attr:`best_chunk`, :attr:`worst_chunk`) for a report.
    """

    def __init__(
        self,
        tolerance_s: float,
        *,
        max_pending: int = 16,
        size: tuple[int, int] = DEFAULT_SIZE,
        window: int = 50,
        metric: str = "nmse",
        keep_chunks: int = 1000,
        keep_frames_size: tuple[int, int] | None = None,
    ) -> None:
        if not (tolerance_s > 0 and math.isfinite(tolerance_s)):
            raise ValueError(f"tolerance_s must be a positive number, got {tolerance_s}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        self.tolerance_s = float(tolerance_s)
        self.max_pending = int(max_pending)
        self.size = (int(size[0]), int(size[1]))
        self.window = int(window)
        self.metric = metric
        self.keep_frames_size = (
            None if keep_frames_size is None else (int(keep_frames_size[0]), int(keep_frames_size[1]))
        )
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._recent: deque[ErrorSample] = deque(maxlen=self.window)
        self._completed: deque[ChunkError] = deque(maxlen=int(keep_chunks))
        self._last: ErrorSample | None = None
        self.best_chunk: ChunkFrames | None = None
        self.worst_chunk: ChunkFrames | None = None
        self.forecasts = 0
        self.matched = 0
        self.missed = 0
        self.evicted = 0
        self.chunks_completed = 0
        self.time_jumps = 0
        #: A real frame this much older than the newest one seen counts as a time jump (see :meth:`observe`).
        self.jump_back_s = max(1.0, 10.0 * self.tolerance_s)
        self._last_stamp: float | None = None

    # -- input ------------------------------------------------------------------------------------------------------

    def add_forecast(self, chunk_id: int, stamps: Sequence[float], frames: np.ndarray | Sequence[np.ndarray]) -> None:
        """Register a forecast: ``frames[k]`` (HxWx3, uint8 or float 0..1) is expected at ``stamps[k]`` seconds.

        Frames are downscaled here (the caller's arrays are not kept). Adding beyond ``max_pending`` evicts the oldest
        pending forecast; its unresolved steps are counted in ``evicted``.
        """
        stamps_f = [float(s) for s in stamps]
        if len(stamps_f) != len(frames):
            raise ValueError(f"{len(stamps_f)} stamps for {len(frames)} frames")
        if not stamps_f:
            return
        if not all(math.isfinite(s) for s in stamps_f):
            raise ValueError(f"forecast stamps must be finite, got {stamps_f}")
        if any(b < a for a, b in itertools.pairwise(stamps_f)):
            raise ValueError("forecast stamps must be non-decreasing")
        small = [downscale(f, self.size) for f in frames]
        thumbs = None
        if self.keep_frames_size is not None:
            thumbs = [_to_uint8(downscale(f, self.keep_frames_size)) for f in frames]
        entry = _Pending(int(chunk_id), stamps_f, small, thumbs)
        with self._lock:
            self.forecasts += 1
            self._pending.append(entry)
            while len(self._pending) > self.max_pending:
                old = self._pending.pop(0)
                self.evicted += sum(1 for r in old.resolved if not r)

    def observe(self, stamp: float, frame: np.ndarray) -> list[ErrorSample]:
        """Offer a real frame taken at ``stamp`` seconds; returns the error samples this decided (often empty).

        A stamp more than :attr:`jump_back_s` before the newest one seen (a bag loop, a sim-time reset) drops the
        pending forecasts first (counted in ``time_jumps``).
        """
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        with self._lock:
            if self._last_stamp is not None and stamp < self._last_stamp - self.jump_back_s:
                self.time_jumps += 1
                self.evicted += sum(sum(1 for r in e.resolved if not r) for e in self._pending)
                self._pending.clear()
                self._recent.clear()
                self._last = None
                self._last_stamp = stamp
            else:
                self._last_stamp = stamp if self._last_stamp is None else max(stamp, self._last_stamp)
            if not self._pending:
                return []
            tol = self.tolerance_s
            rgb_small: np.ndarray | None = None
            thumb: np.ndarray | None = None
            out: list[ErrorSample] = []
            for entry in self._pending:
                stamps = entry.stamps
                # Candidates: unresolved steps with |stamp - s| <= tol (stamps are sorted).
                lo = bisect.bisect_left(stamps, stamp - tol)
                hi = bisect.bisect_right(stamps, stamp + tol)
                for k in range(lo, hi):
                    if entry.resolved[k]:
                        continue
                    diff = abs(stamp - stamps[k])
                    best = entry.best[k]
                    if best is None or diff < best[0]:
                        if rgb_small is None:
                            rgb_small = downscale(frame, self.size)
                            if self.keep_frames_size is not None:
                                thumb = _to_uint8(downscale(frame, self.keep_frames_size))
                        entry.best[k] = (diff, stamp, rgb_small, thumb)
                # Decide: steps expected at or before this frame can not get a closer frame later.
                last = bisect.bisect_right(stamps, stamp)
                for k in range(last):
                    if entry.resolved[k]:
                        continue
                    best = entry.best[k]
                    if best is not None:
                        sample = self._finish_step(entry, k, best)
                        out.append(sample)
                    elif stamp > stamps[k] + tol:
                        entry.resolved[k] = True
                        self.missed += 1
            self._collect_done()
            return out

    def flush(self) -> list[ErrorSample]:
        """Decide every pending step now (end of stream): steps with a candidate are matched, the rest missed.

        Completes every pending chunk; returns the samples decided.
        """
        with self._lock:
            out: list[ErrorSample] = []
            for entry in self._pending:
                for k in range(len(entry.stamps)):
                    if entry.resolved[k]:
                        continue
                    best = entry.best[k]
                    if best is not None:
                        out.append(self._finish_step(entry, k, best))
                    else:
                        entry.resolved[k] = True
                        self.missed += 1
            self._collect_done()
            return out

    def reset(self) -> None:
        """Forget pending forecasts and the rolling window (after a time jump); totals are kept."""
        with self._lock:
            self._last_stamp = None
            self._pending.clear()
            self._recent.clear()
            self._last = None

    # -- internals --------------------------------------------------------------------------------------------------

    def _finish_step(
        self, entry: _Pending, k: int, best: tuple[float, float, np.ndarray, np.ndarray | None]
    ) -> ErrorSample:
        err = compare_small(entry.small[k], best[2])
        sample = ErrorSample(entry.chunk_id, k, entry.stamps[k], best[1], err["nmse"], err["psnr"], err["mae"])
        entry.resolved[k] = True
        entry.results[k] = sample
        self.matched += 1
        self._recent.append(sample)
        self._last = sample
        return sample

    def _collect_done(self) -> None:
        still: list[_Pending] = []
        for entry in self._pending:
            if all(entry.resolved):
                self._complete(entry)
            else:
                still.append(entry)
        self._pending = still

    def _complete(self, entry: _Pending) -> None:
        got = [r for r in entry.results if r is not None]
        nm = [r.nmse for r in got]
        rec = ChunkError(
            chunk_id=entry.chunk_id,
            first_stamp=entry.stamps[0],
            steps=len(entry.stamps),
            matched=len(got),
            missed=len(entry.stamps) - len(got),
            mean_nmse=_nanmean(nm),
            mean_psnr=_nanmean([r.psnr for r in got]),
            mean_mae=_nanmean([r.mae for r in got]),
            max_nmse=float(max(nm)) if nm else float("nan"),
        )
        self._completed.append(rec)
        self.chunks_completed += 1
        if entry.thumbs is None or not got:
            return
        score = _nanmean([r.value(self.metric) for r in got])
        higher_is_worse = METRICS[self.metric]
        worst = self.worst_chunk
        best = self.best_chunk
        replace_worst = worst is None or (score > worst.score if higher_is_worse else score < worst.score)
        replace_best = best is None or (score < best.score if higher_is_worse else score > best.score)
        if not (replace_worst or replace_best):
            return
        cf = ChunkFrames(
            chunk_id=entry.chunk_id,
            metric=self.metric,
            score=score,
            mean_nmse=rec.mean_nmse,
            steps=list(range(len(entry.stamps))),
            stamps=list(entry.stamps),
            predicted=list(entry.thumbs),
            actual=[None if (b is None or r is None) else b[3] for b, r in zip(entry.best, entry.results, strict=True)],
            nmse=[float("nan") if r is None else r.nmse for r in entry.results],
        )
        if replace_worst:
            self.worst_chunk = cf
        if replace_best:
            self.best_chunk = cf

    # -- output -----------------------------------------------------------------------------------------------------

    def drain_completed(self) -> list[ChunkError]:
        """Return and forget the chunk aggregates completed since the last call (oldest first)."""
        with self._lock:
            out = list(self._completed)
            self._completed.clear()
            return out

    @property
    def pending(self) -> int:
        """Number of forecasts still waiting for real frames."""
        with self._lock:
            return len(self._pending)

    def recent(self) -> list[ErrorSample]:
        """The samples of the rolling window, oldest first."""
        with self._lock:
            return list(self._recent)

    def summary(self) -> dict[str, Any]:
        """Diagnostics: ``last``, ``mean`` and ``max`` of ``metric`` over the rolling window (NaN when empty; for psnr
        ``max`` is the worst, i.e. the lowest value), plus the counters."""
        with self._lock:
            vals = [s.value(self.metric) for s in self._recent]
            if vals:
                worst = max(vals) if METRICS[self.metric] else min(vals)
                last = self._last.value(self.metric) if self._last is not None else float("nan")
                mean = float(np.mean(vals))
            else:
                worst = last = mean = float("nan")
            return {
                "metric": self.metric,
                "last": last,
                "mean": mean,
                "max": worst,
                "window": len(vals),
                "forecasts": self.forecasts,
                "pending": len(self._pending),
                "matched": self.matched,
                "missed": self.missed,
                "evicted": self.evicted,
                "time_jumps": self.time_jumps,
                "chunks_completed": self.chunks_completed,
            }
