# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""One request's model call on its way through the sidecar server, and the error reply each ending gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosmos3_ros.core.backend import BackendError, PolicyBackend
from cosmos3_ros.core.results import NonFiniteOutputError
from cosmos3_ros.sidecar import protocol as proto


@dataclass(eq=False)
class Job:
    """One model call waiting for (or on) the model thread; ``connection`` is the client's."""

    fn: Callable[[], Any]
    future: asyncio.Future
    connection: Any
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    infer_s: float = 0.0

    def run(self) -> Any:
        """Call ``fn`` (on the model thread), timing it."""
        t0 = time.perf_counter()
        try:
            return self.fn()
        finally:
            self.infer_s = time.perf_counter() - t0

    def timing_ms(self) -> dict[str, float]:
        """``infer_ms`` and ``queue_ms`` of the reply (the queue time so far when it never started)."""
        queue_s = (self.started - self.enqueued) if self.started else (time.perf_counter() - self.enqueued)
        return {"infer_ms": self.infer_s * 1e3, "queue_ms": max(queue_s, 0.0) * 1e3}


class ClientGoneError(Exception):
    """The client disconnected (or stopped taking replies) while its request waited."""


class UnavailableError(RuntimeError):
    """The server is stopping."""


class RequestTimeoutError(Exception):
    """``request_timeout`` passed; ``kind`` is the error type of the reply."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def model_call(backend: PolicyBackend, request: proto.Request) -> Callable[[], Any]:
    """The backend call a parsed request asks for."""
    if request.mode == "policy":
        given = {} if request.prefix is None else {"prefix": request.prefix}  # a backend without prefix still works
        return lambda: backend.policy(
            request.image,
            request.settings,
            observation_stamp=request.timestamp,
            return_video=request.return_video,
            state=request.state,
            **given,
        )
    return lambda: backend.forward_dynamics(
        request.image, request.actions, request.settings, observation_stamp=request.timestamp
    )


def classify(exc: BaseException) -> tuple[str, str]:
    """Error reply type and message for an exception raised by a model call (or a wait for one)."""
    text = f"{exc}" or type(exc).__name__
    if isinstance(exc, RequestTimeoutError):
        return exc.kind, text
    if isinstance(exc, UnavailableError):
        return proto.ERROR_UNAVAILABLE, text
    if isinstance(exc, NonFiniteOutputError):
        return proto.ERROR_NON_FINITE, text
    if isinstance(exc, ValueError):
        return proto.ERROR_BAD_REQUEST, text
    if isinstance(exc, BackendError):
        return proto.ERROR_MODEL, text
    return proto.ERROR_INTERNAL, f"{type(exc).__name__}: {text}"
