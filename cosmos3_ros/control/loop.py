# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""One policy loop, shared by the live node and the offline replay (no ROS imports).

``PolicyLoop`` wires the pure :class:`~cosmos3_ros.control.controller.PolicyController` to a model backend,
forecast monitoring (:mod:`cosmos3_ros.core.monitoring`) and optional recording
(:class:`~cosmos3_ros.bags.recorder.BagRecorder`). What is published live goes through a ``LoopSink``; the
node's sink turns it into ROS messages, the replay's sink collects it for the report.

Threading: ``on_frame`` and ``step`` are called from ROS callbacks (cheap, never block on the model);
``run_request`` does the model work and is called on a worker thread by the node, inline by the replay.

Forecasting: after every ``forecast_every``-th published chunk the loop predicts the frames the cameras
should see while that chunk runs: either a forward_dynamics call with the actions that were sent
(``forecast_source="forward_dynamics"``), or the video the policy call predicted jointly with the actions
(``"policy_video"``: no extra model call, but the policy call pays the VAE decode). A forward_dynamics
forecast is skipped (and counted) when its expected latency would push past the time the next chunk is
due, so forecasting never delays control.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cosmos3_ros.control.controller import InferenceRequest, PolicyController
from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.compose import compose
from cosmos3_ros.core.monitoring import DriftMonitor, DriftState, ErrorSample, ForecastTracker
from cosmos3_ros.core.settings import ActionChunk
from cosmos3_ros.core.stats import LatencyStats
from cosmos3_ros.core.trajectory import Trajectory

FORECAST_SOURCES = ("forward_dynamics", "policy_video")


@dataclass(frozen=True)
class LoopOptions:
    """Monitoring and recording options of a loop."""

    forecast_every: int = 1
    forecast_source: str = "forward_dynamics"
    forecast_num_steps: int = 0
    drift_metric: str = "nmse"
    drift_threshold: float = 0.5
    disarm_on_drift: bool = False
    enforce_budget: bool = True
    record_image_every: int = 1
    topic_prefix: str = "/cosmos3_policy"

    def __post_init__(self) -> None:
        if self.forecast_every < 0:
            raise ValueError(f"forecast_every must be >= 0, got {self.forecast_every}")
        if self.forecast_source not in FORECAST_SOURCES:
            raise ValueError(f"forecast_source {self.forecast_source!r} unknown; expected one of {FORECAST_SOURCES}")
        if self.record_image_every < 1:
            raise ValueError(f"record_image_every must be >= 1, got {self.record_image_every}")


class LoopSink(Protocol):
    """Where a loop's live outputs go (the node publishes them; replay collects them)."""

    def trajectory(self, traj: Trajectory, now: float) -> None:
        """A chunk or a hold to command."""

    def predicted_frames(self, chunk_id: int, stamps: list[float], frames: np.ndarray) -> None:
        """Forecast frames, frame k expected at stamps[k]."""

    def prediction_errors(self, samples: list[ErrorSample], drift: DriftState) -> None:
        """New prediction-error samples and the drift state after them."""

    def chunk_record(self, record: dict[str, Any]) -> None:
        """Per-chunk timing and bookkeeping (JSON-able)."""


@dataclass
class LoopRecords:
    """What a loop keeps for a report (replay), bounded by ``limit`` entries each."""

    limit: int = 100_000
    chunks: list[tuple[float, np.ndarray, float, int]] = field(default_factory=list)
    errors: list[ErrorSample] = field(default_factory=list)
    latencies: list[tuple[float, float, float | None, int]] = field(default_factory=list)

    def add_chunk(self, stamp: float, positions: np.ndarray, dt: float, chunk_id: int) -> None:
        if len(self.chunks) < self.limit:
            self.chunks.append((stamp, positions, dt, chunk_id))

    def add_errors(self, samples: list[ErrorSample]) -> None:
        room = self.limit - len(self.errors)
        self.errors.extend(samples[: max(0, room)])

    def add_latency(self, stamp: float, policy_s: float, forecast_s: float | None, chunk_id: int) -> None:
        if len(self.latencies) < self.limit:
            self.latencies.append((stamp, policy_s, forecast_s, chunk_id))


class PolicyLoop:
    """Controller + backend + forecasting + drift + recording for one robot (see module docstring)."""

    def __init__(
        self,
        controller: PolicyController,
        backend: PolicyBackend,
        options: LoopOptions,
        sink: LoopSink,
        clock: Callable[[], float],
        *,
        recorder: Any = None,
        records: LoopRecords | None = None,
        keep_frames_size: tuple[int, int] | None = None,
    ) -> None:
        self.controller = controller
        self.backend = backend
        self.options = options
        self.sink = sink
        self.clock = clock
        self.recorder = recorder
        self.records = records
        self.policy_latency = LatencyStats()
        self.forecast_latency = LatencyStats()
        tolerance = 0.5 / controller.settings.fps
        self.tracker = ForecastTracker(tolerance, metric=options.drift_metric, keep_frames_size=keep_frames_size)
        self.drift = DriftMonitor(options.drift_threshold, metric=options.drift_metric)
        self._published = 0
        self._frames_seen: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- inputs (ROS callbacks) ---------------------------------------------------------------

    def on_frame(self, camera: str, stamp: float, image: np.ndarray) -> bool:
        """Buffer a decoded frame, record it, and compare it with pending forecasts."""
        ok = self.controller.add_frame(camera, stamp, image)
        if not ok:
            return False
        n = self._frames_seen.get(camera, 0)
        self._frames_seen[camera] = n + 1
        if self.recorder is not None and n % self.options.record_image_every == 0:
            self.recorder.write_image(camera, stamp, image, frame_id=camera)
        cameras = self.controller.config.cameras
        if camera == cameras[0] and self.tracker.pending:
            actual = image if len(cameras) == 1 else self._composed_at(stamp)
            if actual is not None:
                self._handle_errors(self.tracker.observe(stamp, actual))
        return True

    def _composed_at(self, stamp: float) -> np.ndarray | None:
        cfg = self.controller.config
        obs, _ = self.controller.buffer.observation(stamp, math.inf, cfg.sync_tolerance)
        if obs is None:
            return None
        return compose({c: f.image for c, f in obs.frames.items()}, list(cfg.cameras), cfg.camera_layout)

    def arm(self, armed: bool) -> None:
        """Arm or disarm (one hold when disarming while commanding); re-arming clears the drift state."""
        now = self.clock()
        self._emit(self.controller.arm(now, armed), now)
        if armed:
            self.drift.reset()

    def step(self, now: float) -> InferenceRequest | None:
        """Control tick: publishes holds; returns a request for ``run_request`` when a chunk is due."""
        request, out = self.controller.step(now)
        self._emit(out, now)
        return request

    # -- model work (worker thread) -------------------------------------------------------------

    def run_request(self, request: InferenceRequest) -> None:
        """Run the policy for ``request``, publish the outcome, then forecast if allowed."""
        settings = request.settings
        want_video = self._forecast_due() and self.options.forecast_source == "policy_video"
        t0 = time.perf_counter()
        chunk: ActionChunk | None = None
        error: BaseException | None = None
        try:
            chunk = self.backend.policy(
                request.image, settings, observation_stamp=request.stamp, return_video=want_video
            )
        except Exception as exc:  # any backend failure becomes a hold, never a crash
            error = exc
        policy_s = time.perf_counter() - t0
        self.policy_latency.add(policy_s)
        now = self.clock()
        out = self.controller.complete(request, chunk, error, now)
        self._emit(out, now)
        published = [t for t in out if t.kind == "chunk"]
        record: dict[str, Any] = {
            "chunk_id": request.request_id,
            "observation_stamp": request.stamp,
            "policy_s": policy_s,
            "published": bool(published),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        if chunk is not None:
            record["timing"] = chunk.timing.to_dict()
        forecast_s = None
        if published and chunk is not None:
            n = self._published
            self._published += 1
            if self.options.forecast_every and n % self.options.forecast_every == 0:
                forecast_s, record["forecast"] = self._forecast(request, chunk, published[0])
        if self.records is not None:
            self.records.add_latency(request.stamp, policy_s, forecast_s, request.request_id)
        if self.recorder is not None:
            self.recorder.write_json(f"{self.options.topic_prefix}/chunk_timing", request.stamp, record)
        self.sink.chunk_record(record)

    def _forecast_due(self) -> bool:
        every = self.options.forecast_every
        return bool(every) and self._published % every == 0

    def _forecast(self, request: InferenceRequest, chunk: ActionChunk, traj: Trajectory) -> tuple[float | None, str]:
        """Produce and register the forecast for a published chunk; returns (seconds, outcome)."""
        settings = request.settings
        if self.options.forecast_source == "policy_video":
            if chunk.video is None:
                return None, "no_video"
            frames = chunk.video[1:]
            forecast_s = 0.0
        else:
            if self.options.enforce_budget and not self._fits_budget():
                self.controller.counters.inc("forecast_skipped")
                return None, "skipped_budget"
            fsettings = settings
            if self.options.forecast_num_steps:
                fsettings = settings.replace(num_steps=self.options.forecast_num_steps)
            t0 = time.perf_counter()
            try:
                forecast = self.backend.forward_dynamics(
                    request.image, chunk.actions, fsettings, observation_stamp=request.stamp
                )
            except Exception as exc:
                self.controller.counters.inc("forecast_errors")
                self.controller.last_error = f"forecast failed: {type(exc).__name__}: {exc}"
                return None, "error"
            forecast_s = time.perf_counter() - t0
            self.forecast_latency.add(forecast_s)
            frames = forecast.frames[1:]
        stamps = [request.stamp + (k + 1) / settings.fps for k in range(len(frames))]
        self.tracker.add_forecast(request.request_id, stamps, frames)
        self.controller.counters.inc("forecasts")
        self.sink.predicted_frames(request.request_id, stamps, frames)
        if self.recorder is not None:
            topic = f"{self.options.topic_prefix}/predicted_image"
            for s, f in zip(stamps, frames, strict=True):
                self.recorder.write_image(topic, s, f, frame_id="cosmos3_forecast", downsample=False)
        return forecast_s, "ok"

    def _fits_budget(self) -> bool:
        """Whether a forecast started now is expected to end before the next chunk is due."""
        next_due = self.controller.next_request_time()
        if next_due is None:
            return True
        estimate = self.forecast_latency.p95() or self.policy_latency.p95() or 0.0
        return self.clock() + estimate <= next_due

    # -- outputs ---------------------------------------------------------------------------------

    def _emit(self, trajectories: list[Trajectory], now: float) -> None:
        for traj in trajectories:
            self.sink.trajectory(traj, now)
            stamp = traj.stamp if traj.stamp is not None else now
            if traj.kind == "chunk" and self.records is not None:
                dt = float(traj.times[1] - traj.times[0]) if len(traj.times) > 1 else float(traj.times[0])
                self.records.add_chunk(stamp, traj.positions, dt, traj.chunk_id)
            if self.recorder is not None:
                times = traj.times
                dt = float(times[1] - times[0]) if len(times) > 1 else float(times[0])
                self.recorder.write_trajectory(
                    f"{self.options.topic_prefix}/joint_trajectory",
                    stamp,
                    traj.joint_names,
                    traj.positions,
                    dt,
                    first_offset_s=float(times[0]),
                )

    def _handle_errors(self, samples: list[ErrorSample]) -> None:
        if not samples:
            return
        state = self.drift.update(samples)
        if self.records is not None:
            self.records.add_errors(samples)
        if self.recorder is not None:
            topic = f"{self.options.topic_prefix}/prediction_error"
            for s in samples:
                self.recorder.write_float(topic, s.stamp, s.value(self.options.drift_metric))
        if state.tripped:
            self.controller.counters.inc("drift_trips")
            self.controller.last_error = (
                f"prediction error {self.options.drift_metric}={state.value:.3f} passed drift_threshold "
                f"{self.options.drift_threshold}"
            )
            if self.options.disarm_on_drift:
                self.arm(False)
                self.controller.counters.inc("drift_disarms")
        self.sink.prediction_errors(samples, state)

    def flush(self) -> None:
        """End of stream: close pending forecasts (their unmatched steps count as missed)."""
        self._handle_errors(self.tracker.flush())

    def monitor_summary(self) -> dict[str, Any]:
        """Forecast and drift figures for diagnostics and summaries."""
        s = self.tracker.summary()
        d = self.drift.state()
        return {
            **{f"prediction_error_{k}": v for k, v in s.items() if k in ("last", "mean", "max")},
            "prediction_error_metric": s["metric"],
            "forecasts": self.controller.counters.get("forecasts"),
            "forecast_skipped": self.controller.counters.get("forecast_skipped"),
            "forecast_errors": self.controller.counters.get("forecast_errors"),
            "forecast_matched": s["matched"],
            "forecast_missed": s["missed"],
            "drift_value": d.value,
            "drift_exceeded": d.exceeded,
            "forecast_latency_p95_s": self.forecast_latency.summary()["p95"],
        }
