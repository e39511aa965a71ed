# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Small thread-safe statistics for diagnostics: latency percentiles, rates, counters."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class LatencyStats:
    """The last ``window`` samples (seconds) with last / p50 / p95 / max."""

    def __init__(self, window: int = 100) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, seconds: float) -> None:
        """Record one sample."""
        with self._lock:
            self._samples.append(float(seconds))
            self.count += 1

    def summary(self) -> dict[str, float]:
        """``last``, ``p50``, ``p95``, ``max`` in seconds (NaN when empty) and ``count``."""
        with self._lock:
            s = np.asarray(self._samples, dtype=np.float64)
        if s.size == 0:
            return {"last": float("nan"), "p50": float("nan"), "p95": float("nan"), "max": float("nan"), "count": 0}
        return {
            "last": float(s[-1]),
            "p50": float(np.percentile(s, 50)),
            "p95": float(np.percentile(s, 95)),
            "max": float(s.max()),
            "count": self.count,
        }

    def p95(self) -> float | None:
        """95th percentile, or None without samples."""
        v = self.summary()["p95"]
        return None if np.isnan(v) else v


class RateEstimator:
    """Message rate (Hz) from the stamps of the last ``window`` events."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def tick(self, t: float) -> None:
        """Record an event at time ``t`` (seconds)."""
        with self._lock:
            self._times.append(float(t))

    def rate(self, now: float | None = None, timeout: float = 2.0) -> float:
        """Events per second over the window; 0 when fewer than 2 events or the last is older than ``timeout``."""
        with self._lock:
            times = list(self._times)
        if len(times) < 2:
            return 0.0
        if now is not None and now - times[-1] > timeout:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0


class Counters:
    """Named counters (thread-safe)."""

    def __init__(self) -> None:
        self._c: Counter[str] = Counter()
        self._lock = threading.Lock()

    def inc(self, key: str, n: int = 1) -> None:
        """Add ``n`` to ``key``."""
        with self._lock:
            self._c[key] += n

    def get(self, key: str) -> int:
        """Current value of ``key``."""
        with self._lock:
            return self._c[key]

    def snapshot(self) -> dict[str, int]:
        """Copy of all counters."""
        with self._lock:
            return dict(self._c)
