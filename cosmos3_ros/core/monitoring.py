# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Forecast monitoring: how far reality drifts from the world model's own forecast.

Pure numpy: no ROS, no torch. Three pieces:

- :func:`prediction_error`: the documented error metric between one predicted frame and one real frame.
- :class:`ForecastTracker`: keeps the predicted frames of recent chunks, each expected at a time stamp, matches the real
  frames to them as they arrive, and returns :class:`ErrorSample` records, per-chunk aggregates (:class:`ChunkError`)
  and a rolling summary. Bounded memory.
- :class:`DriftMonitor`: a threshold on the rolling error with an ``exceeded`` state and a ``consecutive`` count, so a
  node can WARN and optionally disarm.

The metric
----------
Both frames are converted to float RGB in [0, 1] and area-averaged down to a common small size (default 64x48, width x
height, the frame is stretched if the aspect ratios differ), then compared:

- ``nmse`` = mean((p - a)^2) / (var(a) + 1e-3): the mean squared error normalised by the variance of the actual
  (downscaled) frame, so a scene with little contrast and one with a lot are on the same scale. 0 for identical
  frames; about 1 means "as far off as predicting a flat frame of the right mean colour"; 2 is roughly what an
  unrelated frame with the same statistics gives. The epsilon (a floor of ~8 grey levels of standard deviation) keeps
  it finite on a flat frame.
- ``psnr`` = 10 log10(1 / mse) in dB, capped at :data:`PSNR_CAP_DB` (60 dB) so identical frames give a finite number.
- ``mae`` = mean |p - a|, in [0, 1].

Why: the area average is a low-pass filter that suppresses per-pixel sensor noise (a 5x5 block average divides iid noise
by 5) and small sub-block misalignments, which the world model is not expected to reproduce, while keeping what it
should get right: where things are and how the scene moved. World-model frames are low resolution anyway. Downscaling
costs about 0.5 ms for a 640x480 frame (3 ms at 1920x1080) and the comparison at 64x48x3 is negligible, so it never
competes with the control loop. nmse is the primary metric (thresholds are set on it by default); psnr and mae are
reported alongside for people used to them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: Default comparison size, (width, height).
DEFAULT_SIZE: tuple[int, int] = (64, 48)
#: PSNR reported for identical (or nearly identical) frames, in dB.
PSNR_CAP_DB: float = 60.0
#: Variance floor added to the denominator of nmse.
NMSE_EPS: float = 1e-3
#: Metrics the tracker and the drift monitor know, with True where higher is worse.
METRICS: dict[str, bool] = {"nmse": True, "mae": True, "psnr": False}


# --------------------------------------------------------------------------------------------------------------------
# Resizing and the metric
# --------------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix whose rows average the input cells each output cell covers (exact area weights)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1.0) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights.astype(np.float32)


def _rgb_and_scale(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """HxWx3 view of ``frame`` in its own dtype, and the factor that maps its values to [0, 1]."""
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 frame, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] == 1:
        arr = np.broadcast_to(arr, (*arr.shape[:2], 3))
    if arr.dtype == np.uint8:
        return arr, 1.0 / 255.0
    if arr.dtype == np.uint16:
        return arr, 1.0 / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return arr, 1.0
    raise ValueError(f"unsupported frame dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")


def as_float_rgb(frame: np.ndarray) -> np.ndarray:
    """HxWx3 float32 in [0, 1] from uint8 (0..255), uint16 (0..65535) or float (already 0..1) input; HxW and HxWx1
    become grey RGB, HxWx4 drops alpha."""
    arr, scale = _rgb_and_scale(frame)
    out = arr.astype(np.float32)
    if scale != 1.0:
        out *= np.float32(scale)
    return out


def _block_mean(arr: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Mean over fy x fx blocks of the centred largest whole multiple of the block size; float32 out."""
    h, w = arr.shape[:2]
    oh, ow = h // fy, w // fx
    y0, x0 = (h - oh * fy) // 2, (w - ow * fx) // 2
    x = arr[y0 : y0 + oh * fy, x0 : x0 + ow * fx]
    # Rows first in a narrow accumulator (strided whole-row adds are fast), then columns in float32.
    if x.dtype == np.uint8 and fy <= 257:
        rows = x[0::fy].astype(np.uint16)
    else:
        rows = x[0::fy].astype(np.float32)
    for i in range(1, fy):
        rows += x[i::fy]
    rows = rows.astype(np.float32, copy=False)
    out = rows[:, 0::fx].copy()
    for i in range(1, fx):
        out += rows[:, i::fx]
    out *= np.float32(1.0 / (fy * fx))
    return out


def area_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxW or HxWxC array to ``size`` = (width, height) by area averaging (box filter); returns float32.

    Exact for integer ratios (each output pixel is the mean of its block). For other ratios, a block mean with the
    integer factors (H // height, W // width) runs first on the centred largest whole multiple (dropping less than one
    output cell of border pixels, split between both sides), then exact area weights finish the job on the small
    intermediate. Upscaling uses the exact area weights. A 1920x1080 frame to 64x48 takes about 3 ms.
    """
    arr = np.asarray(frame)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    out_w, out_h = int(size[0]), int(size[1])
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"size must be positive, got {size}")
    fy, fx = max(1, arr.shape[0] // out_h), max(1, arr.shape[1] // out_w)
    if fy > 1 or fx > 1:
        arr = _block_mean(arr, fy, fx)
    else:
        arr = arr.astype(np.float32)
    h, w, c = arr.shape
    if (h, w) != (out_h, out_w):
        ry = _area_weights(h, out_h)  # [out_h, h]
        rx = _area_weights(w, out_w)  # [out_w, w]
        tmp = (ry @ arr.reshape(h, w * c)).reshape(out_h, w, c).transpose(0, 2, 1)  # [out_h, c, w]
        arr = np.ascontiguousarray((tmp @ rx.T).transpose(0, 2, 1))  # [out_h, out_w, c]
    return arr[:, :, 0] if squeeze else arr


def downscale(frame: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """The metric's view of a frame: float32 RGB in [0, 1], area-averaged to ``size`` (width, height)."""
    arr, scale = _rgb_and_scale(frame)
    out = area_resize(arr, size)
    if scale != 1.0:
        out *= np.float32(scale)
    return out


def _error_small(pred: np.ndarray, act: np.ndarray) -> dict[str, float]:
    diff = pred - act
    mse = float(np.mean(diff * diff, dtype=np.float64))
    var = float(np.var(act, dtype=np.float64))
    nmse = mse / (var + NMSE_EPS)
    psnr = PSNR_CAP_DB if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0) else min(PSNR_CAP_DB, 10.0 * math.log10(1.0 / mse))
    mae = float(np.mean(np.abs(diff), dtype=np.float64))
    return {"nmse": nmse, "psnr": psnr, "mae": mae}


def prediction_error(
    predicted: np.ndarray, actual: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE
) -> dict[str, float]:
    """Error between a predicted and a real frame: ``{"nmse", "psnr", "mae"}`` (see the module docstring).

    Frames may differ in size and dtype (uint8 0..255, or float 0..1): both are downscaled to ``size`` (width, height).
    """
    return _error_small(downscale(predicted, size), downscale(actual, size))


# --------------------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------------------------------


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
        err = _error_small(entry.small[k], best[2])
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


# --------------------------------------------------------------------------------------------------------------------
# Drift monitor
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftState:
    """Result of :meth:`DriftMonitor.update`.

    ``value`` is the rolling metric (mean over the window), ``exceeded`` whether it is past the threshold,
    ``consecutive`` how many updates in a row it has been past it, ``tripped`` True only on the update where
    ``exceeded`` turned on.
    """

    value: float
    exceeded: bool
    consecutive: int
    tripped: bool


class DriftMonitor:
    """Threshold on the rolling prediction error.

    The rolling value is the mean of ``metric`` over the last ``window`` samples. It is past the threshold when it is
    greater than ``threshold`` (nmse, mae) or less than it (psnr, where lower is worse). Nothing is judged before
    ``min_samples`` samples have arrived. Each :meth:`update` with new samples advances ``consecutive`` (updates in a
    row past the threshold; 0 when not). The node can WARN on ``exceeded`` and disarm when ``consecutive`` reaches its
    own limit.
    """

    def __init__(self, threshold: float, *, metric: str = "nmse", window: int = 8, min_samples: int = 1) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        if window < 1 or min_samples < 1:
            raise ValueError("window and min_samples must be >= 1")
        self.threshold = float(threshold)
        self.metric = metric
        self.window = int(window)
        self.min_samples = int(min_samples)
        self._values: deque[float] = deque(maxlen=self.window)
        self._seen = 0
        self.exceeded = False
        self.consecutive = 0
        self.trips = 0
        self.value = float("nan")

    def update(self, samples: Iterable[ErrorSample | float]) -> DriftState:
        """Feed new samples (ErrorSample records or plain metric values); returns the state after them.

        An update with no samples changes nothing and returns the current state.
        """
        n = 0
        for s in samples:
            v = s.value(self.metric) if isinstance(s, ErrorSample) else float(s)
            if math.isfinite(v):
                self._values.append(v)
                self._seen += 1
                n += 1
        if n == 0:
            return self.state()
        tripped = False
        if self._seen >= self.min_samples:
            self.value = float(np.mean(self._values))
            past = self.value > self.threshold if METRICS[self.metric] else self.value < self.threshold
            if past:
                tripped = not self.exceeded
                self.consecutive += 1
                self.trips += int(tripped)
            else:
                self.consecutive = 0
            self.exceeded = past
        return DriftState(self.value, self.exceeded, self.consecutive, tripped)

    def state(self) -> DriftState:
        """Current state (``tripped`` False)."""
        return DriftState(self.value, self.exceeded, self.consecutive, False)

    def reset(self) -> None:
        """Clear the window and the state (e.g. after re-arming)."""
        self._values.clear()
        self._seen = 0
        self.exceeded = False
        self.consecutive = 0
        self.value = float("nan")
