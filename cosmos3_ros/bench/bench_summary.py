# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sustained-loop measurement and the summary of a :class:`~cosmos3_ros.bench.benchmark.Bench` run."""

from __future__ import annotations

import logging
import time

import numpy as np

from cosmos3_ros.bench.measure import (
    rel_l2,
    transformer_flops,
)

log = logging.getLogger(__name__)

#: Keys every results JSON carries (the CI smoke test checks them).


BARS = {
    "policy_30_s_max": 1.25,
    "policy_speedup_vs_stock_latent_min": 2.2,
    "action_rel_error_max": 2e-2,
    "fd_speedup_vs_stock_min": 2.0,
}


class LoopAndSummary:
    """Mixed into :class:`~cosmos3_ros.bench.benchmark.Bench`: ``run_loop`` and ``_summarise`` (they use its state)."""

    def run_loop(self, rt, cycles: int):
        """Policy then forward_dynamics forecast, back to back, on a moving scene."""
        from cosmos3_ros.core.synthetic import moving_scene_frame

        settings = self._settings(self.cfg.steps[0])
        pol, fd, cyc = [], [], []
        t_start = time.perf_counter()
        for i in range(cycles):
            frame = moving_scene_frame(0.3 * i, self.cfg.height, self.cfg.width)
            t0 = time.perf_counter()
            chunk = rt.policy(frame, settings)
            t1 = time.perf_counter()
            rt.forward_dynamics(frame, chunk.actions, settings)
            t2 = time.perf_counter()
            pol.append(t1 - t0)
            fd.append(t2 - t1)
            cyc.append(t2 - t0)
        wall = time.perf_counter() - t_start
        horizon = self.cfg.settings.action_chunk_size / self.cfg.settings.fps

        def pct(xs, q):
            return float(np.percentile(np.asarray(xs), q))

        self.res["loop"] = {
            "cycles": cycles,
            "chunks_per_s": cycles / wall,
            "chunk_horizon_s": horizon,
            "half_horizon_s": horizon / 2,
            "policy_p50_s": pct(pol, 50),
            "policy_p95_s": pct(pol, 95),
            "policy_max_s": max(pol),
            "forecast_p50_s": pct(fd, 50),
            "forecast_p95_s": pct(fd, 95),
            "cycle_p50_s": pct(cyc, 50),
            "cycle_p95_s": pct(cyc, 95),
            "cycle_max_s": max(cyc),
            "replans_within_half_horizon": max(cyc) <= horizon / 2,
            "policy_within_half_horizon": max(pol) <= horizon / 2,
            "cycles_s": cyc,
        }
        # Alternative: the policy's own jointly denoised video as the forecast (one call per cycle).
        joint = []
        t_start = time.perf_counter()
        n_joint = max(1, cycles // 2)
        for i in range(n_joint):
            frame = moving_scene_frame(0.3 * i, self.cfg.height, self.cfg.width)
            t0 = time.perf_counter()
            rt.policy(frame, settings, return_video=True)
            joint.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_start
        self.res["loop_joint_forecast"] = {
            "cycles": n_joint,
            "chunks_per_s": n_joint / wall,
            "cycle_p50_s": pct(joint, 50),
            "cycle_max_s": max(joint),
            "replans_within_half_horizon": max(joint) <= horizon / 2,
        }

    # -- main -------------------------------------------------------------------------------------

    def _summarise(self, tcfg):
        res = self.res
        calls = res["calls"]
        s_main = self.cfg.steps[0]

        def total(name):
            return (calls.get(name) or {}).get("total_s")

        res["tokens"] = self.tokens
        if self.tokens and res.get("gemm_tflops"):
            fl = transformer_flops(tcfg, self.tokens["text"], self.tokens["gen"])
            rate = res["gemm_tflops"] * 1e12
            res["flops_per_forward_tflop"] = fl["stock_forward"] / 1e12
            res["floor_s"] = fl["stock_forward"] * s_main / rate
            res["floor_text_cached_s"] = (fl["gen_stream"] * s_main + fl["text_stream"]) / rate
            res["flops_split_tflop"] = {k: v / 1e12 for k, v in fl.items()}
        else:
            res["floor_s"] = None
        res["stock_policy_decoded_s"] = total("stock_policy_decoded")
        res["stock_policy_latent_s"] = total("stock_policy_latent")
        res["stock_fd_s"] = total("stock_fd")
        res["ours_policy_s"] = total("ours_policy")
        res["ours_policy_video_s"] = total("ours_policy_video")
        res["ours_fd_s"] = total("ours_fd")
        for s in self.cfg.steps[1:]:
            res[f"stock_policy_latent_{s}_s"] = total(f"stock_policy_latent_{s}")
            res[f"stock_fd_{s}_s"] = total(f"stock_fd_{s}")
            res[f"ours_policy_{s}_s"] = total(f"ours_policy_{s}")
            res[f"ours_fd_{s}_s"] = total(f"ours_fd_{s}")
        res["action_rel_error"] = (calls.get("ours_policy") or {}).get("action_rel_error")
        for s in self.cfg.steps[1:]:
            res[f"action_rel_error_{s}"] = (calls.get(f"ours_policy_{s}") or {}).get("action_rel_error")
        res["ours_exact_policy_s"] = total("ours_exact_policy")
        res["ours_exact_action_rel_error"] = (calls.get("ours_exact_policy") or {}).get("action_rel_error")
        res["ours_fp8_policy_s"] = total("ours_fp8_policy")
        res["ours_autotune_policy_s"] = total("ours_autotune_policy")
        res["ours_autotune_action_rel_error"] = (calls.get("ours_autotune_policy") or {}).get("action_rel_error")
        res["ours_fp8_action_rel_error"] = (calls.get("ours_fp8_policy") or {}).get("action_rel_error")
        a, b = res.get("stock_policy_decoded_s"), res.get("stock_policy_latent_s")
        sd, sl = (
            self._stock_outputs_get("stock_policy_decoded_actions"),
            self._stock_outputs_get("stock_policy_latent_actions"),
        )
        if sd is not None and sl is not None:
            res["stock_decoded_vs_latent_action_rel_error"] = rel_l2(sd, sl)

        def ratio(x, y):
            return x / y if x and y else None

        res["speedup_policy_vs_stock_latent"] = ratio(b, res["ours_policy_s"])
        res["speedup_policy_vs_stock_decoded"] = ratio(a, res["ours_policy_s"])
        res["speedup_policy_video_vs_stock_decoded"] = ratio(a, res["ours_policy_video_s"])
        res["speedup_fd_vs_stock"] = ratio(res["stock_fd_s"], res["ours_fd_s"])
        for s in self.cfg.steps[1:]:
            res[f"speedup_policy_{s}_vs_stock_latent"] = ratio(
                res[f"stock_policy_latent_{s}_s"], res[f"ours_policy_{s}_s"]
            )
            res[f"speedup_fd_{s}_vs_stock"] = ratio(res[f"stock_fd_{s}_s"], res[f"ours_fd_{s}_s"])
        res["ours_over_floor"] = ratio(res["ours_policy_s"], res.get("floor_s"))
        if not self.cfg.device.startswith("cuda"):  # the bars are for Nano-size weights on one GPU
            res["bars"] = {}
            res["bars_note"] = "the pass/fail bars are GPU bars (Nano size on one H100/H200): not evaluated on CPU"
            return
        ok = {}
        if res["ours_policy_s"] is not None:
            ok["policy_30_le_1_25_s"] = res["ours_policy_s"] <= BARS["policy_30_s_max"]
        if res["speedup_policy_vs_stock_latent"] is not None:
            ok["policy_speedup_ge_2_2"] = (
                res["speedup_policy_vs_stock_latent"] >= BARS["policy_speedup_vs_stock_latent_min"]
            )
        if res["action_rel_error"] is not None:
            ok["action_rel_error_le_2e_2"] = res["action_rel_error"] <= BARS["action_rel_error_max"]
        if res["speedup_fd_vs_stock"] is not None:
            ok["fd_speedup_ge_2"] = res["speedup_fd_vs_stock"] >= BARS["fd_speedup_vs_stock_min"]
        res["bars"] = ok
