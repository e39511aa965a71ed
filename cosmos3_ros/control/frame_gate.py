# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Which camera frames are worth decoding: a few per policy period, not every frame a fast camera sends. No ROS.

The loop uses a frame for three things: the newest frame when a chunk is planned, the frames of the other cameras
nearest to it (within ``sync_tolerance``), and the frames nearest to each forecast step (within half a period). All
three are served by frames at least ``per_period`` times the policy rate: a 30 Hz camera under a 5 Hz policy is
decoded at 20 Hz, under a 15 Hz policy at 30 Hz. A frame older than the last accepted one is always let through (the
loop decides: out of order, or a clock that jumped back).
"""

from __future__ import annotations

import threading


class FrameGate:
    """Per-camera decimation to about ``per_period`` frames per policy period (see the module docstring)."""

    def __init__(self, fps: float, per_period: int = 4) -> None:
        if fps <= 0 or per_period < 1:
            raise ValueError(f"fps must be > 0 and per_period >= 1, got {fps}, {per_period}")
        self.min_interval = 1.0 / (fps * per_period)
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def wanted(self, camera: str, stamp: float) -> bool:
        """Whether a frame of ``camera`` stamped ``stamp`` should be decoded."""
        with self._lock:
            last = self._last.get(camera)
        return last is None or not 0.0 <= stamp - last < self.min_interval

    def accepted(self, camera: str, stamp: float) -> None:
        """A frame of ``camera`` was decoded and buffered."""
        with self._lock:
            self._last[camera] = stamp

    def reset(self) -> None:
        """Forget every camera (after a clock jump)."""
        with self._lock:
            self._last.clear()
