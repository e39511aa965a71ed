# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar wire protocol: openpi's msgpack-numpy encoding, request parsing, reply building.

Pure (numpy + msgpack, no torch, no websockets), so that the server, the client backend
and the tests share one definition.

Encoding (wire-compatible with ``openpi_client.msgpack_numpy``): a numpy array travels as a
msgpack map ``{b"__ndarray__": True, b"data": <bytes>, b"dtype": "<f4", b"shape": [..]}``,
a numpy scalar as ``{b"__npgeneric__": True, b"data": <value>, b"dtype": "<f4"}``. Unlike
openpi's decoder, ours never trusts the header: only plain bool/int/uint/float/unicode
dtypes are accepted (no object, void, structured or sub-array dtypes, so nothing can reach
pickle), the shape must be a short list of non-negative ints, and the byte count must match
the shape exactly (a header claiming a giant shape is rejected before any allocation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from cosmos3_ros.core.settings import (
    ActionChunk,
    Forecast,
    PolicySettings,
    SettingsError,
    validate_actions,
)

#: Protocol name and version announced in the connect metadata (``metadata["protocol"]``).
PROTOCOL = "cosmos3_ros/1"

#: Camera keys in priority order: the first present one is the observation (the frame the
#: model conditions on); with ``view_point`` ``concat_view`` all present ones are tiled.
CAMERA_KEYS: tuple[str, ...] = (
    "observation/image",
    "observation/exterior_image_1_left",
    "observation/exterior_image_2_left",
    "observation/wrist_image_left",
    "observation/wrist_image_right",
)

#: Settings a request may override per call under ``settings``; anything else is an error.
SETTINGS_KEYS: tuple[str, ...] = (
    "seed",
    "num_steps",
    "guidance",
    "shift",
    "domain_name",
    "action_chunk_size",
    "fps",
    "image_size",
    "view_point",
)

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
        *CAMERA_KEYS,
    }
)

MODES: tuple[str, ...] = ("policy", "forward_dynamics")

#: Per-request caps, so one request cannot hold the GPU for hours or exhaust its memory.
MAX_NUM_STEPS = 200
MAX_ACTION_CHUNK = 128
MAX_IMAGE_SIDE = 4096
MIN_IMAGE_SIDE = 16
MAX_PROMPT_CHARS = 4096
MAX_STATE_DIM = 128
MAX_ARRAY_NDIM = 8

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


class ProtocolError(ValueError):
    """A message or request does not follow the protocol; the text says what to fix."""


# -- msgpack-numpy ---------------------------------------------------------------------------

#: dtype strings accepted on the wire: bool, signed/unsigned ints, floats of 1 to 8 bytes, and
#: fixed-width unicode (openpi clients may send the prompt as ``np.str_``).
_DTYPE_RE = re.compile(r"^[<>|=]?(?:b1|[iu][1248]|f[248]|U[1-9][0-9]{0,4})$")


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or not _DTYPE_RE.match(value):
        raise ProtocolError(
            f"array dtype {_short(value)} is not accepted; send bool, int, uint or float arrays (e.g. '|u1', '<f4')"
        )
    return np.dtype(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encode(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy arrays and scalars in openpi's layout."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufU" or obj.dtype.fields is not None:
            raise TypeError(f"cannot send an array of dtype {obj.dtype}")
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biufU":
            raise TypeError(f"cannot send a scalar of dtype {obj.dtype}")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    """msgpack ``object_hook``: rebuild arrays and scalars after checking every header field."""
    if b"__ndarray__" in obj:
        data, shape = obj.get(b"data"), obj.get(b"shape")
        dtype = _dtype(obj.get(b"dtype"))
        if not isinstance(data, bytes):
            raise ProtocolError("array 'data' must be binary")
        if not isinstance(shape, (list, tuple)) or len(shape) > MAX_ARRAY_NDIM:
            raise ProtocolError(f"array 'shape' must be a list of at most {MAX_ARRAY_NDIM} ints, got {_short(shape)}")
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape):
            raise ProtocolError(f"array 'shape' must hold ints in [0, 2**31), got {_short(shape)}")
        expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for giant claims
        if expected != len(data):
            raise ProtocolError(
                f"array of shape {_short(shape)} and dtype {dtype.str} needs {expected} bytes, message has {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        value = obj.get(b"data")
        if isinstance(value, (bytes, list, dict, tuple)) or value is None:
            raise ProtocolError(f"numpy scalar data must be a number or string, got {type(value).__name__}")
        try:
            return dtype.type(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"numpy scalar {_short(value)} does not fit dtype {dtype.str}: {exc}") from None
    return obj


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, str, numbers, None, numpy arrays and scalars) as openpi does."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode one message; raise ProtocolError (never anything else) for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected a binary msgpack message, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except ProtocolError:
        raise
    except msgpack.StackError:
        raise ProtocolError("message nests too deeply") from None
    except msgpack.ExtraData:
        raise ProtocolError("message has trailing bytes after one msgpack object") from None
    except Exception as exc:  # msgpack raises ValueError, FormatError, UnicodeDecodeError, TypeError, ...
        raise ProtocolError(f"not a valid msgpack message ({type(exc).__name__}: {_short(str(exc), 160)})") from None


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


def _as_int(name: str, value: Any) -> int:
    value = _scalar(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"settings.{name} must be an integer, got {_short(value)}")
    return value


def _as_float(name: str, value: Any) -> float:
    value = _scalar(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ProtocolError(f"settings.{name} must be a number, got {_short(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ProtocolError(f"settings.{name} must be finite, got {value}")
    return value


def _as_str(name: str, value: Any) -> str:
    value = _scalar(value)
    if not isinstance(value, str):
        raise ProtocolError(f"settings.{name} must be a string, got {_short(value)}")
    return value


_SETTING_PARSERS = {
    "seed": _as_int,
    "num_steps": _as_int,
    "guidance": _as_float,
    "shift": lambda n, v: None if v is None else _as_float(n, v),
    "domain_name": _as_str,
    "action_chunk_size": _as_int,
    "fps": _as_float,
    "image_size": _as_int,
    "view_point": _as_str,
}
assert set(_SETTING_PARSERS) == set(SETTINGS_KEYS)


def merge_settings(defaults: PolicySettings, overrides: Any, prompt: Any = None) -> PolicySettings:
    """Apply a request's ``settings`` dict (keys in SETTINGS_KEYS) and ``prompt`` to the server defaults."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ProtocolError(f"'settings' must be a map, got {type(overrides).__name__}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in _SETTING_PARSERS:
            raise ProtocolError(f"unknown setting {_short(key)}; per-request settings are {list(SETTINGS_KEYS)}")
        changes[key] = _SETTING_PARSERS[key](key, value)
    if prompt is not None:
        prompt = _scalar(prompt)
        if not isinstance(prompt, str):
            raise ProtocolError(f"'prompt' must be a string, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ProtocolError(f"'prompt' has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        changes["prompt"] = prompt
    try:
        settings = defaults.replace(**changes) if changes else defaults
    except SettingsError as exc:
        raise ProtocolError(f"bad setting: {exc}") from None
    if settings.num_steps > MAX_NUM_STEPS:
        raise ProtocolError(f"settings.num_steps {settings.num_steps} exceeds the server limit {MAX_NUM_STEPS}")
    if settings.action_chunk_size > MAX_ACTION_CHUNK:
        raise ProtocolError(
            f"settings.action_chunk_size {settings.action_chunk_size} exceeds the server limit {MAX_ACTION_CHUNK}"
        )
    return settings


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


def tile_side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """Tile HxWx3 images left to right; shorter ones are padded with black at the bottom."""
    height = max(im.shape[0] for im in images)
    padded = [im if im.shape[0] == height else np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0))) for im in images]
    return np.concatenate(padded, axis=1)


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
        raise ProtocolError(f"{key!r} must be a 1-D numeric array, got {_short(value)}")
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
        if len(value) > MAX_ACTION_CHUNK or not all(isinstance(row, list) for row in value):
            raise ProtocolError(f"'actions' must be a [T, D] numeric array (T <= {MAX_ACTION_CHUNK})")
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"'actions' is not a rectangular numeric [T, D] list: {exc}") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ProtocolError(f"'actions' must be a numeric [T, D] array, got {_short(value)}")
    if value.ndim == 2 and value.shape[0] > MAX_ACTION_CHUNK:
        raise ProtocolError(f"'actions' has {value.shape[0]} rows; the limit is {MAX_ACTION_CHUNK}")
    try:
        return validate_actions(value, settings, name="'actions'")
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _flag(key: str, value: Any) -> bool:
    value = _scalar(value)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key!r} must be true or false, got {_short(value)}")
    return value


def parse_message(message: Any, defaults: PolicySettings) -> Request | Control:
    """Validate one decoded message against the schema; raise ProtocolError naming the first problem."""
    if not isinstance(message, dict):
        raise ProtocolError(f"a request must be a msgpack map, got {type(message).__name__}")
    bad_keys = [k for k in message if not isinstance(k, str)]
    if bad_keys:
        raise ProtocolError(f"request keys must be strings, got {_short(bad_keys)}")
    if "__ctrl__" in message:
        name = _scalar(message["__ctrl__"])
        if not isinstance(name, str):
            raise ProtocolError("'__ctrl__' must be a string")
        return Control(name=name)

    mode = _scalar(message.get("mode", "policy"))
    if mode not in MODES:
        raise ProtocolError(f"'mode' must be one of {list(MODES)}, got {_short(mode)}")
    settings = merge_settings(defaults, message.get("settings"), message.get("prompt"))

    present = [k for k in CAMERA_KEYS if k in message]
    present += sorted(k for k in message if is_camera_key(k) and k not in CAMERA_KEYS)
    if not present:
        raise ProtocolError(
            f"no image: send the newest frame as 'observation/image' (HxWx3 uint8) or one of {list(CAMERA_KEYS[1:])}"
        )
    images = [_image(k, message[k]) for k in present]
    if settings.view_point == "concat_view" and len(images) > 1:
        image, cameras = tile_side_by_side(images), tuple(present)
        if image.shape[1] > MAX_IMAGE_SIDE:
            raise ProtocolError(f"the tiled cameras are {image.shape[1]} pixels wide; the limit is {MAX_IMAGE_SIDE}")
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
            raise ProtocolError(f"'observation/timestamp' must be a finite number, got {_short(timestamp)}")
        timestamp = float(timestamp)

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
        ignored_keys=tuple(sorted(k for k in message if k not in REQUEST_KEYS and not is_camera_key(k))),
    )


def timestamp_of(message: Any) -> float | None:
    """Best-effort ``observation/timestamp`` of a message that failed validation (for the error echo)."""
    if isinstance(message, dict):
        value = _scalar(message.get("observation/timestamp"))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


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
