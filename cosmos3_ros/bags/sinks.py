# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Loop sinks that store a run: :class:`RecorderSink` writes a bag, :class:`ReportCollector` keeps what a report
shows. Both receive the loop's events through :class:`cosmos3_ros.control.events.LoopSink`; no ROS.

What a recording holds besides the inputs (topic names under the node's name ``prefix``):

==============================  =====================  ==========================================================
topic                           type                   content
==============================  =====================  ==========================================================
``prefix/joint_trajectory``     JointTrajectory        every chunk (stamped at its observation) and every hold
``prefix/predicted_image``      Image                  forecast frames; ``frame_id`` ``cosmos3_forecast/<chunk id>``
``prefix/prediction_error``     Float64                one per matched forecast frame, at its expected time
``prefix/chunk_timing``         String (JSON)          :meth:`ChunkRecord.to_dict` of every policy call
``prefix/events``               String (JSON)          holds (reason, held command), rejected inputs (reason),
                                                       drift trips (value, threshold)
``prefix/run_config``           String (JSON)          once: :func:`cosmos3_ros.bags.report_config.run_config`
==============================  =====================  ==========================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cosmos3_ros.bags.recorder import BagRecorder
from cosmos3_ros.bags.report_data import ChunkTrace, LatencyRecord, Mark
from cosmos3_ros.bags.report_strips import StripPicker
from cosmos3_ros.control.events import ChunkRecord, ForecastFrames, LoopSink
from cosmos3_ros.core.drift import DriftState
from cosmos3_ros.core.forecast import ErrorSample
from cosmos3_ros.core.trajectory import Trajectory

#: Prefix of the predicted frames' ``frame_id`` (the chunk id follows after a slash), as the node publishes them.
FORECAST_FRAME_ID = "cosmos3_forecast"


def _dt(traj: Trajectory) -> float:
    times = traj.times
    return float(times[1] - times[0]) if len(times) > 1 else float(times[0])


class HoldReasons:
    """The reason of each hold: the trajectory's own ``reason`` when it carries one, else the ``holds.<reason>``
    counter the controller just incremented (it counts before it emits), else "unknown"."""

    def __init__(self, counters: Any = None) -> None:
        self.counters = counters
        self._seen: dict[str, int] = self._holds()

    def _holds(self) -> dict[str, int]:
        if self.counters is None:
            return {}
        return {k: v for k, v in self.counters.snapshot().items() if k.startswith("holds.")}

    def of(self, traj: Trajectory) -> str:
        """The reason of the hold ``traj`` (call once per hold, in order)."""
        now = self._holds()
        grown = [k for k, v in now.items() if v > self._seen.get(k, 0)]
        self._seen = now
        own = getattr(traj, "reason", None)
        if own:
            return str(own)
        return grown[0].split(".", 1)[1] if len(grown) == 1 else "unknown"


def drift_detail(drift: DriftState, metric: str) -> str:
    """How a drift trip is described."""
    return f"{metric} {drift.value:.3g}"


class RecorderSink(LoopSink):
    """Writes the loop's inputs and outputs to ``recorder`` under the node's topic names (``prefix``/...).

    ``run_config`` (a :func:`cosmos3_ros.bags.report_config.run_config`) is written once, stamped with the first
    event's time (so the bag's time span stays the run's); ``counters`` (the controller's) give holds their reasons
    when the trajectories do not carry them; ``threshold`` goes with drift trips; ``clock`` places rejected inputs
    whose own stamp is unusable; accepted robot states go to ``state_topic`` as JointState of ``state_names``.
    """

    def __init__(
        self,
        recorder: BagRecorder,
        prefix: str,
        metric: str,
        *,
        run_config: Mapping[str, Any] | None = None,
        counters: Any = None,
        threshold: float | None = None,
        clock: Any = None,
        state_topic: str = "",
        state_names: Sequence[str] = (),
    ) -> None:
        self.recorder = recorder
        self.state_topic = state_topic
        self.state_names = list(state_names)
        self.prefix = prefix.rstrip("/")
        self.metric = metric
        self.threshold = threshold
        self.clock = clock
        self._reasons = HoldReasons(counters)
        self._last_stamp = 0.0
        self._config = None if run_config is None else dict(run_config)

    @classmethod
    def for_loop(
        cls,
        recorder: BagRecorder,
        prefix: str,
        values: Mapping[str, Any],
        controller: Any,
        run_config: Mapping[str, Any],
        clock: Any,
        state_topic: str | None = None,
    ) -> RecorderSink:
        """The sink of a loop built from setting ``values`` and its ``controller`` (node and replay alike); the robot
        state goes to ``state_topic`` (default: ``joint_states_topic``; "" records none)."""
        return cls(
            recorder,
            prefix,
            values["drift_metric"],
            run_config=run_config,
            counters=controller.counters,
            threshold=float(values["drift_threshold"]),
            clock=clock,
            state_topic=values["joint_states_topic"] if state_topic is None else state_topic,
            state_names=controller.config.state_names,
        )

    def _write_config(self, stamp: float) -> None:
        if self._config is not None:
            config, self._config = self._config, None
            self.recorder.write_json(f"{self.prefix}/run_config", stamp, config)

    def _event(self, stamp: float, data: dict[str, Any]) -> None:
        self._write_config(stamp)
        self.recorder.write_json(f"{self.prefix}/events", stamp, data)

    def frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        self._last_stamp = stamp
        self._write_config(stamp)
        self.recorder.write_image(camera, stamp, image, frame_id=camera)

    def state(self, stamp: float, positions: np.ndarray) -> None:
        if self.state_topic:  # the robot state as the node used it, so a replay can give it to the model again
            self.recorder.write_joint_state(self.state_topic, stamp, self.state_names, positions)

    def rejected(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        ok = stamp is not None and math.isfinite(stamp) and stamp >= 0
        t = stamp if ok and (self._last_stamp == 0.0 or abs(stamp - self._last_stamp) < 3600) else self._now()
        self._event(t, {"kind": "rejected", "input": camera, "reason": reason, "message": message[:500]})

    def _now(self) -> float:
        return float(self.clock()) if self.clock is not None else self._last_stamp

    def trajectory(self, traj: Trajectory, now: float) -> None:
        stamp = traj.stamp if traj.stamp is not None else now
        self._write_config(stamp)
        velocities = getattr(traj, "velocities", None)
        self.recorder.write_trajectory(
            f"{self.prefix}/joint_trajectory",
            stamp,
            traj.joint_names,
            traj.positions,
            _dt(traj),
            first_offset_s=float(traj.times[0]),
            velocities=velocities,
        )
        if traj.kind == "hold":
            self._event(
                now,
                {
                    "kind": "hold",
                    "reason": self._reasons.of(traj),
                    "chunk_id": traj.chunk_id,
                    "position": traj.positions[0],
                },
            )

    def forecast(self, forecast: ForecastFrames) -> None:
        topic = f"{self.prefix}/predicted_image"
        frame_id = f"{FORECAST_FRAME_ID}/{forecast.chunk_id}"
        for s, f in zip(forecast.stamps, forecast.frames, strict=True):
            self.recorder.write_image(topic, s, f, frame_id=frame_id, downsample=False)

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        for s in samples:
            self.recorder.write_float(f"{self.prefix}/prediction_error", s.stamp, s.value(self.metric))
        if drift.tripped and samples:
            self._event(
                max(s.actual_stamp for s in samples),
                {"kind": "drift_trip", "metric": self.metric, "value": drift.value, "threshold": self.threshold},
            )

    def chunk_done(self, record: ChunkRecord) -> None:
        self.recorder.write_json(f"{self.prefix}/chunk_timing", record.observation_stamp, record.to_dict())


class ReportCollector(LoopSink):
    """Keeps what the HTML report shows, at most ``limit`` entries of each kind.

    ``counters``: the controller's (hold reasons, see :class:`HoldReasons`). ``cameras``/``layout``: the loop's
    cameras, so the frame strips compare forecasts with the same (composed) view the loop does. ``fps``: the policy
    rate (the strips' matching tolerance is half a period).
    """

    def __init__(
        self,
        limit: int = 100_000,
        *,
        metric: str = "nmse",
        counters: Any = None,
        cameras: Sequence[str] = (),
        layout: str = "single",
        fps: float = 5.0,
    ) -> None:
        self.limit = limit
        self.metric = metric
        self.chunks: list[ChunkTrace] = []
        self.holds: list[Mark] = []
        self.errors: list[ErrorSample] = []
        self.latencies: list[LatencyRecord] = []
        self.rejections: list[Mark] = []
        self.drift_trips: list[Mark] = []
        self.forecast_frames = 0
        self.span: tuple[float, float] | None = None
        self.cameras = list(cameras)
        self.layout = layout
        self.picker = StripPicker(metric, tolerance_s=0.5 / fps)
        self._reasons = HoldReasons(counters)
        self._latest: dict[str, np.ndarray] = {}
        self._last_stamp: float | None = None

    def _seen(self, stamp: float | None) -> None:
        if stamp is None or not math.isfinite(stamp):
            return
        self._last_stamp = stamp
        self.span = (stamp, stamp) if self.span is None else (min(self.span[0], stamp), max(self.span[1], stamp))

    def frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        self._seen(stamp)
        if not self.cameras or camera == self.cameras[0]:
            self.picker.real(stamp, self._view(camera, image))
        else:
            self._latest[camera] = image

    def _view(self, camera: str, image: np.ndarray) -> np.ndarray | None:
        if len(self.cameras) <= 1:
            return image
        from cosmos3_ros.core.compose import compose

        frames = {**self._latest, camera: image}
        if any(c not in frames for c in self.cameras):
            return None
        try:
            return compose({c: frames[c] for c in self.cameras}, self.cameras, self.layout)
        except ValueError:
            return None

    def rejected(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        ok = stamp is not None and math.isfinite(stamp) and stamp >= 0
        if ok and self._last_stamp is not None and abs(stamp - self._last_stamp) > 3600:
            ok = False  # a wild stamp (the reason it was rejected): place it at the last good time
        t = stamp if ok else (self._last_stamp if self._last_stamp is not None else math.nan)
        if len(self.rejections) < self.limit:
            self.rejections.append(Mark(t, reason, camera))

    def trajectory(self, traj: Trajectory, now: float) -> None:
        if traj.kind == "hold":
            reason = self._reasons.of(traj)
            if len(self.holds) < self.limit:
                self.holds.append(Mark(now, reason, "", traj.chunk_id, np.array(traj.positions[0], dtype=float)))
            return
        if len(self.chunks) < self.limit:
            stamp = traj.stamp if traj.stamp is not None else now
            self.chunks.append(
                ChunkTrace(
                    stamp,
                    traj.positions,
                    _dt(traj),
                    traj.chunk_id,
                    float(traj.times[0]),
                    published=max(now, stamp),
                    velocities=getattr(traj, "velocities", None),
                    offsets=np.array(traj.times, dtype=np.float64),
                )
            )

    def forecast(self, forecast: ForecastFrames) -> None:
        self.forecast_frames += len(forecast.frames)
        self.picker.forecast(forecast.chunk_id, forecast.stamps, forecast.frames)

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        self.errors.extend(samples[: max(0, self.limit - len(self.errors))])
        for s in samples:
            self.picker.sample(s.chunk_id, s.step, s.value(self.metric), s.actual_stamp)
        if drift.tripped and samples and len(self.drift_trips) < self.limit:
            self.drift_trips.append(Mark(max(s.actual_stamp for s in samples), drift_detail(drift, self.metric)))

    def chunk_done(self, record: ChunkRecord) -> None:
        if len(self.latencies) < self.limit:
            self.latencies.append(
                LatencyRecord(
                    record.observation_stamp,
                    record.policy_s,
                    record.forecast_s,
                    record.chunk_id,
                    forecast=record.forecast,
                    budget_s=getattr(record, "budget_s", None),
                    published=record.published,
                    error=record.error,
                    completed=record.completed_stamp,
                    requested=getattr(record, "request_stamp", None),
                )
            )

    def finish(self) -> None:
        """End of the run: close the open forecasts of the frame strips."""
        self.picker.finish()
