# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A deterministic synthetic camera scene: used by the demo's camera publisher and by tests."""

from __future__ import annotations

import numpy as np


def moving_scene_frame(t: float, height: int = 240, width: int = 320) -> np.ndarray:
    """RGB uint8 frame at time ``t`` seconds: colour gradients plus a bright square sweeping left and right."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255) // width, (y * 255) // height, np.full_like(x, 60)], axis=-1).astype(np.uint8)
    cx = int((0.2 + 0.6 * (0.5 + 0.5 * np.sin(t))) * width)
    cy = height // 2
    r = max(2, min(height, width) // 10)
    img[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = (240, 240, 240)
    return img
