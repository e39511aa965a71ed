# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""PolicyLoop test rig: a manual clock, an event-recording sink and a loop on the fake backend (no ROS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos3_ros.backends.fake import FakeBackend
from cosmos3_ros.control.config import build_controller, loop_options, values_from_overrides
from cosmos3_ros.control.events import LoopSink
from cosmos3_ros.control.loop import PolicyLoop
from cosmos3_ros.core.synthetic import moving_scene_frame

BASE = {
    "backend": "fake",
    "camera_topics": ["cam"],
    "action_chunk_size": 8,
    "fps": 5.0,
    "replan_every": 4,
    "max_observation_age": 0.5,
    "forecast_every": 0,
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Events(LoopSink):
    """Records every event as (kind, payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def of(self, kind: str) -> list[Any]:
        return [p for k, p in self.events if k == kind]

    def frame(self, camera, stamp, image):
        self.events.append(("frame", (camera, stamp)))

    def state(self, stamp, positions):
        self.events.append(("state", (stamp, positions.copy())))

    def rejected(self, camera, stamp, reason, message):
        self.events.append(("rejected", (camera, stamp, reason)))

    def trajectory(self, traj, now):
        self.events.append(("trajectory", traj))

    def forecast(self, forecast):
        self.events.append(("forecast", forecast))

    def prediction_errors(self, samples, drift):
        self.events.append(("prediction_errors", (list(samples), drift)))

    def chunk_done(self, record):
        self.events.append(("chunk_done", record))

    def chunks(self) -> list[Any]:
        return [t for t in self.of("trajectory") if t.kind == "chunk"]

    def holds(self) -> list[Any]:
        return [t for t in self.of("trajectory") if t.kind == "hold"]


@dataclass
class Rig:
    """A loop with its fake backend, its recorded events and its clock."""

    loop: PolicyLoop
    fake: FakeBackend
    ev: Events
    clock: Clock

    def cycle(self, dt: float = 0.1, camera: str = "cam") -> Any:
        return cycle(self.loop, self.clock, dt, camera)


def make_loop(backend: FakeBackend | None = None, **over: Any) -> Rig:
    values = values_from_overrides({**BASE, **over})
    backend = backend or FakeBackend()
    events, clock = Events(), Clock()
    loop = PolicyLoop(build_controller(values), backend, loop_options(values), events, clock)
    return Rig(loop, backend, events, clock)


def frame(t: float) -> np.ndarray:
    return moving_scene_frame(t, 48, 64)


def cycle(loop: PolicyLoop, clock: Clock, dt: float = 0.1, camera: str = "cam") -> Any:
    """Advance the clock, feed one frame stamped now, step; run a request if one is made. Returns the record."""
    clock.t += dt
    loop.on_frame(camera, clock.t, frame(clock.t))
    request = loop.step(clock.t)
    return loop.run_request(request) if request is not None else None


def values(**over: Any) -> dict[str, Any]:
    return values_from_overrides({**BASE, **over})
