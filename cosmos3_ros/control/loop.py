# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""One policy loop, shared by the live node and the offline replay (no ROS, no torch).

``PolicyLoop`` wires the pure :class:`~cosmos3_ros.control.controller.PolicyController` to a model backend and to
forecast monitoring (:mod:`cosmos3_ros.core.forecast`, :mod:`cosmos3_ros.core.drift`), and emits every event once to
one :class:`~cosmos3_ros.control.events.LoopSink` (the node, a bag recorder and a report are sinks, combined by a
:class:`~cosmos3_ros.control.events.Tee`).

Threading: ``on_frame``, ``on_state``, ``reject`` and ``step`` are called from ROS callbacks (cheap, never block on
the model); ``run_request`` does the model work and is called on a worker thread by the node, inline by the replay.

Forecasting: after every ``forecast_every``-th published chunk the loop predicts the frames the cameras should see
while that chunk runs: either a forward_dynamics call with the actions that were sent
(``forecast_source="forward_dynamics"``), or the video the policy call predicted jointly with the actions
(``"policy_video"``: no extra model call, but the policy call pays the VAE decode). A forward_dynamics forecast is
skipped (and counted) when its expected latency would push past the time the next chunk is due, so forecasting never
delays control. :meth:`PolicyLoop.prime` measures one policy call and one forecast on the first observation, after
the backend's warm-up, so the first forecast is judged on a measured latency too (a forecast decodes video: it can
take much longer than a policy call).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos3_ros.control.controller import InferenceRequest, PolicyController
from cosmos3_ros.control.events import ChunkRecord, ForecastFrames, LoopSink
from cosmos3_ros.core.backend import PolicyBackend
from cosmos3_ros.core.compose import compose
from cosmos3_ros.core.drift import DriftMonitor
from cosmos3_ros.core.forecast import ErrorSample, ForecastTracker
from cosmos3_ros.core.results import ActionChunk
from cosmos3_ros.core.stats import LatencyStats
from cosmos3_ros.core.trajectory import Trajectory

FORECAST_SOURCES = ("forward_dynamics", "policy_video")


@dataclass(frozen=True)
class LoopOptions:
    """Forecasting and drift options of a loop."""

    forecast_every: int = 1
    forecast_source: str = "forward_dynamics"
    forecast_num_steps: int = 0
    drift_metric: str = "nmse"
    drift_threshold: float = 0.5
    disarm_on_drift: bool = False
    enforce_budget: bool = True

    def __post_init__(self) -> None:
        if self.forecast_every < 0:
            raise ValueError(f"forecast_every must be >= 0, got {self.forecast_every}")
        if self.forecast_source not in FORECAST_SOURCES:
            raise ValueError(f"forecast_source {self.forecast_source!r} unknown; expected one of {FORECAST_SOURCES}")


class PolicyLoop:
    """Controller + backend + forecasting + drift for one robot (see the module docstring)."""

    def __init__(
        self,
        controller: PolicyController,
        backend: PolicyBackend,
        options: LoopOptions,
        sink: LoopSink,
        clock: Callable[[], float],
        *,
        keep_frames_size: tuple[int, int] | None = None,
    ) -> None:
        self.controller = controller
        self.backend = backend
        self.options = options
        self.sink = sink
        self.clock = clock
        self.policy_latency = LatencyStats()
        self.forecast_latency = LatencyStats()
        # the same calls measured on ``clock`` (the node clock: simulated time under use_sim_time), for the budget
        self._policy_clock_s = LatencyStats()
        self._forecast_clock_s = LatencyStats()
        tolerance = 0.5 / controller.settings.fps
        self.tracker = ForecastTracker(tolerance, metric=options.drift_metric, keep_frames_size=keep_frames_size)
        self.drift = DriftMonitor(options.drift_threshold, metric=options.drift_metric)
        self._published = 0
        self._jumps = 0
        self._prime_pending = False

    def prime(self, image: np.ndarray, state: np.ndarray | None = None) -> None:
        """Measure one policy call (and one forward_dynamics forecast, when those are on) on ``image`` (and the
        robot ``state``) after the backend's warm-up, so the forecast budget starts from measured latencies."""
        settings = self.controller.settings
        t0, c0 = time.perf_counter(), self.clock()
        chunk = self.backend.policy(image, settings, state=state)
        self.policy_latency.add(time.perf_counter() - t0)
        self._add_clock_latency(self._policy_clock_s, c0)
        if self.options.forecast_every and self.options.forecast_source == "forward_dynamics":
            fsettings = settings.replace(num_steps=self.options.forecast_num_steps or settings.num_steps)
            t0, c0 = time.perf_counter(), self.clock()
            self.backend.forward_dynamics(image, chunk.actions, fsettings)
            self.forecast_latency.add(time.perf_counter() - t0)
            self._add_clock_latency(self._forecast_clock_s, c0)

    def prime_on_first_request(self) -> None:
        """Run :meth:`prime` on the first request's own image (the camera's real size) before its policy call."""
        self._prime_pending = True

    def set_options(self, options: LoopOptions) -> None:
        """Replace the options (run-time parameter changes); the drift threshold applies to the next samples."""
        if options.drift_metric != self.options.drift_metric or options.forecast_source != self.options.forecast_source:
            raise ValueError("drift_metric and forecast_source cannot change at run time")
        options = dataclasses.replace(options, enforce_budget=self.options.enforce_budget)
        self.options = options
        self.drift.threshold = float(options.drift_threshold)

    # -- inputs (ROS callbacks) ---------------------------------------------------------------------------------

    def on_frame(self, camera: str, stamp: float, image: np.ndarray) -> bool:
        """Buffer a decoded frame and compare it with pending forecasts; False (and a ``rejected`` event) if refused."""
        rejection = self.controller.add_frame(camera, stamp, image, now=self.clock())
        if rejection is not None:
            self.sink.rejected(camera, stamp, rejection.reason, str(rejection))
            return False
        self.sink.frame(camera, stamp, image)
        cameras = self.controller.config.cameras
        if camera == cameras[0] and self.tracker.pending:
            actual = image if len(cameras) == 1 else self._composed_at(stamp)
            if actual is not None:
                self._handle_errors(self.tracker.observe(stamp, actual))
        return True

    def on_state(self, stamp: float, positions: np.ndarray) -> bool:
        """Keep the newest robot state (robot units, ``joint_names`` order); False (and an event) if refused."""
        reason = self.controller.add_state(stamp, positions, now=self.clock())
        if reason is not None:
            self.sink.rejected("robot_state", stamp, reason, self.controller.last_error)
            return False
        self.sink.state(stamp, positions)
        return True

    def on_pose(self, stamp: float, position: np.ndarray, quaternion: np.ndarray, frame_id: str) -> bool:
        """Keep the newest end-effector pose (ee_pose action space); False (and an event) if refused."""
        reason = self.controller.add_pose(stamp, position, quaternion, frame_id, now=self.clock())
        if reason is not None:
            self.sink.rejected("ee_pose", stamp, reason, self.controller.last_error)
            return False
        return True

    def reject(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        """An input refused before the loop saw it (e.g. an undecodable image): counted and emitted."""
        self.controller.note(f"rejected_frames.{reason}", f"{camera}: {message}")
        self.sink.rejected(camera, stamp, reason, message)

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

    def stop(self) -> None:
        """Stop commanding (one hold if a chunk was running); a result still in flight is discarded."""
        now = self.clock()
        self._emit(self.controller.stop(now), now)

    def detach(self) -> None:
        """Stop emitting: events after this (e.g. from an inference still finishing) go nowhere."""
        self.sink = LoopSink()

    def on_clock_jump(self) -> None:
        """The clock jumped back (rclpy's jump callback, or a bag that loops): start over from fresh frames."""
        now = self.clock()
        self._emit(self.controller.reset_time(now), now)
        self._jumps = self.controller.counters.get("clock_jumps")
        self.tracker.reset()

    def step(self, now: float) -> InferenceRequest | None:
        """Control tick: publishes holds; returns a request for ``run_request`` when a chunk is due."""
        request, out = self.controller.step(now)
        self._emit(out, now)
        jumps = self.controller.counters.get("clock_jumps")
        if jumps != self._jumps:  # the controller saw the clock go back: forecasts of the old timeline are moot
            self._jumps = jumps
            self.tracker.reset()
        return request

    # -- model work (worker thread) -----------------------------------------------------------------------------

    def run_request(self, request: InferenceRequest) -> ChunkRecord:
        """Run the policy for ``request``, publish the outcome, then forecast if allowed; returns the record."""
        settings = request.settings
        if self._prime_pending:
            self._prime_pending = False
            try:
                self.prime(request.image, request.state)
            except Exception as exc:  # the request itself will fail the same way and hold; note why here
                self.controller.note("prime_errors", f"measuring the first latencies failed: {exc}")
        forecast_due = self._forecast_due()
        want_video = forecast_due and self.options.forecast_source == "policy_video"
        t0, c0 = time.perf_counter(), self.clock()
        chunk: ActionChunk | None = None
        error: BaseException | None = None
        try:
            chunk = self.backend.policy(
                request.image,
                settings,
                observation_stamp=request.stamp,
                return_video=want_video,
                state=request.state,
                prefix=request.prefix,
            )
        except Exception as exc:  # any backend failure becomes a hold, never a crash
            error = exc
        policy_s = time.perf_counter() - t0
        self.policy_latency.add(policy_s)
        self._add_clock_latency(self._policy_clock_s, c0)
        now = self.clock()
        out = self.controller.complete(request, chunk, error, now)
        self._emit(out, now)
        published = [t for t in out if t.kind == "chunk"]
        join = self.controller.last_join if published else {}
        forecast, forecast_s = "not_due", None
        if published and chunk is not None:
            self._published += 1
            if forecast_due:
                forecast, forecast_s = self._forecast(request, chunk)
        record = ChunkRecord(
            chunk_id=request.request_id,
            observation_stamp=request.stamp,
            policy_s=policy_s,
            published=bool(published),
            error=None if error is None else f"{type(error).__name__}: {error}",
            timing=None if chunk is None else chunk.timing,
            forecast=forecast,
            forecast_s=forecast_s,
            completed_stamp=now,
            prefix_rows=0 if request.prefix is None else len(request.prefix),
            consumed_rows=join.get("consumed_rows"),
            boundary_jump=join.get("boundary_jump"),
            request_stamp=request.made_at,
            clamps=sum(int(join.get(k) or 0) for k in ("velocity_clamps", "acceleration_clamps", "position_clamps")),
            actions=None if chunk is None else chunk.actions,
        )
        self.sink.chunk_done(record)
        return record

    def _forecast_due(self) -> bool:
        every = self.options.forecast_every
        return bool(every) and self._published % every == 0

    def _forecast(self, request: InferenceRequest, chunk: ActionChunk) -> tuple[str, float | None]:
        """Produce and register the forecast for a published chunk; returns (outcome, seconds)."""
        settings = request.settings
        if self.options.forecast_source == "policy_video":
            if chunk.video is None:
                return "no_video", None
            frames = chunk.video[1:]
            forecast_s = 0.0
        else:
            if self.options.enforce_budget and not self._fits_budget():
                self.controller.note("forecast_skipped")
                return "skipped_budget", None
            fsettings = settings
            if self.options.forecast_num_steps:
                fsettings = settings.replace(num_steps=self.options.forecast_num_steps)
            t0, c0 = time.perf_counter(), self.clock()
            try:
                forecast = self.backend.forward_dynamics(
                    request.image, chunk.actions, fsettings, observation_stamp=request.stamp
                )
            except Exception as exc:
                self.controller.note("forecast_errors", f"forecast failed: {type(exc).__name__}: {exc}")
                return "error", None
            forecast_s = time.perf_counter() - t0
            self.forecast_latency.add(forecast_s)
            self._add_clock_latency(self._forecast_clock_s, c0)
            frames = forecast.frames[1:]
        stamps = tuple(request.stamp + (k + 1) / settings.fps for k in range(len(frames)))
        self.tracker.add_forecast(request.request_id, stamps, frames)
        self.controller.note("forecasts")
        self.sink.forecast(ForecastFrames(request.request_id, stamps, frames))
        return "ok", forecast_s

    def _add_clock_latency(self, stats: LatencyStats, started: float) -> None:
        elapsed = self.clock() - started
        if elapsed >= 0.0:  # a clock that jumped back (a restarted simulator, a looping bag) measured nothing
            stats.add(elapsed)

    def _fits_budget(self) -> bool:
        """Whether a forecast started now is expected to end before the next chunk is due.

        Both sides are on the node clock: under ``use_sim_time`` a simulator at half real time gives a forecast
        twice the wall time it needs, and wall-clock latencies would skip forecasts that fit.
        """
        next_due = self.controller.next_request_time()
        if next_due is None:
            return True
        estimate = self._forecast_clock_s.p95() or self._policy_clock_s.p95() or 0.0
        return self.clock() + estimate <= next_due

    # -- outputs ------------------------------------------------------------------------------------------------

    def _emit(self, trajectories: list[Trajectory], now: float) -> None:
        for traj in trajectories:
            self.sink.trajectory(traj, now)

    def _handle_errors(self, samples: Sequence[ErrorSample]) -> None:
        if not samples:
            return
        state = self.drift.update(samples)
        if state.tripped:
            self.controller.note(
                "drift_trips",
                f"prediction error {self.options.drift_metric}={state.value:.3f} passed drift_threshold "
                f"{self.options.drift_threshold}",
            )
        self.sink.prediction_errors(samples, state)
        if state.tripped and self.options.disarm_on_drift:
            self.arm(False)
            self.controller.note("drift_disarms")

    def flush(self) -> None:
        """End of stream: close pending forecasts (their unmatched steps count as missed)."""
        self._handle_errors(self.tracker.flush())

    def monitor_summary(self) -> dict[str, Any]:
        """Forecast and drift figures for diagnostics and summaries."""
        s = self.tracker.summary()
        d = self.drift.state()
        counters = self.controller.counters
        return {
            **{f"prediction_error_{k}": v for k, v in s.items() if k in ("last", "mean", "max")},
            "prediction_error_metric": s["metric"],
            "forecasts": counters.get("forecasts"),
            "forecast_skipped": counters.get("forecast_skipped"),
            "forecast_errors": counters.get("forecast_errors"),
            "forecast_matched": s["matched"],
            "forecast_missed": s["missed"],
            "drift_value": d.value,
            "drift_exceeded": d.exceeded,
            "forecast_latency_p95_s": self.forecast_latency.summary()["p95"],
        }
