# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A MultiThreadedExecutor whose shutdown lets callbacks it already dispatched finish first.

rclpy's ``MultiThreadedExecutor.shutdown`` destroys its guard condition, then waits for its thread pool: a callback
dispatched just before (still queued in the pool) then fails on the destroyed guard condition, and rclpy prints
"The following exception was never retrieved: cannot use Destroyable ..." on a clean Ctrl-C. Waiting for the
dispatched callbacks first (they are short: inference never runs in one) makes shutdown quiet and clean.
"""

from __future__ import annotations

import time

from rclpy.executors import MultiThreadedExecutor


class DrainingExecutor(MultiThreadedExecutor):
    """``MultiThreadedExecutor`` that drains dispatched callbacks before shutting down (see the module docstring)."""

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        """Wait (at most ``timeout_sec``) for dispatched callbacks, then shut down as rclpy does."""
        deadline = time.monotonic() + (timeout_sec if timeout_sec is not None and timeout_sec >= 0 else 5.0)
        pending = list(self._futures)
        while pending and time.monotonic() < deadline:
            pending = [f for f in pending if not f.done()]
            time.sleep(0.005)
        for f in self._futures:
            if f.done():
                f.exception()  # fetched: a callback's own error was logged where it happened
        return super().shutdown(timeout_sec, wait_for_threads=wait_for_threads)
