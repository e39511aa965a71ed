# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""End-effector poses from Cosmos 3's 9-D relative pose actions. Pure numpy.

Convention (NVIDIA cosmos-framework ``utils/pose_utils.py``, the one its DROID "midtrain" server uses):

- a pose action row is ``[dx, dy, dz, r0..r5]``: a translation and a 6-D rotation, the first two **columns** of the
  rotation matrix, column by column: ``[R00, R10, R20, R01, R11, R21]``;
- decoding a 6-D rotation takes ``c0 = r[0:3]``, ``c1 = r[3:6]``, ``c2 = c0 x c1``, stacks them as columns and
  projects onto the nearest rotation with an SVD (``U @ Vt``, the sign fixed so the determinant is +1);
- rows are **backward framewise** relative: row k is ``delta_k = inv(T_k) @ T_{k+1}``, so absolute poses chain as
  ``T_{k+1} = T_k @ delta_k`` from the current end-effector pose ``T_0`` (the translation of ``delta_k`` is expressed
  in the frame of ``T_k``);
- quaternions are ``[x, y, z, w]`` (ROS ``geometry_msgs/Quaternion`` order), with ``w >= 0``.
"""

from __future__ import annotations

import numpy as np


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """[..., 6] 6-D rotations to [..., 3, 3] rotation matrices (columns c0, c1, c0 x c1, SVD-projected)."""
    r6 = np.asarray(r6, dtype=np.float64)
    c0, c1 = r6[..., 0:3], r6[..., 3:6]
    m = np.stack([c0, c1, np.cross(c0, c1)], axis=-1)
    u, _, vt = np.linalg.svd(m)
    det = np.linalg.det(u @ vt)
    fix = np.ones(m.shape[:-1])
    fix[..., -1] = np.sign(np.where(det == 0, 1.0, det))
    return (u * fix[..., None, :]) @ vt


def matrix_to_rot6d(m: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices to [..., 6]: the first two columns, column by column."""
    m = np.asarray(m, dtype=np.float64)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """[..., 4] quaternions ``[x, y, z, w]`` (normalized here) to [..., 3, 3] rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices to [..., 4] quaternions ``[x, y, z, w]`` with ``w >= 0``."""
    m = np.asarray(m, dtype=np.float64)
    flat = m.reshape(-1, 3, 3)
    out = np.empty((len(flat), 4))
    for i, r in enumerate(flat):  # Shepperd's method: the numerically safe branch per matrix
        tr = np.trace(r)
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
            q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
        elif r[1, 1] > r[2, 2]:
            s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
            q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
        else:
            s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
            q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
        q = np.asarray(q)
        out[i] = (q if q[3] >= 0 else -q) / np.linalg.norm(q)
    return out.reshape(*m.shape[:-2], 4)


def relative_to_absolute(rows: np.ndarray, position: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    """Absolute end-effector poses ``[T, 7]`` (``x, y, z, qx, qy, qz, qw``) from ``rows`` ``[T, 9]`` of backward
    framewise relative poses, starting at the current pose (``position`` [3], ``quaternion`` [4] xyzw): pose k is
    ``T_0 @ delta_0 @ ... @ delta_k``."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 9:
        raise ValueError(f"pose rows must be [T, 9] (xyz + 6-D rotation), got {rows.shape}")
    current = np.eye(4)
    current[:3, :3] = quat_to_matrix(quaternion)
    current[:3, 3] = np.asarray(position, dtype=np.float64)
    deltas = np.tile(np.eye(4), (len(rows), 1, 1))
    deltas[:, :3, :3] = rot6d_to_matrix(rows[:, 3:9])
    deltas[:, :3, 3] = rows[:, :3]
    out = np.empty((len(rows), 7))
    for k, delta in enumerate(deltas):
        current = current @ delta
        out[k, :3] = current[:3, 3]
        out[k, 3:] = matrix_to_quat(current[:3, :3])
    return out
