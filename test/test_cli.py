# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The ``cosmos3-ros`` command line as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from cosmos3_ros.core.synthetic import moving_scene_frame


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_make_tiny_model_then_predict_policy_and_forward_dynamics(tmp_path):
    ckpt = tmp_path / "tiny"
    r = _cli("make-tiny-model", str(ckpt), "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert (ckpt / "model_index.json").is_file()

    png = tmp_path / "frame.png"
    Image.fromarray(moving_scene_frame(0.3)).save(png)
    out = tmp_path / "actions.npz"
    r = _cli(
        "predict",
        "--model",
        str(ckpt),
        "--image",
        str(png),
        "--prompt",
        "push the block left",
        "--num-steps",
        "3",
        "--seed",
        "2",
        "--domain",
        "bridge",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "denoise" in r.stdout and "policy: actions (16, 10)" in r.stdout
    data = np.load(out)
    actions = data["actions"]
    assert actions.shape == (16, 10) and np.isfinite(actions).all()
    meta = json.loads(str(data["settings_json"]))
    assert meta["settings"]["seed"] == 2 and meta["settings"]["domain_name"] == "bridge_orig_lerobot"

    np.save(tmp_path / "a.npy", actions)
    vid = tmp_path / "video.npz"
    r = _cli(
        "predict",
        "--model",
        str(ckpt),
        "--image",
        str(png),
        "--mode",
        "forward_dynamics",
        "--actions",
        str(tmp_path / "a.npy"),
        "--num-steps",
        "2",
        "--out",
        str(vid),
    )
    assert r.returncode == 0, r.stderr
    video = np.load(vid)["video"]
    assert video.shape == (17, 240, 320, 3) and video.dtype == np.uint8


def test_predict_errors_are_clear(tmp_path, tiny_model):
    png = tmp_path / "frame.png"
    Image.fromarray(moving_scene_frame(0.0)).save(png)
    cases = [
        (["--model", str(tmp_path / "nope")], "no such directory"),
        (["--model", str(tiny_model), "--domain", "mars_rover"], "unknown domain_name 'mars_rover'"),
        (["--model", str(tiny_model), "--chunk", "0"], "action_chunk_size must be an integer >= 1"),
        (["--model", str(tiny_model), "--image-size", "512"], "invalid choice: 512"),
        (["--model", str(tiny_model), "--mode", "forward_dynamics"], "needs --actions"),
    ]
    for args, message in cases:
        r = _cli("predict", *args, "--image", str(png), "--out", str(tmp_path / "o.npz"))
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr[-2000:])
