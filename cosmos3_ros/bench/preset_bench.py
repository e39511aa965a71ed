# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros bench --preset droid,bridge``: stock against ours at the settings robots use, in one process.

One set of random-weight components serves every runtime: the stock code path (``fast=False``: diffusers' own
loop, with the preset's contract where it has one: a state row, the action width, NVIDIA's caption and frame),
ours (the fast path), ours with the guidance interval, ours with FP8, batched calls, and a control loop of policy
plus forward-dynamics forecast at the preset's own settings. The quality study (:mod:`cosmos3_ros.bench.quality`)
and the FP8 layer sweep (:mod:`cosmos3_ros.bench.fp8_sweep`) run first, while a float32 copy of the weights exists.
Each stage is isolated: a failure is recorded under ``errors`` and the run goes on.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.bench.measure import frame_deviation, measure_gemm, rel_l2, run_header
from cosmos3_ros.bench.preset_stages import wants
from cosmos3_ros.bench.presets import Preset, load_preset

log = logging.getLogger(__name__)

VARIANTS = ("stock", "ours", "interval", "fp8", "batch", "loop", "quality", "fp8_sweep")

#: Keys every preset results JSON carries (the CI smoke test checks them).
PRESET_KEYS = (
    "preset",
    "device",
    "stock_policy_latent_s",
    "ours_policy_s",
    "action_rel_error",
    "ours_fp8_policy_s",
    "fp8_action_rel_error",
    "bf16_vs_fp32_rel_error",
    "preprocess_s",
    "loop_cycle_p95_s",
)


@dataclass
class PresetBenchConfig:
    """What to measure."""

    device: str = "cuda"
    size: str = "nano"
    dtype: str = "bfloat16"
    presets: tuple[str, ...] = ("droid",)
    repeats: int = 3
    loop_cycles: int = 10
    samples: int = 8
    batch_sizes: tuple[int, ...] = (2, 4)
    variants: tuple[str, ...] = VARIANTS
    fp8_keep: str | None = None
    sweep_band: int = 3
    sweep_target: float = 2.0
    exact_fp32: bool = False
    small: bool = False
    command: str = ""
    out_dir: str = "bench/results"
    tag: str = ""
    extra: dict = field(default_factory=dict)


def _median(xs):
    return statistics.median(xs) if xs else None


class PresetBench:
    """One run over the configured presets; :meth:`run` returns ``{preset: results}``."""

    def __init__(self, cfg: PresetBenchConfig):
        self.cfg = cfg
        self.common: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.sweep: dict[str, Any] | None = None
        #: Called with each preset's results as soon as they are complete.
        self.on_preset = None
        #: Called with the FP8 sweep's results once it has run.
        self.on_sweep = None

    # -- helpers ---------------------------------------------------------------------------------

    def _sync(self):
        import torch

        if self.cfg.device.startswith("cuda"):
            torch.cuda.synchronize()

    def guard(self, name: str, fn, errors: dict | None = None):
        import torch

        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:
            log.error("bench stage %s failed: %s: %s", name, type(exc).__name__, exc)
            (self.errors if errors is None else errors)[name] = (
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
            )
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            return None
        finally:
            log.info("bench: %s done in %.1f s", name, time.perf_counter() - t0)

    def timed(self, fn, repeats: int) -> tuple[dict[str, Any], Any]:
        """``repeats`` device-synchronised calls: totals, the runtime's phase timings (medians), the last result."""
        totals, phases, result = [], {}, None
        for _ in range(repeats):
            self._sync()
            t0 = time.perf_counter()
            result = fn()
            self._sync()
            totals.append(time.perf_counter() - t0)
            timing = getattr(result, "timing", None)
            for k, v in (timing.to_dict() if timing is not None else {}).items():
                phases.setdefault(k, []).append(v)
        rec = {"total_s": _median(totals), "total_min_s": min(totals), "totals_s": totals}
        rec["runtime_timing"] = {k: _median(v) for k, v in phases.items()}
        return rec, result

    def _runtime(self, components, **options):
        from cosmos3_ros.bench.nano import make_pipeline
        from cosmos3_ros.model.pipeline import Cosmos3ActionPipeline
        from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

        pipe = make_pipeline(components, cls=Cosmos3ActionPipeline)
        return Cosmos3PolicyRuntime.from_pipeline(pipe, model_name=f"random-{self.cfg.size}", **options)

    def _free(self):
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- main -------------------------------------------------------------------------------------

    def run(self) -> dict[str, dict[str, Any]]:
        import torch

        from cosmos3_ros.bench.nano import build_random_components, parameter_count

        c = self.cfg
        cuda = c.device.startswith("cuda")
        self.common = run_header(c.device, c.command, c.size, c.dtype, c.repeats)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
            self.common.update(self.guard("gemm", lambda: measure_gemm(c.device, c.dtype)) or {})
        presets = [load_preset(n, small=c.small) for n in c.presets]
        t0 = time.perf_counter()
        comps = build_random_components(c.size, device=c.device, dtype=c.dtype, seed=0)
        self._sync()
        self.common["build_s"] = time.perf_counter() - t0
        self.common["transformer_params"] = parameter_count(comps["transformer"])
        stock = self._runtime(comps, fast=False)
        refs: dict[str, dict[str, list]] = {p.name: {} for p in presets}
        names = {x.split("@")[0] for x in c.variants}
        want_quality = "quality" in names
        want_sweep = "fp8_sweep" in names
        if want_quality or want_sweep:
            self.guard("float32_references", lambda: self._float32_stage(comps, stock, presets, refs))
            self._free()
        if want_quality:
            for p in (q for q in presets if self._floor_at(q)):
                refs[p.name]["stock_bf16"] = self.guard(
                    f"{p.name}_stock_bf16_samples", lambda p=p: self._samples(stock, p)
                )
        if want_sweep and self.sweep is not None and "inputs" in self.sweep:
            from cosmos3_ros.bench.fp8_sweep import run_sweep

            inputs, ref_out = self.sweep.pop("inputs"), self.sweep.pop("refs")
            result = self.guard(
                "fp8_sweep",
                lambda: run_sweep(comps["transformer"], inputs, ref_out, band=c.sweep_band, target=c.sweep_target),
            )
            self.sweep.update(result or {})
            self._free()
            if self.on_sweep is not None and self.sweep.get("groups"):
                self.on_sweep(self.sweep)
        keep = c.fp8_keep
        if keep == "auto":
            keep = (self.sweep or {}).get("keep")
        ours = self._runtime(comps)
        fp8 = None
        if "fp8" in names:
            fp8 = self.guard("fp8_runtime", lambda: self._runtime(comps, fp8=True, fp8_keep=keep))
        results = {}
        from cosmos3_ros.bench.preset_stages import run_preset

        for p in presets:
            res = dict(self.common, preset=p.name, preset_file=p.path, errors={}, calls={})
            res["settings"] = p.settings.to_dict()
            res["frame"] = [p.height, p.width]
            res["fp8_keep"] = None if fp8 is None else fp8.fast_options.fp8_keep
            res["fp8_sweep"] = self.sweep
            run_preset(self, res, p, stock, ours, fp8, refs.get(p.name, {}))
            res["errors"].update({k: v for k, v in self.errors.items() if k not in res["errors"]})
            results[p.name] = res
            if self.on_preset is not None:  # written as soon as measured: a run cut short keeps its presets
                self.on_preset(res)
        return results

    def _floor_at(self, preset: Preset) -> bool:
        """The quality study measures the bf16 noise floor (stock bf16 against stock float32) where stock runs."""
        v = self.cfg.variants
        return wants(v, "quality", preset.name) and wants(v, "stock", preset.name)

    def _samples(self, rt, preset: Preset) -> list[np.ndarray]:
        from cosmos3_ros.bench.quality import sample_actions

        return sample_actions(rt, preset, self.cfg.samples)

    def _float32_stage(self, comps, stock, presets, refs) -> None:
        """The float32 references (TF32 matmuls on a GPU unless exact_fp32) and the sweep's inputs, then free."""
        import torch

        from cosmos3_ros.bench.quality import float32_components, tf32, tf32_forward_check

        c = self.cfg
        comps32 = float32_components(comps)
        stock32 = self._runtime(comps32, fast=False)
        self.common["fp32_reference"] = "float32" if c.exact_fp32 or not torch.cuda.is_available() else "tf32"
        use_tf32 = self.common["fp32_reference"] == "tf32"
        if any(x.split("@")[0] == "quality" for x in c.variants):
            for p in (q for q in presets if self._floor_at(q)):
                with tf32(use_tf32):
                    refs[p.name]["stock_fp32"] = self.guard(
                        f"{p.name}_stock_fp32_samples", lambda p=p: self._samples(stock32, p)
                    )
        if any(x.split("@")[0] == "fp8_sweep" for x in c.variants):
            from cosmos3_ros.bench.fp8_sweep import capture_inputs, reference_outputs

            p = next((q for q in presets if q.name == "droid"), presets[0])
            frame, settings, state = p.sample(0)
            steps = tuple(range(0, settings.num_steps, max(1, settings.num_steps // 2)))[:2]
            inputs = capture_inputs(stock, frame, settings, state, steps)
            with tf32(use_tf32):
                ref_out = reference_outputs(comps32["transformer"], inputs)
            self.sweep = {"preset": p.name, "steps": list(steps), "inputs": inputs, "refs": ref_out}
            if use_tf32:
                from cosmos3_ros.bench.fp8_sweep import _as

                tr32 = comps32["transformer"]

                def forward():
                    with torch.inference_mode():
                        return tr32(**_as(inputs[0], torch.float32))

                self.common["tf32_vs_fp32_forward"] = self.guard("tf32_check", lambda: tf32_forward_check(forward))


def summarise_errors(res: dict[str, Any], name: str, a: np.ndarray | None, b: np.ndarray | None) -> None:
    """``res[name]`` = rel. L2 of ``a`` against ``b`` when both exist."""
    if a is not None and b is not None:
        res[name] = rel_l2(a, b)


def frames_vs(a, b) -> dict[str, float] | None:
    """PSNR and differences of two frame stacks of one shape, else None."""
    if a is None or b is None or a.shape != b.shape:
        return None
    return frame_deviation(a, b)
