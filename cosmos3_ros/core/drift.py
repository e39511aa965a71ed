# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Drift: a threshold on the rolling prediction error, so a node can WARN and optionally disarm."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cosmos3_ros.core.forecast import ErrorSample
from cosmos3_ros.core.metrics import METRICS


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
    row past the threshold; 0 when not). ``tripped`` marks the update where ``exceeded`` turned on: the loop WARNs
    then and, with ``disarm_on_drift``, disarms.
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
