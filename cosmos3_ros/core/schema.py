# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The one declarative settings schema: every setting of the package, declared once.

Pure Python (no ROS, no torch). Each :class:`Setting` has a name, a kind, a default, bounds or choices, a
description, a scope, whether it may change at run time and whether a sidecar request may carry it. Everything else
is derived from this table (the model of quality is generate_parameter_library's YAML schema):

- the node's parameter descriptors and on-set validation (:mod:`cosmos3_ros.ros.parameters`);
- the CLI flags of ``predict``, ``sidecar``, ``bench`` and ``demo`` (:mod:`cosmos3_ros.commands.flags`), with the
  same names as the parameters;
- the sidecar's per-request ``settings`` schema and its limits (:mod:`cosmos3_ros.sidecar.protocol`);
- :class:`~cosmos3_ros.core.settings.PolicySettings` (the ``sampling`` scope) and the benchmark configuration;
- the checks of parameter files and presets (:mod:`cosmos3_ros.core.params_file`) and the README tables
  (``cosmos3-ros settings --markdown``; a test keeps the README in step).

Scopes: ``model`` (what is loaded), ``sampling`` (one model call), ``controller`` (inputs, timing and outputs of the
loop), ``monitoring`` (forecasts, drift, recording), ``node`` (the ROS node itself), ``backend`` (where the model
runs, from the node's side), ``server`` (the sidecar server; command-line only, not node parameters), ``fleet``
(``cosmos3-ros fleet``: replicas, batching across robots and the Ray cluster; command-line only).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SCOPES: tuple[str, ...] = ("model", "sampling", "controller", "monitoring", "node", "backend", "server", "fleet")
KINDS: tuple[str, ...] = ("bool", "int", "float", "str", "str_list", "float_list")

#: Scopes that are node parameters (``server`` settings are flags of ``cosmos3-ros sidecar`` only).
NODE_SCOPES: tuple[str, ...] = ("model", "sampling", "controller", "monitoring", "node", "backend")

#: Unpadded action width per embodiment domain (mirrors diffusers 0.42.1 ``_EMBODIMENT_TO_RAW_ACTION_DIM``; a test
#: checks the two stay equal).
DOMAIN_ACTION_WIDTH: dict[str, int] = {
    "av": 9,
    "camera_pose": 9,
    "pusht": 2,
    "umi": 10,
    "bridge_orig_lerobot": 10,
    "droid_lerobot": 10,
    "robomind-franka": 10,
    "robomind-franka-dual": 20,
    "robomind-ur": 10,
    "galbot": 30,
    "agibotworld": 29,
    "agibot_gear_gripper": 29,
    "agibot_gear_gripper_ext": 29,
    "fractal": 10,
    "hand_pose": 57,
}
#: Short domain aliases users type; resolved to the canonical diffusers names.
DOMAIN_ALIASES: dict[str, str] = {"bridge": "bridge_orig_lerobot", "droid": "droid_lerobot"}
#: Resolution tiers the action modes accept.
RESOLUTION_TIERS: tuple[int, ...] = (256, 480, 704, 720)
#: Camera view points the action caption knows.
VIEW_POINTS: tuple[str, ...] = ("ego_view", "third_person_view", "wrist_view", "concat_view")
#: Largest seed (the same everywhere: node, CLI, sidecar).
MAX_SEED = 2**31 - 1
#: Longest prompt in characters (the model's cost grows with the square of the prompt length).
MAX_PROMPT_CHARS = 4096


class SettingsError(ValueError):
    """A setting is unknown, of the wrong type, or out of range; the message names it."""


@dataclass(frozen=True)
class Setting:
    """One declared setting.

    ``minimum``/``maximum`` bound numbers (inclusive); ``zero`` documents what 0 means for a number whose ``minimum``
    is above 0 (0 is then allowed too: ``shift: 0`` keeps the checkpoint's scheduler). ``max_length`` bounds strings
    (characters) and lists (items). ``runtime`` settings may change while the node runs and take effect on the next
    cycle; all others are read-only parameters. ``request`` settings may be overridden per sidecar request.
    ``secret`` values are never logged or printed. ``topic`` strings (or list items) must be valid ROS 2 topic
    names, checked before anything loads.
    """

    name: str
    kind: str
    default: Any
    description: str
    scope: str
    runtime: bool = False
    request: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    zero: str = ""
    max_length: int | None = None
    secret: bool = False
    unit: str = ""
    topic: bool = False

    def __post_init__(self) -> None:
        assert self.kind in KINDS, (self.name, self.kind)
        assert self.scope in SCOPES, (self.name, self.scope)
        assert not self.request or self.scope == "sampling", self.name
        assert not self.check(self.default), (self.name, self.check(self.default))

    # -- values ------------------------------------------------------------------------------------------------

    def coerce(self, value: Any) -> Any:
        """``value`` in this setting's Python type where the conversion is lossless (int -> float, numpy scalars,
        tuples -> lists, None -> [] for lists); anything else is returned unchanged for :meth:`check` to reject."""
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar or 0-d array
            value = value.item()
        if self.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.kind == "int" and isinstance(value, float) and value.is_integer():
            return int(value)  # 3.0 from a JSON or msgpack client means 3
        if self.kind.endswith("_list"):
            if value is None:
                return []
            if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
                items = list(value.tolist() if hasattr(value, "tolist") else value)
                if self.kind == "float_list":
                    items = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
                return items
        return value

    def check(self, value: Any) -> str:
        """Why ``value`` is not acceptable ("" when it is). Expects a coerced value."""
        name = self.name
        if self.kind == "bool":
            return "" if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if self.kind in ("int", "float"):
            ok = isinstance(value, int if self.kind == "int" else (int, float)) and not isinstance(value, bool)
            if not ok:
                return f"{name} must be {'an integer' if self.kind == 'int' else 'a number'}, got {value!r}"
            if not math.isfinite(value):
                return f"{name} must be finite, got {value!r}"
            if self.choices and value not in self.choices:
                return f"{name}={value!r} is not one of {list(self.choices)}"
            if self.zero and value == 0:
                return ""
            lo = -math.inf if self.minimum is None else self.minimum
            hi = math.inf if self.maximum is None else self.maximum
            if not lo <= value <= hi:
                also = f" (or 0: {self.zero})" if self.zero else ""
                return f"{name}={value!r} is outside [{_num(lo)}, {_num(hi)}]{also}"
            return ""
        if self.kind == "str":
            if not isinstance(value, str):
                return f"{name} must be a string, got {value!r}"
            if self.choices and value not in self.choices:
                return f"{name}={value!r} is not one of {list(self.choices)}"
            if self.max_length is not None and len(value) > self.max_length:
                return f"{name} has {len(value)} characters; the limit is {self.max_length}"
            if self.topic and value:
                problem = topic_name_problem(value)
                return f"{name}={value!r} is not a valid ROS 2 topic name: {problem}" if problem else ""
            return ""
        # lists
        if not isinstance(value, list):
            return f"{name} must be a list, got {value!r}"
        if self.max_length is not None and len(value) > self.max_length:
            return f"{name} has {len(value)} items; the limit is {self.max_length}"
        if self.kind == "str_list" and not all(isinstance(v, str) for v in value):
            return f"{name} must be a list of strings, got {value!r}"
        if self.topic:
            for item in value:
                problem = topic_name_problem(item)
                if problem:
                    return f"{name} item {item!r} is not a valid ROS 2 topic name: {problem}"
        if self.kind == "float_list":
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return f"{name} must be a list of numbers, got {value!r}"
        return ""

    def validate(self, value: Any) -> Any:
        """The coerced value, or SettingsError naming the problem."""
        value = self.coerce(value)
        problem = self.check(value)
        if problem:
            raise SettingsError(problem)
        return value

    # -- documentation -----------------------------------------------------------------------------------------

    def bounds_text(self) -> str:
        """Range or choices as a short human text ("" when unbounded)."""
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        parts = []
        if self.minimum is not None or self.maximum is not None:
            lo = "-inf" if self.minimum is None else _num(self.minimum)
            hi = "inf" if self.maximum is None else _num(self.maximum)
            parts.append(f"[{lo}, {hi}]")
        if self.zero:
            parts.append(f"0: {self.zero}")
        if self.max_length is not None:
            parts.append(f"at most {self.max_length} {'characters' if self.kind == 'str' else 'items'}")
        return "; ".join(parts)

    def help_text(self) -> str:
        """Description, bounds and default, for --help pages and parameter descriptors."""
        text = self.description
        bounds = self.bounds_text()
        if bounds:
            text += f" ({bounds})"
        if not self.secret:
            text += f" [default: {format_value(self.default)}]"
        return text


_TOKEN = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})$")


def topic_name_problem(name: str) -> str:
    """Why ``name`` is not a valid ROS 2 topic name ("" when it is): the rules of design.ros2.org's "Topic and
    Service name mapping" (tokens of letters, digits and underscores not starting with a digit, separated by single
    slashes, an optional leading ``/`` or ``~/``, no trailing slash, ``{substitutions}``)."""
    if not name:
        return "it is empty"
    if name.endswith("/"):
        return "it ends with '/'"
    if "//" in name:
        return "it contains '//'"
    body = name
    if body.startswith("~"):
        if body == "~":
            return ""
        if not body.startswith("~/"):
            return "'~' must be followed by '/'"
        body = body[2:]
    elif body.startswith("/"):
        body = body[1:]
    for token in body.split("/"):
        if not _TOKEN.match(token):
            return f"token {token!r} is not letters, digits and underscores (not starting with a digit)"
    return ""


def _num(x: float) -> str:
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:g}"


def format_value(value: Any) -> str:
    """A value as it is written in YAML parameter files."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)


_ALL_DOMAINS = tuple(DOMAIN_ACTION_WIDTH) + tuple(DOMAIN_ALIASES)

# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # -- model: what is loaded, and how --------------------------------------------------------------------------
    Setting("model", "str", "", "Diffusers-format Cosmos 3 checkpoint directory or a cached Hugging Face id.",
            "model"),
    Setting("device", "str", "auto", "Torch device of the in-process model (auto, cpu, cuda, cuda:N).", "model"),
    Setting("dtype", "str", "auto", "Weights dtype (auto: bfloat16 on CUDA, float32 on CPU).", "model",
            choices=("auto", "float32", "bfloat16", "float16")),
    Setting("guardrail", "bool", False,
            "Run NVIDIA's Cosmos guardrail (needs cosmos-guardrail; the NVIDIA Open Model License asks for it with "
            "the released weights).", "model"),
    Setting("warmup", "bool", True,
            "Run the loop's model calls once before serving (compilation and graph capture never land on the first "
            "control cycle).", "model"),
    Setting("fp8", "bool", False,
            "Opt-in FP8 (Hopper and newer GPUs): the transformer blocks' linear layers in row-wise scaled float8, "
            "the measured sensitive ones kept in bf16 (see 'GPU performance'). Faster, and it changes the actions: "
            "check them on your task first.", "model"),
    # -- sampling: one model call ---------------------------------------------------------------------------------
    Setting("prompt", "str", "Perform the task.",
            "Task instruction; the node also takes it on ~/instruction (std_msgs/String).", "sampling",
            runtime=True, request=True, max_length=MAX_PROMPT_CHARS),
    Setting("domain_name", "str", "bridge_orig_lerobot",
            "Embodiment domain; fixes the action width (aliases: bridge, droid).", "sampling", request=True,
            choices=_ALL_DOMAINS),
    Setting("action_chunk_size", "int", 16, "Actions per chunk; the paired clip has chunk + 1 frames.", "sampling",
            request=True, minimum=1, maximum=128),
    Setting("fps", "float", 5.0, "Policy rate; must match the embodiment's training rate (bridge 5, DROID 15).",
            "sampling", request=True, minimum=0.5, maximum=120.0, unit="Hz"),
    Setting("image_size", "int", 480, "Resolution tier (the input is downscaled, never upscaled, and padded).",
            "sampling", request=True, choices=RESOLUTION_TIERS),
    Setting("num_steps", "int", 30,
            "Denoising steps (at most 51 with shift 0: the checkpoint's Karras schedule fails above that).",
            "sampling", runtime=True, request=True, minimum=1, maximum=200),
    Setting("guidance", "float", 1.0, "Classifier-free guidance (1.0 skips the unconditional pass).", "sampling",
            runtime=True, request=True, minimum=1.0, maximum=20.0),
    Setting("shift", "float", 0.0,
            "Flow shift of the native flow-matching schedule; the released checkpoint's own scheduler (UniPC, "
            "Karras sigmas) ignores a shift.", "sampling", runtime=True, request=True, minimum=0.1, maximum=50.0,
            zero="keep the checkpoint's scheduler"),
    Setting("seed", "int", 0, "Noise seed: the same seed, inputs and checkpoint give the same actions.", "sampling",
            runtime=True, request=True, minimum=0, maximum=MAX_SEED),
    Setting("view_point", "str", "ego_view", "Camera view point named in the action caption.", "sampling",
            runtime=True, request=True, choices=VIEW_POINTS),
    Setting("negative_prompt", "str", "", "Negative prompt of the unconditional pass (guidance > 1 only).",
            "sampling", runtime=True, request=True, max_length=MAX_PROMPT_CHARS),
    Setting("use_system_prompt", "bool", False, "Prepend the model's system prompt to the caption.", "sampling",
            runtime=True, request=True),
    Setting("raw_action_dim", "int", 0,
            "Action width the checkpoint was trained with for this embodiment (NVIDIA's DROID joint-position policy: "
            "8 = 7 joints + gripper).", "sampling", request=True, minimum=1, maximum=64,
            zero="the domain's width in diffusers"),
    Setting("use_state", "bool", False,
            "Give the model the robot's current state as a known first action row (NVIDIA's DROID policy); needs "
            "joint_states_topic on the node, observation/state or the DROID keys on the sidecar.", "sampling",
            request=True),
    Setting("conditioning", "str", "diffusers",
            "How the caption and the frame are prepared: diffusers (the 0.42.1 pipeline: JSON caption, frame resized "
            "to 16-pixel multiples) or cosmos_framework (NVIDIA's policy server: plain caption, frame padded, never "
            "resized).", "sampling", request=True, choices=("diffusers", "cosmos_framework")),
    Setting("guidance_steps", "int", 0,
            "Classifier-free guidance on the first N denoising steps only (opt-in: changes the actions; NVIDIA's "
            "Edge DROID server guides the first of 4 steps, --guidance-interval 960 1001).", "sampling",
            runtime=True, request=True, minimum=1, maximum=200, zero="every step"),
    # -- backend: where the model runs, seen from the node -------------------------------------------------------
    Setting("backend", "str", "in_process",
            "Where the model runs: in_process (this process), sidecar (a websocket policy server), fake (a "
            "deterministic stand-in without a model, for wiring tests).", "backend",
            choices=("in_process", "sidecar", "fake")),
    Setting("sidecar_url", "str", "ws://127.0.0.1:8000", "sidecar: websocket URL of the policy server.", "backend"),
    Setting("sidecar_token_file", "str", "",
            "sidecar: file holding the token (default: $COSMOS3_ROS_SIDECAR_TOKEN; empty and unset: no token).",
            "backend"),
    Setting("sidecar_timeout", "float", 10.0, "sidecar: seconds to wait for one reply.", "backend", minimum=0.1,
            maximum=600.0, unit="s"),
    Setting("sidecar_wait", "float", 30.0,
            "sidecar: at configure, keep trying to connect this long (the sidecar may still be loading its model).",
            "backend", minimum=0.0, maximum=3600.0, unit="s"),
    Setting("fake_latency", "float", 0.0, "fake: seconds each fake model call takes.", "backend", minimum=0.0,
            maximum=60.0, unit="s"),
    # -- controller: inputs, timing, outputs ----------------------------------------------------------------------
    Setting("camera_topics", "str_list", ["/camera/image_raw"],
            "Camera topics (sensor_msgs/Image; a topic ending in /compressed is sensor_msgs/CompressedImage). The "
            "first camera is the reference for time synchronisation.", "controller", max_length=8, topic=True),
    Setting("camera_layout", "str", "single", "How several cameras are composed into one model input.",
            "controller", choices=("single", "side_by_side", "grid", "wrist_top", "droid")),
    Setting("camera_qos", "str", "sensor_data", "QoS of the camera subscriptions.", "controller",
            choices=("sensor_data", "reliable", "system_default")),
    Setting("sync_tolerance", "float", 0.05, "Largest stamp difference between the cameras of one observation.",
            "controller", runtime=True, minimum=0.0, maximum=10.0, unit="s"),
    Setting("max_observation_age", "float", 0.5, "Frames older than this on the node clock are never used.",
            "controller", runtime=True, minimum=0.001, maximum=3600.0, unit="s"),
    Setting("max_clock_skew", "float", 1.0,
            "Frames and robot states stamped more than this ahead of the node clock are rejected (a camera with a "
            "wrong clock must not become the newest frame).", "controller", runtime=True, minimum=0.0,
            maximum=3600.0, unit="s"),
    Setting("max_image_pixels", "int", 3840 * 2160,
            "Camera frames larger than this (width x height) are rejected before they are decoded; accepted frames "
            "are downscaled on arrival to what the resolution tier needs.", "controller", minimum=64 * 64,
            maximum=16384 * 16384),
    Setting("max_depth_mm", "int", 10000, "16UC1/mono16 depth images: millimetres mapped to white.", "controller",
            runtime=True, minimum=1, maximum=65535),
    Setting("joint_states_topic", "str", "", "Optional sensor_msgs/JointState input of the robot state (empty: off).",
            "controller", topic=True),
    Setting("state_joint_names", "str_list", [],
            "JointState joints that form the robot state row, one per action dimension in order, read by name "
            "(empty: joint_names). Mapped into model units by the inverse of action_scale/action_offset.",
            "controller", max_length=64),
    Setting("replan_every", "int", 0, "Request the next chunk once this many actions of the current one are due.",
            "controller", minimum=1, maximum=128, zero="half a chunk"),
    Setting("control_rate", "float", 50.0, "Control loop and JointState streaming rate.", "controller",
            minimum=1.0, maximum=1000.0, unit="Hz"),
    Setting("joint_names", "str_list", [], "Names of the action dimensions (empty: documented defaults per domain).",
            "controller", max_length=64),
    Setting("action_scale", "float_list", [], "Per-dimension scale: command = action * scale + offset (empty: 1).",
            "controller", max_length=64),
    Setting("action_offset", "float_list", [], "Per-dimension offset (empty: 0).", "controller", max_length=64),
    Setting("action_stats", "str", "",
            "Normalization statistics of the checkpoint's actions (JSON: mean/std, q01/q99 or min/max per dimension, "
            "optionally under 'global'); they replace action_scale/action_offset. auto: action_stats.json next to "
            "a local checkpoint, if there is one; empty: none (the released DROID policy is not normalized).",
            "controller"),
    Setting("joint_limits.lower", "float_list", [], "Per-dimension lower clamp of the commands (empty: none).",
            "controller", max_length=64),
    Setting("joint_limits.upper", "float_list", [], "Per-dimension upper clamp of the commands (empty: none).",
            "controller", max_length=64),
    Setting("action_space", "str", "joint_pos",
            "What the actions are: joint_pos (absolute joint positions, straight into the JointTrajectory) or ee_pose "
            "(the first 9 dimensions are relative end-effector poses, xyz + 6-D rotation, chained from the current "
            "pose on ee_pose_topic and published as geometry_msgs/PoseArray on ~/ee_poses).", "controller",
            choices=("joint_pos", "ee_pose")),
    Setting("ee_pose_topic", "str", "",
            "ee_pose: the current end-effector pose (geometry_msgs/PoseStamped, in the robot's base frame).",
            "controller", topic=True),
    Setting("output_mode", "str", "trajectory",
            "trajectory: a JointTrajectory per chunk; joint_state: also stream interpolated sensor_msgs/JointState "
            "commands at control_rate.", "controller", choices=("trajectory", "joint_state")),
    Setting("joint_command_topic", "str", "~/joint_command", "joint_state mode: where the JointState commands go.",
            "controller", topic=True),
    Setting("trajectory_stamp", "str", "observation",
            "observation: header.stamp is the observation time and time_from_start counts from it; now: the stamp "
            "is the publish time. Either way a chunk's rows already due when it arrives are dropped and its first "
            "point is the command of that moment, so it continues from what was commanded.", "controller",
            choices=("observation", "now")),
    Setting("rtc", "bool", False,
            "Real-time chunking: the rows of the running chunk that execute while the model computes the next one "
            "(the inference delay) are given to the model as known rows, so the next chunk starts exactly where "
            "this one will be (hard inpainting; joint_pos only).", "controller"),
    Setting("rtc_delay", "int", 0,
            "rtc: the inference delay in policy steps.", "controller", minimum=1, maximum=127,
            zero="estimated: ceil((request age + p95 of the last 20 latencies) / step) + 1, the cold call excluded"),
    Setting("execution_horizon", "int", 0,
            "rtc: the most rows of the running chunk given to the next one (caps the delay).", "controller",
            minimum=1, maximum=127, zero="action_chunk_size - replan_every"),
    Setting("max_velocity", "float_list", [],
            "Per-joint velocity limit of the commands (robot units/s; empty: none); every clamp is counted.",
            "controller", max_length=64),
    Setting("max_acceleration", "float_list", [],
            "Per-joint acceleration limit of the commands (robot units/s^2; empty: none); every clamp is counted.",
            "controller", max_length=64),
    Setting("trajectory_accelerations", "bool", False,
            "Also send accelerations on every JointTrajectory point (joint_trajectory_controller then interpolates "
            "quintic instead of cubic); velocities are always sent.", "controller"),
    Setting("dry_run", "bool", False,
            "Command nothing: publish what would be commanded on ~/dry_run/joint_trajectory (and "
            "~/dry_run/joint_command) instead.", "controller"),
    # -- monitoring: forecasts, drift, recording ------------------------------------------------------------------
    Setting("forecast_every", "int", 1, "Forecast the frames of every k-th published chunk (0: off).", "monitoring",
            runtime=True, minimum=0, maximum=1000),
    Setting("forecast_source", "str", "forward_dynamics",
            "forward_dynamics: a second call with the sent actions; policy_video: the video predicted jointly with "
            "the actions (cheaper).", "monitoring", choices=("forward_dynamics", "policy_video")),
    Setting("forecast_num_steps", "int", 0, "Denoising steps of forecast calls.", "monitoring", minimum=1,
            maximum=200, zero="num_steps"),
    Setting("drift_metric", "str", "nmse", "Prediction-error metric compared against drift_threshold.",
            "monitoring", choices=("nmse", "psnr")),
    Setting("drift_threshold", "float", 0.5,
            "WARN (and optionally disarm) when the rolling prediction error passes this (nmse: above; psnr: "
            "below).", "monitoring", runtime=True, minimum=0.0, maximum=1000.0),
    Setting("disarm_on_drift", "bool", False, "Disarm the controller when drift passes the threshold.",
            "monitoring", runtime=True),
    Setting("record_path", "str", "", "Write an MCAP rosbag2 bag to this new directory (empty: off).",
            "monitoring"),
    Setting("record_image_every", "int", 1, "Record every n-th input frame.", "monitoring", minimum=1,
            maximum=1000),
    # -- node ----------------------------------------------------------------------------------------------------
    Setting("autostart", "bool", True, "Configure and activate on start (so a plain `ros2 run` runs).", "node"),
    # -- server: cosmos3-ros sidecar -----------------------------------------------------------------------------
    Setting("host", "str", "127.0.0.1", "Address to bind (0.0.0.0: all interfaces; then set a token).", "server"),
    Setting("port", "int", 8000, "TCP port (0 picks a free one).", "server", minimum=0, maximum=65535),
    Setting("token_file", "str", "",
            "File holding the token clients must send (default: $COSMOS3_ROS_SIDECAR_TOKEN; empty and unset: none).",
            "server"),
    Setting("token", "str", "",
            "The token itself (prefer token_file or $COSMOS3_ROS_SIDECAR_TOKEN: command lines are visible to other "
            "local users).", "server", secret=True),
    Setting("max_message_mb", "float", 32.0, "Largest request; larger ones close the connection with 1009.",
            "server", minimum=0.01, maximum=1024.0, unit="MiB"),
    Setting("queue", "int", 4, "Requests that may wait for the model; one more is answered 'busy'.", "server",
            minimum=1, maximum=1024),
    Setting("max_connections", "int", 64,
            "Open connections at most; more are refused at the handshake (HTTP 503). Worst-case memory for "
            "requests in transit is max_connections x max_message_mb.", "server", minimum=1, maximum=10000),
    Setting("idle_timeout", "float", 120.0,
            "Close a connection that sends no complete message for this long (also one stalled mid-message).",
            "server", minimum=1.0, maximum=86400.0, unit="s"),
    Setting("request_timeout", "float", 600.0,
            "Longest a request may wait in the queue and run before it is answered with an error.", "server",
            minimum=1.0, maximum=86400.0, unit="s"),
    # -- fleet: cosmos3-ros fleet (Ray Serve) ----------------------------------------------------------------------
    Setting("num_replicas", "int", 0, "Model replicas, each on its own GPU (or replica_cpus CPUs with device cpu).",
            "fleet", minimum=1, maximum=1024, zero="one per GPU of the Ray cluster, one if it has none"),
    Setting("autoscaling", "bool", False,
            "Let Ray Serve scale the model replicas between min_replicas and max_replicas by the requests each "
            "holds (target_ongoing_requests), instead of a fixed num_replicas.", "fleet"),
    Setting("min_replicas", "int", 1, "autoscaling: fewest model replicas (each stays warm).", "fleet", minimum=1,
            maximum=1024),
    Setting("max_replicas", "int", 0, "autoscaling: most model replicas.", "fleet", minimum=1, maximum=1024,
            zero="one per GPU of the Ray cluster, one if it has none"),
    Setting("target_ongoing_requests", "float", 0.0,
            "autoscaling: requests per replica (running or waiting in it) Ray Serve scales towards.", "fleet",
            minimum=0.5, maximum=1024.0, zero="max_batch_size"),
    Setting("max_batch_size", "int", 8,
            "Requests of different robots a replica runs as one batched model call, at most (1: no batching "
            "across robots). Only requests with the same shapes and sampling schedule share a call.", "fleet",
            minimum=1, maximum=256),
    Setting("batch_wait_timeout_s", "float", 0.01,
            "How long a replica waits for more requests to fill a batch once the first one is there (a lone "
            "robot's request waits this long too).", "fleet", minimum=0.0, maximum=10.0, unit="s"),
    Setting("replica_cpus", "float", 1.0, "CPUs Ray reserves for each model replica.", "fleet", minimum=0.0,
            maximum=1024.0),
    Setting("gateway_replicas", "int", 1,
            "Websocket front replicas (each holds up to max_connections robots; if one dies its robots reconnect, "
            "to another one at once when there are two).", "fleet", minimum=1, maximum=64),
    Setting("ray_address", "str", "",
            "Ray cluster to serve on: empty starts a local Ray instance that stops with the command; auto joins the "
            "cluster `ray start` runs on this machine; host:6379 (or ray://host:10001) a remote one.", "fleet"),
)
# fmt: on

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
assert len(BY_NAME) == len(SETTINGS), "duplicate setting names"


def settings_in(*scopes: str) -> tuple[Setting, ...]:
    """The settings of the given scopes, in table order."""
    return tuple(s for s in SETTINGS if s.scope in scopes)


NODE_SETTINGS: tuple[Setting, ...] = settings_in(*NODE_SCOPES)
RUNTIME_SETTINGS: tuple[Setting, ...] = tuple(s for s in NODE_SETTINGS if s.runtime)
REQUEST_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.request)


def defaults(settings: Iterable[Setting] = NODE_SETTINGS) -> dict[str, Any]:
    """Name -> default (lists copied)."""
    return {s.name: list(s.default) if isinstance(s.default, list) else s.default for s in settings}


def resolve_domain(name: str) -> str:
    """The canonical domain name for ``name`` (aliases allowed), or SettingsError."""
    canonical = DOMAIN_ALIASES.get(name, name)
    if canonical not in DOMAIN_ACTION_WIDTH:
        raise SettingsError(f"unknown domain_name {name!r}; expected one of {sorted(_ALL_DOMAINS)}")
    return canonical


def resolve_values(overrides: Mapping[str, Any], settings: Iterable[Setting] = NODE_SETTINGS) -> dict[str, Any]:
    """Defaults with ``overrides`` applied and checked; an unknown name is a SettingsError with a suggestion."""
    table = {s.name: s for s in settings}
    values = defaults(table.values())
    for key, value in overrides.items():
        spec = table.get(key)
        if spec is None:
            raise SettingsError(f"unknown setting {key!r}{did_you_mean(key, table)}")
        values[key] = spec.validate(value)
    return values


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or ""."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- documentation -----------------------------------------------------------------------------------------------


def markdown_table(scopes: Iterable[str]) -> str:
    """The README table of the settings of ``scopes``."""
    scopes = tuple(scopes)
    rows = ["| name | default | run time | range | description |", "| --- | --- | --- | --- | --- |"]
    for s in settings_in(*scopes):
        default = "(secret)" if s.secret else f"`{format_value(s.default)}`"
        unit = f" {s.unit}" if s.unit else ""
        runtime = "yes" if s.runtime else "no"
        if s.request:
            runtime += ", per request"
        rows.append(f"| `{s.name}` | {default}{unit} | {runtime} | {s.bounds_text()} | {s.description} |")
    return "\n".join(rows)


def yaml_template(node_name: str = "/**") -> str:
    """A complete, commented parameter file of every node parameter at its default."""
    lines = [f"{node_name}:", "  ros__parameters:"]
    for scope in NODE_SCOPES:
        lines.append(f"    # -- {scope} --")
        group = ""
        for s in settings_in(scope):
            prefix, _, leaf = s.name.rpartition(".")
            if prefix and prefix != group:
                lines.append(f"    {prefix}:")
            group = prefix
            indent = "      " if prefix else "    "
            lines.append(f"{indent}# {s.description}" + (f" ({s.bounds_text()})" if s.bounds_text() else ""))
            lines.append(f"{indent}{leaf}: {format_value(s.default)}")
    return "\n".join(lines) + "\n"
