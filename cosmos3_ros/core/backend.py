# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The one small interface every model backend implements (in process, sidecar)."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
