# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""InferenceWorker: one job at a time, and stopping never waits long for a running one."""

from __future__ import annotations

import threading
import time

from cosmos3_ros.control.worker import InferenceWorker


def test_one_job_at_a_time_and_refuses_while_busy():
    w = InferenceWorker()
    gate = threading.Event()
    done = []
    assert w.submit(lambda: (gate.wait(5), done.append(1)))
    assert w.busy and not w.submit(lambda: done.append(2))
    gate.set()
    deadline = time.monotonic() + 5
    while w.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    ran = threading.Event()
    assert done == [1] and w.submit(lambda: (done.append(3), ran.set()))
    assert ran.wait(5) and w.stop(2.0) and done == [1, 3]


def test_stop_drops_a_job_that_has_not_started():
    w = InferenceWorker()
    gate, started = threading.Event(), threading.Event()
    assert w.submit(lambda: (started.set(), gate.wait(5)))
    assert started.wait(5)
    gate.set()
    w.stop(2.0)
    assert not w.submit(lambda: None)


def test_stop_returns_quickly_and_closes_after_the_running_job():
    w = InferenceWorker()
    gate, started, closed = threading.Event(), threading.Event(), threading.Event()
    assert w.submit(lambda: (started.set(), gate.wait(5)))
    assert started.wait(5)
    t0 = time.monotonic()
    assert not w.stop(0.1, on_idle=closed.set)  # the job is still running: stop does not wait for it
    assert time.monotonic() - t0 < 1.0 and not closed.is_set()
    assert not w.submit(lambda: None)  # stopped
    gate.set()
    assert closed.wait(5), "on_idle runs when the job ends"


def test_a_failing_job_does_not_kill_the_worker():
    w = InferenceWorker()
    ran = threading.Event()
    assert w.submit(lambda: 1 / 0)
    deadline = time.monotonic() + 5
    while w.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.submit(ran.set) and ran.wait(5)
    assert w.stop(1.0, on_idle=lambda: None)
