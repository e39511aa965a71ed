# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The fast path's pure tensor functions: norms, rotary, attention, FP8 GEMMs, the fused generation layer (what
``torch.compile`` sees), weight fusion and quantization. No module state except the fused-weight registry."""

from __future__ import annotations

import hashlib
import math
import weakref

import torch
import torch.nn.functional as F  # noqa: N812

#: First Linear of each fused group -> the fused weight its group's weights are views of.
FUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """diffusers ``RMSNorm.forward`` (non-NPU path), op for op."""
    input_dtype = x.dtype
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    if weight is None:
        return x.to(input_dtype)
    if weight.dtype in (torch.float16, torch.bfloat16):
        x = x.to(weight.dtype)
    return x * weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend

    return {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Full (non-causal) attention, q [N, H, D], k/v [M, KV, D] -> [N, H, D].

    ``sdpa``/``stock``: SDPA with ``enable_gqa`` (what the stock processor asks for).
    ``flash``/``cudnn``/``efficient``/``math``: KV heads repeated to H (GQA kernels are not
    available on every backend) and that SDPA kernel forced.
    """
    qh = q.unsqueeze(0).transpose(1, 2)
    kh = k.unsqueeze(0).transpose(1, 2)
    vh = v.unsqueeze(0).transpose(1, 2)
    if backend in ("sdpa", "stock"):
        out = F.scaled_dot_product_attention(qh, kh, vh, enable_gqa=True)
    else:
        from torch.nn.attention import sdpa_kernel

        rep = qh.shape[1] // kh.shape[1]
        if rep > 1:
            kh = kh.repeat_interleave(rep, dim=1)
            vh = vh.repeat_interleave(rep, dim=1)
        with sdpa_kernel(sdpa_backend(backend)):
            out = F.scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).squeeze(0)


def fp8_linear(x: torch.Tensor, w8: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``x @ w.T`` with x quantized per row and w (pre-quantized, [out, in]) per output channel.

    On CUDA one ``torch._scaled_mm`` (float8 e4m3 operands, float32 accumulation); elsewhere emulated: the same
    quantized operands, dequantized, in a float32 GEMM (same rounding of the operands, no speed-up).
    """
    fmax = torch.finfo(torch.float8_e4m3fn).max
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    x_scale = amax / fmax
    x8 = (x.float() / x_scale).clamp(-fmax, fmax).to(torch.float8_e4m3fn)
    if x.device.type != "cuda":
        return ((x8.float() * x_scale) @ (w8.float() * w_scale).t()).to(out_dtype)
    return torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale.t(), out_dtype=out_dtype)


def linear(x: torch.Tensor, w, b: torch.Tensor | None) -> torch.Tensor:
    if isinstance(w, tuple):  # fp8: (weight_e4m3 [out, in], scale [out, 1])
        y = fp8_linear(x, w[0], w[1], x.dtype)
        return y if b is None else y + b
    return F.linear(x, w, b)


def gen_pre_attn(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, w: dict, n_heads: int, n_kv: int, head_dim: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The generation-stream layer up to attention, row-wise: x [M, hidden], cos/sin [M, 1, head_dim] -> q, k, v.

    Rows are independent, so the rows of several samples (each with its own positions) go through in one call.
    """
    h = rms_norm(x, w["ln1"], eps)
    qkv = linear(h, w["qkv"], w["qkv_b"])
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = rms_norm(q.view(-1, n_heads, head_dim), w["qn"], eps)
    k = rms_norm(k.view(-1, n_kv, head_dim), w["kn"], eps)
    v = v.view(-1, n_kv, head_dim)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q, k, v


def gen_post_attn(x: torch.Tensor, o: torch.Tensor, w: dict, inter: int, eps: float) -> torch.Tensor:
    """The generation-stream layer after attention, row-wise: output projection, residual, norm, SiLU MLP."""
    x = x + linear(o.flatten(-2, -1), w["o"], w["o_b"])
    h = rms_norm(x, w["ln2"], eps)
    gu = linear(h, w["gu"], None)
    gate, up = gu.split([inter, inter], dim=-1)
    return x + linear(F.silu(gate) * up, w["down"], None)


def fused_gen_layer(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_und: torch.Tensor,
    v_und: torch.Tensor,
    w: dict,
    n_heads: int,
    n_kv: int,
    head_dim: int,
    inter: int,
    eps: float,
    attention: str,
) -> torch.Tensor:
    """One decoder layer, generation stream only, fused projections, one sample. x [N, hidden]."""
    q, k, v = gen_pre_attn(x, cos, sin, w, n_heads, n_kv, head_dim, eps)
    o = attend(q, torch.cat([k_und, k], dim=0), torch.cat([v_und, v], dim=0), attention)
    return gen_post_attn(x, o, w, inter, eps)


def domain_linear(mod, x: torch.Tensor, domain_ids: torch.Tensor) -> torch.Tensor:
    """``DomainAwareLinear.forward`` for rank-2 input without its host-syncing range check."""
    weight = mod.fc(domain_ids).view(domain_ids.shape[0], mod.input_size, mod.output_size)
    bias = mod.bias(domain_ids).view(domain_ids.shape[0], mod.output_size)
    return torch.bmm(x.unsqueeze(1), weight).squeeze(1) + bias


def digest(*tensors_or_values) -> str:
    h = hashlib.sha1()
    for t in tensors_or_values:
        if isinstance(t, torch.Tensor):
            c = t.detach().to("cpu").contiguous()
            h.update(str((c.dtype, tuple(c.shape))).encode())
            h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


def fuse_linears(linears) -> torch.Tensor:
    """Concatenate the weights of ``linears`` (same input size) and make each weight a view into it.

    Weights that already are consecutive views of one tensor (fused before) reuse that tensor.
    """
    base = FUSED.get(linears[0])
    if base is not None:
        start = 0
        for lin in linears:
            if lin.weight.data_ptr() != base[start:].data_ptr():
                break
            start += lin.weight.shape[0]
        else:
            if start == base.shape[0]:
                return base
    fused = torch.cat([lin.weight.data for lin in linears], dim=0)
    FUSED[linears[0]] = fused
    start = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = fused[start : start + n]
        start += n
    return fused


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [out, in] -> (e4m3 weight, float32 per-output-channel scale [out, 1])."""
    fmax = torch.finfo(torch.float8_e4m3fn).max
    scale = w.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / fmax
    return (w.float() / scale).clamp(-fmax, fmax).to(torch.float8_e4m3fn), scale


def scatter_index(noisy_frame_indexes, token_shapes, hidden: int, device) -> torch.Tensor:
    """The index ``_apply_timestep_embeds_to_noisy_tokens`` builds, computed once per layout."""
    start = 0
    parts = []
    for noisy, shape in zip(noisy_frame_indexes, token_shapes, strict=True):
        spatial = math.prod(shape[1:])
        spatial_idx = torch.arange(spatial, device=device)
        parts.append(((noisy.to(device) * spatial).unsqueeze(-1) + spatial_idx + start).flatten())
        start += shape[0] * spatial
    return torch.cat(parts, dim=0).unsqueeze(-1).expand(-1, hidden)
