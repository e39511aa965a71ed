# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Joint positions picked by name out of a JointState-shaped message (rclpy's, or a bag's through rosbags)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def positions_by_name(names: Sequence[str], positions: Any, wanted: Sequence[str]) -> np.ndarray:
    """Positions of ``wanted`` in that order from parallel ``names``/``positions``; ValueError says what is wrong."""
    if len(positions) != len(names):
        raise ValueError(f"JointState has {len(names)} names but {len(positions)} positions")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise ValueError(f"JointState lacks joints {missing}")
    return np.array([positions[index[n]] for n in wanted], dtype=np.float64)
