# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar request and reply schema: request parsing and validation, reply building.

Pure (numpy + msgpack, no torch, no websockets), so that the server, the client backend and the tests share one
definition. The wire encoding is :mod:`cosmos3_ros.sidecar.codec`. The per-request ``settings`` a request may carry,
and their limits, are the ``request`` settings of :mod:`cosmos3_ros.core.schema`: the same names and bounds as the
node parameters, so a setting the node accepts is one the sidecar accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.core.compose import compose, plan
from cosmos3_ros.core.results import ActionChunk, Forecast
from cosmos3_ros.core.schema import REQUEST_SETTINGS, SettingsError
from cosmos3_ros.core.settings import PolicySettings, validate_actions
from cosmos3_ros.sidecar.codec import ProtocolError, packb, short_repr, unpackb

__all__ = ["ProtocolError", "packb", "unpackb"]

#: Protocol name and version announced in the connect metadata (``metadata["protocol"]``).
PROTOCOL = "cosmos3_ros/1"

#: Camera keys in priority order: the first present one is the observation (the frame the
#: model conditions on); with ``view_point`` ``concat_view`` all present ones are composed.
CAMERA_KEYS: tuple[str, ...] = (
    "observation/image",
    "observation/exterior_image_1_left",
    "observation/exterior_image_2_left",
    "observation/wrist_image_left",
    "observation/wrist_image_right",
)

#: Settings a request may override per call under ``settings`` (from the schema); anything else is an error.
SETTINGS_KEYS: tuple[str, ...] = tuple(s.name for s in REQUEST_SETTINGS if s.name != "prompt")
_REQUEST_SPECS = {s.name: s for s in REQUEST_SETTINGS}

#: Top-level request keys this server reads (camera keys are recognised by pattern too).
REQUEST_KEYS: frozenset[str] = frozenset(
    {
        "prompt",
        "mode",
        "actions",
        "settings",
        "return_video",
        "observation/timestamp",
        "observation/joint_position",
        "observation/gripper_position",
        "observation/state",
        *CAMERA_KEYS,
    }
)

MODES: tuple[str, ...] = ("policy", "forward_dynamics")

#: Per-request caps on what is not a setting (settings have their schema bounds).
MAX_ACTION_ROWS = 128
MAX_IMAGE_SIDE = 4096
MIN_IMAGE_SIDE = 16
MAX_STATE_DIM = 128

#: Error types of ``{"error": {"type": ..., "message": ...}}`` replies.
ERROR_BAD_REQUEST = "bad_request"  # the request is malformed or out of range; fix the request
ERROR_BUSY = "busy"  # the queue is full; retry later
ERROR_MODEL = "model_error"  # the model call failed
ERROR_NON_FINITE = "non_finite_output"  # the model produced NaN/Inf; the result was discarded
ERROR_UNAVAILABLE = "unavailable"  # the server is shutting down
ERROR_INTERNAL = "internal_error"  # a bug in the server; see its log
ERROR_TYPES: tuple[str, ...] = (
    ERROR_BAD_REQUEST,
    ERROR_BUSY,
    ERROR_MODEL,
    ERROR_NON_FINITE,
    ERROR_UNAVAILABLE,
    ERROR_INTERNAL,
)


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """An openpi control message (``{"__ctrl__": name, ...}``); acknowledged, otherwise ignored."""

    name: str


@dataclass(frozen=True)
class Request:
    """One validated observation request."""

    mode: str
    image: np.ndarray
    settings: PolicySettings
    actions: np.ndarray | None = None
    return_video: bool = False
    timestamp: float | None = None
    cameras: tuple[str, ...] = ()
    joint_position: np.ndarray | None = None
    gripper_position: np.ndarray | None = None
    state: np.ndarray | None = None
    ignored_keys: tuple[str, ...] = field(default_factory=tuple)


def is_camera_key(key: str) -> bool:
    """True for ``observation/...`` keys whose last part names an image (``observation/wrist_image_left``)."""
    return key.startswith("observation/") and "image" in key.rsplit("/", 1)[-1]


def _scalar(value: Any) -> Any:
    """numpy scalars and 0-d arrays to Python values; everything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biufU":
        return value.item()
    return value


def merge_settings(defaults: PolicySettings, overrides: Any, prompt: Any = None) -> PolicySettings:
    """Apply a request's ``settings`` map (keys in SETTINGS_KEYS) and ``prompt`` to the server defaults."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ProtocolError(f"'settings' must be a map, got {type(overrides).__name__}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in SETTINGS_KEYS:
            raise ProtocolError(f"unknown setting {short_repr(key)}; per-request settings are {list(SETTINGS_KEYS)}")
        try:
            changes[key] = _REQUEST_SPECS[key].validate(_scalar(value))
        except SettingsError as exc:
            raise ProtocolError(f"settings.{exc}") from None
    if prompt is not None:
        try:
            changes["prompt"] = _REQUEST_SPECS["prompt"].validate(_scalar(prompt))
        except SettingsError as exc:
            raise ProtocolError(f"'prompt': {exc}") from None
    try:
        return defaults.replace(**changes) if changes else defaults
    except SettingsError as exc:
        raise ProtocolError(f"bad setting: {exc}") from None


def _image(key: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ProtocolError(f"{key!r} must be a numpy array HxWx3 uint8, got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise ProtocolError(f"{key!r} must be uint8, got dtype {value.dtype}")
    if value.ndim != 3 or value.shape[2] != 3:
        raise ProtocolError(f"{key!r} must have shape HxWx3 (RGB, channels last), got {value.shape}")
    h, w = value.shape[:2]
    if not (MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE):
        raise ProtocolError(
            f"{key!r} is {h}x{w}; height and width must lie in [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}] pixels"
        )
    return value


def _state(key: str, value: Any) -> np.ndarray:
    value = _scalar(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = np.asarray([value], dtype=np.float64)
    elif isinstance(value, list):
        if len(value) > MAX_STATE_DIM or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ProtocolError(f"{key!r} must be a list of at most {MAX_STATE_DIM} numbers")
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ProtocolError(f"{key!r} must be a 1-D numeric array, got {short_repr(value)}")
    if value.ndim > 1 and value.size == max(value.shape):
        value = value.reshape(-1)  # tolerate [1, N] and [N, 1]
    if value.ndim != 1 or value.size > MAX_STATE_DIM:
        raise ProtocolError(f"{key!r} must be 1-D with at most {MAX_STATE_DIM} values, got shape {value.shape}")
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        raise ProtocolError(f"{key!r} contains non-finite values")
    return value


def _actions(value: Any, settings: PolicySettings) -> np.ndarray:
    if isinstance(value, list):
        if len(value) > MAX_ACTION_ROWS or not all(isinstance(row, list) for row in value):
            raise ProtocolError(f"'actions' must be a [T, D] numeric array (T <= {MAX_ACTION_ROWS})")
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"'actions' is not a rectangular numeric [T, D] list: {exc}") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ProtocolError(f"'actions' must be a numeric [T, D] array, got {short_repr(value)}")
    if value.ndim == 2 and value.shape[0] > MAX_ACTION_ROWS:
        raise ProtocolError(f"'actions' has {value.shape[0]} rows; the limit is {MAX_ACTION_ROWS}")
    try:
        return validate_actions(value, settings, name="'actions'")
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _flag(key: str, value: Any) -> bool:
    value = _scalar(value)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key!r} must be true or false, got {short_repr(value)}")
    return value


def parse_message(message: Any, defaults: PolicySettings) -> Request | Control:
    """Validate one decoded message against the schema; raise ProtocolError naming the first problem."""
    if not isinstance(message, dict):
        raise ProtocolError(f"a request must be a msgpack map, got {type(message).__name__}")
    bad_keys = [k for k in message if not isinstance(k, str)]
    if bad_keys:
        raise ProtocolError(f"request keys must be strings, got {short_repr(bad_keys)}")
    if "__ctrl__" in message:
        name = _scalar(message["__ctrl__"])
        if not isinstance(name, str):
            raise ProtocolError("'__ctrl__' must be a string")
        return Control(name=name)

    mode = _scalar(message.get("mode", "policy"))
    if mode not in MODES:
        raise ProtocolError(f"'mode' must be one of {list(MODES)}, got {short_repr(mode)}")
    settings = merge_settings(defaults, message.get("settings"), message.get("prompt"))

    present = [k for k in CAMERA_KEYS if k in message]
    present += sorted(k for k in message if is_camera_key(k) and k not in CAMERA_KEYS)
    if not present:
        raise ProtocolError(
            f"no image: send the newest frame as 'observation/image' (HxWx3 uint8) or one of {list(CAMERA_KEYS[1:])}"
        )
    images = [_image(k, message[k]) for k in present]
    if settings.view_point == "concat_view" and len(images) > 1:
        # The node's camera composition, so the same cameras give the same model input in both. The size is
        # checked on the plan, before any pixel is allocated.
        frames = dict(zip(present, images, strict=True))
        layout = plan({k: v.shape[:2] for k, v in frames.items()}, present, "side_by_side")
        if layout.width > MAX_IMAGE_SIDE or layout.height > MAX_IMAGE_SIDE:
            raise ProtocolError(
                f"the composed cameras would be {layout.height}x{layout.width}; the limit is {MAX_IMAGE_SIDE} a side"
            )
        image, cameras = compose(frames, present, "side_by_side"), tuple(present)
    else:
        image, cameras = np.array(images[0], copy=True), (present[0],)  # writable, owned copy

    actions = None
    if "actions" in message:
        if mode != "forward_dynamics":
            raise ProtocolError("'actions' is only read with mode 'forward_dynamics'")
        actions = _actions(message["actions"], settings)
    elif mode == "forward_dynamics":
        raise ProtocolError("mode 'forward_dynamics' needs 'actions' [T, D] float")

    return_video = _flag("return_video", message["return_video"]) if "return_video" in message else False

    timestamp = None
    if "observation/timestamp" in message:
        timestamp = _scalar(message["observation/timestamp"])
        if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool) or not math.isfinite(timestamp):
            raise ProtocolError(f"'observation/timestamp' must be a finite number, got {short_repr(timestamp)}")
        timestamp = float(timestamp)

    state = None
    if "observation/state" in message:
        state = _state("observation/state", message["observation/state"])
        if state.size != settings.action_width:
            raise ProtocolError(
                f"'observation/state' has {state.size} values; domain {settings.domain_name!r} needs "
                f"{settings.action_width} (one action row, model units)"
            )
    joints = message.get("observation/joint_position")
    gripper = message.get("observation/gripper_position")
    return Request(
        mode=mode,
        image=image,
        settings=settings,
        actions=actions,
        return_video=return_video,
        timestamp=timestamp,
        cameras=cameras,
        joint_position=None if joints is None else _state("observation/joint_position", joints),
        gripper_position=None if gripper is None else _state("observation/gripper_position", gripper),
        state=state,
        ignored_keys=tuple(sorted(k for k in message if k not in REQUEST_KEYS and not is_camera_key(k))),
    )


def timestamp_of(message: Any) -> float | None:
    """Best-effort ``observation/timestamp`` of a message that failed validation (for the error echo)."""
    if isinstance(message, dict):
        value = _scalar(message.get("observation/timestamp"))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def droid_state_keys(state: np.ndarray) -> dict[str, np.ndarray]:
    """A model-space state row ``[joints..., g]`` in the DROID/RoboArena keys NVIDIA's server reads.

    NVIDIA's DROID policy takes ``[joints, 1 - gripper_position]`` as its state row, so the gripper goes out as
    ``1 - g``.
    """
    row = np.asarray(state, dtype=np.float64).reshape(-1)
    return {
        "observation/joint_position": row[:-1].copy(),
        "observation/gripper_position": np.array([1.0 - row[-1]]),
    }


def droid_actions_to_model(actions: np.ndarray) -> np.ndarray:
    """NVIDIA's DROID reply ``[joints, gripper_position]`` back into the model's space (gripper ``1 - g``)."""
    out = np.array(actions, dtype=np.float32, copy=True)
    out[:, -1] = 1.0 - out[:, -1]
    return out


# -- replies ------------------------------------------------------------------------------------


def _common(request: Request, server_timing: dict[str, float]) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "mode": request.mode,
        "settings": request.settings.to_dict(),
        "cameras": list(request.cameras),
        "server_timing": server_timing,
    }
    if request.timestamp is not None:
        reply["observation/timestamp"] = request.timestamp
    if request.ignored_keys:
        reply["ignored_keys"] = list(request.ignored_keys)
    return reply


def policy_reply(request: Request, chunk: ActionChunk, server_timing: dict[str, float]) -> dict[str, Any]:
    """Reply to a policy request: ``action`` [T, D] float32, ``video`` when asked."""
    reply = _common(request, server_timing)
    reply["action"] = np.ascontiguousarray(chunk.actions, dtype=np.float32)
    if chunk.video is not None:
        reply["video"] = np.ascontiguousarray(chunk.video, dtype=np.uint8)
    return reply


def forward_dynamics_reply(request: Request, forecast: Forecast, server_timing: dict[str, float]) -> dict[str, Any]:
    """Reply to a forward_dynamics request: ``video`` uint8 [T + 1, H, W, 3]."""
    reply = _common(request, server_timing)
    reply["video"] = np.ascontiguousarray(forecast.frames, dtype=np.uint8)
    return reply


def error_reply(
    kind: str, message: str, server_timing: dict[str, float] | None = None, timestamp: float | None = None
) -> dict[str, Any]:
    """``{"error": {"type": kind, "message": message}, "server_timing": ...}``; the connection stays open."""
    assert kind in ERROR_TYPES, kind
    reply: dict[str, Any] = {"error": {"type": kind, "message": message}, "server_timing": server_timing or {}}
    if timestamp is not None:
        reply["observation/timestamp"] = timestamp
    return reply


def model_timing_ms(timing: Any) -> dict[str, float]:
    """The model's phase breakdown (``core.settings.Timing``) as ``model_*_ms`` keys for ``server_timing``."""
    return {
        "model_preprocess_ms": timing.preprocess_s * 1e3,
        "model_encode_ms": timing.encode_s * 1e3,
        "model_denoise_ms": timing.denoise_s * 1e3,
        "model_decode_ms": timing.decode_s * 1e3,
    }
