# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: one tiny Cosmos 3 checkpoint per test session, a grey-gradient test frame."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cosmos3_ros.core.synthetic import moving_scene_frame


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny random-weights checkpoint written by our own make_tiny_model (seed 0).

    Set COSMOS3_ROS_TINY_MODEL to reuse a checkpoint across runs (it is written there if absent).
    """
    from cosmos3_ros.bench.tiny import make_tiny_model

    cached = os.environ.get("COSMOS3_ROS_TINY_MODEL")
    if cached:
        path = Path(cached)
        if not (path / "model_index.json").exists():
            make_tiny_model(path, seed=0)
        return path
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture
def frame() -> np.ndarray:
    """A 240x320 RGB test frame."""
    return moving_scene_frame(0.0)
