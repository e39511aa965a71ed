# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Action quality over many samples: the bf16 noise floor and what our bf16 and FP8 paths add to it.

One metric swings by several times between inputs, so quality is judged over ``n`` samples (each its own frame,
prompt and seed, :meth:`~cosmos3_ros.bench.presets.Preset.sample`) against the floor measured on the same samples:
the stock code path in bf16 against the stock code path in float32 on the same weights (the bf16 weights upcast).
The float32 reference runs its matrix products as TF32 on a GPU (10-bit mantissa, eight times finer than bf16's;
:func:`tf32_forward_check` measures what that changes at the forward level) unless ``exact_fp32``.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from cosmos3_ros.bench.measure import rel_l2


def float32_copy(module):
    """A float32 copy of ``module`` (its parameters and buffers upcast; the bf16 copy is never duplicated)."""
    import torch

    memo = {}
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in memo:
            continue
        data = t.detach().float() if t.is_floating_point() else t.detach().clone()
        memo[id(t)] = torch.nn.Parameter(data, requires_grad=False) if isinstance(t, torch.nn.Parameter) else data
    return copy.deepcopy(module, memo)


def float32_components(components: dict) -> dict:
    """The components with float32 copies of the transformer and the VAE (tokenizer and scheduler shared)."""
    return dict(components, transformer=float32_copy(components["transformer"]), vae=float32_copy(components["vae"]))


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matrix products (and cuDNN convolutions) inside the block."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def sample_actions(rt, preset, n: int, *, fd: bool = False) -> list[np.ndarray]:
    """Policy actions of ``rt`` on the preset's first ``n`` samples."""
    out = []
    for k in range(n):
        frame, settings, state = preset.sample(k)
        out.append(rt.policy(frame, settings, state=state).actions)
    return out


def per_sample(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    """rel. L2 of each sample's actions ``a[k]`` against ``b[k]``."""
    return [rel_l2(x, y) for x, y in zip(a, b, strict=True)]


def spread(errors: list[float]) -> dict[str, Any]:
    """Mean, median, min, max and the values."""
    if not errors:
        return {"mean": None, "values": []}
    return {
        "mean": float(np.mean(errors)),
        "median": float(statistics.median(errors)),
        "min": float(min(errors)),
        "max": float(max(errors)),
        "values": [float(e) for e in errors],
    }


def quality_summary(actions: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """The study's errors from the actions of ``stock_fp32``, ``stock_bf16``, ``ours_bf16`` and ``ours_fp8``
    (any may be missing)."""
    out: dict[str, Any] = {}
    pairs = {
        "bf16_vs_fp32": ("stock_bf16", "stock_fp32"),
        "ours_bf16_vs_fp32": ("ours_bf16", "stock_fp32"),
        "ours_bf16_vs_stock_bf16": ("ours_bf16", "stock_bf16"),
        "fp8_vs_ours_bf16": ("ours_fp8", "ours_bf16"),
        "fp8_vs_fp32": ("ours_fp8", "stock_fp32"),
        "fp8_vs_stock_bf16": ("ours_fp8", "stock_bf16"),
    }
    for name, (a, b) in pairs.items():
        if actions.get(a) and actions.get(b):
            out[name] = spread(per_sample(actions[a], actions[b]))
    floor = (out.get("bf16_vs_fp32") or {}).get("mean")
    fp8 = (out.get("fp8_vs_ours_bf16") or {}).get("mean")
    out["samples"] = max((len(v) for v in actions.values() if v), default=0)
    out["fp8_over_floor"] = fp8 / floor if fp8 is not None and floor else None
    return out


def tf32_forward_check(forward32: Callable[[], Any]) -> dict[str, float] | None:
    """One float32 transformer forward with TF32 and without: rel. L2 of the action and vision velocities."""
    import torch

    if not torch.cuda.is_available():
        return None
    with tf32(False):
        exact = forward32()
    with tf32(True):
        fast = forward32()
    return {
        "action": rel_l2(fast[2][0].float().cpu().numpy(), exact[2][0].float().cpu().numpy()),
        "vision": rel_l2(fast[0][0].float().cpu().numpy(), exact[0][0].float().cpu().numpy()),
    }
