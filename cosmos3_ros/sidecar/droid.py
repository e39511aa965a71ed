# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""NVIDIA's DROID/RoboArena observation keys, read as its released policy server reads them. Pure (numpy).

The reference is cosmos-framework's ``cosmos_framework/scripts/action_policy_server_robolab.py`` (commit
0c4b34eb): ``_extract_observation_image`` and ``_compose_roboarena_views`` for the cameras, ``_ensure_2d_float_array``
and ``_ensure_gripper_array`` for the robot state, ``_build_sample`` for the state row ``[q, 1 - g]`` and ``infer``
for the reply's gripper ``1 - g``. Where that server casts or clips silently (a float image clipped to uint8, a NaN
joint), these functions refuse with a :class:`~cosmos3_ros.sidecar.codec.ProtocolError` naming the key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cosmos3_ros.core.compose import DROID_SIZE, compose, resize_bilinear_truncating
from cosmos3_ros.sidecar.codec import ProtocolError, short_repr

WRIST_KEY = "observation/wrist_image_left"
EXTERIOR_1_KEY = "observation/exterior_image_1_left"
EXTERIOR_2_KEY = "observation/exterior_image_2_left"
#: The RoboArena cameras NVIDIA's server composes, in its order: wrist on top, exterior 1 | exterior 2 below.
DROID_CAMERA_KEYS: tuple[str, str, str] = (WRIST_KEY, EXTERIOR_1_KEY, EXTERIOR_2_KEY)
JOINT_KEY = "observation/joint_position"
GRIPPER_KEY = "observation/gripper_position"
#: The robot state keys of a DROID request; a request that carries them gets its reply's gripper as ``1 - g``.
DROID_STATE_KEYS: tuple[str, str] = (JOINT_KEY, GRIPPER_KEY)
#: Joint positions NVIDIA's joint_pos policy reads (a Franka's 7); with the gripper the state row is 8 wide.
DROID_JOINTS = 7
#: Most history rows ``[T, ...]`` a state key may carry (only the last one is used).
MAX_STATE_ROWS = 128


def _float_array(key: str, value: Any) -> np.ndarray:
    """``value`` (a numeric array, number or list of numbers) as float32; ProtocolError otherwise."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype.kind == "b"):
        raise ProtocolError(f"{key!r} must be numeric, got a boolean")
    if isinstance(value, (int, float, list)):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ProtocolError(f"{key!r} must be a number or a rectangular list of numbers") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ProtocolError(f"{key!r} must be a numeric array, got {short_repr(value)}")
    if value.ndim > 2 or (value.ndim >= 1 and value.shape[0] > MAX_STATE_ROWS):
        raise ProtocolError(f"{key!r} has shape {value.shape}; at most [{MAX_STATE_ROWS}, D] is read")
    out = value.astype(np.float32)
    if not np.isfinite(out).all():
        raise ProtocolError(f"{key!r} contains non-finite values")
    return out


def parse_joints(value: Any) -> np.ndarray:
    """``observation/joint_position`` as float32 ``[T, 7]``: ``[7]`` or ``[T, 7]`` (the last row is the current one)."""
    joints = _float_array(JOINT_KEY, value)
    if joints.ndim == 1:
        joints = joints[None, :]
    if joints.ndim != 2 or joints.shape[0] < 1 or joints.shape[1] != DROID_JOINTS:
        raise ProtocolError(
            f"{JOINT_KEY!r} must have shape [{DROID_JOINTS}] or [T, {DROID_JOINTS}] (radians), got {joints.shape}"
        )
    return joints


def parse_gripper(value: Any) -> np.ndarray:
    """``observation/gripper_position`` as float32 ``[T, 1]``: a scalar, ``[T]`` or ``[T, 1]`` (the last is current)."""
    gripper = _float_array(GRIPPER_KEY, value)
    if gripper.ndim == 0:
        gripper = gripper.reshape(1, 1)
    elif gripper.ndim == 1:
        gripper = gripper[:, None]
    if gripper.shape[0] < 1 or gripper.shape[1] != 1:
        raise ProtocolError(f"{GRIPPER_KEY!r} must be a scalar or have shape [T] or [T, 1], got {gripper.shape}")
    return gripper


def state_row(joints: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """The model-space state row NVIDIA's server builds: ``[q[-1], 1 - g[-1]]``, float32 ``[8]``."""
    return np.concatenate((joints[-1], 1.0 - gripper[-1])).astype(np.float32)


def actions_to_droid(actions: np.ndarray) -> np.ndarray:
    """A model-space chunk ``[T, D]`` in NVIDIA's reply convention: float32, last column ``1 - g`` (a new array)."""
    out = np.array(actions, dtype=np.float32, copy=True)
    out[:, -1] = 1.0 - out[:, -1]
    return out


def compose_droid(wrist: np.ndarray, exterior_1: np.ndarray, exterior_2: np.ndarray) -> np.ndarray:
    """NVIDIA's RoboArena composite of three HxWx3 uint8 frames, resized to 540x640 (``core.compose``'s ``droid``)."""
    frames = dict(zip(DROID_CAMERA_KEYS, (wrist, exterior_1, exterior_2), strict=True))
    return compose(frames, DROID_CAMERA_KEYS, "droid")


def resize_to_droid(image: np.ndarray) -> np.ndarray:
    """``image`` at NVIDIA's 540x640 (its final ``_resize_rgb_uint8``); the same array when it already is."""
    return resize_bilinear_truncating(image, *DROID_SIZE)


# -- the client side: our state row in NVIDIA's keys, its reply back in model units -----------------------------


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
    return actions_to_droid(actions)  # the flip is its own inverse
