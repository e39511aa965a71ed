# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Several policy calls (several robots) in one denoising loop: one transformer forward per step for all of them.

Each call runs the pipeline's own loop (its prompt, negative prompt, seed, state and prefix rows, frame, scheduler
state) in a thread of its own, on a *view* of the pipeline (the same models, its own scheduler and per-call state).
Their transformer calls meet in a :class:`LockstepBatcher`: a round waits for one call from every live loop, runs
all their passes as one forward (:meth:`FastCosmos3Forward.run_entries`: rows stacked, attention per pass), and
hands each loop its own output. Guided calls add their unconditional passes to the same forward once the layouts
are known (see ``batch_cfg``), so a batch of B guided calls is one forward of 2B passes per step.

Every call's actions are what a single call gives: the loops are the stock loops, and every row-wise operation
gives the same row whatever else is stacked with it (bit for bit on the CPU; on a GPU the larger GEMMs may select
other kernels: bf16 noise). Calls must share a :func:`~cosmos3_ros.core.backend.batch_key` (the same shapes and
schedule), so every loop makes the same number of transformer calls.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cosmos3_ros.model.fast_transformer import CallState, FastCosmos3Forward


class LockstepBatcher:
    """``transformer.forward`` while several pipeline loops run in threads (see the module doc)."""

    def __init__(self, ff: FastCosmos3Forward, views: Sequence[Any]):
        self.ff = ff
        self.views = list(views)
        self.states = [CallState() for _ in self.views]
        self.live = len(self.views)
        self.pending: dict[int, tuple] = {}
        self.results: dict[int, Any] = {}
        self.cv = threading.Condition()
        self.resolve_lock = threading.Lock()
        self.local = threading.local()
        #: Number of forwards run and the most passes in one.
        self.rounds = 0
        self.max_passes = 0

    def begin_call(self) -> None:
        """Forget per-call layouts (called when installed)."""
        self.ff.begin_call()

    @contextlib.contextmanager
    def participant(self, slot: int):
        """The calling thread runs loop ``slot``; on leaving (done or failed) the others stop waiting for it."""
        self.local.slot = slot
        try:
            yield
        finally:
            with self.cv:
                self.live -= 1
                self._run_round_locked()
                self.cv.notify_all()

    def __call__(self, *args, **kw):
        slot = self.local.slot
        with self.resolve_lock:
            req = self.ff.resolve(args, kw, self.views[slot].pass_hint(), self.states[slot])
        if req.kind == "stock":
            return self.ff.stock_forward(*args, **kw)
        if req.kind == "done":
            return self.ff._wrap(req.out, kw)
        with self.cv:
            self.pending[slot] = req
            self._run_round_locked()
            while slot not in self.results:
                self.cv.wait()
            out = self.results.pop(slot)
        if isinstance(out, BaseException):
            raise out
        return self.ff._wrap(out, kw)

    def _run_round_locked(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        slots = sorted(self.pending)
        reqs = [self.pending.pop(s) for s in slots]
        entries = [e for req in reqs for e in req.entries]
        self.rounds += 1
        self.max_passes = max(self.max_passes, len(entries))
        try:
            # The thread that completes a round may be one leaving its loop, outside the pipeline's inference mode.
            with torch.inference_mode():
                outs = self.ff.run_entries(entries)
        except Exception as exc:  # every loop of the round gets the error
            for s in slots:
                self.results[s] = exc
        else:
            k = 0
            for s, req in zip(slots, reqs, strict=True):
                n = len(req.entries)
                self.results[s] = self.ff.settle(req, outs[k : k + n], self.states[s])
                k += n
        self.cv.notify_all()


def make_view(pipe: Any) -> Any:
    """A pipeline sharing ``pipe``'s models and memos, with its own scheduler, frame processor and call state."""
    pipe._memos()  # created before copying, so every view shares the memo tables and the VAE lock
    view = copy.copy(pipe)
    view.__dict__["scheduler"] = copy.deepcopy(pipe.scheduler)
    view.__dict__["video_processor"] = copy.copy(pipe.video_processor)
    view.__dict__["fast_forward"] = None  # the batch installs one forward for all views
    view.__dict__["cudnn_benchmark"] = False  # a process-wide flag: the batch sets it once
    return view


class WorkerPool:
    """Threads that live as long as the runtime: a batched call's loops run on them, so what CUDA libraries keep per
    thread (cuDNN's execution plans, handles) is set up once, not per call. Daemon threads; :meth:`close` ends them."""

    def __init__(self) -> None:
        self._queues: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    def run(self, jobs: Sequence[Callable[[], None]]) -> None:
        """Run ``jobs[i]`` on worker ``i`` (started as needed); return when all have finished."""
        with self._lock:
            while len(self._queues) < len(jobs):
                q: queue.SimpleQueue = queue.SimpleQueue()
                threading.Thread(
                    target=_worker, args=(q,), name=f"cosmos3-batch-{len(self._queues)}", daemon=True
                ).start()
                self._queues.append(q)
        done = [threading.Event() for _ in jobs]
        for q, job, event in zip(self._queues, jobs, done, strict=False):
            q.put((job, event))
        for event in done:
            event.wait()

    def close(self) -> None:
        """End the workers (after their current job)."""
        with self._lock:
            for q in self._queues:
                q.put(None)
            self._queues = []


def _worker(q: queue.SimpleQueue) -> None:
    while (item := q.get()) is not None:
        job, event = item
        try:
            job()
        finally:
            event.set()


def run_lockstep(pipe: Any, calls: Sequence[Callable[[Any], Any]], pool: WorkerPool | None = None) -> list[Any]:
    """Run ``calls[i](view_i)`` (each one pipeline call on a view of ``pipe``) in lockstep, on ``pool``'s workers
    (or new threads); return their results in order. The first exception of any call is raised after all finish."""
    from cosmos3_ros.model.call_hooks import installed_forward

    views = [make_view(pipe) for _ in calls]
    batcher = LockstepBatcher(pipe.fast_forward, views)
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def work(i: int) -> None:
        try:
            with batcher.participant(i):
                results[i] = calls[i](views[i])
        except BaseException as exc:  # re-raised in the caller's thread
            errors[i] = exc

    jobs = [lambda i=i: work(i) for i in range(len(calls))]
    with installed_forward(pipe.transformer, batcher):
        if pool is not None:
            pool.run(jobs)
        else:
            threads = [threading.Thread(target=job) for job in jobs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    pipe.last_batch = {"calls": len(calls), "forwards": batcher.rounds, "max_passes": batcher.max_passes}
    for exc in errors:
        if exc is not None:
            raise exc
    return results
