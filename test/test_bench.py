# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros bench`` on the CPU with the tiny model: a smoke test of shapes and keys, plus its helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cosmos3_ros.bench.benchmark import REQUIRED_KEYS
from cosmos3_ros.bench.measure import frame_deviation, gpu_slug, rel_l2, transformer_flops
from cosmos3_ros.bench.preset_bench import PRESET_KEYS


@pytest.mark.slow
def test_bench_cpu_tiny_smoke(tmp_path, capsys):
    from cosmos3_ros.cli import main

    rc = main(
        [
            "bench",
            "--device", "cpu", "--size", "tiny",
            "--height", "48", "--width", "64", "--image-size", "256",
            "--steps", "2", "--repeats", "1", "--loop-cycles", "1",
            "--variants", "stock,ours,loop",
            "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert rc == 0
    (jp,) = tmp_path.glob("*-cpu-tiny.json")
    (mp,) = tmp_path.glob("*-cpu-tiny.md")
    res = json.loads(jp.read_text())
    for key in REQUIRED_KEYS:
        assert key in res, key
    assert not res["errors"], res["errors"]
    assert res["device"].endswith("(cpu)") and res["size"] == "tiny"
    # On the CPU the runtime's levers are exact: same actions and frames as the stock pipeline.
    assert res["action_rel_error"] == 0.0
    assert res["calls"]["ours_fd"]["frames_vs_stock"]["max_abs"] == 0
    assert res["stock_decoded_vs_latent_action_rel_error"] == 0.0
    for name in (
        "stock_policy_decoded",
        "stock_policy_latent",
        "stock_fd",
        "ours_policy",
        "ours_policy_video",
        "ours_fd",
    ):
        call = res["calls"][name]
        assert call["total_s"] > 0 and call["step_median_s"] > 0 and call["steps"] == 2, name
    assert res["calls"]["ours_policy_video"]["frames_vs_stock"]["max_abs"] == 0
    assert res["tokens"]["text"] > 0 and res["tokens"]["gen"] > 0
    assert res["floor_s"] > 0 and res["floor_text_cached_s"] < res["floor_s"]
    assert res["ours_cold_start_s"] > 0
    loop = res["loop"]
    assert loop["cycles"] == 1 and loop["chunks_per_s"] > 0 and isinstance(loop["replans_within_half_horizon"], bool)
    assert res["bars"] == {} and "not evaluated on CPU" in res["bars_note"]  # GPU bars are not CPU verdicts
    md = mp.read_text()
    assert "FAIL" not in md and "not evaluated on CPU" in md
    assert "| 0 TFLOP/s" not in md and "0.0 GiB" not in md  # small rates are not rounded to 0, unmeasured left out
    assert "cosmos3-ros bench --device cpu --size tiny" in md
    assert "| ours_policy | 2 |" in md
    assert "wrote" in capsys.readouterr().out


def test_rel_l2_and_frame_deviation():
    a = np.array([[3.0, 4.0]])
    assert rel_l2(a, a) == 0.0
    assert rel_l2(np.zeros_like(a), a) == pytest.approx(1.0)
    f = np.zeros((2, 4, 4, 3), np.uint8)
    g = f.copy()
    g[0, 0, 0, 0] = 10
    d = frame_deviation(g, f)
    assert d["max_abs"] == 10 and d["mean_abs"] == pytest.approx(10 / f.size)
    assert math.isinf(frame_deviation(f, f)["psnr_db"])


def test_gpu_slug():
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_slug("NVIDIA H200") == "h200"
    assert gpu_slug("NVIDIA A100-SXM4-80GB") == "a100"


def test_nano_flops_match_the_published_estimate():
    from types import SimpleNamespace

    from cosmos3_ros.bench.nano import NANO_TRANSFORMER

    cfg = SimpleNamespace(**NANO_TRANSFORMER)
    fl = transformer_flops(cfg, 307, 1516)
    # About 28 TFLOP per forward at 1823 tokens (15.2 B parameters: 2 * params * tokens, plus attention).
    assert 26e12 < fl["stock_forward"] < 29e12
    assert fl["stock_forward"] == pytest.approx(fl["text_stream"] + fl["gen_stream"])


def test_variants_argument_is_validated():
    import argparse

    from cosmos3_ros.commands.bench import _int_list, _presets, _variants

    assert _variants("stock,ours") == ("stock", "ours")
    assert _variants("loop@droid,fp8_sweep") == ("loop@droid", "fp8_sweep")
    assert _presets("droid,bridge") == ("droid", "bridge")
    with pytest.raises(argparse.ArgumentTypeError):
        _presets("droid,isaac")
    assert _int_list("30,10") == (30, 10)
    with pytest.raises(argparse.ArgumentTypeError):
        _variants("stock,warp")
    with pytest.raises(argparse.ArgumentTypeError):
        _int_list("0")


@pytest.mark.slow
def test_bench_preset_cpu_smoke_runs_every_new_variant(tmp_path, capsys):
    """``--preset droid`` on the CPU (tiny weights, small frame): every preset variant runs and reports."""
    from cosmos3_ros.cli import main

    rc = main(
        [
            "bench", "--device", "cpu", "--dtype", "bfloat16", "--preset", "droid",
            "--samples", "2", "--repeats", "1", "--loop-cycles", "1", "--batch-sizes", "2",
            "--variants", "stock,ours,interval,fp8,batch,loop,quality,fp8_sweep", "--fp8-keep", "auto",
            "--sweep-band", "1", "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert rc == 0
    (jp,) = tmp_path.glob("*-cpu-tiny-droid.json")
    res = json.loads(jp.read_text())
    for key in PRESET_KEYS:
        assert key in res, key
    assert not res["errors"], res["errors"]
    assert res["preset"] == "droid" and res["settings"]["guidance"] == 3.0 and res["settings"]["use_state"]
    for name in ("stock_policy_latent", "ours_policy", "ours_interval_policy", "ours_fp8_policy", "stock_fd"):
        assert res["calls"][name]["total_s"] > 0, name
    assert res["preprocess_s"] > 0 and res["loop_cycle_p95_s"] > 0
    assert res["interval_vs_stock_interval_rel_error"] == 0.0  # the interval is exact against stock on the CPU
    assert res["interval_vs_full_guidance_rel_error"] > 0
    assert res["batch"]["2"]["bit_identical_to_single"] and res["batch"]["2"]["forwards_per_call"] == 2
    q = res["quality"]
    assert q["samples"] == 2 and q["bf16_vs_fp32"]["mean"] > 0 and len(q["fp8_vs_ours_bf16"]["values"]) == 2
    assert res["bf16_vs_fp32_rel_error"] == q["bf16_vs_fp32"]["mean"] and res["fp8_action_rel_error"] > 0
    sweep = json.loads(next(tmp_path.glob("*-fp8-sweep.json")).read_text())
    assert sweep["keep"] == res["fp8_keep"] and len(sweep["groups"]) == 8 and len(sweep["projections"]) == 4
    assert res["bars"] == {} and "not evaluated on CPU" in res["bars_note"]
    assert "--preset droid" in capsys.readouterr().out


def test_presets_are_the_parameter_files_own_numbers():
    import yaml

    from cosmos3_ros.bench.presets import load_preset, preset_file

    for name in ("droid", "bridge"):
        p = load_preset(name)
        params = yaml.safe_load(preset_file(name).read_text())["/**"]["ros__parameters"]
        for key in ("num_steps", "guidance", "shift", "action_chunk_size", "fps", "use_state", "conditioning"):
            assert getattr(p.settings, key) == params[key], (name, key)
    droid = load_preset("droid")
    assert droid.frame().shape == (540, 640, 3) and droid.state(0).shape == (8,)
    assert droid.replan_budget_s == pytest.approx(16 / 15)
    assert load_preset("bridge").state(0) is None
    with pytest.raises(ValueError, match="preset"):
        load_preset("isaac")
