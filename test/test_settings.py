# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""PolicySettings validation: every bad value is a clear error naming the value."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.core.results import ActionChunk, NonFiniteOutputError, Timing
from cosmos3_ros.core.settings import PolicySettings, SettingsError, validate_actions, validate_image


def test_defaults_match_recommended_action_settings():
    s = PolicySettings()
    assert (s.num_steps, s.guidance, s.image_size, s.action_chunk_size) == (30, 1.0, 480, 16)
    assert s.domain_name == "bridge_orig_lerobot" and s.action_width == 10 and s.num_frames == 17


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"domain_name": "nope"}, "unknown domain_name 'nope'"),
        ({"action_chunk_size": 0}, "action_chunk_size must be an integer >= 1, got 0"),
        ({"action_chunk_size": 2.5}, "action_chunk_size"),
        ({"image_size": 512}, "image_size 512 is not a resolution tier"),
        ({"fps": 0}, "fps must be a finite number > 0, got 0"),
        ({"fps": float("nan")}, "fps"),
        ({"num_steps": 0}, "num_steps must be an integer >= 1"),
        ({"guidance": 0.5}, "guidance must be a finite number >= 1.0"),
        ({"shift": -1.0}, "shift must be a finite number > 0"),
        ({"seed": -1}, "seed must be an integer"),
        ({"view_point": "top"}, "view_point 'top' unknown"),
        ({"prompt": 3}, "prompt must be a string"),
    ],
)
def test_bad_settings(changes, match):
    with pytest.raises(SettingsError, match=match):
        PolicySettings(**changes)


def test_aliases_and_dict_round_trip():
    s = PolicySettings(domain_name="droid", shift=5.0)
    assert s.domain_name == "droid_lerobot"
    assert PolicySettings.from_dict(s.to_dict()) == s
    with pytest.raises(SettingsError, match="unknown setting"):
        PolicySettings.from_dict({"num_step": 3})
    with pytest.raises(SettingsError):
        s.replace(num_steps=-2)


def test_validate_image_and_actions():
    assert validate_image(np.zeros((2, 3, 3), np.uint8)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="uint8"):
        validate_image(np.zeros((2, 3, 3), np.int16))
    s = PolicySettings()
    assert validate_actions(np.zeros((16, 10)), s).dtype == np.float32
    with pytest.raises(ValueError, match="at least one row"):
        validate_actions(np.zeros((0, 10)), s)
    with pytest.raises(ValueError, match="non-finite"):
        validate_actions(np.array([[np.inf] * 10]), s)


def test_action_chunk_refuses_non_finite():
    with pytest.raises(NonFiniteOutputError):
        ActionChunk(actions=np.full((2, 10), np.nan, np.float32), settings=PolicySettings(), timing=Timing())
    with pytest.raises(ValueError, match="float32"):
        ActionChunk(actions=np.zeros((2, 10), np.float64), settings=PolicySettings(), timing=Timing())
