# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Which of the blocks' linear layers FP8 may take: a per-layer sweep at the forward level, and the keep-list.

For inputs captured from real calls (the transformer's arguments at a denoising step), one transformer forward is
run in float32 (the reference), in bf16 (our fused path), and in bf16 with one *group* of linear layers in FP8 (a
projection — Q/K/V, output, gate/up, down — in a band of consecutive layers). A group's error is the rel. L2 of the
action (and vision) velocity against the bf16 forward; the bf16 floor is the bf16 forward against float32.
Independent rounding errors add (at most) in quadrature, so groups stay bf16 greedily, the most error squared per
FLOP first, until the predicted FP8 error, sqrt(sum of the quantized groups' errors squared), is at most ``target``
times the floor; the chosen configuration is then measured as a whole. The prediction over-estimates (on Nano the
sum of squares is four times the all-FP8 error squared), which is the margin this rule needs: a forward-level
error is a weak proxy for the actions after 30 sampling steps (run of 2026-11-30: keeping only the output
projections measured 1.66x the floor per forward, 1.47x at the DROID preset's actions, but 4.6x at the bridge
preset's 30 steps).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cosmos3_ros.bench.measure import rel_l2
from cosmos3_ros.model.options import FP8_PROJECTIONS, Fp8Keep

_WEIGHT = {"qkv": "qkv", "o": "o", "gate_up": "gu", "down": "down"}


def capture_inputs(rt, frame, settings, state, steps: tuple[int, ...]) -> list[dict]:
    """The transformer's keyword arguments at the conditional pass of ``steps`` of one call of ``rt``
    (a ``fast=False`` runtime: the stock forward is called)."""
    captured: list[dict] = []
    calls = {"n": 0}
    per_step = 2 if settings.guidance != 1.0 else 1

    def hook(module, args, kwargs):
        i = calls["n"]
        calls["n"] += 1
        if i % per_step == 0 and i // per_step in steps:
            captured.append(dict(kwargs))

    handle = rt.pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        rt.policy(frame, settings, state=state)
    finally:
        handle.remove()
    return captured


def _as(kw: dict, dtype) -> dict:
    out = dict(kw)
    out["vision_tokens"] = [t.to(dtype) for t in kw["vision_tokens"]]
    if kw.get("action_tokens") is not None:
        out["action_tokens"] = [t.to(dtype) for t in kw["action_tokens"]]
    out["return_dict"] = False
    return out


def _velocities(out) -> tuple[np.ndarray, np.ndarray]:
    vision = out[0][0].float().cpu().numpy()
    action = out[2][0].float().cpu().numpy() if out[2] is not None else np.zeros(1, np.float32)
    return vision, action


def reference_outputs(transformer32, inputs: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The float32 transformer's stock forward on each captured input."""
    import torch

    with torch.inference_mode():
        return [_velocities(transformer32(**_as(kw, torch.float32))) for kw in inputs]


def _groups(num_layers: int, band: int) -> list[tuple[str, list[tuple[int, str]]]]:
    out = []
    for proj in FP8_PROJECTIONS:
        for lo in range(0, num_layers, band):
            hi = min(num_layers, lo + band) - 1
            name = f"{lo}:{proj}" if lo == hi else f"{lo}-{hi}:{proj}"
            out.append((name, [(i, proj) for i in range(lo, hi + 1)]))
    return out


def run_sweep(transformer, inputs: list[dict], refs: list, *, band: int = 3, target: float = 2.0) -> dict[str, Any]:
    """The sweep (see the module doc) on the bf16 ``transformer``; ``refs`` from :func:`reference_outputs`."""
    import torch

    from cosmos3_ros.model.fast_transformer import FastCosmos3Forward, FastOptions
    from cosmos3_ros.model.kernels import quantize_fp8

    t0 = time.perf_counter()
    ff = FastCosmos3Forward(transformer, FastOptions(fuse=True, uniform_time_embed=True, attention="sdpa"))
    ff.prepare()
    bf16 = [dict(w) for w in ff.weights]
    fp8 = [{name: quantize_fp8(w[name]) for name in _WEIGHT.values()} for w in bf16]
    n_layers = len(bf16)
    cfg = transformer.config
    hid, inter = int(cfg.hidden_size), int(cfg.intermediate_size)
    qkv_out = (int(cfg.num_attention_heads) + 2 * int(cfg.num_key_value_heads)) * int(cfg.head_dim)
    flops = {"qkv": hid * qkv_out, "o": hid * hid, "gate_up": 2 * hid * inter, "down": inter * hid}

    def run(quantized: set[tuple[int, str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        ff.weights = [
            {**w, **{_WEIGHT[p]: fp8[i][_WEIGHT[p]] for p in FP8_PROJECTIONS if (i, p) in quantized}}
            for i, w in enumerate(bf16)
        ]
        ff.begin_call()
        with torch.inference_mode():
            return [_velocities(ff(**_as(kw, transformer.dtype))) for kw in inputs]

    def errors(outs, base) -> tuple[float, float]:
        a = float(np.sqrt(np.mean([rel_l2(o[1], b[1]) ** 2 for o, b in zip(outs, base, strict=True)])))
        v = float(np.sqrt(np.mean([rel_l2(o[0], b[0]) ** 2 for o, b in zip(outs, base, strict=True)])))
        return a, v

    base = run(set())
    floor_a, floor_v = errors(base, refs)
    everything = {(i, p) for i in range(n_layers) for p in FP8_PROJECTIONS}
    all_a, all_v = errors(run(everything), base)
    rows = []
    for name, pairs in _groups(n_layers, band):
        e_a, e_v = errors(run(set(pairs)), base)
        f = sum(flops[p] for _, p in pairs)
        rows.append({"group": name, "pairs": pairs, "action": e_a, "vision": e_v, "flop_share": f})
    total_flops = sum(r["flop_share"] for r in rows)
    for r in rows:
        r["flop_share"] /= total_flops
    projections = []
    for proj in FP8_PROJECTIONS:
        mine = [r for r in rows if r["group"].endswith(f":{proj}")]
        share = sum(r["flop_share"] for r in mine)
        err2 = sum(r["action"] ** 2 for r in mine)
        projections.append({"projection": proj, "flop_share": share, "action_err2": err2, "per_flop": err2 / share})
    projections.sort(key=lambda r: r["per_flop"], reverse=True)
    # Groups stay bf16, the most error squared per FLOP first, until the predicted error (their squares summed)
    # meets the target.
    keep: set[tuple[int, str]] = set()
    order = sorted(rows, key=lambda r: r["action"] ** 2 / max(r["flop_share"], 1e-12), reverse=True)
    quantized_err2 = sum(r["action"] ** 2 for r in rows)
    for r in order:
        if np.sqrt(quantized_err2) <= target * floor_a:
            break
        keep |= set(r["pairs"])
        quantized_err2 -= r["action"] ** 2
        r["kept"] = True
    spec = Fp8Keep.from_pairs(keep, n_layers).spec
    chosen_a, chosen_v = errors(run(everything - keep), base)
    ff.weights = bf16
    kept_share = sum(r["flop_share"] for r in rows if r.get("kept"))
    return {
        "band": band,
        "target_over_floor": target,
        "inputs": len(inputs),
        "floor_action": floor_a,
        "floor_vision": floor_v,
        "all_fp8_action": all_a,
        "all_fp8_vision": all_v,
        "groups": [{k: v for k, v in r.items() if k != "pairs"} for r in rows],
        "projections": projections,
        "keep": spec,
        "predicted_action": float(np.sqrt(max(quantized_err2, 0.0))),
        "kept_flop_share": kept_share,
        "chosen_action": chosen_a,
        "chosen_vision": chosen_v,
        "chosen_over_floor": chosen_a / floor_a if floor_a else None,
        "sweep_s": time.perf_counter() - t0,
    }


def sweep_markdown(sweep: dict[str, Any], command: str, device: str) -> str:
    """The sweep as the committed markdown table."""
    lines = [
        f"# FP8 layer sweep ({device})",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"One transformer forward on {sweep['inputs']} captured inputs; errors are rel. L2 of the velocities against "
        f"our bf16 forward. bf16 floor (bf16 vs float32): action {sweep['floor_action']:.2e}, vision "
        f"{sweep['floor_vision']:.2e}. Every block linear in FP8: action {sweep['all_fp8_action']:.2e} "
        f"({sweep['all_fp8_action'] / sweep['floor_action']:.1f}x the floor).",
        "",
        "| group (layers:projection) | FLOP share | action error | vision error |",
        "| --- | --- | --- | --- |",
    ]
    for r in sweep["groups"]:
        lines.append(f"| {r['group']} | {r['flop_share']:.1%} | {r['action']:.2e} | {r['vision']:.2e} |")
    lines += [
        "",
        "Per projection (all layers): sum of the groups' squared action errors per FLOP share, highest first.",
        "",
        "| projection | FLOP share | sum of squared errors | per FLOP share |",
        "| --- | --- | --- | --- |",
    ]
    for r in sweep.get("projections", []):
        lines.append(f"| {r['projection']} | {r['flop_share']:.1%} | {r['action_err2']:.2e} | {r['per_flop']:.2e} |")
    kept = [r["group"] for r in sweep["groups"] if r.get("kept")]
    lines += [
        "",
        f"Chosen (predicted error at most {sweep['target_over_floor']}x the forward-level floor): keep "
        f"`{sweep['keep']}` in bf16 ({sweep['kept_flop_share']:.1%} of the block FLOPs; groups "
        f"{', '.join(kept) or 'none'}); predicted action error {sweep['predicted_action']:.2e}, measured "
        f"{sweep['chosen_action']:.2e} ({sweep['chosen_over_floor']:.2f}x the floor).",
    ]
    return "\n".join(lines) + "\n"
