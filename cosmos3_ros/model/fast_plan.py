# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Per-layout plans of the fast forward: the text stream's K/V per caption (LRU) and the static layout of a pass.

A *plan* is everything about one transformer pass that does not change between denoising steps: the caption's K/V
for the generation stream (the text stream run once, exactly as the stock layers run it), the generation tokens'
rotary tables, and where the vision and action tokens sit. Plans are keyed by a digest of the pass's static
inputs, so a conditional and an unconditional pass, or two robots with different prompts, get different plans.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from cosmos3_ros.model.kernels import digest, rotate_half, scatter_index


@dataclass
class TextKV:
    """Each layer's text-stream K (rotated, normalized for the generation stream) and V."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]


@dataclass
class Plan:
    """The static layout of one pass (see the module doc)."""

    key: str
    text_key: str
    und_len: int
    gen_len: int
    cos_gen: torch.Tensor
    sin_gen: torch.Tensor
    vision_gen_idx: torch.Tensor
    vision_mse_gen_idx: torch.Tensor
    vision_token_shapes: list
    vision_noisy_frame_indexes: list
    vision_scatter_index: torch.Tensor
    has_action: bool = False
    action_len: int = 0
    action_gen_idx: torch.Tensor | None = None
    action_mse_gen_idx: torch.Tensor | None = None
    action_token_shapes: list | None = None
    action_noisy_frame_indexes: list | None = None
    action_domain_ids: torch.Tensor | None = None
    noisy_domain_ids: torch.Tensor | None = None
    action_noisy: bool = False
    action_scatter_index: torch.Tensor | None = None
    tkv: TextKV | None = None


class PlanCache:
    """Mixin of :class:`~cosmos3_ros.model.fast_transformer.FastCosmos3Forward`: plans and text K/V, both LRU.

    Needs ``self.tr`` (the transformer), ``self.max_plans``, ``self.max_texts``, ``self.stats``, ``self._plans``,
    ``self._texts``, ``self._call`` and ``self.last_fallback``.
    """

    def plans(self) -> list[Plan]:
        """The per-layout plans captured so far, oldest first."""
        return list(self._plans.values())

    def _plan_for_call(self, kw) -> Plan | None:
        pos = kw["position_ids"]
        hit = self._call.get(id(pos))
        if hit is not None and hit[1] is pos:
            return hit[0]
        plan = self._build_plan(kw)
        self._call[id(pos)] = (plan, pos)  # one entry per pass (cond / uncond); pos kept alive: ids stay unique
        return plan

    @torch.no_grad()
    def _build_plan(self, kw) -> Plan | None:
        tr = self.tr
        und_len = int(kw["und_len"])
        seq_len = int(kw["sequence_length"])
        has_action = kw.get("action_tokens") is not None
        text_idx = kw["text_indexes"]
        v_seq, v_mse = kw["vision_sequence_indexes"], kw["vision_mse_loss_indexes"]
        a_seq = kw.get("action_sequence_indexes") if has_action else None
        a_mse = kw.get("action_mse_loss_indexes") if has_action else None
        domain = kw.get("action_domain_ids")[0] if has_action else None
        cpu = {
            name: t.detach().to("cpu")
            for name, t in (("text", text_idx), ("vseq", v_seq), ("vmse", v_mse), ("aseq", a_seq), ("amse", a_mse))
            if t is not None
        }
        if cpu["text"].numel() and int(cpu["text"].max()) >= und_len:
            self.last_fallback = "text tokens after the understanding prefix"
            return None
        for name in ("vseq", "vmse", "aseq", "amse"):
            t = cpu.get(name)
            if t is not None and t.numel() and (int(t.min()) < und_len or int(t.max()) >= seq_len):
                self.last_fallback = f"{name} indexes inside the text prefix"
                return None
        if domain is not None:
            d = int(domain.reshape(-1)[0])
            if not 0 <= d < tr.num_embodiment_domains:
                return None  # the stock forward raises the proper error
        vt = kw["vision_tokens"][0]
        text_key = digest(kw["input_ids"], kw["position_ids"][..., :und_len], und_len, tr.embed_tokens.weight.dtype)
        key = digest(
            text_key,
            kw["position_ids"],
            seq_len,
            tuple(vt.shape),
            vt.dtype,
            kw["vision_token_shapes"],
            *cpu.values(),
            *[t for t in kw["vision_noisy_frame_indexes"]],
            kw.get("action_token_shapes"),
            *([t for t in kw["action_noisy_frame_indexes"]] if has_action else []),
            domain,
            tuple(kw["action_tokens"][0].shape) if has_action else None,
        )
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = self._make_plan(kw, key, text_key, und_len, seq_len, has_action)
        self._plans[key] = plan
        self.stats["plans"] += 1
        while len(self._plans) > self.max_plans:
            self._plans.popitem(last=False)
        return plan

    def _make_plan(self, kw, key, text_key, und_len, seq_len, has_action) -> Plan:
        tr = self.tr
        dev = kw["vision_tokens"][0].device
        dtype = tr.embed_tokens.weight.dtype
        position_ids = kw["position_ids"]
        cos, sin = tr.rotary_emb(
            position_ids=position_ids.unsqueeze(0) if position_ids.ndim == 1 else position_ids.unsqueeze(1),
            device=dev,
            dtype=dtype,
        )
        cos, sin = cos.squeeze(0), sin.squeeze(0)
        tkv = self._texts.get(text_key)
        if tkv is None:
            tkv = self._text_kv(kw["input_ids"], kw["text_indexes"], und_len, cos[:und_len], sin[:und_len])
            self._texts[text_key] = tkv
            self.stats["text_misses"] += 1
            while len(self._texts) > self.max_texts:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(text_key)
        v_shapes = kw["vision_token_shapes"]
        v_noisy = kw["vision_noisy_frame_indexes"]
        plan = Plan(
            key=key,
            text_key=text_key,
            und_len=und_len,
            gen_len=seq_len - und_len,
            cos_gen=cos[und_len:].unsqueeze(1),
            sin_gen=sin[und_len:].unsqueeze(1),
            vision_gen_idx=kw["vision_sequence_indexes"] - und_len,
            vision_mse_gen_idx=kw["vision_mse_loss_indexes"] - und_len,
            vision_token_shapes=v_shapes,
            vision_noisy_frame_indexes=v_noisy,
            vision_scatter_index=scatter_index(v_noisy, v_shapes, tr.config.hidden_size, dev),
            tkv=tkv,
        )
        if has_action:
            a_shapes = kw["action_token_shapes"]
            a_noisy = kw["action_noisy_frame_indexes"]
            domain_ids = kw["action_domain_ids"]
            per_token = torch.cat([d.reshape(1).expand(s[0]) for d, s in zip(domain_ids, a_shapes, strict=True)])
            per_noisy = torch.cat([d.reshape(1).expand(len(n)) for d, n in zip(domain_ids, a_noisy, strict=True)])
            plan.has_action = True
            plan.action_len = int(a_shapes[0][0])
            plan.action_gen_idx = kw["action_sequence_indexes"] - und_len
            plan.action_mse_gen_idx = kw["action_mse_loss_indexes"] - und_len
            plan.action_token_shapes = a_shapes
            plan.action_noisy_frame_indexes = a_noisy
            plan.action_domain_ids = per_token.to(dev).to(torch.long)
            plan.noisy_domain_ids = per_noisy.to(dev).to(torch.long)
            plan.action_noisy = kw["action_mse_loss_indexes"].numel() > 0
            plan.action_scatter_index = scatter_index(a_noisy, a_shapes, tr.config.hidden_size, dev)
        return plan

    @torch.no_grad()
    def _text_kv(self, input_ids, text_indexes, und_len, cos_und, sin_und) -> TextKV:
        """Run the causal text stream once, exactly as the stock layers do; keep each layer's K/V."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        tr = self.tr
        emb = tr.embed_tokens(input_ids)
        und = emb.new_zeros((und_len, tr.config.hidden_size))
        und[text_indexes] = emb
        cos = cos_und.unsqueeze(1)
        sin = sin_und.unsqueeze(1)
        ks, vs = [], []
        last = len(tr.layers) - 1
        for i, layer in enumerate(tr.layers):
            attn = layer.self_attn
            proc = attn.processor
            und_norm = layer.input_layernorm(und)
            q = attn.to_q(und_norm).view(-1, attn.num_attention_heads, attn.head_dim)
            k = attn.to_k(und_norm).view(-1, attn.num_key_value_heads, attn.head_dim)
            v = attn.to_v(und_norm).view(-1, attn.num_key_value_heads, attn.head_dim)
            q = attn.norm_q(q)
            k = attn.norm_k(k)
            k_for_gen = attn.k_norm_und_for_gen(k) if attn.k_norm_und_for_gen is not None else k
            k_for_gen = k_for_gen * cos + rotate_half(k_for_gen) * sin
            ks.append(k_for_gen)
            vs.append(v)
            if i == last:
                break  # the text stream's own output is never read
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            causal = dispatch_attention_fn(
                q.unsqueeze(0),
                k.unsqueeze(0),
                v.unsqueeze(0),
                is_causal=True,
                enable_gqa=True,
                backend=proc._attention_backend,
                parallel_config=proc._parallel_config,
            )
            residual = und + attn.to_out(causal.squeeze(0).flatten(-2, -1))
            und = residual + layer.mlp(layer.post_attention_layernorm(residual))
        return TextKV(k=ks, v=vs)


def new_lru() -> OrderedDict:
    """An empty LRU map (plans, texts, graphs)."""
    return OrderedDict()
