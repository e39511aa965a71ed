# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar request and reply schema: request parsing and validation, reply building, error frames.

Pure (numpy + msgpack, no torch, no websockets), so that the server, the client backend and the tests share one
definition. The wire encoding is :mod:`cosmos3_ros.sidecar.codec`. The per-request ``settings`` a request may carry,
and their limits, are the ``request`` settings of :mod:`cosmos3_ros.core.schema`: the same names and bounds as the
node parameters, so a setting the node accepts is one the sidecar accepts.

Two request formats share one parser. Ours carries the robot state as ``observation/state`` (one action row, model
units) and known first rows as ``observation/prefix``; NVIDIA's DROID format (its released policy server, see
:mod:`cosmos3_ros.sidecar.droid`) carries ``observation/joint_position`` and ``observation/gripper_position``, and
its reply's gripper is ``1 - g``. A request that cannot be served is answered with an error *text* frame (openpi's
convention, so ``openpi-client`` raises), holding the JSON map ``{"error": type, "message": ...}``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.core.compose import compose, plan
from cosmos3_ros.core.results import ActionChunk, Forecast, NonFiniteOutputError
from cosmos3_ros.core.schema import REQUEST_SETTINGS, SettingsError
from cosmos3_ros.core.settings import PolicySettings, validate_actions
from cosmos3_ros.sidecar import droid
from cosmos3_ros.sidecar.codec import ProtocolError, packb, short_repr, unpackb
from cosmos3_ros.sidecar.droid import droid_actions_to_model, droid_state_keys

__all__ = ["ProtocolError", "droid_actions_to_model", "droid_state_keys", "packb", "unpackb"]

#: Protocol name and version announced in the connect metadata (``metadata["protocol"]``). Version 2: errors are
#: JSON text frames (version 1: binary ``{"error": {...}}`` replies), ``observation/prefix``, the DROID keys.
PROTOCOL = "cosmos3_ros/2"

#: Camera keys in priority order: ``observation/image``, when present, is the frame the model conditions on (NVIDIA's
#: rule); otherwise the first present one, or with ``view_point`` ``concat_view`` a composite (see ``_camera_image``).
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
        "observation/prefix",
        *CAMERA_KEYS,
    }
)

MODES: tuple[str, ...] = ("policy", "forward_dynamics")

#: Per-request caps on what is not a setting (settings have their schema bounds).
MAX_ACTION_ROWS = 128
MAX_IMAGE_SIDE = 4096
MIN_IMAGE_SIDE = 16
MAX_STATE_DIM = 128

#: Error types: ``error_reply`` builds ``{"error": {"type": ..., "message": ...}}``, sent as an ``error_frame``.
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
    """One validated observation request.

    ``state`` is the row the model conditions on (model units: ``observation/state`` as sent, or NVIDIA's
    ``[q, 1 - g]`` from the DROID keys when ``use_state``); ``joint_position`` [T, 7] and ``gripper_position``
    [T, 1] (float32) are the DROID keys as received.
    """

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
    #: Known first rows of the chunk ([d, width] float32, model units; ``observation/prefix``).
    prefix: np.ndarray | None = None
    #: The request came in NVIDIA's DROID keys: the reply's gripper (last action column) goes out as ``1 - g``.
    droid: bool = False


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


def _check_composite(height: int, width: int) -> None:
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ProtocolError(f"the composed cameras would be {height}x{width}; the limit is {MAX_IMAGE_SIDE} a side")


def _camera_image(message: dict, settings: PolicySettings) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """(the model's image, the cameras it shows, the camera keys left unused) of a request.

    NVIDIA's rule first: ``observation/image`` is the image when present (any other camera is ignored). Else, with
    ``concat_view``, the three RoboArena cameras are composed as NVIDIA composes them (``droid``), other sets of
    cameras side by side as the node does; without ``concat_view`` the first camera in CAMERA_KEYS order is used.
    """
    present = [k for k in CAMERA_KEYS if k in message]
    present += sorted(k for k in message if is_camera_key(k) and k not in CAMERA_KEYS)
    if not present:
        raise ProtocolError(
            f"no image: send the newest frame as 'observation/image' (HxWx3 uint8) or the RoboArena cameras "
            f"{list(droid.DROID_CAMERA_KEYS)}"
        )
    concat = settings.view_point == "concat_view"
    if "observation/image" not in message and concat and all(k in message for k in droid.DROID_CAMERA_KEYS):
        frames = {k: _image(k, message[k]) for k in droid.DROID_CAMERA_KEYS}
        layout = plan({k: v.shape[:2] for k, v in frames.items()}, droid.DROID_CAMERA_KEYS, "droid")
        _check_composite(layout.height, layout.width)  # before any pixel is allocated
        used = list(droid.DROID_CAMERA_KEYS)
        return droid.compose_droid(*frames.values()), tuple(used), [k for k in present if k not in used]
    if "observation/image" in message or not concat or len(present) == 1:
        image = np.array(_image(present[0], message[present[0]]), copy=True)  # writable, owned copy
        return image, (present[0],), present[1:]
    # The node's camera composition, so the same cameras give the same model input in both.
    frames = {k: _image(k, message[k]) for k in present}
    layout = plan({k: v.shape[:2] for k, v in frames.items()}, present, "side_by_side")
    _check_composite(layout.height, layout.width)
    return compose(frames, present, "side_by_side"), tuple(present), []


def _prefix(value: Any, settings: PolicySettings) -> np.ndarray:
    """``observation/prefix``: [d, width] known first rows (model units), 1 <= d < chunk, finite; float32."""
    key, width, chunk = "'observation/prefix'", settings.action_width, settings.action_chunk_size
    if isinstance(value, list):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ProtocolError(f"{key} is not a rectangular numeric [d, {width}] list") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ProtocolError(f"{key} must be a numeric [d, {width}] array, got {short_repr(value)}")
    if value.ndim != 2 or value.shape[1] != width or not 1 <= value.shape[0] < chunk:
        raise ProtocolError(
            f"{key} must have shape [d, {width}] with 1 <= d < {chunk} (action_chunk_size), got {value.shape}"
        )
    prefix = value.astype(np.float32)
    if not np.isfinite(prefix).all():
        raise ProtocolError(f"{key} contains non-finite values")
    return prefix


def _droid_state(
    message: dict, mode: str, settings: PolicySettings
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(joints [T, 7], gripper [T, 1], the state row for the model or None) of a request in the DROID keys."""
    missing = [k for k in droid.DROID_STATE_KEYS if k not in message]
    if len(missing) == 2:
        return None, None, None
    if missing:
        raise ProtocolError(
            f"{missing[0]!r} is missing: the DROID state is {droid.JOINT_KEY!r} ([7] or [T, 7]) together with "
            f"{droid.GRIPPER_KEY!r} (a scalar, [T] or [T, 1])"
        )
    if "observation/state" in message:
        raise ProtocolError("send the robot state once: 'observation/state' (model units) or the DROID keys, not both")
    if "observation/prefix" in message:
        raise ProtocolError("'observation/prefix' (model units) goes with 'observation/state', not the DROID keys")
    if not isinstance(_scalar(message.get("prompt")), str):
        raise ProtocolError("'prompt' must be a string: a request in the DROID keys carries its task instruction")
    joints = droid.parse_joints(message[droid.JOINT_KEY])
    gripper = droid.parse_gripper(message[droid.GRIPPER_KEY])
    row = None
    if mode == "policy" and settings.use_state:
        row = droid.state_row(joints, gripper)
        if row.size != settings.action_width:
            raise ProtocolError(
                f"the DROID keys give a state row of {row.size} values (7 joints, 1 - gripper); domain "
                f"{settings.domain_name!r} needs {settings.action_width} (raw_action_dim 8 serves NVIDIA's policy)"
            )
    return joints, gripper, row


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
    joints, gripper, droid_row = _droid_state(message, mode, settings)
    is_droid = joints is not None
    image, cameras, unused_cameras = _camera_image(message, settings)
    if is_droid and settings.conditioning == "cosmos_framework":
        image = droid.resize_to_droid(image)  # NVIDIA's last step; a RoboArena composite already is 540x640

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

    state = droid_row
    if "observation/state" in message:
        state = _state("observation/state", message["observation/state"])
        if state.size != settings.action_width:
            raise ProtocolError(
                f"'observation/state' has {state.size} values; domain {settings.domain_name!r} needs "
                f"{settings.action_width} (one action row, model units)"
            )
    prefix = None
    if "observation/prefix" in message:
        if mode != "policy":
            raise ProtocolError("'observation/prefix' is only read with mode 'policy'")
        prefix = _prefix(message["observation/prefix"], settings)
    if mode == "policy" and settings.use_state and state is None:
        raise ProtocolError(
            "use_state is set but no robot state was given: send 'observation/joint_position' and "
            "'observation/gripper_position' (NVIDIA's DROID keys) or 'observation/state' (one action row)"
        )
    ignored = [k for k in message if k not in REQUEST_KEYS and not is_camera_key(k)]
    return Request(
        mode=mode,
        image=image,
        settings=settings,
        actions=actions,
        return_video=return_video,
        timestamp=timestamp,
        cameras=cameras,
        joint_position=joints,
        gripper_position=gripper,
        state=state,
        ignored_keys=tuple(sorted(ignored + unused_cameras)),
        prefix=prefix,
        droid=is_droid,
    )


def parse_frame(
    frame: bytes | str, defaults: PolicySettings
) -> tuple[Request | Control | None, dict[str, float], dict[str, Any] | None]:
    """One websocket frame as the servers read it: ``(request, timing, None)``, or ``(None, timing, reply)`` with the
    ``bad_request`` reply for a text frame or a message that does not decode or validate. ``timing`` is the reply's
    ``server_timing`` with ``unpack_ms`` filled in; nothing of the frame's decoding is kept past the call."""
    t0 = time.perf_counter()
    timing: dict[str, float] = {"infer_ms": 0.0, "queue_ms": 0.0, "unpack_ms": 0.0}
    decoded: Any = None
    try:
        if isinstance(frame, str):
            raise ProtocolError("text frames are not accepted: send msgpack maps as binary frames")
        decoded = unpackb(frame)
        request = parse_message(decoded, defaults)
    except ProtocolError as exc:
        timing["unpack_ms"] = (time.perf_counter() - t0) * 1e3
        return None, timing, error_reply(ERROR_BAD_REQUEST, str(exc), timing, timestamp_of(decoded))
    timing["unpack_ms"] = (time.perf_counter() - t0) * 1e3
    return request, timing, None


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


def reply_actions(request: Request, actions: Any) -> np.ndarray:
    """The ``action`` a policy reply sends: checked to be ``[chunk, width]`` and finite (else BackendError or
    NonFiniteOutputError: nothing is sent), float32, with the gripper as ``1 - g`` for a request in the DROID keys."""
    s = request.settings
    expected = (s.action_chunk_size, s.action_width)
    shape = getattr(actions, "shape", None)
    if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "iuf" or shape != expected:
        raise BackendError(f"invalid action output: shape {shape}, expected {expected}; not sent")
    out = np.ascontiguousarray(actions, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise NonFiniteOutputError(f"invalid action output: {bad} non-finite value(s); not sent")
    return droid.actions_to_droid(out) if request.droid else out


def policy_reply(request: Request, chunk: ActionChunk, server_timing: dict[str, float]) -> dict[str, Any]:
    """Reply to a policy request: ``action`` [T, D] float32 (see :func:`reply_actions`), ``video`` when asked.

    A request in the DROID keys also gets NVIDIA's ``timing`` map (``server_preprocess_ms`` = unpack and parse,
    ``server_policy_inference_ms`` = the model call, ``server_total_ms`` = both plus the wait in the queue).
    """
    reply = _common(request, server_timing)
    reply["action"] = reply_actions(request, chunk.actions)
    if chunk.video is not None:
        reply["video"] = np.ascontiguousarray(chunk.video, dtype=np.uint8)
    if request.droid:
        phases = [float(server_timing.get(k, 0.0)) for k in ("unpack_ms", "infer_ms", "queue_ms")]
        reply["timing"] = {
            "server_preprocess_ms": phases[0],
            "server_policy_inference_ms": phases[1],
            "server_postprocess_ms": 0.0,
            "server_total_ms": sum(phases),
        }
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


def error_frame(reply: dict[str, Any]) -> str:
    """The websocket *text* frame an :func:`error_reply` goes out as: JSON ``{"error": type, "message": text, ...}``.

    openpi's convention (a text frame is an error; ``openpi-client`` raises ``RuntimeError`` with its text), but the
    text is a JSON map, so our client turns it back into the same exception, and the connection stays open.
    """
    err = reply["error"]
    out: dict[str, Any] = {"error": err["type"], "message": err["message"]}
    out.update((k, v) for k, v in reply.items() if k != "error")
    return json.dumps(out, default=float)


def parse_error_frame(text: str) -> dict[str, Any] | None:
    """An :func:`error_frame` back as its :func:`error_reply` map; None for any other text (an openpi traceback)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("message"), str):
        return None
    if value.get("error") not in ERROR_TYPES:
        return None
    reply = {k: v for k, v in value.items() if k not in ("error", "message")}
    reply["error"] = {"type": value["error"], "message": value["message"]}
    return reply


def model_timing_ms(timing: Any) -> dict[str, float]:
    """The model's phase breakdown (``core.settings.Timing``) as ``model_*_ms`` keys for ``server_timing``."""
    return {
        "model_preprocess_ms": timing.preprocess_s * 1e3,
        "model_encode_ms": timing.encode_s * 1e3,
        "model_denoise_ms": timing.denoise_s * 1e3,
        "model_decode_ms": timing.decode_s * 1e3,
    }
