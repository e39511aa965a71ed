# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The stages of one preset of :class:`~cosmos3_ros.bench.preset_bench.PresetBench`, its summary keys and bars."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cosmos3_ros.bench.measure import rel_l2
from cosmos3_ros.bench.presets import Preset
from cosmos3_ros.core.backend import PolicyCall

#: Issue 16's bars (one H200, Nano-size random weights).
BARS = {
    "droid": {"policy_s_max": 0.50, "speedup_min": 2.5, "interval_s_max": 0.40},
    "bridge": {"policy_s_max": 1.2, "action_rel_error_max": 2e-2, "fp8_speedup_min": 1.3},
    "all": {"preprocess_s_max": 0.010, "fp8_over_floor_max": 3.0},
}


def wants(variants, name: str, preset: str) -> bool:
    """Whether variant ``name`` runs at ``preset`` (``name``, or ``name@preset``)."""
    return name in variants or f"{name}@{preset}" in variants


def run_preset(bench, res: dict[str, Any], p: Preset, stock, ours, fp8, refs: dict) -> None:
    """Every configured stage at preset ``p``; fills ``res``. A variant ``name@preset`` runs at that preset only."""
    v = {x.split("@")[0] for x in bench.cfg.variants if "@" not in x or x.endswith(f"@{p.name}")}
    frame, s, state = p.frame(0.0), p.settings, p.state(0)
    errors = res["errors"]
    out: dict[str, Any] = {}

    def stage(name, fn):
        return bench.guard(f"{p.name}_{name}", fn, errors)

    def policy(rt, settings=s):
        return lambda: rt.policy(frame, settings, state=state)

    if "stock" in v:
        stage("stock_warmup", lambda: stock.policy(frame, s.replace(num_steps=min(2, s.num_steps)), state=state))
        got = stage("stock_policy", lambda: bench.timed(policy(stock), bench.cfg.repeats))
        if got:
            res["calls"]["stock_policy_latent"], out["stock"] = got[0], got[1].actions
        acts = out.get("stock")
        fd_actions = acts if acts is not None else np.zeros((s.action_chunk_size, s.action_width), np.float32)
        got = stage("stock_fd", lambda: bench.timed(lambda: stock.forward_dynamics(frame, fd_actions, s), 1))
        if got:
            res["calls"]["stock_fd"], out["stock_fd_frames"] = got[0], got[1].frames
    if "ours" in v:
        res["ours_cold_start_s"] = stage("ours_warmup", lambda: ours.warmup(s, image_shape=frame.shape[:2]))
        res["ours_first_call_after_warmup_s"] = (stage("ours_first", lambda: bench.timed(policy(ours), 1)) or [{}])[
            0
        ].get("total_s")
        got = stage("ours_policy", lambda: bench.timed(policy(ours), bench.cfg.repeats))
        if got:
            res["calls"]["ours_policy"], out["ours"] = got[0], got[1].actions
        fd_actions = out.get("stock", out.get("ours"))
        if fd_actions is not None:
            got = stage("ours_fd", lambda: bench.timed(lambda: ours.forward_dynamics(frame, fd_actions, s), 1))
            if got:
                res["calls"]["ours_fd"] = got[0]
                res["calls"]["ours_fd"]["frames_vs_stock"] = _frames_vs(got[1].frames, out.get("stock_fd_frames"))
        res["ours_fast_stats"] = dict(ours.pipe.fast_forward.stats) if ours.pipe.fast_forward else None
    if "interval" in v and s.guidance != 1.0:
        si = s.replace(guidance_steps=1)
        stage("interval_warmup", lambda: [ours.policy(frame, si, state=state) for _ in range(2)])
        got = stage("ours_interval", lambda: bench.timed(policy(ours, si), bench.cfg.repeats))
        if got:
            res["calls"]["ours_interval_policy"], out["interval"] = got[0], got[1].actions
        if "stock" in v:
            got = stage("stock_interval", lambda: bench.timed(policy(stock, si), 1))
            if got:
                res["calls"]["stock_interval_policy"], out["stock_interval"] = got[0], got[1].actions
    if "fp8" in v and fp8 is not None:
        stage("fp8_warmup", lambda: fp8.warmup(s, image_shape=frame.shape[:2]))
        got = stage("ours_fp8", lambda: bench.timed(policy(fp8), bench.cfg.repeats))
        if got:
            res["calls"]["ours_fp8_policy"], out["fp8"] = got[0], got[1].actions
        if "interval" in v and s.guidance != 1.0:  # both opt-ins together
            si = s.replace(guidance_steps=1)
            stage("fp8_interval_warmup", lambda: [fp8.policy(frame, si, state=state) for _ in range(2)])
            got = stage("fp8_interval", lambda: bench.timed(policy(fp8, si), bench.cfg.repeats))
            if got:
                res["calls"]["ours_fp8_interval_policy"], out["fp8_interval"] = got[0], got[1].actions
    if "batch" in v and bench.cfg.batch_sizes:
        single_s = (res["calls"].get("ours_policy") or {}).get("total_s")
        res["batch"] = stage("batch", lambda: _batch_stage(bench, p, ours, single_s))
    if "loop" in v and bench.cfg.loop_cycles > 0:
        res["loop"] = stage("loop", lambda: _loop_stage(bench, p, ours))
    if "quality" in v:
        stage("quality", lambda: _quality_stage(bench, p, ours, fp8, refs, res))
    _summarise(res, p, out)


def _frames_vs(a, b):
    from cosmos3_ros.bench.preset_bench import frames_vs

    return frames_vs(a, b)


def _batch_stage(bench, p: Preset, ours, single_s: float | None) -> dict[str, Any]:
    """policy_batch of B calls (each its own frame, prompt, seed, state) against B single calls (exactness) and
    against the single call's time (``single_s``, the preset's ours_policy)."""
    out: dict[str, Any] = {}
    for b in bench.cfg.batch_sizes:
        calls = []
        for k in range(b):
            frame, settings, state = p.sample(k)
            calls.append(PolicyCall(frame, settings, observation_stamp=float(k), state=state))
        for _ in range(2):  # learn the unconditional layouts, capture the group's graphs
            ours.policy_batch(calls)
        rec, chunks = bench.timed(lambda calls=calls: _Batch(ours.policy_batch(calls)), 1)
        singles = [ours.policy(c.image, c.settings, state=c.state) for c in calls]
        errs = [rel_l2(ch.actions, one.actions) for ch, one in zip(chunks.items, singles, strict=True)]
        exact = all(np.array_equal(ch.actions, one.actions) for ch, one in zip(chunks.items, singles, strict=True))
        last = ours.pipe.__dict__.get("last_batch") or {}
        out[str(b)] = {
            "total_s": rec["total_s"],
            "per_sample_s": rec["total_s"] / b,
            "single_call_s": single_s,
            "throughput_vs_single": single_s * b / rec["total_s"] if single_s and rec["total_s"] else None,
            "max_rel_error_vs_single": max(errs),
            "bit_identical_to_single": exact,
            "forwards_per_call": last.get("forwards"),
            "max_passes_per_forward": last.get("max_passes"),
        }
    return out


class _Batch:
    """A list of chunks with no ``timing`` (so _timed records totals only)."""

    timing = None

    def __init__(self, items):
        self.items = items


def _loop_stage(bench, p: Preset, ours) -> dict[str, Any]:
    """Policy, then a forward-dynamics forecast of its chunk (decoded frames), back to back at the preset."""
    s = p.settings
    pol, fd, cyc = [], [], []
    for i in range(bench.cfg.loop_cycles):
        frame = p.frame(0.3 * i)
        t0 = time.perf_counter()
        chunk = ours.policy(frame, s, state=p.state(0))
        t1 = time.perf_counter()
        ours.forward_dynamics(frame, chunk.actions, s)
        t2 = time.perf_counter()
        pol.append(t1 - t0)
        fd.append(t2 - t1)
        cyc.append(t2 - t0)

    def pct(xs, q):
        return float(np.percentile(np.asarray(xs), q))

    budget = p.replan_budget_s
    return {
        "cycles": len(cyc),
        "budget_s": budget,
        "policy_p50_s": pct(pol, 50),
        "policy_p95_s": pct(pol, 95),
        "forecast_p50_s": pct(fd, 50),
        "forecast_p95_s": pct(fd, 95),
        "cycle_p50_s": pct(cyc, 50),
        "cycle_p95_s": pct(cyc, 95),
        "cycle_max_s": max(cyc),
        "fits_budget": pct(cyc, 95) <= budget,
        "policy_fits_budget": pct(pol, 95) <= budget,
        "cycles_s": cyc,
    }


def _quality_stage(bench, p: Preset, ours, fp8, refs: dict, res: dict) -> None:
    from cosmos3_ros.bench.quality import quality_summary, sample_actions

    n = bench.cfg.samples
    actions = {k: v for k, v in refs.items() if v}
    actions["ours_bf16"] = sample_actions(ours, p, n)
    if fp8 is not None:
        actions["ours_fp8"] = sample_actions(fp8, p, n)
    res["quality"] = quality_summary(actions)


def _mean(res, name):
    return ((res.get("quality") or {}).get(name) or {}).get("mean")


def _summarise(res: dict[str, Any], p: Preset, out: dict[str, Any]) -> None:
    calls = res["calls"]

    def total(name):
        return (calls.get(name) or {}).get("total_s")

    def ratio(a, b):
        return a / b if a and b else None

    res["stock_policy_latent_s"] = total("stock_policy_latent")
    res["ours_policy_s"] = total("ours_policy")
    res["ours_interval_policy_s"] = total("ours_interval_policy")
    res["ours_fp8_policy_s"] = total("ours_fp8_policy")
    res["ours_fp8_interval_policy_s"] = total("ours_fp8_interval_policy")
    res["fp8_interval_vs_full_guidance_rel_error"] = _err(out.get("fp8_interval"), out.get("ours"))
    res["stock_fd_s"] = total("stock_fd")
    res["ours_fd_s"] = total("ours_fd")
    res["speedup_policy_vs_stock_latent"] = ratio(res["stock_policy_latent_s"], res["ours_policy_s"])
    res["speedup_interval_vs_stock_latent"] = ratio(res["stock_policy_latent_s"], res["ours_interval_policy_s"])
    res["fp8_speedup_vs_ours"] = ratio(res["ours_policy_s"], res["ours_fp8_policy_s"])
    res["speedup_fd_vs_stock"] = ratio(res["stock_fd_s"], res["ours_fd_s"])
    timing = (calls.get("ours_policy") or {}).get("runtime_timing") or {}
    res["preprocess_s"] = timing.get("preprocess_s")
    res["encode_s"] = timing.get("encode_s")
    res["denoise_per_step_s"] = timing["denoise_s"] / p.settings.num_steps if timing.get("denoise_s") else None
    res["action_rel_error"] = _err(out.get("ours"), out.get("stock"))
    res["interval_vs_full_guidance_rel_error"] = _err(out.get("interval"), out.get("ours"))
    res["interval_vs_stock_interval_rel_error"] = _err(out.get("interval"), out.get("stock_interval"))
    res["interval_vs_stock_full_rel_error"] = _err(out.get("interval"), out.get("stock"))
    res["bf16_vs_fp32_rel_error"] = _mean(res, "bf16_vs_fp32")
    fp8_mean = _mean(res, "fp8_vs_ours_bf16")
    res["fp8_action_rel_error"] = fp8_mean if fp8_mean is not None else _err(out.get("fp8"), out.get("ours"))
    res["fp8_over_floor"] = (res.get("quality") or {}).get("fp8_over_floor")
    loop = res.get("loop") or {}
    res["loop_cycle_p95_s"] = loop.get("cycle_p95_s")
    res["loop_budget_s"] = p.replan_budget_s
    _bars(res, p)


def _err(a, b):
    return rel_l2(a, b) if a is not None and b is not None else None


def _bars(res: dict[str, Any], p: Preset) -> None:
    if "cuda" not in res["device"]:
        res["bars"] = {}
        res["bars_note"] = "the pass/fail bars are GPU bars (Nano size on one H200): not evaluated on CPU"
        return
    ok: dict[str, bool] = {}
    b, a = BARS.get(p.name, {}), BARS["all"]
    floor = res.get("bf16_vs_fp32_rel_error")
    if p.name == "droid":
        if res["ours_policy_s"] is not None:
            ok["policy_le_0_50_s"] = res["ours_policy_s"] <= b["policy_s_max"]
        if res["speedup_policy_vs_stock_latent"] is not None:
            ok["speedup_ge_2_5"] = res["speedup_policy_vs_stock_latent"] >= b["speedup_min"]
        if res["action_rel_error"] is not None:
            limit = max(5e-2, 2 * floor) if floor is not None else 5e-2
            res["action_rel_error_limit"] = limit
            ok["action_rel_error_within_limit"] = res["action_rel_error"] <= limit
        if res["ours_interval_policy_s"] is not None:
            ok["interval_le_0_40_s"] = res["ours_interval_policy_s"] <= b["interval_s_max"]
    if p.name == "bridge":
        if res["ours_policy_s"] is not None:
            ok["policy_le_1_2_s"] = res["ours_policy_s"] <= b["policy_s_max"]
        if res["action_rel_error"] is not None:
            ok["action_rel_error_le_2e_2"] = res["action_rel_error"] <= b["action_rel_error_max"]
        if res["fp8_speedup_vs_ours"] is not None:
            ok["fp8_speedup_ge_1_3"] = res["fp8_speedup_vs_ours"] >= b["fp8_speedup_min"]
    if res["preprocess_s"] is not None:
        ok["preprocess_le_10_ms"] = res["preprocess_s"] <= a["preprocess_s_max"]
    if res.get("fp8_over_floor") is not None:
        ok["fp8_le_3x_floor"] = res["fp8_over_floor"] <= a["fp8_over_floor_max"]
    res["bars"] = ok
