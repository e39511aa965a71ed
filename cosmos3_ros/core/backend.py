# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The one small interface every model backend implements (in process, sidecar)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from cosmos3_ros.core.results import ActionChunk, Forecast, ModelInfo
from cosmos3_ros.core.settings import PolicySettings


class BackendError(RuntimeError):
    """A backend could not produce a result (model failure, lost connection, timeout)."""


@runtime_checkable
class PolicyBackend(Protocol):
    """A Cosmos 3 policy that turns one observation frame into an action chunk.

    Implementations are thread-safe for one caller at a time and raise ``ValueError`` for bad
    input, ``BackendError`` for failures of the backend itself. They never return non-finite
    actions.
    """

    def info(self) -> ModelInfo:
        """Describe the served model."""
        ...

    def warmup(self, settings: PolicySettings) -> float:
        """Run the calls the loop will make once, so the first control cycle is not a cold start; return seconds."""
        ...

    def policy(
        self,
        image: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
        return_video: bool = False,
        state: np.ndarray | None = None,
        prefix: np.ndarray | None = None,
    ) -> ActionChunk:
        """Predict an action chunk from ``image`` (HxWx3 uint8, the newest observation).

        ``state`` is the robot's current state as one row of the action space ([width] float, model units); with
        ``settings.use_state`` the model conditions on it as a known row before the chunk (ValueError when it is
        missing then), otherwise it is ignored. ``prefix`` [d, width] are known first rows of the chunk (real-time
        chunking: the part of the previous chunk that runs while the model thinks): they condition the rest and
        come back unchanged.
        """
        ...

    def forward_dynamics(
        self,
        image: np.ndarray,
        actions: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
    ) -> Forecast:
        """Predict the frames that follow ``image`` when ``actions`` [T, width] are executed."""
        ...

    def close(self) -> None:
        """Release the model or connection."""
        ...


@dataclass(frozen=True)
class PolicyCall:
    """One sample of a batched policy call: the arguments of :meth:`PolicyBackend.policy`."""

    image: np.ndarray
    settings: PolicySettings
    observation_stamp: float | None = None
    state: np.ndarray | None = None
    prefix: np.ndarray | None = None


@runtime_checkable
class BatchedPolicy(Protocol):
    """Optional: a backend that runs several policy calls (several robots) in one model call.

    ``policy_batch(calls)`` returns one ActionChunk per call, in order, each exactly what ``policy`` returns for
    that call alone (same seed, same actions). Calls must be batch-compatible (:func:`batch_key` equal); a
    ValueError says which one is not.
    """

    def policy_batch(self, calls: Sequence[PolicyCall]) -> list[ActionChunk]:
        """One ActionChunk per call (exact per sample)."""
        ...


def batch_key(call: PolicyCall) -> tuple:
    """Calls with equal keys can share one batched model call: the same shapes and sampling schedule (what may
    differ per sample: prompt, negative prompt, seed, state, prefix values, the image's pixels)."""
    s = call.settings
    prefix_rows = 0 if call.prefix is None else len(call.prefix)
    return (
        tuple(call.image.shape),
        s.domain_name,
        s.action_chunk_size,
        s.action_width,
        s.fps,
        s.image_size,
        s.num_steps,
        s.guidance,
        s.guidance_steps,
        s.shift,
        s.view_point,
        s.use_system_prompt,
        s.use_state,
        s.conditioning,
        prefix_rows,
    )


def run_batch(backend: PolicyBackend, calls: Sequence[PolicyCall]) -> list[ActionChunk]:
    """``backend.policy_batch(calls)`` where the backend batches, else one ``policy`` call after the other."""
    if isinstance(backend, BatchedPolicy):
        return backend.policy_batch(calls)
    return [
        backend.policy(c.image, c.settings, observation_stamp=c.observation_stamp, state=c.state, prefix=c.prefix)
        for c in calls
    ]


@runtime_checkable
class WaitsUntilReady(Protocol):
    """Optional: a backend that may not be ready yet (a sidecar still loading its model) and can wait for it."""

    def wait_ready(
        self, timeout_s: float, stop: threading.Event | None = None, on_wait: Callable[[float, str], None] | None = None
    ) -> None:
        """Return once the backend answers; BackendError after ``timeout_s`` or when ``stop`` is set.

        ``on_wait(seconds_waited, why)`` is called after each failed attempt.
        """
        ...
