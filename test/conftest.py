# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: one tiny Cosmos 3 checkpoint per test session, a test frame, in-process sidecars."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cosmos3_ros.core.synthetic import moving_scene_frame


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything on the real diffusers pipeline (the ``tiny_model`` fixture) is the ``slow`` tier."""
    for item in items:
        if "tiny_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture
def server():
    """An in-process sidecar serving a fresh FakeBackend (no token, queue 4, defaults num_steps 2)."""
    from sidecar_util import ServerThread

    with ServerThread() as srv:
        yield srv


@pytest.fixture
def strict_server():
    """An in-process sidecar with a token, a 1 MiB message limit and a queue of 1."""
    from sidecar_util import TOKEN, ServerThread

    with ServerThread(token=TOKEN, max_message_bytes=2**20, queue_size=1) as srv:
        yield srv
