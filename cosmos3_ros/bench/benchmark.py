# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Stock Cosmos 3 versus our runtime, on random weights, in one process: the logic of ``cosmos3-ros bench``.

Everything runs on one set of components (transformer, VAE, tokenizer, scheduler) shared by a
stock ``Cosmos3OmniPipeline`` (called as its docs call it) and by our runtime, with the same
frame, settings and seed. Each measured variant is isolated: a failure is recorded under
``errors`` and the benchmark goes on. See ``bench/README.md`` for the numbers' meaning.
"""

from __future__ import annotations

import gc
import itertools
import logging
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

from cosmos3_ros.bench.measure import (
    VaeTimer,
    frame_deviation,
    host_profile,
    measure_gemm,
    microbench,
    rel_l2,
    replay_ms,
    run_header,
    transformer_flops,
    vae_decode_micro,
)
from cosmos3_ros.bench.results import write_results
from cosmos3_ros.core.settings import PolicySettings

__all__ = ["REQUIRED_KEYS", "Bench", "BenchConfig", "frame_deviation", "rel_l2", "transformer_flops", "write_results"]

log = logging.getLogger(__name__)

#: Keys every results JSON carries (the CI smoke test checks them).
from cosmos3_ros.bench.bench_summary import LoopAndSummary  # noqa: E402

REQUIRED_KEYS = (
    "device",
    "stock_policy_decoded_s",
    "stock_policy_latent_s",
    "ours_policy_s",
    "stock_fd_s",
    "ours_fd_s",
    "floor_s",
    "action_rel_error",
)


@dataclass
class BenchConfig:
    """What to measure."""

    device: str = "cuda"
    size: str = "nano"
    dtype: str = "bfloat16"
    height: int = 480
    width: int = 640
    steps: tuple[int, ...] = (30, 10)
    repeats: int = 3
    loop_cycles: int = 20
    #: The sampling settings (the schema's sampling scope); ``num_steps`` is replaced by each of ``steps``.
    settings: PolicySettings = field(
        default_factory=lambda: PolicySettings(prompt="Pick up the red block and place it in the bowl.")
    )
    variants: tuple[str, ...] = ("stock", "ours", "exact", "fp8", "loop", "micro")
    command: str = ""
    out_dir: str = "bench/results"
    tag: str = ""


@dataclass
class CallRecord:
    """Timings of repeated calls of one variant."""

    totals: list[float] = field(default_factory=list)
    step_medians: list[float] = field(default_factory=list)
    encode: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    peak_gib: list[float] = field(default_factory=list)
    extra_gib: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def med(xs):
            return statistics.median(xs) if xs else None

        return {
            "total_s": med(self.totals),
            "total_min_s": min(self.totals) if self.totals else None,
            "totals_s": self.totals,
            "step_median_s": med(self.step_medians),
            "vae_encode_s": med(self.encode),
            "vae_decode_s": med(self.decode),
            "peak_mem_gib": max(self.peak_gib) if self.peak_gib else None,
            "peak_extra_gib": max(self.extra_gib) if self.extra_gib else None,
        }


class Bench(LoopAndSummary):
    """One benchmark run; :meth:`run` returns the results dict."""

    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self.res: dict[str, Any] = {"errors": {}, "calls": {}}
        self.tokens: dict[str, int] = {}
        self._latent_shape: tuple[int, ...] | None = None

    # -- helpers ---------------------------------------------------------------------------------

    def _sync(self):
        import torch

        if self.cfg.device.startswith("cuda"):
            torch.cuda.synchronize()

    def _mem(self) -> tuple[float, float]:
        import torch

        if not self.cfg.device.startswith("cuda"):
            return 0.0, 0.0
        return torch.cuda.memory_allocated() / 2**30, torch.cuda.max_memory_allocated() / 2**30

    def _reset_peak(self):
        import torch

        if self.cfg.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

    def _guard(self, name: str, fn: Callable[[], Any]) -> Any:
        import torch

        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:
            log.error("bench variant %s failed: %s: %s", name, type(exc).__name__, exc)
            self.res["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            return None
        finally:
            log.info("bench: %s done in %.1f s", name, time.perf_counter() - t0)

    def _settings(self, steps: int) -> PolicySettings:
        return self.cfg.settings.replace(num_steps=steps)

    # -- stock ------------------------------------------------------------------------------------

    def _stock_call(self, pipe, frame, steps: int, mode: str, output_type: str, actions=None, step_timing=False):
        """The stock pipeline as its documentation calls it for an action mode."""
        import torch
        from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

        c = self.cfg.settings
        cond = CosmosActionCondition(
            mode=mode,
            chunk_size=c.action_chunk_size,
            domain_name=c.domain_name,
            resolution_tier=c.image_size,
            image=PILImage.fromarray(frame),  # as the docs pass it (a uint8 numpy frame is left unscaled)
            raw_actions=None if actions is None else torch.from_numpy(np.asarray(actions, dtype=np.float32)),
            view_point=c.view_point,
        )
        step_ends: list[float] = []

        def on_step(p, i, t, kw):
            self._sync()
            step_ends.append(time.perf_counter())
            return {}

        generator = torch.Generator(device="cpu").manual_seed(c.seed)
        self._sync()
        t0 = time.perf_counter()
        out = pipe(
            prompt=c.prompt,
            action=cond,
            num_inference_steps=steps,
            guidance_scale=c.guidance,
            fps=c.fps,
            use_system_prompt=c.use_system_prompt,
            negative_prompt=c.negative_prompt or None,
            generator=generator,
            output_type=output_type,
            callback_on_step_end=on_step if step_timing else None,
        )
        self._sync()
        total = time.perf_counter() - t0
        steps_s = [b - a for a, b in itertools.pairwise(step_ends)]
        return out, total, steps_s

    def run_stock(self, components, frame):
        from cosmos3_ros.bench.nano import make_pipeline

        pipe = make_pipeline(components)
        vt = VaeTimer(components["vae"], self._sync)
        self._stock_outputs: dict[str, Any] = {}
        hook = components["transformer"].register_forward_pre_hook(self._token_hook, with_kwargs=True)
        try:
            t0 = time.perf_counter()
            self._stock_call(pipe, frame, 2, "policy", "latent")
            self.res["stock_warmup_s"] = time.perf_counter() - t0
        finally:
            hook.remove()
        s_main = self.cfg.steps[0]
        plan = [("stock_policy_decoded", "policy", "np", s_main), ("stock_policy_latent", "policy", "latent", s_main)]
        plan += [(f"stock_policy_latent_{s}", "policy", "latent", s) for s in self.cfg.steps[1:]]
        plan += [("stock_fd", "forward_dynamics", "np", s_main)]
        plan += [(f"stock_fd_{s}", "forward_dynamics", "np", s) for s in self.cfg.steps[1:]]
        with vt:
            for name, mode, otype, steps in plan:

                def one(name=name, mode=mode, otype=otype, steps=steps):
                    rec = CallRecord()
                    actions = self._fd_actions() if mode == "forward_dynamics" else None
                    for _ in range(self.cfg.repeats):
                        vt.reset()
                        before, _ = self._mem()
                        self._reset_peak()
                        out, total, _ = self._stock_call(pipe, frame, steps, mode, otype, actions)
                        _, peak = self._mem()
                        rec.totals.append(total)
                        rec.encode.append(vt.encode_s)
                        rec.decode.append(vt.decode_s)
                        rec.peak_gib.append(peak)
                        rec.extra_gib.append(peak - before)
                    # One more call with a device sync per step, for the per-step median only.
                    _, total, steps_s = self._stock_call(pipe, frame, steps, mode, otype, actions, step_timing=True)
                    rec.step_medians.append(statistics.median(steps_s) if steps_s else total / steps)
                    if out.action:
                        self._stock_outputs[name + "_actions"] = out.action[0].float().numpy()
                    if otype == "np":
                        v = np.asarray(out.video, dtype=np.float32)
                        self._stock_outputs[name + "_frames"] = (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
                    self.res["calls"][name] = dict(rec.summary(), steps=steps, mode=mode, output_type=otype)

                self._guard(name, one)
        gc.collect()

    def _fd_actions(self) -> np.ndarray:
        """Actions for forward_dynamics: the stock policy chunk when there is one, else a fixed ramp."""
        got = getattr(self, "_stock_outputs", {}).get("stock_policy_latent_actions")
        if got is not None:
            return got
        s = self.cfg.settings
        w = s.action_width
        return np.linspace(-0.5, 0.5, s.action_chunk_size * w, dtype=np.float32).reshape(s.action_chunk_size, w)

    def _token_hook(self, module, args, kwargs):
        self._latent_shape = tuple(kwargs["vision_tokens"][0].shape)
        und = int(kwargs["und_len"])
        seq = int(kwargs["sequence_length"])
        self.tokens = {"text": und, "gen": seq - und, "total": seq}

    # -- ours -------------------------------------------------------------------------------------

    def _ours_runtime(self, components, **options):
        from cosmos3_ros.bench.nano import make_pipeline
        from cosmos3_ros.model.pipeline import Cosmos3ActionPipeline
        from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

        pipe = make_pipeline(components, cls=Cosmos3ActionPipeline)
        return Cosmos3PolicyRuntime.from_pipeline(pipe, model_name=f"random-{self.cfg.size}", **options)

    def _ours_calls(self, rt, frame, prefix: str, plan, vt: VaeTimer):
        for name, kind, steps in plan:
            full = f"{prefix}_{name}"

            def one(full=full, kind=kind, steps=steps):
                rec = CallRecord()
                settings = self._settings(steps)

                def call():
                    if kind == "policy":
                        return rt.policy(frame, settings)
                    if kind == "policy_video":
                        return rt.policy(frame, settings, return_video=True)
                    return rt.forward_dynamics(frame, self._fd_actions(), settings)

                result = None
                rt.pipe.step_timing = False
                for _ in range(self.cfg.repeats):
                    vt.reset()
                    before, _ = self._mem()
                    self._reset_peak()
                    self._sync()
                    t0 = time.perf_counter()
                    result = call()
                    self._sync()
                    total = time.perf_counter() - t0
                    _, peak = self._mem()
                    rec.totals.append(total)
                    rec.encode.append(vt.encode_s)
                    rec.decode.append(vt.decode_s)
                    rec.peak_gib.append(peak)
                    rec.extra_gib.append(peak - before)
                timing = result.timing.to_dict()
                # One more call with a device sync per step, for the per-step median only.
                rt.pipe.step_timing = True
                try:
                    call()
                finally:
                    rt.pipe.step_timing = False
                st = rt.pipe.last_step_times()
                rec.step_medians.append(statistics.median(st) if st else rec.totals[-1] / steps)
                summary = dict(rec.summary(), steps=steps, mode=kind)
                summary["runtime_timing"] = timing
                self.res["calls"][full] = summary
                return result

            result = self._guard(full, one)
            if result is None:
                continue
            stock = getattr(self, "_stock_outputs", {})
            if kind == "policy":
                ref_name = "stock_policy_latent" if steps == self.cfg.steps[0] else f"stock_policy_latent_{steps}"
                ref = stock.get(ref_name + "_actions")
                if ref is not None:
                    self.res["calls"][full]["action_rel_error"] = rel_l2(result.actions, ref)
            elif kind == "policy_video":
                ref = stock.get("stock_policy_decoded_frames")
                if ref is not None and ref.shape == result.video.shape:
                    self.res["calls"][full]["frames_vs_stock"] = frame_deviation(result.video, ref)
            else:
                ref_name = "stock_fd" if steps == self.cfg.steps[0] else f"stock_fd_{steps}"
                ref = stock.get(ref_name + "_frames")
                if ref is not None and ref.shape == result.frames.shape:
                    self.res["calls"][full]["frames_vs_stock"] = frame_deviation(result.frames, ref)

    def run_ours(self, components, frame, prefix: str = "ours", plan=None, **options):
        rt = self._ours_runtime(components, **options)
        self.res[f"{prefix}_options"] = rt.fast_options.to_dict()
        vt = VaeTimer(components["vae"], self._sync)
        s_main = self.cfg.steps[0]
        with vt:
            cold = self._guard(
                f"{prefix}_warmup", lambda: rt.warmup(self._settings(s_main), image_shape=frame.shape[:2])
            )
            self.res[f"{prefix}_cold_start_s"] = cold
            # The first call after warm-up: must not be a cold start.
            first = self._guard(
                f"{prefix}_first_call", lambda: self._timed(lambda: rt.policy(frame, self._settings(s_main)))
            )
            self.res[f"{prefix}_first_call_after_warmup_s"] = first
            if plan is None:
                plan = [("policy", "policy", s_main)]
                if prefix == "ours":
                    plan += [(f"policy_{s}", "policy", s) for s in self.cfg.steps[1:]]
                    plan += [("policy_video", "policy_video", s_main), ("fd", "fd", s_main)]
                    plan += [(f"fd_{s}", "fd", s) for s in self.cfg.steps[1:]]
            self._ours_calls(rt, frame, prefix, plan, vt)
        if prefix == "ours":
            settings = self._settings(s_main)
            self.res["ours_policy_host_profile"] = self._guard(
                "ours_profile", lambda: host_profile(lambda: rt.policy(frame, settings))
            )
        ff = rt.pipe.fast_forward
        if ff is not None and self.cfg.device.startswith("cuda"):
            self.res[f"{prefix}_graph_replay_ms"] = self._guard(f"{prefix}_replay", lambda: replay_ms(ff))
        if ff is not None:
            self.res[f"{prefix}_fast_stats"] = dict(
                ff.stats, last_fallback=ff.last_fallback, errors=ff.errors, options_now=ff.opt.to_dict()
            )
        return rt

    def _timed(self, fn) -> float:
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        return time.perf_counter() - t0

    def run(self) -> dict[str, Any]:
        import torch

        from cosmos3_ros.bench.nano import build_random_components, parameter_count
        from cosmos3_ros.core.synthetic import moving_scene_frame

        c = self.cfg
        cuda = c.device.startswith("cuda")
        res = self.res
        res.update(run_header(c.device, c.command, c.size, c.dtype, c.repeats))
        res.update(frame=[c.height, c.width], settings={**c.settings.to_dict(), "steps": list(c.steps)})
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
        res.update(self._guard("gemm", lambda: measure_gemm(c.device, c.dtype)) or {})
        t0 = time.perf_counter()
        components = build_random_components(c.size, device=c.device, dtype=c.dtype, seed=c.settings.seed)
        self._sync()
        res["build_s"] = time.perf_counter() - t0
        res["transformer_params"] = parameter_count(components["transformer"])
        res["vae_params"] = parameter_count(components["vae"])
        res["weights_gib"] = self._mem()[0]
        tcfg = components["transformer"].config
        frame = moving_scene_frame(0.0, c.height, c.width)
        if "stock" in c.variants:
            self.run_stock(components, frame)
            self._checkpoint(tcfg)
        rt = None
        if "ours" in c.variants:
            rt = self._guard("ours", lambda: self.run_ours(components, frame))
            self._checkpoint(tcfg)
        if "exact" in c.variants and cuda:
            self._guard(
                "exact",
                lambda: self.run_ours(
                    components,
                    frame,
                    prefix="ours_exact",
                    compile=False,
                    cuda_graphs=False,
                    fuse=False,
                    attention="stock",
                    vae_autotune=False,
                    sync_free_scheduler=False,
                    vae_channels_last=False,
                ),
            )
            self._checkpoint(tcfg)
        if "fp8" in c.variants and cuda:
            self._guard("fp8", lambda: self.run_ours(components, frame, prefix="ours_fp8", fp8=True))
            self._checkpoint(tcfg)
        if "loop" in c.variants and rt is not None and c.loop_cycles > 0:
            self._guard("loop", lambda: self.run_loop(rt, c.loop_cycles))
            self._checkpoint(tcfg)
        if "micro" in c.variants and cuda and self.tokens:
            res["micro"] = self._guard(
                "micro", lambda: microbench(tcfg, self.tokens["text"], self.tokens["gen"], c.device)
            )
            lat = self._latent_shape
            if lat is not None:
                res["micro_vae_decode"] = self._guard(
                    "micro_vae", lambda: vae_decode_micro(components["vae"], lat, c.device)
                )
            self._checkpoint(tcfg)
        if "autotune" in c.variants and cuda:
            # Exploration: inductor's max-autotune (Triton GEMM templates with fused epilogues vs cuBLAS).
            self._guard(
                "autotune",
                lambda: self.run_ours(
                    components,
                    frame,
                    prefix="ours_autotune",
                    plan=[("policy", "policy", c.steps[0])],
                    compile="max-autotune-no-cudagraphs",
                ),
            )
            self._checkpoint(tcfg)
        if "vae_cl" in c.variants and cuda:
            # The decode with the decoder's default memory format (the runtime's default is channels-last).
            s_main = c.steps[0]
            cl_plan = [("fd", "fd", s_main), ("policy_video", "policy_video", s_main)]
            self._guard(
                "vae_cl",
                lambda: self.run_ours(
                    components, frame, prefix="ours_vae_default", plan=cl_plan, vae_channels_last=False
                ),
            )
        self._summarise(tcfg)
        return res

    def _checkpoint(self, tcfg):
        """Write the results so far (a run cut short still leaves its numbers)."""
        try:
            self._summarise(tcfg)
            write_results(self.res, self.cfg.out_dir, self.cfg.tag)
        except Exception as exc:  # never let reporting kill the measurement
            log.warning("could not write partial results: %s", exc)

    def _stock_outputs_get(self, key):
        return getattr(self, "_stock_outputs", {}).get(key)


# ---------------------------------------------------------------------------------------------
# Output
