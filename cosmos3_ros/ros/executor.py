# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The node's executor: rclpy's MultiThreadedExecutor without its busy loop, and with a clean shutdown.

**Busy loop.** rclpy's ``MultiThreadedExecutor`` hands a ready callback (a ``Task``) to its thread pool and goes
straight back to waiting. Until a pool thread starts the task, two things make that wait return at once: the loop
yields every task that is "not executing and not done" again (a queued task is exactly that; rclpy issues #1223,
#1452, PR #1547), and the task's callback group is still free, so the group's other entities stay in the wait set
and report ready without anything to take (turning the subscription's QoS event handlers off alone roughly halved
the spin, so they are the likely ones). The spin thread then
loops holding the GIL, which delays the pool thread further. Measured with ``/clock`` and ``/joint_states`` at 60 Hz
and a 60 Hz timer under ``use_sim_time`` (``test/test_executor.py``): the stock executor took 0.5-0.9 of a
core, some 15,000 wake-ups a second, and ran the timer at 10-35 Hz; ``SingleThreadedExecutor`` took 0.04 at 57 Hz.
Here a queued task counts as executing, and the loop waits (at most 0.2 s) until a pool thread has picked it up
before it waits again: 0.05 of a core, 200 wake-ups a second, the timer at 57 Hz (the test counts 26-45 wake-ups per
callback for the stock executor, 1.8 for this one).

**Shutdown.** ``MultiThreadedExecutor.shutdown`` destroys its guard condition, then waits for its thread pool: a
callback dispatched just before (still queued in the pool) then fails on the destroyed guard condition, and rclpy
prints "The following exception was never retrieved: cannot use Destroyable ..." on a clean Ctrl-C. Waiting for the
dispatched callbacks first (they are short: inference never runs in one) makes shutdown quiet and clean.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)

#: How long the loop waits for a pool thread to take a callback; longer only when all pool threads are busy, when
#: nothing else could run anyway.
_START_WAIT_S = 0.2


def _queued() -> bool:
    return True


class DrainingExecutor(MultiThreadedExecutor):
    """``MultiThreadedExecutor`` that never re-yields a queued callback and drains them on shutdown (module doc)."""

    def _spin_once_impl(self, timeout_sec: float | None = None, wait_condition: Callable[[], bool] = lambda: False):
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        handler.executing = _queued  # the wait loop sees it as running from now on (instance attribute)

        started = threading.Event()

        def run() -> None:
            started.set()
            try:
                handler()
            finally:
                del handler.executing  # back to Task.executing: a coroutine that awaits is resumed as rclpy does

        self._executor.submit(run)
        # Wait (briefly) until a pool thread has taken it: until then its callback group is free, so the group's other
        # entities (its QoS event handlers too) stay in the wait set and wake the loop at once (see the module doc).
        started.wait(_START_WAIT_S)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exceptions, as rclpy does

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
