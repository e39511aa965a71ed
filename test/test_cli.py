# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The ``cosmos3-ros`` command line as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cosmos3_ros.core.synthetic import moving_scene_frame


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosmos3_ros.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
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
        "--domain_name",
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


def test_predict_errors_are_clear(tmp_path, capsys):
    from cosmos3_ros.cli import main

    png = tmp_path / "frame.png"
    Image.fromarray(moving_scene_frame(0.0)).save(png)
    model = str(tmp_path)  # the checks run before a model loads
    cases = [
        (["--model", str(tmp_path / "nope")], "no such directory"),
        (["--model", model, "--domain_name", "mars_rover"], "domain_name='mars_rover' is not one of"),
        (["--model", model, "--action_chunk_size", "0"], "action_chunk_size=0 is outside [1, 128]"),
        (["--model", model, "--image-size", "512"], "image_size=512 is not one of [256, 480, 704, 720]"),
        (["--model", model, "--num_steps", "1000"], "num_steps=1000 is outside [1, 200]"),
        (["--model", model, "--mode", "forward_dynamics"], "needs --actions"),
    ]
    for args, message in cases:  # in process: the same entry point as the console script, without a fork each
        try:
            code = main(["predict", *args, "--image", str(png), "--out", str(tmp_path / "o.npz")])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and message in err, (args, err[-2000:])
        assert "Traceback" not in err


def test_validate_params_reports_mistakes_with_suggestions(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("/**:\n  ros__parameters:\n    num_steps: 4\n    backend: fake\n")
    r = _cli("validate-params", str(good))
    assert r.returncode == 0 and "OK for node /cosmos3_policy" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    num_stpes: 4\n    guidance: 0.2\n    joint_names: [a, b]\n")
    r = _cli("validate-params", str(bad))
    assert r.returncode == 1
    assert "did you mean 'num_steps'" in r.stdout and "guidance=0.2 is outside [1, 20]" in r.stdout
    other = tmp_path / "other.yaml"
    other.write_text("/arm/cosmos3_policy:\n  ros__parameters:\n    num_steps: 4\n")
    assert _cli("validate-params", str(other)).returncode == 1
    assert _cli("validate-params", str(other), "--node-name", "/arm/cosmos3_policy").returncode == 0
    combo = tmp_path / "combo.yaml"
    combo.write_text("/**:\n  ros__parameters:\n    joint_names: [a, b]\n")
    r = _cli("validate-params", str(combo))
    assert r.returncode == 1 and "10 action dimensions but 2 joint_names" in r.stdout


def test_settings_yaml_is_a_valid_complete_parameter_file(tmp_path):
    r = _cli("settings", "--yaml")
    assert r.returncode == 0
    path = tmp_path / "all.yaml"
    path.write_text(r.stdout)
    assert _cli("validate-params", str(path)).returncode == 0


def test_help_pages_show_defaults():
    r = _cli("sidecar", "--help")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "[default: 8000]" in text and "[default: 30]" in text and "--num_steps" in text
