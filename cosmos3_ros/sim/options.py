# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulator's parameters and presets, checked without ROS or MuJoCo.

One table (:data:`PARAMS`) declares every parameter of the ``cosmos3_sim`` node with its default, bounds and
description; the node declares its ROS parameters from it and ``cosmos3-ros sim`` its flags. :data:`PRESETS` are
the camera and topic layouts of the two shipped policy presets: ``isaac`` (config/isaac_sim.yaml: one camera on
/rgb, JointState commands on /joint_command) and ``droid`` (config/droid.yaml: a wrist and two exterior cameras,
the node's JointTrajectory followed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cosmos3_ros.sim.world import CAMERAS, CameraSpec

NODE_NAME = "cosmos3_sim"


@dataclass(frozen=True)
class SimParam:
    """One parameter: name, default, description; ``low``/``high`` bound numbers; ``runtime``: settable while
    running."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    runtime: bool = False


PARAMS: tuple[SimParam, ...] = (
    SimParam("cameras", ["/rgb=front"], "Camera topics as TOPIC=CAMERA or TOPIC=CAMERA@WxH (cameras of the scene: "
             f"{', '.join(CAMERAS)}); each publishes sensor_msgs/Image rgb8 and sensor_msgs/CameraInfo beside it."),
    SimParam("width", 320, "Image width of cameras without their own size (pixels).", 16, 4096),
    SimParam("height", 240, "Image height of cameras without their own size (pixels).", 16, 4096),
    SimParam("camera_rate", 15.0, "Camera frames per simulated second.", 0.1, 240.0),
    SimParam("real_time_factor", 1.0, "Simulated seconds per wall-clock second (0: as fast as it can).", 0.0, 100.0,
             runtime=True),
    SimParam("seed", 0, "Seed of the object placement; the same seed and commands give the same run.", 0, 2**31 - 1),
    SimParam("physics_rate", 500.0, "Physics steps per simulated second.", 100.0, 10000.0),
    SimParam("clock_rate", 60.0, "/clock messages per simulated second.", 1.0, 1000.0),
    SimParam("joint_state_rate", 60.0, "/joint_states messages per simulated second.", 1.0, 1000.0),
    SimParam("monitor_rate", 0.0, "~/monitor/measured and ~/monitor/reference messages per simulated second (0: "
             "joint_state_rate).", 0.0, 1000.0),
    SimParam("joint_states_topic", "/joint_states", "Where sensor_msgs/JointState of every joint is published."),
    SimParam("joint_command_topic", "/joint_command", "sensor_msgs/JointState commands (Isaac Sim's articulation "
             "controller)."),
    SimParam("trajectory_topic", "/joint_trajectory", "trajectory_msgs/JointTrajectory followed as "
             "joint_trajectory_controller does (empty: off)."),
    SimParam("velocity_feedforward", False, "JointState commands without velocities: derive velocity targets from "
             "consecutive positions and their stamps (false: target velocity 0, as Isaac Sim's drive)."),
    SimParam("allow_partial_joints_goal", False, "Accept trajectories for some of the joints "
             "(joint_trajectory_controller's parameter)."),
    SimParam("allow_nonzero_velocity_at_trajectory_end", False, "Accept trajectories whose last point moves "
             "(joint_trajectory_controller's parameter)."),
    SimParam("camera_info", True, "Also publish sensor_msgs/CameraInfo next to each image topic."),
    SimParam("paused", False, "Pause the simulation: nothing steps or publishes, /clock stops.", runtime=True),
)  # fmt: skip
BY_NAME = {p.name: p for p in PARAMS}

PRESETS: dict[str, dict[str, Any]] = {
    "isaac": {"cameras": ["/rgb=front"], "width": 320, "height": 240, "trajectory_topic": "/joint_trajectory"},
    "droid": {
        "cameras": [
            "/wrist_camera/image_raw=wrist",
            "/exterior_camera_1/image_raw=exterior_1",
            "/exterior_camera_2/image_raw=exterior_2",
        ],
        "width": 320,
        "height": 180,
        "trajectory_topic": "/cosmos3_policy/joint_trajectory",
    },
}


@dataclass(frozen=True)
class CameraTopic:
    """A camera published on ``topic`` (and its CameraInfo on ``info_topic``)."""

    topic: str
    spec: CameraSpec

    @property
    def info_topic(self) -> str:
        """``<namespace of topic>/camera_info`` (``/rgb`` -> ``/camera_info``, as Isaac Sim's camera helper)."""
        base = self.topic.rstrip("/").rsplit("/", 1)[0]
        return f"{base}/camera_info"


def parse_cameras(entries: list[str], width: int, height: int) -> list[CameraTopic]:
    """``TOPIC=CAMERA[@WxH]`` entries; ValueError naming a bad entry."""
    out: list[CameraTopic] = []
    for entry in entries:
        topic, sep, rest = entry.partition("=")
        name, at, size = rest.partition("@")
        if not sep or not topic.startswith("/") or not name:
            raise ValueError(f"cameras entry {entry!r}: expected /TOPIC=CAMERA or /TOPIC=CAMERA@WxH")
        w, h = width, height
        if at:
            try:
                w, h = (int(v) for v in size.lower().split("x"))
            except ValueError:
                raise ValueError(f"cameras entry {entry!r}: size must be WxH, e.g. 320x240") from None
        out.append(CameraTopic(topic, CameraSpec(name, w, h)))
    topics = [c.topic for c in out]
    if len(set(topics)) != len(topics):
        raise ValueError(f"cameras: a topic appears twice in {topics}")
    return out


def check(values: dict[str, Any]) -> list[CameraTopic]:
    """Check every value against :data:`PARAMS` (types, bounds, rates) and return the cameras; ValueError naming
    the first bad value. Whole numbers given for decimal parameters become floats (in ``values``), as ROS needs."""
    for p in PARAMS:
        v = values[p.name]
        if isinstance(p.default, bool):
            if not isinstance(v, bool):
                raise ValueError(f"{p.name} must be true or false, got {v!r}")
        elif isinstance(p.default, str) and not isinstance(v, str):
            raise ValueError(f"{p.name} must be a string, got {v!r}")
        elif isinstance(p.default, list) and not (isinstance(v, list | tuple) and all(isinstance(e, str) for e in v)):
            raise ValueError(f"{p.name} must be a list of strings, got {v!r}")
        elif isinstance(p.default, int | float):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"{p.name} must be a number, got {v!r}")
            if isinstance(p.default, int) and not isinstance(v, int):
                raise ValueError(f"{p.name} must be a whole number, got {v!r}")
            if (p.low is not None and v < p.low) or (p.high is not None and v > p.high):
                raise ValueError(f"{p.name} = {v} is outside [{p.low:g}, {p.high:g}]")
            if isinstance(p.default, float):
                values[p.name] = float(v)
    for rate in ("camera_rate", "clock_rate", "joint_state_rate", "monitor_rate"):
        if values[rate] > values["physics_rate"]:
            raise ValueError(f"{rate} ({values[rate]:g} Hz) exceeds physics_rate ({values['physics_rate']:g} Hz)")
    for topic in ("joint_states_topic", "joint_command_topic"):
        if not str(values[topic]).startswith("/"):
            raise ValueError(f"{topic} must be an absolute topic, got {values[topic]!r}")
    return parse_cameras(list(values["cameras"]), int(values["width"]), int(values["height"]))


def preset_values(preset: str, **overrides: Any) -> dict[str, Any]:
    """Every parameter's value for ``preset`` (``isaac`` or ``droid``), then ``overrides`` (None: keep)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    values = {p.name: p.default for p in PARAMS}
    values.update(PRESETS[preset])
    for name, v in overrides.items():
        if name not in BY_NAME:
            raise ValueError(f"unknown simulator parameter {name!r}")
        if v is not None:
            values[name] = v
    return values
