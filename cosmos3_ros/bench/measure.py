# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Measurement helpers of the benchmark: timers, error metrics, FLOP counts, GEMM and layer micro-benchmarks."""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class VaeTimer:
    """Times ``vae.encode`` / ``vae.decode`` (device-synchronised) by wrapping them on the instance."""

    def __init__(self, vae, sync: Callable[[], None]):
        self.vae = vae
        self.sync = sync
        self.encode_s = 0.0
        self.decode_s = 0.0

    def reset(self):
        self.encode_s = self.decode_s = 0.0

    def __enter__(self):
        orig_encode, orig_decode = self.vae.encode, self.vae.decode

        def encode(*a, **k):
            self.sync()
            t0 = time.perf_counter()
            out = orig_encode(*a, **k)
            self.sync()
            self.encode_s += time.perf_counter() - t0
            return out

        def decode(*a, **k):
            self.sync()
            t0 = time.perf_counter()
            out = orig_decode(*a, **k)
            self.sync()
            self.decode_s += time.perf_counter() - t0
            return out

        self.vae.encode, self.vae.decode = encode, decode
        return self

    def __exit__(self, *exc):
        del self.vae.encode
        del self.vae.decode


def run_header(device: str, command: str, size: str, dtype: str, repeats: int) -> dict[str, Any]:
    """What every benchmark result starts with: the machine, the date, the command, the library versions."""
    import datetime
    import platform
    import sys

    import diffusers
    import torch

    from cosmos3_ros import __version__

    cuda = device.startswith("cuda")
    gpu = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    return {
        "device": f"{gpu} ({device})",
        "gpu": gpu,
        "date": datetime.date.today().isoformat(),
        "command": command,
        "argv": list(sys.argv),
        "size": size,
        "dtype": dtype,
        "repeats": repeats,
        "versions": {
            "cosmos3_ros": __version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
        },
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return slug(m.group(1)) if m else slug(name)[:24]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else float(np.linalg.norm(a - b))


def frame_deviation(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean/max absolute uint8 difference and PSNR between two frame stacks."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float(np.mean(d.astype(np.float64) ** 2))
    return {
        "mean_abs": float(d.mean()),
        "max_abs": int(d.max()),
        "psnr_db": float("inf") if mse == 0 else float(10 * math.log10(255.0**2 / mse)),
    }


def transformer_flops(cfg, und_len: int, gen_len: int) -> dict[str, float]:
    """Matmul FLOPs of one forward: stock (text + generation tokens) and the split by stream."""
    hid = int(cfg.hidden_size)
    nh, nkv, hd = int(cfg.num_attention_heads), int(cfg.num_key_value_heads), int(cfg.head_dim)
    inter = int(cfg.intermediate_size)
    layers = int(cfg.num_hidden_layers)
    lin_tok = 2 * hid * (nh * hd + 2 * nkv * hd) + 2 * nh * hd * hid + 2 * 3 * hid * inter
    und_attn = 4 * nh * hd * und_len * und_len / 2  # causal
    gen_attn = 4 * nh * hd * gen_len * (und_len + gen_len)
    text = layers * (lin_tok * und_len + und_attn)
    gen = layers * (lin_tok * gen_len + gen_attn)
    return {"stock_forward": text + gen, "text_stream": text, "gen_stream": gen}


def median_ms(fn, iters: int, sync) -> float:
    import torch

    if torch.cuda.is_available() and sync is not None:
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_gemm(device: str, dtype: str) -> dict[str, Any]:
    """Dense GEMM rate on random data (8192^3 on CUDA, 512^3 on CPU)."""
    import torch

    cuda = device.startswith("cuda")
    n = 8192 if cuda else 512
    tdt = getattr(torch, dtype)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=tdt, generator=g)
    b = torch.randn(n, n, device=device, dtype=tdt, generator=g)
    for _ in range(3):
        a @ b
    ms = median_ms(lambda: a @ b, 20 if cuda else 5, cuda)
    return {"gemm_n": n, "gemm_dtype": dtype, "gemm_ms": ms, "gemm_tflops": 2 * n**3 / (ms * 1e-3) / 1e12}


def microbench(cfg, und_len: int, gen_len: int, device: str) -> dict[str, Any]:
    """GEMMs at the generation stream's shapes, attention kernels, FP8 GEMM rate (CUDA only)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from cosmos3_ros.model.kernels import attend, fp8_linear, quantize_fp8

    out: dict[str, Any] = {}
    hid, inter = int(cfg.hidden_size), int(cfg.intermediate_size)
    nh, nkv, hd = int(cfg.num_attention_heads), int(cfg.num_key_value_heads), int(cfg.head_dim)
    layers = int(cfg.num_hidden_layers)
    dt = torch.bfloat16
    x = torch.randn(gen_len, hid, device=device, dtype=dt)
    xi = torch.randn(gen_len, inter, device=device, dtype=dt)
    shapes = {
        "qkv": (x, (nh + 2 * nkv) * hd, hid),
        "o": (x, hid, hid),
        "gate_up": (x, 2 * inter, hid),
        "down": (xi, hid, inter),
    }
    layer_ms = 0.0
    layer_fp8_ms = 0.0
    flops = 0.0
    gemms = {}
    for name, (inp, n_out, k) in shapes.items():
        w = torch.randn(n_out, k, device=device, dtype=dt) * k**-0.5
        ms = median_ms(lambda inp=inp, w=w: F.linear(inp, w), 30, True)
        f = 2 * gen_len * n_out * k
        entry = {"shape": [gen_len, k, n_out], "ms": ms, "tflops": f / (ms * 1e-3) / 1e12}
        try:
            w8 = quantize_fp8(w)
            ms8 = median_ms(lambda inp=inp, w8=w8: fp8_linear(inp, w8[0], w8[1], dt), 30, True)
            entry["fp8_ms_with_quant"] = ms8
            layer_fp8_ms += ms8
        except Exception as exc:
            entry["fp8_error"] = f"{type(exc).__name__}: {exc}"
        gemms[name] = entry
        layer_ms += ms
        flops += f
    out["gen_gemms"] = gemms
    out["gen_gemm_ms_per_layer"] = layer_ms
    out["gen_gemm_s_per_step"] = layer_ms * layers / 1e3
    out["gen_gemm_tflops"] = flops / (layer_ms * 1e-3) / 1e12
    out["gen_gemm_fp8_s_per_step"] = layer_fp8_ms * layers / 1e3 if layer_fp8_ms else None
    q = torch.randn(gen_len, nh, hd, device=device, dtype=dt)
    k = torch.randn(und_len + gen_len, nkv, hd, device=device, dtype=dt)
    v = torch.randn(und_len + gen_len, nkv, hd, device=device, dtype=dt)
    attn = {}
    ref = attend(q, k, v, "sdpa").float()
    for backend in ("sdpa", "flash", "cudnn", "efficient"):
        try:
            o = attend(q, k, v, backend)
            err = float((o.float() - ref).norm() / ref.norm())
            ms = median_ms(lambda backend=backend: attend(q, k, v, backend), 30, True)
            attn[backend] = {"ms": ms, "s_per_step": ms * layers / 1e3, "rel_err_vs_sdpa": err}
        except Exception as exc:
            attn[backend] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    out["attention"] = attn
    try:
        n = 8192
        a = torch.randn(n, n, device=device, dtype=dt)
        w8 = quantize_fp8(torch.randn(n, n, device=device, dtype=dt))
        a8 = a.to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        ms = median_ms(lambda: torch._scaled_mm(a8, w8[0].t(), scale_a=one, scale_b=one, out_dtype=dt), 20, True)
        out["fp8_gemm_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12
    except Exception as exc:
        out["fp8_gemm_error"] = f"{type(exc).__name__}: {exc}"
    return out


def host_profile(fn, top: int = 30) -> list[str]:
    """cProfile of one call: the functions with the most cumulative host time (where the host waits, too)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return [line.rstrip() for line in buf.getvalue().splitlines() if line.strip()][-top - 1 :]


def replay_ms(ff) -> dict[str, float]:
    """GPU time of one captured step (the transformer alone), per layout."""
    out = {}
    for i, plan in enumerate(ff.plans()):
        if plan.graph is not None:
            name = "policy" if plan.action_noisy else ("forward_dynamics" if plan.has_action else f"layout{i}")
            out[name] = median_ms(plan.graph.graph.replay, 10, True)
    return out


def vae_decode_micro(vae, latent_shape: tuple[int, ...], device: str) -> dict[str, Any]:
    """Wan VAE decode time: default, cuDNN autotuning, channels-last weights and input (restored after)."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(latent_shape, device=device, dtype=vae.dtype, generator=g)
    out: dict[str, Any] = {"latent_shape": list(latent_shape)}
    old = torch.backends.cudnn.benchmark

    def psnr(a, b):
        mse = float(((a.float() - b.float()) / 2).pow(2).mean())
        return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)

    saved = [(p, p.data) for p in vae.parameters()]
    try:
        with torch.inference_mode():
            for p, data in saved:  # the runtime may have made the decoder channels-last already
                p.data = data.contiguous()
            torch.backends.cudnn.benchmark = False
            ref = vae.decode(z).sample
            out["default_ms"] = median_ms(lambda: vae.decode(z), 3, True)
            torch.backends.cudnn.benchmark = True
            got = vae.decode(z).sample
            out["cudnn_benchmark_ms"] = median_ms(lambda: vae.decode(z), 3, True)
            out["cudnn_benchmark_psnr_db"] = psnr(got, ref)
            for p, data in saved:
                if data.dim() == 5:
                    p.data = data.contiguous(memory_format=torch.channels_last_3d)
                elif data.dim() == 4:
                    p.data = data.contiguous(memory_format=torch.channels_last)
            zc = z.contiguous(memory_format=torch.channels_last_3d)
            got = vae.decode(zc).sample
            out["channels_last_ms"] = median_ms(lambda: vae.decode(zc), 3, True)
            out["channels_last_psnr_db"] = psnr(got, ref)
    finally:
        for p, data in saved:
            p.data = data
        torch.backends.cudnn.benchmark = old
    return out
