# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""One inference worker thread: model calls never run in a ROS callback, and stopping never waits for one.

At most one job runs at a time; :meth:`InferenceWorker.submit` refuses (returns False) while one runs or after
:meth:`stop`. :meth:`stop` waits at most ``timeout`` seconds for the running job; a job still running then finishes
in the background (the thread is a daemon), and ``on_idle`` (e.g. closing the backend) runs when it does. No ROS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class InferenceWorker:
    """A daemon thread that runs submitted jobs one at a time (see the module docstring)."""

    def __init__(self, name: str = "cosmos3_infer") -> None:
        self._cv = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._running = False
        self._stopped = False
        self._on_idle: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a job is queued or running."""
        with self._cv:
            return self._job is not None or self._running

    def submit(self, job: Callable[[], None]) -> bool:
        """Run ``job`` on the worker thread; False (job not taken) while busy or after stop."""
        with self._cv:
            if self._stopped or self._job is not None or self._running:
                return False
            self._job = job
            self._cv.notify_all()
            return True

    def stop(self, timeout: float = 0.0, on_idle: Callable[[], None] | None = None) -> bool:
        """Refuse new jobs, drop a queued one, wait up to ``timeout`` s for the running one.

        Returns True when the worker is idle (then ``on_idle`` has run here); otherwise ``on_idle`` runs on the
        worker thread as soon as its job ends.
        """
        with self._cv:
            self._stopped = True
            self._job = None
            self._cv.notify_all()
            idle = self._cv.wait_for(lambda: not self._running, timeout=max(0.0, timeout))
            if not idle:
                self._on_idle = on_idle
                return False
        if on_idle is not None:
            on_idle()
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._job is not None or self._stopped)
                if self._job is None:
                    return
                job, self._job, self._running = self._job, None, True
            try:
                job()
            except Exception:  # a job must never kill the worker silently
                log.exception("inference job failed")
            finally:
                with self._cv:
                    self._running = False
                    on_idle, self._on_idle = self._on_idle, None
                    self._cv.notify_all()
            if on_idle is not None:
                try:
                    on_idle()
                except Exception:
                    log.exception("closing after the last job failed")
