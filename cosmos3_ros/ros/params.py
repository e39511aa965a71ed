# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Declared parameters of the policy node: one table with types, defaults, ranges and descriptions.

The README's parameter reference and ``config/policy.yaml`` are checked against this table by tests. Importing
this module needs no ROS (the offline replay reads the same parameter files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cosmos3_ros.core.compose import LAYOUTS
from cosmos3_ros.core.settings import VIEW_POINTS, PolicySettings

_D = PolicySettings()

BACKENDS = ("in_process", "sidecar")
OUTPUT_MODES = ("trajectory", "joint_state")
CAMERA_QOS = ("sensor_data", "reliable", "system_default")
FORECAST_SOURCES = ("forward_dynamics", "policy_video")
DRIFT_METRICS = ("nmse", "psnr")


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    type_: int | None = None  # needed for empty arrays

    def descriptor(self) -> Any:
        """The rcl ParameterDescriptor (description, range, read-only); imports rcl_interfaces lazily."""
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        desc = self.description
        if self.choices:
            desc += f" One of: {', '.join(self.choices)}."
        d = ParameterDescriptor(name=self.name, description=desc, read_only=self.read_only)
        if self.type_ is not None:
            d.dynamic_typing = True  # see array_type_problem
        if self.int_range is not None:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        if self.float_range is not None:
            d.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1], step=0.0)
            ]
        return d


# rcl_interfaces/msg/ParameterType values (kept literal so this table loads without ROS, e.g. for replay).
_STR_ARRAY = 9  # PARAMETER_STRING_ARRAY
_DBL_ARRAY = 8  # PARAMETER_DOUBLE_ARRAY

PARAMS: tuple[ParamSpec, ...] = (
    # -- model and backend (fixed while configured) --
    ParamSpec("model", "", "Diffusers-format Cosmos 3 checkpoint directory or a cached Hugging Face id.", True),
    ParamSpec("backend", "in_process", "Where the model runs.", True, choices=BACKENDS),
    ParamSpec("device", "auto", "in_process: torch device (auto, cpu, cuda, cuda:N).", True),
    ParamSpec("dtype", "auto", "in_process: weights dtype.", True, choices=("auto", "float32", "bfloat16", "float16")),
    ParamSpec("guardrail", False, "in_process: run NVIDIA's Cosmos guardrail (needs cosmos-guardrail).", True),
    ParamSpec(
        "warmup", True, "Run one policy and one forecast call on configure, so the loop has no cold start.", True
    ),
    ParamSpec("sidecar_url", "ws://127.0.0.1:8000", "sidecar: websocket URL of the policy server.", True),
    ParamSpec("sidecar_token", "", "sidecar: bearer token (empty: none).", True),
    ParamSpec("sidecar_timeout", 10.0, "sidecar: seconds to wait for one reply.", True, float_range=(0.1, 600.0)),
    # -- inputs --
    ParamSpec(
        "camera_topics",
        ["/camera/image_raw"],
        "Camera topics (sensor_msgs/Image; a topic ending in /compressed is sensor_msgs/CompressedImage). "
        "The first camera is the reference for time synchronisation.",
        True,
        type_=_STR_ARRAY,
    ),
    ParamSpec("camera_layout", "single", "How several cameras are composed into one frame.", True, choices=LAYOUTS),
    ParamSpec("camera_qos", "sensor_data", "QoS of the camera subscriptions.", True, choices=CAMERA_QOS),
    ParamSpec(
        "sync_tolerance", 0.05, "Max stamp difference (s) between cameras of one observation.", float_range=(0.0, 10.0)
    ),
    ParamSpec(
        "max_observation_age",
        0.5,
        "Frames older than this (s, node clock) are never used.",
        float_range=(0.001, 3600.0),
    ),
    ParamSpec("max_depth_mm", 10000, "16UC1/mono16 depth images: millimetres mapped to white.", int_range=(1, 65535)),
    ParamSpec(
        "joint_states_topic",
        "",
        "Optional sensor_msgs/JointState input (empty: off); reported in "
        "diagnostics and sent to sidecars as observation/joint_position.",
        True,
    ),
    # -- sampling (applied from the next request) --
    ParamSpec("prompt", _D.prompt, "Task instruction; also settable on ~/instruction (std_msgs/String)."),
    ParamSpec("domain_name", _D.domain_name, "Embodiment domain; fixes the action width.", True),
    ParamSpec("action_chunk_size", _D.action_chunk_size, "Actions per chunk.", True, int_range=(1, 256)),
    ParamSpec(
        "fps", _D.fps, "Policy rate (Hz); must match the embodiment's training rate.", True, float_range=(0.1, 1000.0)
    ),
    ParamSpec("image_size", _D.image_size, "Resolution tier (256, 480, 704, 720).", True, int_range=(256, 720)),
    ParamSpec("num_steps", _D.num_steps, "Denoising steps.", int_range=(1, 1000)),
    ParamSpec("guidance", _D.guidance, "Classifier-free guidance (1.0 = off).", float_range=(1.0, 100.0)),
    ParamSpec(
        "shift",
        0.0,
        "Flow shift; 0 keeps the checkpoint's scheduler, > 0 switches to the native flow schedule with this shift.",
        float_range=(0.0, 100.0),
    ),
    ParamSpec("seed", _D.seed, "Noise seed (same seed and observation, same chunk).", int_range=(0, 2**31 - 1)),
    ParamSpec("view_point", _D.view_point, "Camera view point in the action caption.", choices=VIEW_POINTS),
    # -- control loop --
    ParamSpec(
        "replan_every",
        0,
        "Request the next chunk once this many actions of the current one are due (0: half a chunk).",
        True,
        int_range=(0, 256),
    ),
    ParamSpec(
        "control_rate", 50.0, "Control loop and JointState streaming rate (Hz).", True, float_range=(1.0, 1000.0)
    ),
    ParamSpec(
        "joint_names",
        [],
        "Names of the action dimensions (empty: documented defaults per domain).",
        True,
        type_=_STR_ARRAY,
    ),
    ParamSpec(
        "action_scale", [], "Per-dimension scale: command = action * scale + offset (empty: 1).", True, type_=_DBL_ARRAY
    ),
    ParamSpec("action_offset", [], "Per-dimension offset (empty: 0).", True, type_=_DBL_ARRAY),
    ParamSpec(
        "joint_limits.lower",
        [],
        "Per-dimension lower clamp after de-normalisation (empty: none).",
        True,
        type_=_DBL_ARRAY,
    ),
    ParamSpec("joint_limits.upper", [], "Per-dimension upper clamp (empty: none).", True, type_=_DBL_ARRAY),
    ParamSpec(
        "output_mode",
        "trajectory",
        "trajectory: JointTrajectory per chunk; joint_state: also stream "
        "interpolated sensor_msgs/JointState commands at control_rate.",
        True,
        choices=OUTPUT_MODES,
    ),
    ParamSpec("joint_command_topic", "~/joint_command", "joint_state mode: where the JointState commands go.", True),
    ParamSpec(
        "trajectory_stamp",
        "observation",
        "observation: header.stamp is the observation time and "
        "time_from_start counts from it; now: stamp is the publish time and due points are dropped.",
        True,
        choices=("observation", "now"),
    ),
    ParamSpec("autostart", True, "Configure and activate on start (a plain `ros2 run` runs).", True),
    # -- monitoring and recording --
    ParamSpec(
        "forecast_every", 1, "Forecast the frames of every k-th published chunk (0: off).", True, int_range=(0, 1000)
    ),
    ParamSpec(
        "forecast_source",
        "forward_dynamics",
        "forward_dynamics: a second call with the sent actions; "
        "policy_video: the video predicted jointly with the actions (cheaper).",
        True,
        choices=FORECAST_SOURCES,
    ),
    ParamSpec("forecast_num_steps", 0, "Denoising steps of forecast calls (0: num_steps).", True, int_range=(0, 1000)),
    ParamSpec(
        "drift_metric", "nmse", "Prediction-error metric compared against drift_threshold.", True, choices=DRIFT_METRICS
    ),
    ParamSpec(
        "drift_threshold",
        0.5,
        "WARN (and optionally disarm) when the rolling prediction error passes this (nmse: above; psnr: below).",
        float_range=(0.0, 1000.0),
    ),
    ParamSpec("disarm_on_drift", False, "Disarm the controller when drift passes the threshold."),
    ParamSpec("record_path", "", "Write an MCAP rosbag2 bag here (empty: off).", True),
    ParamSpec("record_image_every", 1, "Record every n-th input frame.", True, int_range=(1, 1000)),
)

SPEC_BY_NAME = {p.name: p for p in PARAMS}


def array_type_problem(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` is not a valid array for ``spec`` ("" when fine, or when ``spec`` is no array)."""
    if spec.type_ is None or value is None:  # None: `[]` from a YAML file (no element type)
        return ""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return f"{spec.name} must be a list, got {value!r}"
    if spec.type_ == _STR_ARRAY and not all(isinstance(v, str) for v in value):
        return f"{spec.name} must be a list of strings, got {list(value)!r}"
    if spec.type_ == _DBL_ARRAY and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return f"{spec.name} must be a list of numbers, got {list(value)!r}"
    return ""


def check_value(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` is not acceptable for ``spec`` by type, choice or range ("" when fine)."""
    problem = array_type_problem(spec, value)
    if problem:
        return problem
    default = spec.default
    if spec.type_ is None:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                return f"{spec.name} must be true or false, got {value!r}"
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{spec.name} must be an integer, got {value!r}"
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{spec.name} must be a number, got {value!r}"
        elif isinstance(default, str) and not isinstance(value, str):
            return f"{spec.name} must be a string, got {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{spec.name}={value!r}: not one of {spec.choices}"
    if spec.int_range and not spec.int_range[0] <= value <= spec.int_range[1]:
        return f"{spec.name}={value} is outside [{spec.int_range[0]}, {spec.int_range[1]}]"
    if spec.float_range and not spec.float_range[0] <= value <= spec.float_range[1]:
        return f"{spec.name}={value} is outside [{spec.float_range[0]}, {spec.float_range[1]}]"
    return ""


def settings_from_values(values: dict[str, Any]) -> PolicySettings:
    """PolicySettings from node parameter values (raises SettingsError/ValueError naming the bad value)."""
    shift = float(values["shift"])
    return PolicySettings(
        prompt=str(values["prompt"]),
        domain_name=str(values["domain_name"]),
        action_chunk_size=int(values["action_chunk_size"]),
        fps=float(values["fps"]),
        image_size=int(values["image_size"]),
        num_steps=int(values["num_steps"]),
        guidance=float(values["guidance"]),
        shift=shift if shift > 0 else None,
        seed=int(values["seed"]),
        view_point=str(values["view_point"]),
    )
