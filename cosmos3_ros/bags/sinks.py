# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Loop sinks that store a run: :class:`RecorderSink` writes a bag, :class:`ReportCollector` keeps what a report
shows. Both receive the loop's events through :class:`cosmos3_ros.control.events.LoopSink`; no ROS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cosmos3_ros.bags.recorder import BagRecorder
from cosmos3_ros.bags.report import ChunkTrace, LatencyRecord
from cosmos3_ros.control.events import ChunkRecord, ForecastFrames, LoopSink
from cosmos3_ros.core.drift import DriftState
from cosmos3_ros.core.forecast import ErrorSample
from cosmos3_ros.core.trajectory import Trajectory


def _dt(traj: Trajectory) -> float:
    times = traj.times
    return float(times[1] - times[0]) if len(times) > 1 else float(times[0])


class RecorderSink(LoopSink):
    """Writes the loop's inputs and outputs to ``recorder`` under the node's topic names (``prefix``/...)."""

    def __init__(self, recorder: BagRecorder, prefix: str, metric: str) -> None:
        self.recorder = recorder
        self.prefix = prefix.rstrip("/")
        self.metric = metric

    def frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        self.recorder.write_image(camera, stamp, image, frame_id=camera)

    def trajectory(self, traj: Trajectory, now: float) -> None:
        stamp = traj.stamp if traj.stamp is not None else now
        self.recorder.write_trajectory(
            f"{self.prefix}/joint_trajectory",
            stamp,
            traj.joint_names,
            traj.positions,
            _dt(traj),
            first_offset_s=float(traj.times[0]),
        )

    def forecast(self, forecast: ForecastFrames) -> None:
        topic = f"{self.prefix}/predicted_image"
        for s, f in zip(forecast.stamps, forecast.frames, strict=True):
            self.recorder.write_image(topic, s, f, frame_id="cosmos3_forecast", downsample=False)

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        for s in samples:
            self.recorder.write_float(f"{self.prefix}/prediction_error", s.stamp, s.value(self.metric))

    def chunk_done(self, record: ChunkRecord) -> None:
        self.recorder.write_json(f"{self.prefix}/chunk_timing", record.observation_stamp, record.to_dict())


@dataclass
class ReportCollector(LoopSink):
    """Keeps what the HTML report shows, at most ``limit`` entries of each kind."""

    limit: int = 100_000
    chunks: list[ChunkTrace] = field(default_factory=list)
    holds: list[float] = field(default_factory=list)
    errors: list[ErrorSample] = field(default_factory=list)
    latencies: list[LatencyRecord] = field(default_factory=list)
    rejections: list[tuple[float | None, str, str]] = field(default_factory=list)
    forecast_frames: int = 0

    def trajectory(self, traj: Trajectory, now: float) -> None:
        if traj.kind == "hold":
            if len(self.holds) < self.limit:
                self.holds.append(now)
            return
        if len(self.chunks) < self.limit:
            stamp = traj.stamp if traj.stamp is not None else now
            self.chunks.append(ChunkTrace(stamp, traj.positions, _dt(traj), traj.chunk_id, float(traj.times[0])))

    def rejected(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        if len(self.rejections) < self.limit:
            self.rejections.append((stamp, camera, reason))

    def forecast(self, forecast: ForecastFrames) -> None:
        self.forecast_frames += len(forecast.frames)

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        self.errors.extend(samples[: max(0, self.limit - len(self.errors))])

    def chunk_done(self, record: ChunkRecord) -> None:
        if len(self.latencies) < self.limit:
            self.latencies.append(
                LatencyRecord(record.observation_stamp, record.policy_s, record.forecast_s, record.chunk_id)
            )
