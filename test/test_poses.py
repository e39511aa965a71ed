# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""End-effector poses from relative 9-D pose actions, against hand-computed poses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmos3_ros.core.poses import (
    matrix_to_quat,
    matrix_to_rot6d,
    quat_to_matrix,
    relative_to_absolute,
    rot6d_to_matrix,
)

IDENTITY6 = [1, 0, 0, 0, 1, 0]  # columns x and y of the identity
RZ90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)  # +90 degrees about z
S = math.sqrt(0.5)


def test_identity_rows_keep_the_current_pose():
    out = relative_to_absolute(np.array([[0, 0, 0, *IDENTITY6]] * 3), [0.4, 0.1, 0.3], [0, 0, 0, 1])
    np.testing.assert_allclose(out, [[0.4, 0.1, 0.3, 0, 0, 0, 1]] * 3, atol=1e-12)


def test_rot6d_is_the_first_two_columns_column_by_column():
    np.testing.assert_allclose(matrix_to_rot6d(RZ90), [0, 1, 0, -1, 0, 0])
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(RZ90)), RZ90, atol=1e-12)
    noisy = rot6d_to_matrix(np.array([1.1, 0.05, 0, 0.02, 0.9, 0]))  # not orthonormal: projected
    np.testing.assert_allclose(noisy @ noisy.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(noisy) == pytest.approx(1.0)


def test_quaternions_are_xyzw():
    np.testing.assert_allclose(quat_to_matrix([0, 0, S, S]), RZ90, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(RZ90), [0, 0, S, S], atol=1e-12)
    flip = np.diag([1.0, -1.0, -1.0])  # 180 degrees about x: w = 0
    np.testing.assert_allclose(matrix_to_quat(flip), [1, 0, 0, 0], atol=1e-12)
    q = np.array([0.1, -0.7, 0.2, -0.68])
    q /= np.linalg.norm(q)
    np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(q)), -q, atol=1e-12)  # same rotation, w >= 0


def test_a_quarter_turn_then_a_step_moves_along_the_turned_axis():
    # Row 0: turn +90 degrees about z; row 1: step 0.1 along the (new) x axis, which is the base's y axis.
    rows = np.array([[0, 0, 0, *matrix_to_rot6d(RZ90)], [0.1, 0, 0, *IDENTITY6]])
    out = relative_to_absolute(rows, [0.5, 0.0, 0.2], [0, 0, 0, 1])
    np.testing.assert_allclose(out[0], [0.5, 0.0, 0.2, 0, 0, S, S], atol=1e-12)
    np.testing.assert_allclose(out[1], [0.5, 0.1, 0.2, 0, 0, S, S], atol=1e-12)


def test_a_chain_of_relative_poses_composes_from_the_current_pose():
    # Current pose: turned 90 degrees about z. Four quarter turns bring the orientation back; steps trace a square.
    step = [0.1, 0, 0, *matrix_to_rot6d(RZ90)]
    out = relative_to_absolute(np.array([step] * 4), [0, 0, 0], [0, 0, S, S])
    np.testing.assert_allclose(out[:, :3], [[0, 0.1, 0], [-0.1, 0.1, 0], [-0.1, 0, 0], [0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(out[3, 3:], [0, 0, S, S], atol=1e-12)  # 90 + 4 x 90 degrees = 90 degrees
    with pytest.raises(ValueError, match=r"\[T, 9\]"):
        relative_to_absolute(np.zeros((2, 7)), [0, 0, 0], [0, 0, 0, 1])
