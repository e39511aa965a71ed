# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Write a tiny random-weights Cosmos 3 checkpoint in diffusers format.

The checkpoint runs the real ``Cosmos3OmniPipeline`` code path (transformer with action
generation, Wan 2.2-style VAE with patch size 2 and 16x spatial compression, UniPC flow
scheduler with Karras sigmas as released, a character-level tokenizer with a Qwen-style
chat template) at shapes small enough for a 2-core CPU. It loads offline with
``Cosmos3OmniPipeline.from_pretrained(DIR)``. Same seed, same bytes of weights.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

#: Special tokens the pipeline and chat template need (``<|vision_start|>`` must exist: a
#: missing token silently maps to unk).
SPECIAL_TOKENS = ["<|unk|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Padded action width of the tiny transformer: same as Nano, so every domain (widest 57) runs.
TINY_ACTION_DIM = 64

TINY_TRANSFORMER = {
    "head_dim": 8,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 2,
    "latent_channel": 48,
    "latent_patch_size": 2,
    "patch_latent_dim": 192,
    "rope_axes_dim": [2, 1, 1],
    "action_gen": True,
    "action_dim": TINY_ACTION_DIM,
    "num_embodiment_domains": 32,
}

TINY_VAE = {
    "base_dim": 4,
    "z_dim": 48,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}

#: The released Cosmos 3 scheduler: UniPC, flow prediction, flow sigmas, Karras sigmas.
RELEASED_SCHEDULER = {
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "use_karras_sigmas": True,
    "flow_shift": 5.0,
}


def make_tokenizer():
    """Character-level tokenizer with the specials and chat template the pipeline needs."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + list(string.printable))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)."), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<|unk|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|vision_start|>", "<|vision_end|>"],
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint to ``out_dir`` (created, must be empty or absent) and return its path."""
    import torch
    from diffusers import AutoencoderKLWan, Cosmos3OmniPipeline, Cosmos3OmniTransformer, UniPCMultistepScheduler

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; pick a new directory")
    tokenizer = make_tokenizer()
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        transformer = Cosmos3OmniTransformer(vocab_size=len(tokenizer), **TINY_TRANSFORMER)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(latents_mean=[0.0] * 48, latents_std=[1.0] * 48, **TINY_VAE)
    finally:
        torch.random.set_rng_state(gen_state)
    scheduler = UniPCMultistepScheduler(**RELEASED_SCHEDULER)
    pipe = Cosmos3OmniPipeline(
        transformer=transformer,
        text_tokenizer=tokenizer,
        vae=vae,
        scheduler=scheduler,
        enable_safety_checker=False,
        default_use_system_prompt=False,
    )
    pipe.save_pretrained(out)
    (out / "cosmos3_ros_tiny.json").write_text(
        json.dumps({"kind": "cosmos3_ros tiny random-weights checkpoint", "seed": seed}, indent=2) + "\n"
    )
    return out
