# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark results as JSON and Markdown (the files committed under ``bench/results/``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.bench.measure import gpu_slug, slug


def _fmt(x, unit="s", nd=3):
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if unit == "ms":
        return f"{x * 1e3:.1f} ms"
    if unit == "x":
        return f"{x:.2f}x"
    if unit == "e":
        return f"{x:.2e}"
    if unit == "gib":
        return f"{x:.1f} GiB" if x else "-"  # not measured (no GPU)
    return f"{x:.{nd}f} s"


def to_markdown(res: dict[str, Any]) -> str:
    """The results as a markdown report with the exact command."""
    calls = res.get("calls", {})
    lines = [
        f"# cosmos3-ros bench: {res.get('size')} on {res.get('device')}, {res.get('date')}",
        "",
        "Command:",
        "",
        "```",
        res.get("command", ""),
        "```",
        "",
        f"Random weights ({res.get('transformer_params', 0) / 1e9:.2f} B transformer parameters), "
        f"{res.get('dtype')}, frame {res['frame'][1]}x{res['frame'][0]}, tier {res['settings']['image_size']}, "
        f"chunk {res['settings']['action_chunk_size']}, domain {res['settings']['domain_name']}, "
        f"guidance {res['settings']['guidance']}, "
        f"seed {res['settings']['seed']}; tokens {res.get('tokens')}. Totals are medians of {res.get('repeats')} "
        "calls after warm-up; per step is the median step; VAE columns time `vae.encode`/`vae.decode`.",
        "",
        "| call | steps | total | per step | VAE encode | VAE decode | peak GPU mem | vs stock | actions vs stock |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    stock_ref = {
        "policy": "stock_policy_latent",
        "policy_video": "stock_policy_decoded",
        "fd": "stock_fd",
    }
    for name, c in calls.items():
        ref = None
        if name.startswith("ours"):
            kind = c.get("mode")
            base = stock_ref.get(kind, "")
            if c.get("steps") != res["settings"]["steps"][0] and kind != "policy_video":
                base = f"{base}_{c.get('steps')}"
            ref = (calls.get(base) or {}).get("total_s")
        speed = _fmt(ref / c["total_s"], "x") if ref and c.get("total_s") else "-"
        err = c.get("action_rel_error")
        dev = c.get("frames_vs_stock")
        acc = _fmt(err, "e") if err is not None else (f"frames PSNR {dev['psnr_db']:.1f} dB" if dev else "-")
        lines.append(
            f"| {name} | {c.get('steps')} | {_fmt(c.get('total_s'))} | {_fmt(c.get('step_median_s'), 'ms')} | "
            f"{_fmt(c.get('vae_encode_s'))} | {_fmt(c.get('vae_decode_s'))} | {_fmt(c.get('peak_mem_gib'), 'gib')} | "
            f"{speed} | {acc} |"
        )
    lines += [
        "",
        "| summary | value |",
        "| --- | --- |",
        *(
            [f"| {res.get('dtype')} GEMM rate ({res.get('gemm_n')}^3) | {res['gemm_tflops']:.3g} TFLOP/s |"]
            if res.get("gemm_tflops")
            else []
        ),
        *(
            [f"| FLOPs of one stock forward | {res['flops_per_forward_tflop']:.3g} TFLOP |"]
            if res.get("flops_per_forward_tflop")
            else []
        ),
        f"| compute floor, {res['settings']['steps'][0]} steps (stock FLOPs / GEMM rate) | "
        f"{_fmt(res.get('floor_s'))} |",
        f"| floor with the text stream computed once | {_fmt(res.get('floor_text_cached_s'))} |",
        f"| ours, policy {res['settings']['steps'][0]} steps | {_fmt(res.get('ours_policy_s'))} |",
        f"| speed-up vs stock latent / decoded | {_fmt(res.get('speedup_policy_vs_stock_latent'), 'x')} / "
        f"{_fmt(res.get('speedup_policy_vs_stock_decoded'), 'x')} |",
        f"| speed-up forward_dynamics (decoded) | {_fmt(res.get('speedup_fd_vs_stock'), 'x')} |",
        f"| action_rel_error (ours vs stock, same seed) | {_fmt(res.get('action_rel_error'), 'e')} |",
        f"| exact variant (text cache only): time / action error | {_fmt(res.get('ours_exact_policy_s'))} / "
        f"{_fmt(res.get('ours_exact_action_rel_error'), 'e')} |",
        f"| opt-in FP8: time / action error | {_fmt(res.get('ours_fp8_policy_s'))} / "
        f"{_fmt(res.get('ours_fp8_action_rel_error'), 'e')} |",
        f"| cold start (warm-up incl. compile + graph capture) | {_fmt(res.get('ours_cold_start_s'))} |",
        f"| first policy call after warm-up | {_fmt(res.get('ours_first_call_after_warmup_s'))} |",
        f"| stock warm-up call (2 steps) | {_fmt(res.get('stock_warmup_s'))} |",
    ]
    loop = res.get("loop")
    if loop:
        lines += [
            f"| loop: chunks per second (policy + forecast, {loop['cycles']} cycles) | {loop['chunks_per_s']:.2f} |",
            f"| loop: cycle p50 / p95 / max | {_fmt(loop['cycle_p50_s'])} / {_fmt(loop['cycle_p95_s'])} / "
            f"{_fmt(loop['cycle_max_s'])} |",
            f"| loop: policy p50 / max | {_fmt(loop['policy_p50_s'])} / {_fmt(loop['policy_max_s'])} |",
            f"| loop: replans within half a chunk ({loop['half_horizon_s']:.1f} s) | "
            f"{'yes' if loop['replans_within_half_horizon'] else 'no'} (policy alone: "
            f"{'yes' if loop['policy_within_half_horizon'] else 'no'}) |",
        ]
    joint = res.get("loop_joint_forecast")
    if joint:
        lines += [
            f"| loop alternative: policy with its own video as the forecast ({joint['cycles']} cycles): "
            f"chunks/s, cycle p50 / max | {joint['chunks_per_s']:.2f}, {_fmt(joint['cycle_p50_s'])} / "
            f"{_fmt(joint['cycle_max_s'])} (within half a chunk: "
            f"{'yes' if joint['replans_within_half_horizon'] else 'no'}) |",
        ]
    bars = res.get("bars") or {}
    if bars:
        lines += ["", "Bars: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in bars.items())]
    if res.get("bars_note"):
        lines += ["", f"Bars: {res['bars_note']}."]
    micro = res.get("micro")
    if micro:
        lines += [
            "",
            f"Micro: generation-stream GEMMs {micro.get('gen_gemm_tflops', 0):.0f} TFLOP/s, "
            f"{_fmt(micro.get('gen_gemm_s_per_step'), 'ms')} per step (bf16), "
            f"{_fmt(micro.get('gen_gemm_fp8_s_per_step'), 'ms')} (fp8 incl. quantization); attention per step: "
            + ", ".join(
                f"{k} {_fmt(v.get('s_per_step'), 'ms')}" if "s_per_step" in v else f"{k} n/a"
                for k, v in (micro.get("attention") or {}).items()
            ),
        ]
    replay = res.get("ours_graph_replay_ms")
    if replay:
        lines += [
            "",
            "One captured denoising step of the transformer alone (CUDA graph replay, GPU time): "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in replay.items()),
        ]
    vae = res.get("micro_vae_decode")
    if vae:
        lines += [
            "",
            f"VAE decode of {vae.get('latent_shape')}: default {vae.get('default_ms', 0):.0f} ms, cuDNN autotuned "
            f"{vae.get('cudnn_benchmark_ms', 0):.0f} ms, channels-last {vae.get('channels_last_ms', 0):.0f} ms "
            f"(PSNR vs default {vae.get('channels_last_psnr_db', 0):.1f} dB)",
        ]
    if res.get("errors"):
        lines += ["", "Errors:"] + [f"- {k}: {v.splitlines()[0]}" for k, v in res["errors"].items()]
    return "\n".join(lines) + "\n"


def write_results(res: dict[str, Any], out_dir: str | Path, tag: str = "") -> tuple[Path, Path]:
    """Write ``<date>-<gpu>[-tag].json`` and ``.md`` under ``out_dir``; return both paths."""
    return _write(res, out_dir, "", tag, to_markdown(res))


def _write(res: dict[str, Any], out_dir: str | Path, part: str, tag: str, markdown: str) -> tuple[Path, Path]:
    """``<date>-<gpu>[-part][-tag].json`` (``res``) and ``.md`` (``markdown``) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gpu = gpu_slug(res.get("gpu", "")) if "cuda" in res.get("device", "") else f"cpu-{res.get('size')}"
    stem = f"{res.get('date')}-{gpu}" + (f"-{part}" if part else "") + (f"-{slug(tag)}" if tag else "")
    jp, mp = out / f"{stem}.json", out / f"{stem}.md"
    jp.write_text(json.dumps(res, indent=2, default=_json_default) + "\n")
    mp.write_text(markdown)
    return jp, mp


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def preset_markdown(res: dict[str, Any]) -> str:
    """One preset's results as markdown, with the exact command."""
    s = res["settings"]
    calls = res.get("calls", {})
    q = res.get("quality") or {}
    lines = [
        f"# cosmos3-ros bench --preset {res['preset']}: {res.get('size')} on {res.get('device')}, {res.get('date')}",
        "",
        "Command:",
        "",
        "```",
        res.get("command", ""),
        "```",
        "",
        f"Preset `{res.get('preset_file')}`: {s['num_steps']} steps, guidance {s['guidance']}, shift {s['shift']}, "
        f"chunk {s['action_chunk_size']} at {s['fps']} fps, domain {s['domain_name']}, width {s['raw_action_dim']}, "
        f"{s['view_point']}, conditioning {s['conditioning']}, state row {s['use_state']}; frame "
        f"{res['frame'][1]}x{res['frame'][0]}; random weights ({res.get('transformer_params', 0) / 1e9:.2f} B), "
        f"{res.get('dtype')}. Totals: median of {res.get('repeats')} device-synchronised calls after warm-up. "
        "Stock is diffusers' own code path (`fast=False`) with the preset's contract.",
        "",
        "| call | total | preprocess | encode | denoise | decode | vs stock |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    stock = res.get("stock_policy_latent_s")
    for name, c in calls.items():
        t = c.get("runtime_timing") or {}
        speed = _fmt(stock / c["total_s"], "x") if stock and c.get("total_s") and "policy" in name else "-"
        lines.append(
            f"| {name} | {_fmt(c.get('total_s'))} | {_fmt(t.get('preprocess_s'), 'ms')} | "
            f"{_fmt(t.get('encode_s'), 'ms')} | {_fmt(t.get('denoise_s'))} | {_fmt(t.get('decode_s'))} | {speed} |"
        )
    floor = res.get("bf16_vs_fp32_rel_error")
    lines += [
        "",
        "| summary | value |",
        "| --- | --- |",
        f"| ours policy / stock latent | {_fmt(res.get('ours_policy_s'))} / {_fmt(stock)} "
        f"({_fmt(res.get('speedup_policy_vs_stock_latent'), 'x')}) |",
        f"| action rel. L2, ours vs stock (same seed) | {_fmt(res.get('action_rel_error'), 'e')} |",
        f"| preprocessing (ours, median) | {_fmt(res.get('preprocess_s'), 'ms')} |",
        f"| cold start / first call after warm-up | {_fmt(res.get('ours_cold_start_s'))} / "
        f"{_fmt(res.get('ours_first_call_after_warmup_s'))} |",
    ]
    if res.get("ours_interval_policy_s") is not None:
        lines += [
            f"| guidance on the first step only (`guidance_steps: 1`) | {_fmt(res['ours_interval_policy_s'])}; "
            f"actions vs full guidance {_fmt(res.get('interval_vs_full_guidance_rel_error'), 'e')}, vs stock with "
            f"the same interval {_fmt(res.get('interval_vs_stock_interval_rel_error'), 'e')} |",
        ]
    if res.get("ours_fp8_policy_s") is not None:
        lines += [
            f"| FP8 (keep bf16: `{res.get('fp8_keep')}`) | {_fmt(res['ours_fp8_policy_s'])} "
            f"({_fmt(res.get('fp8_speedup_vs_ours'), 'x')} ours bf16) |",
        ]
    if res.get("ours_fp8_interval_policy_s") is not None:
        lines += [
            f"| FP8 and guidance on the first step only | {_fmt(res['ours_fp8_interval_policy_s'])}; actions vs "
            f"ours bf16 with full guidance {_fmt(res.get('fp8_interval_vs_full_guidance_rel_error'), 'e')} |",
        ]
    if q:
        lines += [
            f"| quality over {q.get('samples')} samples: bf16 noise floor (stock bf16 vs stock "
            f"{res.get('fp32_reference', 'fp32')}) | mean {_fmt(floor, 'e')} "
            f"({_spread(q.get('bf16_vs_fp32'))}) |",
            f"| ours bf16 vs fp32 | mean {_fmt(_m(q, 'ours_bf16_vs_fp32'), 'e')} "
            f"({_spread(q.get('ours_bf16_vs_fp32'))}) |",
            f"| FP8 vs ours bf16 | mean {_fmt(_m(q, 'fp8_vs_ours_bf16'), 'e')} ({_spread(q.get('fp8_vs_ours_bf16'))}): "
            f"{_fmt(q.get('fp8_over_floor'), 'x')} the floor |",
        ]
    loop = res.get("loop")
    if loop:
        lines += [
            f"| loop: policy + forward-dynamics forecast ({loop['cycles']} cycles) | cycle p50 "
            f"{_fmt(loop['cycle_p50_s'])}, p95 {_fmt(loop['cycle_p95_s'])} against a {_fmt(loop['budget_s'])} budget: "
            f"{'fits' if loop['fits_budget'] else 'does not fit'} (policy p95 {_fmt(loop['policy_p95_s'])}, "
            f"forecast p95 {_fmt(loop['forecast_p95_s'])}) |",
        ]
    for b, r in (res.get("batch") or {}).items():
        lines.append(
            f"| policy_batch of {b} | {_fmt(r['total_s'])} ({_fmt(r['per_sample_s'])} per sample, "
            f"{_fmt(r.get('throughput_vs_single'), 'x')} the throughput of single calls); max rel. L2 vs single "
            f"{_fmt(r['max_rel_error_vs_single'], 'e')} |"
        )
    bars = res.get("bars") or {}
    if bars:
        lines += ["", "Bars: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in bars.items())]
    if res.get("bars_note"):
        lines += ["", f"Bars: {res['bars_note']}."]
    if res.get("errors"):
        lines += ["", "Errors:"] + [f"- {k}: {v.splitlines()[0]}" for k, v in res["errors"].items()]
    return "\n".join(lines) + "\n"


def _m(q, name):
    return (q.get(name) or {}).get("mean")


def _spread(d) -> str:
    if not d or d.get("mean") is None:
        return "-"
    return f"median {d['median']:.2e}, min {d['min']:.2e}, max {d['max']:.2e}"


def write_preset_results(res: dict[str, Any], out_dir: str | Path, tag: str = "") -> tuple[Path, Path]:
    """Write ``<date>-<gpu>-<preset>[-tag].json`` and ``.md``; return both paths."""
    return _write(res, out_dir, res["preset"], tag, preset_markdown(res))
