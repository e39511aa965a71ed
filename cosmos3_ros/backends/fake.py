# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``FakeBackend``: a deterministic :class:`~cosmos3_ros.core.backend.PolicyBackend` without a model.

For fast loop, node and sidecar tests, and for checking a robot's wiring without a GPU (``backend: fake``). It is
not a mock of the model's numbers: its actions are smooth, bounded functions of the inputs, so tests can check
that what goes in (frame, settings, robot state) changes what comes out, and that the same inputs give the same
actions. Faults are injected on purpose: latency (per call), errors, non-finite output.

- actions: ``[chunk, width]`` float32 in [-1, 1]: a per-dimension sinusoid whose offset, amplitude and phase come
  from a hash of the frame (subsampled), the sampling settings and the robot state; with a state, row k moves from
  the state towards that sinusoid, so the chunk starts near the state;
- video (``return_video``, forward_dynamics): chunk + 1 frames, frame 0 the input, frame k the input shifted k*2
  pixels to the right (a scene that moves);
- every call is recorded in :attr:`calls` (mode, settings, stamp, state, image shape, warm-up or not).

A call waits its latency on an event that :meth:`close` sets, so a closed backend never keeps its caller.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos3_ros.core.backend import BackendError, PolicyCall, batch_key
from cosmos3_ros.core.results import ActionChunk, Forecast, ModelInfo, NonFiniteOutputError, Timing
from cosmos3_ros.core.schema import DOMAIN_ACTION_WIDTH
from cosmos3_ros.core.settings import PolicySettings, validate_actions, validate_image

FAULTS = ("error", "nonfinite")


@dataclass(frozen=True)
class FakeCall:
    """One recorded call."""

    mode: str
    settings: PolicySettings
    stamp: float | None
    state: np.ndarray | None
    image_shape: tuple[int, ...]
    warmup: bool
    prefix: np.ndarray | None = None


class FakeBackend:
    """Deterministic stand-in for a Cosmos 3 backend (see the module docstring). Thread-safe."""

    def __init__(self, *, latency_s: float = 0.0, action_dim: int = 64) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.latency_s = float(latency_s)
        self.action_dim = action_dim
        self.calls: list[FakeCall] = []
        self._faults: deque[tuple[str, BaseException | None, str | None]] = deque()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._warming = False
        self._mode_latency: dict[str, float] = {}
        self._tls = threading.local()
        #: Sizes of the policy_batch calls, in order.
        self.batches: list[int] = []

    # -- fault injection ------------------------------------------------------------------------------------------

    def inject(self, fault: str, count: int = 1, exc: BaseException | None = None, mode: str | None = None) -> None:
        """Make the next ``count`` calls (of ``mode``, "policy" or "forward_dynamics", when given) fail: ``"error"``
        raises ``exc`` (default a BackendError), ``"nonfinite"`` is a NaN result (NonFiniteOutputError, as the real
        runtime raises). Warm-up calls are never failed."""
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        with self._lock:
            self._faults.extend([(fault, exc, mode)] * count)

    def set_latency(self, seconds: float, mode: str | None = None) -> None:
        """Latency of the following calls (of ``mode`` only, "policy" or "forward_dynamics", when given)."""
        if mode is None:
            self.latency_s = float(seconds)
        else:
            self._mode_latency[mode] = float(seconds)

    @property
    def policy_calls(self) -> list[FakeCall]:
        """Recorded policy calls, warm-up excluded."""
        with self._lock:
            return [c for c in self.calls if c.mode == "policy" and not c.warmup]

    # -- PolicyBackend --------------------------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        """A fake model that serves every domain."""
        return ModelInfo("fake", self.action_dim, tuple(DOMAIN_ACTION_WIDTH), "cpu", "float32", {"backend": "fake"})

    def warmup(self, settings: PolicySettings) -> float:
        """One policy and one forward_dynamics call; returns seconds."""
        t0 = time.perf_counter()
        frame = np.full((48, 64, 3), 127, np.uint8)
        self._warming = True
        try:
            state = np.zeros(settings.action_width, np.float32) if settings.use_state else None
            chunk = self.policy(frame, settings, state=state)
            self.forward_dynamics(frame, chunk.actions, settings)
        finally:
            self._warming = False
        return time.perf_counter() - t0

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
        """Deterministic actions (and video) for the inputs; see the module docstring. Like the real runtime, the
        state is used only with ``settings.use_state`` (and required then), and ``prefix`` rows come back as given."""
        validate_image(image)
        width = settings.action_width
        if settings.use_state:
            if state is None:
                raise ValueError("use_state is set but no robot state was given")
            state = np.asarray(state, dtype=np.float32)
            if state.shape != (width,) or not np.isfinite(state).all():
                raise ValueError(f"state must be finite with shape ({width},), got {state.shape}")
        else:
            state = None
        if prefix is not None:
            prefix = np.asarray(prefix, dtype=np.float32)
            if prefix.ndim != 2 or prefix.shape[1] != width or not 1 <= len(prefix) < settings.action_chunk_size:
                raise ValueError(f"prefix must be [d, {width}] with 1 <= d < {settings.action_chunk_size}")
            if not np.isfinite(prefix).all():
                raise ValueError("prefix contains non-finite values")
        t0 = time.perf_counter()
        fault = self._begin("policy", settings, observation_stamp, state, image.shape, prefix)
        if fault == "nonfinite":
            raise NonFiniteOutputError("policy produced non-finite action values; chunk discarded")
        actions = _actions(image, settings, state, prefix)
        video = _video(image, settings.num_frames) if return_video else None
        total = time.perf_counter() - t0
        return ActionChunk(actions, settings, Timing(denoise_s=total, total_s=total), observation_stamp, video)

    def policy_batch(self, calls: Sequence[PolicyCall]) -> list[ActionChunk]:
        """Each call as :meth:`policy` answers it alone (one latency for the batch); ValueError for a call that is
        not batch-compatible with the first."""
        calls = list(calls)
        if not calls:
            return []
        key = batch_key(calls[0])
        for i, call in enumerate(calls[1:], 1):
            if batch_key(call) != key:
                raise ValueError(f"call {i} cannot share a batch with call 0 (shapes or sampling schedule differ)")
        with self._lock:
            self.batches.append(len(calls))
        latency = self._mode_latency.get("policy", self.latency_s)
        if latency and self._closed.wait(latency):
            raise BackendError("fake backend closed during a call")
        self._tls.in_batch = True
        try:
            return [
                self.policy(c.image, c.settings, observation_stamp=c.observation_stamp, state=c.state, prefix=c.prefix)
                for c in calls
            ]
        finally:
            self._tls.in_batch = False

    def forward_dynamics(
        self,
        image: np.ndarray,
        actions: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
    ) -> Forecast:
        """The input frame moving to the right, chunk + 1 frames."""
        validate_image(image)
        acts = validate_actions(actions, settings)
        t0 = time.perf_counter()
        if self._begin("forward_dynamics", settings, observation_stamp, None, image.shape) == "nonfinite":
            raise NonFiniteOutputError("predicted video contains non-finite pixels")
        total = time.perf_counter() - t0
        frames = _video(image, settings.num_frames)
        return Forecast(frames, acts, settings, Timing(denoise_s=total, total_s=total), observation_stamp)

    def close(self) -> None:
        """Later calls (and calls waiting out their latency) raise BackendError."""
        self._closed.set()

    # -- internals ------------------------------------------------------------------------------------------------

    def _begin(
        self,
        mode: str,
        settings: PolicySettings,
        stamp: float | None,
        state: Any,
        shape: tuple[int, ...],
        prefix: Any = None,
    ) -> str | None:
        if self._closed.is_set():
            raise BackendError("fake backend is closed")
        if settings.action_width > self.action_dim:
            raise ValueError(f"domain {settings.domain_name!r} needs width {settings.action_width} > {self.action_dim}")
        with self._lock:
            self.calls.append(FakeCall(mode, settings, stamp, state, tuple(shape), self._warming, prefix))
            fault = None
            if self._faults and not self._warming and self._faults[0][2] in (None, mode):
                fault = self._faults.popleft()
        latency = 0.0 if getattr(self._tls, "in_batch", False) else self._mode_latency.get(mode, self.latency_s)
        if latency and self._closed.wait(latency):
            raise BackendError("fake backend closed during a call")
        if fault is None:
            return None
        kind, exc, _ = fault
        if kind == "error":
            raise exc if exc is not None else BackendError("injected fake backend failure")
        return kind


def _digest(image: np.ndarray, settings: PolicySettings, *rows: np.ndarray | None) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(image[::8, ::8]).tobytes())
    h.update(repr(sorted(settings.to_dict().items())).encode())
    for r in rows:
        if r is not None:
            h.update(np.round(r.astype(np.float64), 6).tobytes())
    return int.from_bytes(h.digest(), "little")


def _actions(
    image: np.ndarray, settings: PolicySettings, state: np.ndarray | None, prefix: np.ndarray | None = None
) -> np.ndarray:
    rng = np.random.default_rng(_digest(image, settings, state, prefix))
    n, width = settings.action_chunk_size, settings.action_width
    offset = rng.uniform(-0.5, 0.5, width)
    amplitude = rng.uniform(0.05, 0.4, width)
    phase = rng.uniform(0, 2 * np.pi, width)
    t = (np.arange(n)[:, None] + 1) / settings.fps
    wave = offset + amplitude * np.sin(2 * np.pi * 0.5 * t + phase)
    start = prefix[-1] if prefix is not None else state
    if start is not None:  # start where the known rows end (or at the state), reach the wave by the end
        w = np.linspace(1.0 / n, 1.0, n)[:, None]
        wave = (1 - w) * np.clip(start, -1, 1) + w * wave
    out = np.clip(wave, -1.0, 1.0).astype(np.float32)
    if prefix is not None:
        out[: len(prefix)] = prefix
    return out


def _video(image: np.ndarray, num_frames: int) -> np.ndarray:
    return np.stack([np.roll(image, 2 * k, axis=1) for k in range(num_frames)]).astype(np.uint8)
