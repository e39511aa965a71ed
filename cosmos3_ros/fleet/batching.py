# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""One batch of parsed requests (from several robots) through one backend. Pure: no Ray, no torch.

Policy requests without a video are grouped by :func:`~cosmos3_ros.core.backend.batch_key` (same shapes and sampling
schedule; prompts, seeds, states, prefix values and pixels may differ); a group of two or more is one
:func:`~cosmos3_ros.core.backend.run_batch` call, the backend's exact-per-sample ``policy_batch`` where it has one.
Everything else (forward_dynamics, ``return_video``, a group of one) is the sidecar's own single call
(:func:`~cosmos3_ros.sidecar.jobs.model_call`), so a request gets the same answer here as from ``cosmos3-ros
sidecar``. If a batched call fails, its requests are run again one by one, so one bad request costs its batch-mates
time but never their answer. Each request gets an :class:`Outcome`: its result, or the error type and text the
sidecar would answer (:func:`~cosmos3_ros.sidecar.jobs.classify`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cosmos3_ros.core.backend import BatchedPolicy, PolicyBackend, PolicyCall, batch_key, run_batch
from cosmos3_ros.sidecar import protocol as proto
from cosmos3_ros.sidecar.jobs import classify, model_call

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one request got: ``result`` (ActionChunk or Forecast) or ``error`` = (type, message).

    ``infer_s`` is the model call that answered it (the whole batched call), ``batch_size`` the samples in that call,
    ``batched`` whether that was one batched model call. ``fleet`` is filled in by the replica (who served it).
    """

    result: Any = None
    error: tuple[str, str] | None = None
    infer_s: float = 0.0
    batch_size: int = 1
    batched: bool = False
    fleet: dict[str, Any] = field(default_factory=dict)


def policy_call(request: proto.Request) -> PolicyCall:
    """The :class:`PolicyCall` of a policy request."""
    return PolicyCall(
        image=request.image,
        settings=request.settings,
        observation_stamp=request.timestamp,
        state=request.state,
        prefix=getattr(request, "prefix", None),
    )


def batchable(request: proto.Request) -> bool:
    """Whether a request can share a batched model call (a policy call without video)."""
    return request.mode == "policy" and not request.return_video


def groups(requests: Sequence[proto.Request]) -> tuple[list[list[int]], list[int]]:
    """(groups of indices of batch-compatible requests, in arrival order; indices of requests that run alone)."""
    by_key: dict[tuple, list[int]] = {}
    alone: list[int] = []
    for i, request in enumerate(requests):
        if batchable(request):
            by_key.setdefault(batch_key(policy_call(request)), []).append(i)
        else:
            alone.append(i)
    return list(by_key.values()), alone


def _single(backend: PolicyBackend, request: proto.Request) -> Outcome:
    t0 = time.perf_counter()
    try:
        result = model_call(backend, request)()
    except Exception as exc:
        kind, text = classify(exc)
        if kind == proto.ERROR_INTERNAL:
            log.error("model call failed unexpectedly", exc_info=exc)
        return Outcome(error=(kind, text), infer_s=time.perf_counter() - t0)
    return Outcome(result=result, infer_s=time.perf_counter() - t0)


def serve_requests(backend: PolicyBackend, requests: Sequence[proto.Request]) -> list[Outcome]:
    """One :class:`Outcome` per request, in order (see the module docstring). Never raises for a request's fault."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    together, alone = groups(requests)
    for members in together:
        if len(members) == 1:
            alone.append(members[0])
            continue
        t0 = time.perf_counter()
        try:
            chunks = run_batch(backend, [policy_call(requests[i]) for i in members])
            if len(chunks) != len(members):
                raise RuntimeError(f"a batch of {len(members)} calls returned {len(chunks)} results")
        except Exception as exc:
            log.warning(
                "batched call of %d failed (%s: %s); running them one by one", len(members), type(exc).__name__, exc
            )
            alone.extend(members)
            continue
        infer_s = time.perf_counter() - t0
        batched = isinstance(backend, BatchedPolicy)
        for i, chunk in zip(members, chunks, strict=True):
            outcomes[i] = Outcome(result=chunk, infer_s=infer_s, batch_size=len(members), batched=batched)
    for i in sorted(alone):
        outcomes[i] = _single(backend, requests[i])
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]
