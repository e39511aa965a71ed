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
  the generation stream are kept (LRU, :mod:`cosmos3_ros.model.fast_plan`). Each step runs the
  generation stream only, with the same modules and kernels as stock, so the numbers are
  bit-identical (``fuse=False``, ``compile=False``, ``attention="stock"``; checked on CPU and on
  an H100): 1516 of the 1839 tokens of a Nano policy step remain.
* **Several passes in one forward (exact on the CPU).** Passes are stacked along the token rows
  (every row-wise op sees more rows, attention runs per pass against its own caption's K/V):
  the conditional and unconditional pass of a guided step (``batch_cfg``: the unconditional
  layout that followed a conditional one is remembered, so from the second call on both run
  together from step 0), and the passes of several calls (:mod:`cosmos3_ros.model.batching`).
  On the CPU each row comes out bit-identical; on a GPU the larger GEMMs may pick other
  kernels (bf16 noise).
* **bf16-noise levers (GPU default).** Fused Q/K/V and gate/up projections (the module
  weights become views into the fused tensors, so no memory is duplicated and the stock
  modules still work), the timestep embedding computed once instead of once per token, the
  layer's row-wise halves ``torch.compile``d (dynamic in the row count: a new frame size,
  caption or batch never recompiles), SDPA with GQA (the kernel stock asks for), and the whole
  step captured in a CUDA graph per group of passes (:mod:`cosmos3_ros.model.step_graph`).
* **FP8 (opt-in, changes numbers).** The blocks' generation-stream linear layers in float8
  e4m3 with per-row activation and per-output-channel weight scales (``torch._scaled_mm``),
  except those ``fp8_keep`` lists (:data:`~cosmos3_ros.model.options.FP8_KEEP_BF16`).

Anything the fast path does not cover (sound, context parallel, custom attention processors,
caching hooks, gradients) falls back to the stock forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cosmos3_ros.model.fast_plan import Plan, PlanCache, new_lru
from cosmos3_ros.model.kernels import (
    FUSED,
    attend,
    digest,
    domain_linear,
    fuse_linears,
    gen_post_attn,
    gen_pre_attn,
    quantize_fp8,
    rotate_half,
)
from cosmos3_ros.model.options import FP8_KEEP_BF16, FP8_PROJECTIONS, FastOptions, Fp8Keep
from cosmos3_ros.model.step_graph import StepGraph, share_pattern

__all__ = ["CallState", "FastCosmos3Forward", "FastOptions", "PassHint", "PassRequest"]

log = logging.getLogger(__name__)

_WEIGHT_OF = dict(zip(FP8_PROJECTIONS, ("qkv", "o", "gu", "down"), strict=True))


@dataclass
class PassHint:
    """What the pipeline knows about the pass being run: its step, whether the step is guided, and the
    unconditional token ids (the unconditional pass of a guided step follows the conditional one)."""

    step: int
    cfg: bool
    uncond: Any = None


@dataclass
class CallState:
    """Per pipeline call: the passes of the current step and an unconditional result computed ahead."""

    stash: tuple | None = None
    step: int = -1
    calls: list = field(default_factory=list)
    uncond_src: Any = None
    uncond_key: str | None = None


@dataclass
class PassRequest:
    """What one transformer call needs: the stock forward, a result already computed, or these passes."""

    kind: str
    out: Any = None
    entries: list = field(default_factory=list)
    partner: bool = False


class FastCosmos3Forward(PlanCache):
    """Drop-in ``forward`` for a ``Cosmos3OmniTransformer`` (installed by the pipeline per call).

    Plans are keyed by the pass layout (caption, positions, known action rows, shapes); CUDA graphs by the group of
    plans run together. ``max_plans`` 8: four guided calls' layouts (cond and uncond each).
    """

    def __init__(self, transformer, options: FastOptions, *, max_plans: int = 8, max_texts: int = 4):
        self.tr = transformer
        self.opt = options
        self.max_plans = max_plans
        self.max_texts = max_texts
        self.max_graphs = 2 * max_plans
        self._texts = new_lru()
        self._plans = new_lru()
        self._graphs = new_lru()
        self._graph_failed: set = set()
        self._partners = new_lru()
        self._call: dict[int, tuple[Plan | None, Any]] = {}
        self._state = CallState()
        self._weights: list[dict] | None = None
        self._pre_fn: Callable | None = None
        self._post_fn: Callable | None = None
        self._compiled = False
        #: Set by the pipeline during a call: returns the :class:`PassHint` of the pass being run.
        self.hint: Callable[[], PassHint] | None = None
        self.stats = {
            "fast_steps": 0,
            "stock_steps": 0,
            "text_misses": 0,
            "plans": 0,
            "graph_captures": 0,
            "cfg_batched_steps": 0,
            "batched_forwards": 0,
        }
        self.last_fallback: str | None = None
        self.errors: list[str] = []
        cfg = transformer.config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(cfg.num_key_value_heads)
        self.head_dim = int(cfg.head_dim)
        self.inter = int(cfg.intermediate_size)
        self.eps = float(cfg.rms_norm_eps)
        self.fp8_keep = Fp8Keep.parse(options.fp8_keep)
        if options.fp8 and options.fp8_keep != FP8_KEEP_BF16:  # the default names Nano's layers; others may have fewer
            self.fp8_keep.check(len(transformer.layers))
        self._structure_ok = self._check_structure()

    # -- setup -------------------------------------------------------------------------------

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
            mode = self.opt.compile_mode
            self._pre_fn = torch.compile(gen_pre_attn, fullgraph=True, dynamic=None, mode=mode)
            self._post_fn = torch.compile(gen_post_attn, fullgraph=True, dynamic=None, mode=mode)
            self._compiled = True

    @property
    def weights(self) -> list[dict] | None:
        """The fused per-layer weights (bf16 tensors, or (float8, scale) pairs under FP8); None before prepare()."""
        return self._weights

    @weights.setter
    def weights(self, value: list[dict]) -> None:
        """Replace the per-layer weights (the FP8 sweep swaps single layers); drops the captured graphs."""
        self._weights = value
        self._graphs.clear()
        self._graph_failed.clear()

    def _weights_current(self) -> bool:
        attn = self.tr.layers[0].self_attn
        qkv = self._weights[0]["qkv"]
        fused = FUSED.get(attn.add_q_proj) if isinstance(qkv, tuple) else qkv  # fp8: the bf16 tensor behind it
        return fused is not None and attn.add_q_proj.weight.data_ptr() == fused.data_ptr()

    @torch.no_grad()
    def _fuse_weights(self) -> list[dict]:
        out = []
        for i, layer in enumerate(self.tr.layers):
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
                for proj, name in _WEIGHT_OF.items():
                    if not self.fp8_keep.keeps(i, proj):
                        w[name] = quantize_fp8(w[name])
            out.append(w)
        return out

    # -- entry -------------------------------------------------------------------------------

    def begin_call(self) -> None:
        """Forget the per-call layouts (the pipeline calls this once per __call__)."""
        self._call = {}
        self._state = CallState()

    def stock_forward(self, *args, **kwargs):
        """The transformer class's own forward."""
        return type(self.tr).forward(self.tr, *args, **kwargs)

    def __call__(self, *args, **kw):
        req = self.resolve(args, kw, self.hint() if self.hint is not None else None, self._state)
        if req.kind == "stock":
            return self.stock_forward(*args, **kw)
        if req.kind == "done":
            return self._wrap(req.out, kw)
        outs = self.run_entries(req.entries)
        return self._wrap(self.settle(req, outs, self._state), kw)

    def resolve(self, args, kw, hint: PassHint | None, state: CallState) -> PassRequest:
        """Decide how to run one transformer call: stock, from the result computed ahead, or these passes."""
        reason = self._unsupported(args, kw)
        plan = None
        if reason is None:
            plan = self._plan_for_call(kw)
            if plan is None:
                reason = self.last_fallback
        if plan is None:
            self.last_fallback = reason
            self.stats["stock_steps"] += 1
            state.stash = None
            return PassRequest("stock")
        self.stats["fast_steps"] += 1
        inputs = (
            kw["vision_tokens"][0],
            kw["vision_timesteps"],
            kw["action_tokens"][0] if plan.has_action else None,
            kw["action_timesteps"] if plan.action_noisy else None,
        )
        position = 0
        if hint is not None:
            if hint.step != state.step:
                state.step, state.calls = hint.step, []
            position = len(state.calls)
            state.calls.append(plan)
        stash, state.stash = state.stash, None
        same = stash is not None and all(a is b for a, b in zip(stash[1], inputs, strict=True))
        if same and stash[0].key == plan.key:
            self.stats["cfg_batched_steps"] += 1
            return PassRequest("done", out=stash[2])
        entries = [(plan, inputs)]
        guided = hint is not None and hint.cfg and self.opt.batch_cfg
        if guided and position == 0:
            partner = self._partners.get((plan.key, self._uncond_key(hint, state)))
            if partner is not None:
                entries.append((partner, inputs))
        elif guided and position == 1:  # learn which unconditional layout follows this conditional one
            self._partners[(state.calls[0].key, self._uncond_key(hint, state))] = plan
            while len(self._partners) > self.max_plans:
                self._partners.popitem(last=False)
        return PassRequest("run", entries=entries, partner=len(entries) > 1)

    @staticmethod
    def settle(req: PassRequest, outs: list, state: CallState):
        """The output of the call's own pass; an unconditional partner's is kept for its call."""
        if req.partner:
            state.stash = (req.entries[1][0], req.entries[1][1], outs[1])
        return outs[0]

    def _uncond_key(self, hint: PassHint, state: CallState) -> str:
        if state.uncond_key is None or state.uncond_src is not hint.uncond:
            state.uncond_src, state.uncond_key = hint.uncond, digest(repr(hint.uncond))
        return state.uncond_key

    def run_entries(self, entries: list) -> list:
        """Run passes (plan, inputs) as one forward; returns one output (vision, sound, action) per pass."""
        if self._weights is not None and not self._weights_current():
            # The model was moved or reloaded after fusing (``.to()`` replaces the weight views): fuse again.
            log.warning("fast forward: transformer weights changed since they were fused; fusing again")
            self._weights = None
            self._graphs.clear()
            self._graph_failed.clear()
            self.prepare()
        plans = [p for p, _ in entries]
        uniq, pattern = share_pattern([inp for _, inp in entries])
        if len(entries) > 1:
            self.stats["batched_forwards"] += 1
        while True:
            try:
                if self.opt.cuda_graphs:
                    key = (tuple(p.key for p in plans), pattern)
                    graph = self._graphs.get(key)
                    if graph is None and key not in self._graph_failed:
                        graph = self._capture(key, plans, pattern, uniq)
                    if graph is not None:
                        self._graphs.move_to_end(key)
                        return graph(uniq)
                return self._gen_forward_multi(plans, [uniq[j] for j in pattern])
            except Exception as exc:
                if not self._degrade(exc):
                    raise

    def _degrade(self, exc: Exception) -> bool:
        """After a failure, drop the most fragile GPU lever (compile, then the forced attention kernel)."""
        if self.tr.embed_tokens.weight.device.type == "cuda":
            torch.cuda.synchronize()
        what = None
        if self._pre_fn is not None:
            self._pre_fn = self._post_fn = None
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
        self._graphs.clear()
        self._graph_failed.clear()
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

    def _embed(self, plan: Plan, vision_tokens, vision_timesteps, action_tokens, action_timesteps):
        """One pass's generation-stream input rows [gen_len, hidden] and the latents' original shapes."""
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
        return gen, original_shapes

    def _head(self, plan: Plan, gen: torch.Tensor, original_shapes):
        tr = self.tr
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

    def _gen_forward_multi(self, plans: list[Plan], inputs: list) -> list:
        """The generation stream of several passes, their rows stacked: one output per pass."""
        embedded = [self._embed(plan, *inp) for plan, inp in zip(plans, inputs, strict=True)]
        spans, start = [], 0
        for plan in plans:
            spans.append((start, start + plan.gen_len))
            start += plan.gen_len
        if len(plans) == 1:
            gen, cos, sin = embedded[0][0], plans[0].cos_gen, plans[0].sin_gen
        else:
            gen = torch.cat([g for g, _ in embedded])
            cos = torch.cat([p.cos_gen for p in plans])
            sin = torch.cat([p.sin_gen for p in plans])
        gen = self._run_layers(plans, spans, gen, cos, sin)
        gen = self.tr.norm_moe_gen(gen)
        return [
            self._head(plan, gen[s:e] if len(plans) > 1 else gen, shapes)
            for plan, (s, e), (_, shapes) in zip(plans, spans, embedded, strict=True)
        ]

    def _attend(self, plans, spans, i: int, q, k, v) -> torch.Tensor:
        """Each pass's queries against its own caption's K/V and its own generation K/V."""
        outs = []
        for plan, (s, e) in zip(plans, spans, strict=True):
            qs, ks, vs = (q, k, v) if len(plans) == 1 else (q[s:e], k[s:e], v[s:e])
            all_k = torch.cat([plan.tkv.k[i], ks], dim=0)
            all_v = torch.cat([plan.tkv.v[i], vs], dim=0)
            outs.append(attend(qs, all_k, all_v, self.opt.attention))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _run_layers(self, plans, spans, gen, cos, sin) -> torch.Tensor:
        if not self.opt.fuse:
            for i, layer in enumerate(self.tr.layers):
                kv = [(p.tkv.k[i], p.tkv.v[i]) for p in plans]
                gen = self._ref_gen_layer(layer, gen, cos, sin, kv, spans)
            return gen
        if self._weights is None:
            self.prepare()
        pre = self._pre_fn if self._pre_fn is not None else gen_pre_attn
        post = self._post_fn if self._post_fn is not None else gen_post_attn
        if self._pre_fn is not None:
            for t in (gen, cos, sin):
                torch._dynamo.maybe_mark_dynamic(t, 0)
        for i, w in enumerate(self._weights):
            q, k, v = pre(gen, cos, sin, w, self.n_heads, self.n_kv, self.head_dim, self.eps)
            o = self._attend(plans, spans, i, q, k, v)
            if self._post_fn is not None:
                torch._dynamo.maybe_mark_dynamic(o, 0)
            gen = post(gen, o, w, self.inter, self.eps)
        return gen

    def _ref_gen_layer(self, layer, gen, cos, sin, kv: list, spans: list | None = None) -> torch.Tensor:
        """The stock layer's generation half with the same modules (bit-identical), for the rows of one or more
        passes: ``kv`` is each pass's caption (K, V), ``spans`` its rows (None: one pass, all rows)."""
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
        spans = spans or [(0, gen.shape[0])]
        outs = []
        for (k_und, v_und), (s, e) in zip(kv, spans, strict=True):
            qs, ks, vs = (q, k, v) if len(spans) == 1 else (q[s:e], k[s:e], v[s:e])
            all_k = torch.cat([k_und, ks], dim=0)
            all_v = torch.cat([v_und, vs], dim=0)
            if self.opt.attention == "stock":
                out = dispatch_attention_fn(
                    qs.unsqueeze(0),
                    all_k.unsqueeze(0),
                    all_v.unsqueeze(0),
                    is_causal=False,
                    enable_gqa=True,
                    backend=proc._attention_backend,
                    parallel_config=proc._parallel_config,
                ).squeeze(0)
            else:
                out = attend(qs, all_k, all_v, self.opt.attention)
            outs.append(out)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        residual = gen + attn.to_add_out(out.flatten(-2, -1))
        return residual + layer.mlp_moe_gen(layer.post_attention_layernorm_moe_gen(residual))

    # -- CUDA graph ----------------------------------------------------------------------------

    def graphs(self) -> dict:
        """The captured step graphs: (plan keys, input sharing) -> StepGraph."""
        return dict(self._graphs)

    def _capture(self, key, plans, pattern, uniq) -> StepGraph | None:
        """Capture the group's step; a capture failure (not a compile failure) leaves this group un-graphed."""

        def fn(inputs):
            return self._gen_forward_multi(plans, [inputs[j] for j in pattern])

        fn(uniq)  # compile and autotune outside the capture; errors go to _degrade
        torch.cuda.synchronize()
        try:
            graph = StepGraph(fn, uniq)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {str(exc)[:500]}"
            log.warning("CUDA graph capture failed (%s); running this group without a graph", msg)
            self.errors.append(f"cuda graph: {msg}")
            self._graph_failed.add(key)
            torch.cuda.synchronize()
            return None
        self._graphs[key] = graph
        self.stats["graph_captures"] += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return graph
