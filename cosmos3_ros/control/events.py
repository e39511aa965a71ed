# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What a policy loop emits, and the one interface it emits it to.

:class:`PolicyLoop <cosmos3_ros.control.loop.PolicyLoop>` emits every event exactly once, to one
:class:`LoopSink`. The node (ROS messages), the bag recorder and the replay report are sinks; :class:`Tee` combines
them, the way openpi wraps a recorder around a policy. A sink overrides the methods it cares about; the others do
nothing. A sink that raises is reported through ``on_error`` and never stops the loop or the other sinks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos3_ros.core.drift import DriftState
from cosmos3_ros.core.forecast import ErrorSample
from cosmos3_ros.core.results import Timing
from cosmos3_ros.core.trajectory import Trajectory

log = logging.getLogger(__name__)

#: Outcomes of the forecast of a chunk (``ChunkRecord.forecast``).
FORECAST_OUTCOMES = ("not_due", "ok", "skipped_budget", "no_video", "error")


@dataclass(frozen=True)
class ChunkRecord:
    """Bookkeeping of one policy call: what it took, whether its chunk was published, what its forecast did."""

    chunk_id: int
    observation_stamp: float
    policy_s: float
    published: bool
    error: str | None = None
    timing: Timing | None = None
    forecast: str = "not_due"
    forecast_s: float | None = None
    completed_stamp: float | None = None
    #: How the chunk joined the running one (see :mod:`cosmos3_ros.control.chunking`): rows given to the model
    #: (real-time chunking), rows already due when it arrived, the largest joint difference at the switch.
    prefix_rows: int = 0
    consumed_rows: int | None = None
    boundary_jump: float | None = None
    #: Loop clock when the request was made (the latency budget starts here); clamps of this chunk's commands
    #: (joint limits, velocity, acceleration); the raw model actions [T, width] (model units).
    request_stamp: float | None = None
    clamps: int = 0
    actions: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the recorder writes on ``~/chunk_timing``; actions as nested lists)."""
        actions = self.actions
        d = dataclasses.asdict(dataclasses.replace(self, actions=None))
        if self.timing is None:
            d.pop("timing")
        d["actions"] = None if actions is None else np.asarray(actions, dtype=float).round(6).tolist()
        return d


@dataclass(frozen=True)
class ForecastFrames:
    """Forecast frames of one chunk: ``frames[k]`` (uint8 HxWx3) is expected to be seen at ``stamps[k]``."""

    chunk_id: int
    stamps: tuple[float, ...]
    frames: np.ndarray


class LoopSink:
    """Receives a loop's events. Every method is optional: the base class ignores everything."""

    def frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        """An input frame was accepted into the buffer."""

    def state(self, stamp: float, positions: np.ndarray) -> None:
        """A robot state was accepted (robot units, in the order of the controller's ``state_names``)."""

    def rejected(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        """An input (frame or robot state) was rejected; ``reason`` is the counter key."""

    def trajectory(self, traj: Trajectory, now: float) -> None:
        """A chunk or a hold to command."""

    def forecast(self, forecast: ForecastFrames) -> None:
        """Forecast frames of a published chunk."""

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        """New prediction-error samples and the drift state after them (``drift.tripped`` on a trip)."""

    def chunk_done(self, record: ChunkRecord) -> None:
        """A policy call (and its forecast) finished."""


class Tee(LoopSink):
    """Sends every event to each of ``sinks`` in order; a sink that raises is reported, the others still run."""

    def __init__(self, *sinks: LoopSink, on_error: Callable[[LoopSink, str, BaseException], None] | None = None):
        self.sinks = [s for s in sinks if s is not None]
        self.on_error = on_error or _log_sink_error
        self.errors = 0

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # one broken sink must not stop control
                self.errors += 1
                self.on_error(sink, method, exc)

    def frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        self._each("frame", camera, stamp, image)

    def state(self, stamp: float, positions: np.ndarray) -> None:
        self._each("state", stamp, positions)

    def rejected(self, camera: str, stamp: float | None, reason: str, message: str) -> None:
        self._each("rejected", camera, stamp, reason, message)

    def trajectory(self, traj: Trajectory, now: float) -> None:
        self._each("trajectory", traj, now)

    def forecast(self, forecast: ForecastFrames) -> None:
        self._each("forecast", forecast)

    def prediction_errors(self, samples: Sequence[ErrorSample], drift: DriftState) -> None:
        self._each("prediction_errors", samples, drift)

    def chunk_done(self, record: ChunkRecord) -> None:
        self._each("chunk_done", record)


def _log_sink_error(sink: LoopSink, method: str, exc: BaseException) -> None:
    log.error("%s.%s failed: %s: %s", type(sink).__name__, method, type(exc).__name__, exc)
