# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The Policy deployment: one model replica of the fleet (Ray Serve), normally one GPU.

Warm-up before traffic: the model is loaded and warmed up (:meth:`PolicyBackend.warmup` at the server's default
settings: compilation, graph capture) in the constructor, and a backend that batches has its batched call warmed at
every batch size up to ``max_batch_size`` in ``reconfigure``. Ray Serve marks a replica RUNNING, and routes requests
to it, only once its constructor, ``reconfigure`` and first health check have returned, so no request ever reaches a
replica that has not finished warming up (a replica that Ray restarts after a crash warms up again first).

Batching across robots: :meth:`PolicyReplica.infer` takes one parsed request; ``@serve.batch`` collects the requests
that arrive within ``batch_wait_timeout_s`` of each other (at most ``max_batch_size``; both live-tunable through
``user_config``). Ray Serve forms a batch on that timer whether or not the model is busy, so under load it would hand
over small batches that then queue; here they queue in the replica and, whenever the model is free, the oldest ones
are merged into one call of at most ``max_batch_size`` requests (continuous batching: a busy replica's next call
takes everything that waited). :func:`~cosmos3_ros.fleet.batching.serve_requests` runs a call, batch-compatible
requests as one batched model call. The model runs on one thread (:class:`~cosmos3_ros.sidecar.limits.ModelThread`),
so the replica's event loop keeps collecting requests and answering health checks during a call.

Health: :meth:`check_health` fails while one model call has run longer than ``stuck_after_s`` (a hung GPU); after
three failed checks Ray Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from typing import Any

import numpy as np
from ray import serve

from cosmos3_ros.core.backend import BatchedPolicy, PolicyCall, run_batch
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.fleet.batching import Outcome, serve_requests
from cosmos3_ros.fleet.config import ReplicaSpec, make_backend
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.limits import ModelThread

log = logging.getLogger("cosmos3_ros.fleet.replica")

#: Batches Ray Serve may hand over while the model is busy (they wait here to be merged; bounded in practice by the
#: deployment's max_ongoing_requests, every batch holding at least one request).
MAX_GATHERED_BATCHES = 1024

#: Frame (height, width) of the batched warm-up calls: what the runtime's own warm-up uses on each device.
WARM_FRAME_CUDA = (480, 640)
WARM_FRAME_CPU = (240, 320)


class _QuietBatchBound(logging.Filter):
    """Drops Ray Serve's warning that max_batch_size x max_concurrent_batches exceeds max_ongoing_requests: here the
    concurrent batches are batches waiting to be merged, and max_ongoing_requests is the real bound on a batch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "max_concurrent_batches" not in record.getMessage()


def _setup_logging() -> None:
    """Our INFO lines (load, warm-up) reach the replica's log (and the driver's console); Ray's own stay as set."""
    logging.getLogger("ray.serve").addFilter(_QuietBatchBound())
    logger = logging.getLogger("cosmos3_ros")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class PolicyReplica:
    """One model replica (wrapped by ``serve.deployment`` in :mod:`cosmos3_ros.fleet.app`)."""

    def __init__(self, spec: ReplicaSpec, defaults: dict[str, Any], stuck_after_s: float = 600.0) -> None:
        _setup_logging()
        t0 = time.perf_counter()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.spec = spec
        self.defaults = PolicySettings.from_dict(defaults)
        self.stuck_after_s = float(stuck_after_s)
        log.info("replica %s: loading %s on %s", self.name, spec.describe(), spec.device)
        self.backend = make_backend(spec)
        self.load_s = time.perf_counter() - t0
        self.warm_s = 0.0
        if spec.warmup:
            self.warm_s = self.backend.warmup(self.defaults)
        #: Wall-clock time (``time.time()``) the warm-up finished; no request is served before it.
        self.warmed_at = time.time()
        self._thread = ModelThread("cosmos3-fleet-model")
        self._warm_batch = 1  # batch sizes up to this one are warm
        self._max_batch_size = 8
        self._waiting: collections.deque[tuple[list, asyncio.Future]] = collections.deque()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._configured = False
        self._call_started = 0.0  # perf_counter of the model call running now, 0 when idle
        self.batches = self.requests = 0
        self.busy_s = 0.0
        log.info(
            "replica %s: model loaded and warm (load %.1f s, warm-up %.1f s)",
            *(self.name, self.load_s, self.warm_s),
        )

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply the batching settings (``max_batch_size``, ``batch_wait_timeout_s``) without a restart; with a
        backend that batches, first warm its batched call at every batch size up to ``max_batch_size`` (each size
        compiles or captures its own graphs once). Ray Serve runs this before the replica takes traffic, and again,
        in place, when only the batching changes."""
        size = int(user_config.get("max_batch_size", 8))
        if self.spec.warmup and size > self._warm_batch and isinstance(self.backend, BatchedPolicy):
            seconds = await self._thread.run(lambda: self._warm_batches(size))
            log.info("replica %s: batched call warmed up for 2..%d robots in %.1f s", self.name, size, seconds)
        self._max_batch_size = size
        self._batch.set_max_batch_size(size)
        self._batch.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.01)))
        if not self._configured:  # the first time: still before any traffic
            self._configured = True
            self.warmed_at = time.time()

    def _warm_batches(self, size: int) -> float:
        t0 = time.perf_counter()
        h, w = WARM_FRAME_CUDA if self.spec.device.startswith("cuda") else WARM_FRAME_CPU
        yy, xx = np.mgrid[0:h, 0:w]
        quick = self.defaults.replace(num_steps=min(self.defaults.num_steps, 2))
        state = np.zeros(quick.action_width, np.float32) if quick.use_state else None
        for n in range(max(2, self._warm_batch + 1), size + 1):
            calls = []
            for k in range(n):  # a different frame and seed per robot, as in service
                frame = np.stack([(xx * 7 + k) % 256, (yy * 5 + 3 * k) % 256, np.full_like(xx, 127)], -1)
                calls.append(PolicyCall(frame.astype(np.uint8), quick.replace(seed=k), state=state))
            run_batch(self.backend, calls)
        self._warm_batch = size
        return time.perf_counter() - t0

    def check_health(self) -> None:
        """Raise while a model call has been running for longer than ``stuck_after_s``."""
        started = self._call_started
        if started and time.perf_counter() - started > self.stuck_after_s:
            raise RuntimeError(f"a model call has been running for more than {self.stuck_after_s:g} s")

    def info(self) -> dict[str, Any]:
        """The served model (:class:`ModelInfo`) and this replica's counters."""
        return {
            "model": self.backend.info(),
            "replica": self.name,
            "pid": os.getpid(),
            "warmed_at": self.warmed_at,
            "load_s": self.load_s,
            "warm_s": self.warm_s,
            "batches": self.batches,
            "requests": self.requests,
            "busy_s": self.busy_s,
        }

    async def infer(self, request: proto.Request) -> Outcome:
        """Answer one request (batched with others that arrive together, or that wait while the model is busy)."""
        return await self._batch((request, time.perf_counter()))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=MAX_GATHERED_BATCHES)
    async def _batch(self, items: list[tuple[proto.Request, float]]) -> list[Outcome]:
        """A batch Ray Serve gathered: wait for the model (merged with others that wait too) and its outcomes."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append((items, done))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_waiting())
        self._wake.set()
        return await done

    async def _run_waiting(self) -> None:
        """Whenever the model is free: the waiting batches, oldest first, as one call of at most max_batch_size."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                take = [self._waiting.popleft()]
                count = len(take[0][0])
                while self._waiting and count + len(self._waiting[0][0]) <= self._max_batch_size:
                    count += len(self._waiting[0][0])
                    take.append(self._waiting.popleft())
                try:
                    outcomes = await self._run([item for items, _ in take for item in items])
                except Exception as exc:  # a bug here: every waiting robot gets an error, not a hang
                    for _, done in take:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for items, done in take:
                    mine, outcomes = outcomes[: len(items)], outcomes[len(items) :]
                    if not done.done():
                        done.set_result(mine)

    async def _run(self, items: list[tuple[proto.Request, float]]) -> list[Outcome]:
        requests = [request for request, _ in items]
        self.batches += 1
        number = self.batches
        start_wall = time.time()

        def run() -> list[Outcome]:
            self._call_started = time.perf_counter()
            try:
                return serve_requests(self.backend, requests)
            finally:
                self._call_started = 0.0

        t0 = time.perf_counter()
        outcomes = await self._thread.run(run)
        took = time.perf_counter() - t0
        self.requests += len(requests)
        self.busy_s += took
        for (_, arrived), outcome in zip(items, outcomes, strict=True):
            outcome.fleet = {
                "replica": self.name,
                "batch": number,
                "batch_requests": len(items),
                "batch_ms": took * 1e3,
                "wait_ms": max(t0 - arrived, 0.0) * 1e3,
                "started_at": start_wall,
                "warmed_at": self.warmed_at,
            }
        return outcomes
