# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""A faster forward for ``Cosmos3OmniTransformer`` inside the pipeline's denoising loop.

The transformer is a mixture of two token streams through shared attention: the text
("understanding", *und*) stream attends causally to text only, and the generation (*gen*)
stream (vision latents and action tokens) attends to text and generation keys. So the text
stream never sees a generated token: its hidden states, and the keys and values it offers the
generation stream in every layer, are the same at every denoising step and for every call
with the same caption. The stock forward recomputes them every step.

Levers, by exactness:

* **Text cache (exact).** The text stream runs once per caption; each layer's text K/V for
  the generation stream are kept (LRU). Each step runs the generation stream only, with the
  same modules and kernels as stock, so the numbers are bit-identical (``fuse=False``,
  ``compile=False``, ``attention="stock"``; checked on CPU and on an H100): 1516 of the 1839
  tokens of a Nano policy step remain.
* **bf16-noise levers (GPU default).** Fused Q/K/V and gate/up projections (the module
  weights become views into the fused tensors, so no memory is duplicated and the stock
  modules still work), the timestep embedding computed once instead of once per token, one
  ``torch.compile``d layer function shared by all layers (dynamic in the sequence length: a
  new frame size or caption never recompiles), SDPA with GQA (the kernel stock asks for), and
  the whole step captured in a CUDA graph per input layout. Each changes rounding only; the
  inductor kernels are autotuned per machine, so the last bits differ between machines too.
* **FP8 (opt-in, changes numbers).** Generation-stream GEMMs in float8 e4m3 with per-row
  activation and per-channel weight scales (``torch._scaled_mm``).

The pipeline (:mod:`cosmos3_ros.model.pipeline`) and the sync-free scheduler
(:mod:`cosmos3_ros.model.fast_scheduler`) remove the host syncs around each step, so the
captured steps run back to back; ``bench/README.md`` has the measured effect of each lever.

Anything the fast path does not cover (sound, context parallel, custom attention processors,
caching hooks, gradients) falls back to the stock forward.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from cosmos3_ros.model.kernels import (
    FUSED,
    attend,
    digest,
    domain_linear,
    fuse_linears,
    fused_gen_layer,
    quantize_fp8,
    rotate_half,
    scatter_index,
)
from cosmos3_ros.model.options import FastOptions

log = logging.getLogger(__name__)


@dataclass
class _TextKV:
    k: list[torch.Tensor]
    v: list[torch.Tensor]


@dataclass
class _Plan:
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
    tkv: _TextKV | None = None
    graph: Any = None
    graph_failed: bool = False
    keep: list = field(default_factory=list)


class _StepGraph:
    """The whole generation-stream step captured as one CUDA graph, replayed with copied-in inputs."""

    def __init__(self, fn, example: list[torch.Tensor | None], warmup: int = 2):
        with torch.inference_mode(False):  # plain tensors: copy_ works in and out of inference mode
            self.static = [None if t is None else t.clone() for t in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(*self.static)

    def __call__(self, *inputs):
        for buf, x in zip(self.static, inputs, strict=True):
            if buf is not None:
                buf.copy_(x)
        self.graph.replay()
        vision, _, action = self.out
        return [t.clone() for t in vision], None, (None if action is None else [t.clone() for t in action])


class FastCosmos3Forward:
    """Drop-in ``forward`` for a ``Cosmos3OmniTransformer`` (installed by the pipeline per call).

    Plans (and CUDA graphs) are keyed by the step layout: caption, positions (the action mRoPE offset), indexes
    (which action rows are known), shapes. ``max_plans`` 8: four guided calls' layouts (cond and uncond each).
    """

    def __init__(self, transformer, options: FastOptions, *, max_plans: int = 8, max_texts: int = 4):
        self.tr = transformer
        self.opt = options
        self.max_plans = max_plans
        self.max_texts = max_texts
        self._texts: OrderedDict[str, _TextKV] = OrderedDict()
        self._plans: OrderedDict[str, _Plan] = OrderedDict()
        self._call: dict[int, tuple[_Plan | None, Any]] = {}
        self._weights: list[dict] | None = None
        self._layer_fn = None
        self._compiled = False
        self.stats = {"fast_steps": 0, "stock_steps": 0, "text_misses": 0, "plans": 0, "graph_captures": 0}
        self.last_fallback: str | None = None
        self.errors: list[str] = []
        cfg = transformer.config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(cfg.num_key_value_heads)
        self.head_dim = int(cfg.head_dim)
        self.inter = int(cfg.intermediate_size)
        self.eps = float(cfg.rms_norm_eps)
        self._structure_ok = self._check_structure()

    # -- setup -------------------------------------------------------------------------------

    def plans(self) -> list[Any]:
        """The per-layout plans (CUDA graphs, step layouts) captured so far, oldest first."""
        return list(self._plans.values())

    def _check_structure(self) -> str | None:
        from diffusers.models.normalization import RMSNorm
        from diffusers.models.transformers.transformer_cosmos3 import Cosmos3AttnProcessor

        tr = self.tr
        if getattr(tr.config, "hidden_act", "silu") != "silu":
            return "hidden_act is not silu"
        for layer in tr.layers:
            attn = layer.self_attn
            if type(attn.processor) is not Cosmos3AttnProcessor:
                return f"attention processor {type(attn.processor).__name__}"
            if getattr(attn.processor, "_parallel_config", None) is not None:
                return "context-parallel attention"
            for norm in (layer.input_layernorm_moe_gen, layer.post_attention_layernorm_moe_gen):
                if type(norm) is not RMSNorm or norm.bias is not None:
                    return "generation norms are not RMSNorm"
            for norm in (attn.norm_added_q, attn.norm_added_k):
                if type(norm) is not RMSNorm or norm.bias is not None:
                    return "q/k norms are not RMSNorm"
            if layer.mlp_moe_gen.hidden_act != "silu":
                return "generation MLP is not silu"
        return None

    def prepare(self) -> None:
        """Fuse weights (in place: module weights become views) and compile, as the options ask."""
        if self.opt.fuse and self._weights is None:
            self._weights = self._fuse_weights()
        if self.opt.compile and not self._compiled:
            self._layer_fn = torch.compile(fused_gen_layer, fullgraph=True, dynamic=None, mode=self.opt.compile_mode)
            self._compiled = True

    def _weights_current(self) -> bool:
        attn = self.tr.layers[0].self_attn
        qkv = self._weights[0]["qkv"]
        fused = qkv[0] if isinstance(qkv, tuple) else qkv
        if isinstance(qkv, tuple):  # fp8 copies: compare with the bf16 fused tensor they were made from
            fused = FUSED.get(attn.add_q_proj)
        return fused is not None and attn.add_q_proj.weight.data_ptr() == fused.data_ptr()

    @torch.no_grad()
    def _fuse_weights(self) -> list[dict]:
        out = []
        for layer in self.tr.layers:
            attn = layer.self_attn
            projs = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            qkv = fuse_linears(projs)
            mlp = layer.mlp_moe_gen
            gu = fuse_linears((mlp.gate_proj, mlp.up_proj))
            w = {
                "ln1": layer.input_layernorm_moe_gen.weight,
                "qkv": qkv,
                "qkv_b": None if attn.add_q_proj.bias is None else torch.cat([p.bias for p in projs]),
                "qn": attn.norm_added_q.weight,
                "kn": attn.norm_added_k.weight,
                "o": attn.to_add_out.weight,
                "o_b": attn.to_add_out.bias,
                "ln2": layer.post_attention_layernorm_moe_gen.weight,
                "gu": gu,
                "down": mlp.down_proj.weight,
            }
            if self.opt.fp8:
                for name in ("qkv", "o", "gu", "down"):
                    w[name] = quantize_fp8(w[name])
            out.append(w)
        return out

    # -- entry -------------------------------------------------------------------------------

    def begin_call(self) -> None:
        """Forget the per-call layouts (the pipeline calls this once per __call__)."""
        self._call = {}

    def stock_forward(self, *args, **kwargs):
        """The transformer class's own forward."""
        return type(self.tr).forward(self.tr, *args, **kwargs)

    def __call__(self, *args, **kw):
        reason = self._unsupported(args, kw)
        plan = None
        if reason is None:
            plan = self._plan_for_call(kw)
            if plan is None:
                reason = self.last_fallback
        if plan is None:
            self.last_fallback = reason
            self.stats["stock_steps"] += 1
            return self.stock_forward(*args, **kw)
        self.stats["fast_steps"] += 1
        if self._weights is not None and not self._weights_current():
            # The model was moved or reloaded after fusing (``.to()`` replaces the weight views): fuse again.
            log.warning("fast forward: transformer weights changed since they were fused; fusing again")
            self._weights = None
            for p in self._plans.values():
                p.graph, p.graph_failed = None, False
            self.prepare()
        vt = kw["vision_tokens"][0]
        vts = kw["vision_timesteps"]
        at = kw["action_tokens"][0] if plan.has_action else None
        ats = kw["action_timesteps"] if plan.action_noisy else None
        while True:
            try:
                if self.opt.cuda_graphs and not plan.graph_failed:
                    if plan.graph is None:
                        plan.graph = self._capture(plan, [vt, vts, at, ats])
                    if plan.graph is not None:
                        return self._wrap(plan.graph(vt, vts, at, ats), kw)
                return self._wrap(self._gen_forward(plan, vt, vts, at, ats), kw)
            except Exception as exc:
                if not self._degrade(exc):
                    raise

    def _degrade(self, exc: Exception) -> bool:
        """After a failure, drop the most fragile GPU lever (compile, then the forced attention kernel)."""
        if self.tr.embed_tokens.weight.device.type == "cuda":
            torch.cuda.synchronize()
        what = None
        if self._layer_fn is not None:
            self._layer_fn = None
            self.opt.compile = False
            what = "torch.compile"
        elif self.opt.attention not in ("sdpa", "stock"):
            what = f"attention={self.opt.attention}"
            self.opt.attention = "sdpa"
        if what is None:
            return False
        msg = f"{type(exc).__name__}: {str(exc)[:500]}"
        log.warning("fast forward: %s failed (%s); continuing without it", what, msg)
        self.errors.append(f"{what}: {msg}")
        for plan in self._plans.values():
            plan.graph = None
            plan.graph_failed = False
        return True

    @staticmethod
    def _wrap(out, kw):
        if kw.get("return_dict", True):
            from diffusers.models.transformers.transformer_cosmos3 import Cosmos3OmniTransformerOutput

            return Cosmos3OmniTransformerOutput(sample=out[0], sound=out[1], action=out[2])
        return out

    def _unsupported(self, args, kw) -> str | None:
        tr = self.tr
        if not self.opt.text_cache:
            return "fast forward disabled"
        if self._structure_ok is not None:
            return self._structure_ok
        if args:
            return "positional arguments"
        if torch.is_grad_enabled():
            return "gradients enabled"
        if kw.get("sound_tokens") is not None:
            return "sound"
        if tr._cp_shard_fn is not None or tr._cp_gather_fn is not None:
            return "context parallel"
        if getattr(tr, "is_cache_enabled", False):
            return "a step cache is enabled"
        if tr.gradient_checkpointing and tr.training:
            return "training"
        vt = kw.get("vision_tokens")
        if not vt or len(vt) != 1 or vt[0].shape[0] != 1:
            return "vision batch is not one item"
        at = kw.get("action_tokens")
        if at is not None and (len(at) != 1 or kw.get("action_sequence_indexes") is None):
            return "action batch is not one item"
        return None

    # -- plan ----------------------------------------------------------------------------------

    def _plan_for_call(self, kw) -> _Plan | None:
        pos = kw["position_ids"]
        hit = self._call.get(id(pos))
        if hit is not None and hit[1] is pos:
            return hit[0]
        plan = self._build_plan(kw)
        self._call[id(pos)] = (plan, pos)  # one entry per pass (cond / uncond); pos kept alive: ids stay unique
        return plan

    @torch.no_grad()
    def _build_plan(self, kw) -> _Plan | None:
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

    def _make_plan(self, kw, key, text_key, und_len, seq_len, has_action) -> _Plan:
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
        plan = _Plan(
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
            per_token = torch.cat([d.reshape(1).expand(s[0]) for d, s in zip(domain_ids, a_shapes, strict=True)]).to(
                dev
            )
            per_noisy = torch.cat([d.reshape(1).expand(len(n)) for d, n in zip(domain_ids, a_noisy, strict=True)]).to(
                dev
            )
            plan.has_action = True
            plan.action_len = int(a_shapes[0][0])
            plan.action_gen_idx = kw["action_sequence_indexes"] - und_len
            plan.action_mse_gen_idx = kw["action_mse_loss_indexes"] - und_len
            plan.action_token_shapes = a_shapes
            plan.action_noisy_frame_indexes = a_noisy
            plan.action_domain_ids = per_token.to(torch.long)
            plan.noisy_domain_ids = per_noisy.to(torch.long)
            plan.action_noisy = kw["action_mse_loss_indexes"].numel() > 0
            plan.action_scatter_index = scatter_index(a_noisy, a_shapes, tr.config.hidden_size, dev)
        return plan

    # -- text stream ---------------------------------------------------------------------------

    @torch.no_grad()
    def _text_kv(self, input_ids, text_indexes, und_len, cos_und, sin_und) -> _TextKV:
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
        return _TextKV(k=ks, v=vs)

    # -- generation stream ---------------------------------------------------------------------

    def _time_embed(self, timesteps: torch.Tensor, dtype) -> torch.Tensor:
        tr = self.tr
        ts = timesteps * tr.config.timestep_scale
        te_dtype = next(tr.time_embedder.parameters()).dtype
        if self.opt.uniform_time_embed:
            # The pipeline fills every token's timestep with the same value: embed one row.
            one = tr.time_embedder(tr.time_proj(ts[:1]).to(te_dtype)).to(dtype)
            return one.expand(ts.shape[0], -1)
        return tr.time_embedder(tr.time_proj(ts).to(te_dtype)).to(dtype)

    def _gen_forward(self, plan: _Plan, vision_tokens, vision_timesteps, action_tokens, action_timesteps):
        tr = self.tr
        dtype = tr.embed_tokens.weight.dtype
        gen = torch.zeros((plan.gen_len, tr.config.hidden_size), dtype=dtype, device=vision_tokens.device)
        packed, original_shapes = tr._patchify_and_pack_latents([vision_tokens])
        packed = tr.proj_in(packed)
        packed = packed.scatter_add(0, plan.vision_scatter_index, self._time_embed(vision_timesteps, dtype))
        gen[plan.vision_gen_idx] = packed
        if plan.has_action:
            a = torch.cat([action_tokens[: plan.action_len]], dim=0).to(dtype)
            a = domain_linear(tr.action_proj_in, a, plan.action_domain_ids) + tr.action_modality_embed
            if plan.action_noisy:
                a = a.scatter_add(0, plan.action_scatter_index, self._time_embed(action_timesteps, dtype))
            gen[plan.action_gen_idx] = a
        gen = self._run_layers(plan, gen)
        gen = tr.norm_moe_gen(gen)
        preds_vision = tr._unpatchify_and_unpack_latents(
            tr.proj_out(gen[plan.vision_mse_gen_idx]),
            token_shapes_vision=plan.vision_token_shapes,
            noisy_frame_indexes_vision=plan.vision_noisy_frame_indexes,
            original_latent_shapes=original_shapes,
        )
        preds_action = None
        if plan.has_action:
            pa = domain_linear(tr.action_proj_out, gen[plan.action_mse_gen_idx], plan.noisy_domain_ids)
            preds_action = tr._unpack_action_latents(pa, plan.action_token_shapes, plan.action_noisy_frame_indexes)
        return preds_vision, None, preds_action

    def _run_layers(self, plan: _Plan, gen: torch.Tensor) -> torch.Tensor:
        tkv = plan.tkv
        if self.opt.fuse:
            if self._weights is None:
                self.prepare()
            fn = self._layer_fn if self._layer_fn is not None else fused_gen_layer
            cos, sin = plan.cos_gen, plan.sin_gen
            if self._layer_fn is not None:
                for t in (gen, cos, sin):
                    torch._dynamo.maybe_mark_dynamic(t, 0)
            for i, w in enumerate(self._weights):
                k_und, v_und = tkv.k[i], tkv.v[i]
                if self._layer_fn is not None:
                    torch._dynamo.maybe_mark_dynamic(k_und, 0)
                    torch._dynamo.maybe_mark_dynamic(v_und, 0)
                gen = fn(
                    gen,
                    cos,
                    sin,
                    k_und,
                    v_und,
                    w,
                    self.n_heads,
                    self.n_kv,
                    self.head_dim,
                    self.inter,
                    self.eps,
                    self.opt.attention,
                )
            return gen
        for i, layer in enumerate(self.tr.layers):
            gen = self._ref_gen_layer(layer, gen, plan.cos_gen, plan.sin_gen, tkv.k[i], tkv.v[i])
        return gen

    def _ref_gen_layer(self, layer, gen, cos, sin, k_und, v_und) -> torch.Tensor:
        """The stock layer's generation half, with the same modules (bit-identical)."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        attn = layer.self_attn
        proc = attn.processor
        h = layer.input_layernorm_moe_gen(gen)
        q = attn.add_q_proj(h).view(-1, attn.num_attention_heads, attn.head_dim)
        k = attn.add_k_proj(h).view(-1, attn.num_key_value_heads, attn.head_dim)
        v = attn.add_v_proj(h).view(-1, attn.num_key_value_heads, attn.head_dim)
        q = attn.norm_added_q(q)
        k = attn.norm_added_k(k)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        all_k = torch.cat([k_und, k], dim=0)
        all_v = torch.cat([v_und, v], dim=0)
        if self.opt.attention == "stock":
            out = dispatch_attention_fn(
                q.unsqueeze(0),
                all_k.unsqueeze(0),
                all_v.unsqueeze(0),
                is_causal=False,
                enable_gqa=True,
                backend=proc._attention_backend,
                parallel_config=proc._parallel_config,
            ).squeeze(0)
        else:
            out = attend(q, all_k, all_v, self.opt.attention)
        residual = gen + attn.to_add_out(out.flatten(-2, -1))
        return residual + layer.mlp_moe_gen(layer.post_attention_layernorm_moe_gen(residual))

    # -- CUDA graph ----------------------------------------------------------------------------

    def _capture(self, plan: _Plan, example) -> _StepGraph | None:
        """Capture the step; a capture failure (not a compile failure) leaves this layout un-graphed."""
        self._gen_forward(plan, *example)  # compile and autotune outside the capture; errors go to _degrade
        torch.cuda.synchronize()
        try:
            graph = _StepGraph(lambda *xs: self._gen_forward(plan, *xs), example)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {str(exc)[:500]}"
            log.warning("CUDA graph capture failed (%s); running this layout without a graph", msg)
            self.errors.append(f"cuda graph: {msg}")
            plan.graph_failed = True
            torch.cuda.synchronize()
            return None
        self.stats["graph_captures"] += 1
        return graph
