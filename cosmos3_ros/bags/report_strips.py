# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Picking the predicted-versus-actual frame strips of a report: the worst and the best chunk, ranked only among
chunks with enough matched frames.

A chunk's forecast has ``steps`` predicted frames; **enough** matched frames is :func:`enough_matched`: at least
:data:`MIN_FRACTION` (two thirds) of the steps and at least :data:`MIN_MATCHED` (all of them for a forecast shorter
than that). A chunk near the end of a bag, or one whose frames mostly fell between camera frames, has only a few
matched frames: its mean error says little, and its strip would be mostly "no matching frame", so it is not ranked.

:class:`StripPicker` keeps thumbnails in bounded memory: the predicted frames of the forecasts still open (at most
``max_pending``) and the real frames of the time they cover (at most ``max_real``). A forecast closes when a real
frame later than its last step (plus the tolerance) arrives, or at :meth:`StripPicker.finish`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.bags.report_data import FrameStrip

#: Fewest matched frames a ranked chunk has (or all of its steps, if it has fewer).
MIN_MATCHED = 3
#: Smallest fraction of a chunk's predicted frames that must have matched for it to be ranked.
MIN_FRACTION = 2 / 3


def enough_matched(matched: int, steps: int) -> bool:
    """Whether a chunk with ``matched`` of ``steps`` predicted frames matched is ranked (module docstring)."""
    need = min(steps, max(MIN_MATCHED, math.ceil(steps * MIN_FRACTION - 1e-9)))
    return steps > 0 and matched >= need


def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 thumbnail (area average) at ``size`` (width, height)."""
    from cosmos3_ros.core.metrics import downscale

    return np.clip(np.rint(downscale(image, size) * 255.0), 0, 255).astype(np.uint8)


@dataclass
class _Open:
    chunk_id: int
    stamps: list[float]
    thumbs: list[np.ndarray]
    values: dict[int, float] = field(default_factory=dict)  # step -> metric value
    actual: dict[int, float] = field(default_factory=dict)  # step -> real frame stamp


@dataclass
class _Ranked:
    chunk_id: int
    score: float
    matched: int
    strip: FrameStrip


class StripPicker:
    """Ranks chunks by the mean ``metric`` over their matched frames (see the module docstring)."""

    def __init__(
        self,
        metric: str = "nmse",
        *,
        tolerance_s: float = 0.1,
        size: tuple[int, int] = (160, 120),
        max_pending: int = 16,
        max_real: int = 600,
    ) -> None:
        from cosmos3_ros.core.metrics import METRICS

        self.metric = metric
        self.higher_is_worse = METRICS.get(metric, True)
        self.tolerance_s = float(tolerance_s)
        self.size = size
        self.max_pending = max_pending
        self._open: dict[int, _Open] = {}
        self._real: deque[tuple[float, np.ndarray]] = deque(maxlen=max_real)
        self._prev: float | None = None
        self.worst: _Ranked | None = None
        self.best: _Ranked | None = None
        self.ranked = 0
        self.unranked = 0  # closed with too few matched frames

    def forecast(self, chunk_id: int, stamps: Sequence[float], frames: Sequence[np.ndarray]) -> None:
        """A chunk's predicted frames: ``frames[k]`` expected at ``stamps[k]``."""
        if not len(stamps):
            return
        self._open[int(chunk_id)] = _Open(
            int(chunk_id), [float(s) for s in stamps], [thumbnail(f, self.size) for f in frames]
        )
        while len(self._open) > self.max_pending:
            self._close(next(iter(self._open)))

    def real(self, stamp: float, image: np.ndarray | None) -> None:
        """A real frame (of what forecasts are compared with). Forecasts the *previous* real frame was past are
        closed now: the samples a frame decides arrive after it (the loop emits the frame first)."""
        stamp = float(stamp)
        prev, self._prev = self._prev, stamp
        if prev is not None:
            for cid in [c for c, o in self._open.items() if prev > o.stamps[-1] + self.tolerance_s]:
                self._close(cid)
        if image is not None and any(
            o.stamps[0] - self.tolerance_s <= stamp <= o.stamps[-1] + self.tolerance_s for o in self._open.values()
        ):
            self._real.append((stamp, thumbnail(image, self.size)))

    def sample(self, chunk_id: int, step: int, value: float, actual_stamp: float | None) -> None:
        """A matched predicted frame: step ``step`` of chunk ``chunk_id`` scored ``value`` against the real frame
        at ``actual_stamp``."""
        o = self._open.get(int(chunk_id))
        if o is None or not (0 <= step < len(o.stamps)) or not math.isfinite(value):
            return
        o.values[int(step)] = float(value)
        if actual_stamp is not None:
            o.actual[int(step)] = float(actual_stamp)

    def finish(self) -> None:
        """Close every open forecast (end of the run)."""
        for cid in list(self._open):
            self._close(cid)

    def strips(self) -> list[FrameStrip]:
        """The worst and the best ranked chunk (one strip when they are the same chunk)."""
        out = [] if self.worst is None else [self.worst.strip]
        if self.best is not None and (self.worst is None or self.best.chunk_id != self.worst.chunk_id):
            out.append(self.best.strip)
        return out

    def note(self) -> str:
        """What the strips section says about ranking."""
        need = f"at least two thirds of its predicted frames and at least {MIN_MATCHED}"
        if self.ranked == 0:
            if self.unranked == 0:
                return "No forecast frames to show."
            return (
                f"No chunk had enough matched frames to be ranked ({need}); {self.unranked} chunks had fewer "
                "(forecasts running past the end of the input, or camera frames further apart than the policy rate)."
            )
        return (
            f"Ranked by the mean {self.metric} over matched frames among {self.ranked} chunks with enough matched "
            f"frames ({need}); {self.unranked} chunks with fewer were not ranked."
        )

    # -- internals --------------------------------------------------------------------------------------------------

    def _thumb_at(self, stamp: float | None) -> np.ndarray | None:
        if stamp is None or not self._real:
            return None
        best = min(self._real, key=lambda r: abs(r[0] - stamp))
        return best[1] if abs(best[0] - stamp) <= max(1e-6, self.tolerance_s) else None

    def _close(self, chunk_id: int) -> None:
        o = self._open.pop(chunk_id)
        steps, matched = len(o.stamps), len(o.values)
        if not enough_matched(matched, steps):
            self.unranked += 1
            return
        self.ranked += 1
        score = float(np.mean(list(o.values.values())))
        worse = (lambda a, b: a > b) if self.higher_is_worse else (lambda a, b: a < b)
        replace_worst = self.worst is None or worse(score, self.worst.score)
        replace_best = self.best is None or worse(self.best.score, score)
        if not (replace_worst or replace_best):
            return

        def strip(title: str) -> FrameStrip:
            labels = [f"k={k}" + (f"  {self.metric} {o.values[k]:.3g}" if k in o.values else "") for k in range(steps)]
            actual = [self._thumb_at(o.actual.get(k)) if k in o.values else None for k in range(steps)]
            head = f"{title}: chunk {chunk_id}, mean {self.metric} {score:.3g} over {matched} of {steps} frames"
            return FrameStrip(head, list(o.thumbs), actual, labels)

        if replace_worst:
            self.worst = _Ranked(chunk_id, score, matched, strip("Worst chunk"))
        if replace_best:
            self.best = _Ranked(chunk_id, score, matched, strip("Best chunk"))


def matched_frames(strip: FrameStrip) -> int:
    """Columns of a strip with a real frame."""
    return sum(a is not None for a in strip.actual)


def strip_summary(strips: Sequence[FrameStrip]) -> list[dict[str, Any]]:
    """Title and matched frames per strip (for tests and the JSON)."""
    return [{"title": s.title, "frames": len(s.predicted), "matched": matched_frames(s)} for s in strips]
