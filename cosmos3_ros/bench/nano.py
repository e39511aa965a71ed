# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Random-weights Cosmos 3 pipelines built in memory, at tiny or Nano size, for benchmarks.

Nothing is downloaded or written to disk: the Nano transformer (about 15.2 B parameters) is
built directly on the target device in the target dtype, the Wan 2.2 VAE at its full size.
The tokenizer is the character-level one of :mod:`cosmos3_ros.bench.tiny`. Dtypes follow
what ``from_pretrained(dtype=...)`` gives for a released checkpoint: everything in ``dtype``
except the transformer's ``time_embedder`` and the rotary ``inv_freq`` buffer (float32).
"""

from __future__ import annotations

import contextlib
from typing import Any

from cosmos3_ros.bench.tiny import RELEASED_SCHEDULER, TINY_TRANSFORMER, TINY_VAE, make_tokenizer

SIZES = ("tiny", "nano")

#: Cosmos 3 Nano transformer shapes, as in the released checkpoint's transformer config.
NANO_TRANSFORMER: dict[str, Any] = {
    "head_dim": 128,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 36,
    "hidden_act": "silu",
    "qk_norm_for_text": True,
    "rms_norm_eps": 1e-6,
    "rope_theta": 5000000.0,
    "rope_axes_dim": [24, 20, 20],
    "latent_channel": 48,
    "latent_patch_size": 2,
    "patch_latent_dim": 192,
    "action_gen": True,
    "action_dim": 64,
    "num_embodiment_domains": 32,
    "vocab_size": 151936,
}

#: Wan 2.2 (TI2V-5B) VAE shapes, as Cosmos 3 uses it.
NANO_VAE: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_random_components(size: str, *, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> dict:
    """Transformer, VAE, scheduler and tokenizer with random weights (same seed, same weights on one device)."""
    import torch
    from diffusers import AutoencoderKLWan, Cosmos3OmniTransformer, UniPCMultistepScheduler

    if size not in SIZES:
        raise ValueError(f"size {size!r} unknown; expected one of {list(SIZES)}")
    torch_dtype = getattr(torch, dtype)
    tokenizer = make_tokenizer()
    if size == "tiny":
        t_cfg = dict(TINY_TRANSFORMER, vocab_size=len(tokenizer))
        v_cfg = dict(TINY_VAE)
    else:
        t_cfg = dict(NANO_TRANSFORMER)
        v_cfg = dict(NANO_VAE)
    z = v_cfg["z_dim"]
    v_cfg.update(latents_mean=[0.0] * z, latents_std=[1.0] * z)
    rng_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        torch.manual_seed(seed)
        # Float dtypes below float32 are built in place so a 15 B model never exists in float32.
        build_dtype = torch_dtype if torch_dtype in (torch.bfloat16, torch.float16) else torch.float32
        with torch.device(device), _default_dtype(build_dtype):
            transformer = Cosmos3OmniTransformer(**t_cfg)
        transformer.to(dtype=torch_dtype)
        transformer.time_embedder.float()  # _keep_in_fp32_modules, as from_pretrained does
        transformer.rotary_emb.inv_freq = transformer.rotary_emb.inv_freq.float()
        torch.manual_seed(seed + 1)
        with torch.device(device):
            vae = AutoencoderKLWan(**v_cfg)
        vae.to(dtype=torch_dtype)
    finally:
        torch.random.set_rng_state(rng_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    transformer.eval()
    vae.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": UniPCMultistepScheduler(**RELEASED_SCHEDULER),
        "text_tokenizer": tokenizer,
    }


def make_pipeline(components: dict, cls=None):
    """A pipeline of class ``cls`` (default: the stock ``Cosmos3OmniPipeline``) over shared components."""
    if cls is None:
        from diffusers import Cosmos3OmniPipeline as cls  # noqa: N813
    pipe = cls(
        transformer=components["transformer"],
        text_tokenizer=components["text_tokenizer"],
        vae=components["vae"],
        scheduler=components["scheduler"],
        enable_safety_checker=False,
        default_use_system_prompt=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_count(module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
