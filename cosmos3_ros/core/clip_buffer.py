# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Per-camera frame buffers and multi-camera synchronisation by header stamps.

Pure Python + numpy. Times are seconds on the node clock (header stamps), so sim time and bag
time work the same as wall time.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded camera frame: ``image`` HxWx3 uint8 RGB stamped ``stamp`` seconds."""

    stamp: float
    image: np.ndarray


class FrameRejectedError(ValueError):
    """A frame was not buffered; ``reason`` is a short key for counters ("out_of_order", "non_finite_stamp",
    "negative_stamp", "future_stamp", "no_clock")."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_stamp(stamp: float, now: float | None = None, max_skew: float = float("inf")) -> None:
    """Raise FrameRejectedError for a stamp that is not finite, negative, or more than ``max_skew`` seconds ahead of
    ``now`` (a camera with a wrong clock: such a frame must never become the newest one)."""
    if not np.isfinite(stamp):
        raise FrameRejectedError("non_finite_stamp", f"stamp {stamp!r} is not finite")
    if stamp < 0:
        raise FrameRejectedError("negative_stamp", f"stamp {stamp!r} is negative")
    if now is not None and stamp - now > max_skew:
        if now <= 0.0:  # ROS time not started: under use_sim_time nothing has come on /clock yet
            raise FrameRejectedError("no_clock", f"stamp {stamp:.3f} but the node clock reads 0 (no /clock yet)")
        ahead = stamp - now
        raise FrameRejectedError(
            "future_stamp", f"stamp {stamp:.3f} is {ahead:.3f} s ahead of the node clock (max_clock_skew {max_skew})"
        )


class CameraBuffer:
    """Time-ordered frames of one camera, bounded by count (memory is ``capacity`` frames at most)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._frames: deque[Frame] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: Frame) -> None:
        """Append ``frame``; an older-or-equal stamp than the newest is rejected (FrameRejectedError)."""
        check_stamp(frame.stamp)
        if self._frames and frame.stamp <= self._frames[-1].stamp:
            raise FrameRejectedError(
                "out_of_order", f"frame stamp {frame.stamp:.6f} is not newer than {self._frames[-1].stamp:.6f}"
            )
        self._frames.append(frame)

    def newest(self) -> Frame | None:
        """The newest frame, or None."""
        return self._frames[-1] if self._frames else None

    def nearest(self, stamp: float) -> Frame | None:
        """The frame whose stamp is closest to ``stamp``, or None when empty."""
        if not self._frames:
            return None
        stamps = [f.stamp for f in self._frames]
        i = bisect.bisect_left(stamps, stamp)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        best = min(candidates, key=lambda j: abs(stamps[j] - stamp))
        return self._frames[best]

    def clear(self) -> None:
        """Drop all frames."""
        self._frames.clear()


@dataclass(frozen=True)
class Observation:
    """Synchronised newest frames of all cameras; ``stamp`` is the reference (first) camera's stamp."""

    stamp: float
    frames: dict[str, Frame]

    @property
    def oldest_stamp(self) -> float:
        """Stamp of the oldest frame taking part."""
        return min(f.stamp for f in self.frames.values())


class ClipBuffer:
    """Buffers for several cameras; thread-safe (camera callbacks add while the control loop reads)."""

    def __init__(self, cameras: list[str], capacity: int = 8) -> None:
        if not cameras:
            raise ValueError("at least one camera is needed")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera names must be unique, got {cameras}")
        self.cameras = list(cameras)
        self._buffers = {c: CameraBuffer(capacity) for c in cameras}
        self._lock = threading.Lock()

    def add(self, camera: str, stamp: float, image: np.ndarray) -> None:
        """Buffer a frame of ``camera``; raises FrameRejectedError or KeyError for an unknown camera."""
        if camera not in self._buffers:
            raise KeyError(f"unknown camera {camera!r}; configured: {self.cameras}")
        with self._lock:
            self._buffers[camera].add(Frame(float(stamp), image))

    def newest_stamp(self, camera: str) -> float | None:
        """Stamp of the newest frame of ``camera``."""
        with self._lock:
            f = self._buffers[camera].newest()
        return None if f is None else f.stamp

    def observation(self, now: float, max_age: float, sync_tolerance: float) -> tuple[Observation | None, str]:
        """The newest synchronised observation, or (None, reason) with reason "no_frames", "stale" or "unsynced".

        The first camera is the reference: its newest frame fixes the observation stamp; every other
        camera contributes its frame nearest that stamp, which must lie within ``sync_tolerance``.
        Frames older than ``max_age`` before ``now`` are never used.
        """
        with self._lock:
            ref = self._buffers[self.cameras[0]].newest()
            if ref is None:
                return None, "no_frames"
            frames = {self.cameras[0]: ref}
            for cam in self.cameras[1:]:
                f = self._buffers[cam].nearest(ref.stamp)
                if f is None:
                    return None, "no_frames"
                if abs(f.stamp - ref.stamp) > sync_tolerance:
                    return None, "unsynced"
                frames[cam] = f
        obs = Observation(ref.stamp, frames)
        if now - obs.oldest_stamp > max_age:
            return None, "stale"
        return obs, "ok"

    def clear(self) -> None:
        """Drop every camera's frames."""
        with self._lock:
            for b in self._buffers.values():
                b.clear()
