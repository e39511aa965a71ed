# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The fast forward on the tiny model, on CPU: text cache exact, fused layer within float32 noise, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.model.fast_transformer import FastCosmos3Forward, FastOptions
from cosmos3_ros.model.kernels import fuse_linears, fused_gen_layer
from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

S = PolicySettings(prompt="stack the blocks", num_steps=3, image_size=256)


@pytest.fixture(scope="module")
def small_frame():
    from cosmos3_ros.core.synthetic import moving_scene_frame

    return moving_scene_frame(0.4, 96, 128)


@pytest.fixture(scope="module")
def stock_rt(tiny_model):
    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fast=False)


@pytest.fixture(scope="module")
def exact_rt(tiny_model):
    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu")


def test_cpu_defaults_are_the_exact_levers(exact_rt):
    opts = exact_rt.fast_options
    assert opts.exact and opts.text_cache and not (opts.fuse or opts.compile or opts.cuda_graphs)
    assert opts.sync_free_scheduler  # bit-identical on CPU, so on by default
    assert exact_rt.pipe.fast_forward is not None


def test_cuda_defaults_resolve_without_a_gpu():
    opts = FastOptions.resolve("cuda:0")
    assert opts.fuse and opts.compile and opts.cuda_graphs and opts.vae_autotune and opts.uniform_time_embed
    assert opts.attention == "sdpa" and not opts.fp8 and not opts.exact
    assert opts.vae_channels_last and opts.sync_free_scheduler and opts.compile_mode is None
    tuned = FastOptions.resolve("cuda", compile="max-autotune-no-cudagraphs")
    assert tuned.compile and tuned.compile_mode == "max-autotune-no-cudagraphs"
    assert FastOptions.resolve("cuda", fp8=True).fp8
    assert not FastOptions.resolve("cuda", fast=False).text_cache
    assert FastOptions.resolve("cpu").batch_cfg and not FastOptions.resolve("cpu", batch_cfg=False).batch_cfg
    emulated = FastOptions.resolve("cpu", fp8=True, fp8_keep="0:qkv")  # on the CPU: emulated, for tests
    assert emulated.fp8 and emulated.fuse and emulated.fp8_keep == "0:qkv"
    with pytest.raises(ValueError, match="fp8_keep token"):
        FastOptions.resolve("cuda", fp8=True, fp8_keep="qkv,attn")
    with pytest.raises(ValueError, match="cuda_graphs needs"):
        FastOptions.resolve("cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="attention"):
        FastOptions.resolve("cpu", attention="bogus")


def test_text_cache_policy_is_bit_identical_to_stock(exact_rt, stock_rt, small_frame):
    for settings in (S, S.replace(seed=5, guidance=2.0, negative_prompt="blurry")):
        ours = exact_rt.policy(small_frame, settings, return_latents=True)
        ref = stock_rt.policy(small_frame, settings, return_latents=True)
        np.testing.assert_array_equal(ours.actions, ref.actions)
        np.testing.assert_array_equal(ours.latents, ref.latents)
    stats = exact_rt.pipe.fast_forward.stats
    assert stats["fast_steps"] > 0 and stats["stock_steps"] == 0


def test_text_cache_forward_dynamics_frames_identical(exact_rt, stock_rt, small_frame):
    actions = np.linspace(-1, 1, 16 * 10, dtype=np.float32).reshape(16, 10)
    ours = exact_rt.forward_dynamics(small_frame, actions, S)
    ref = stock_rt.forward_dynamics(small_frame, actions, S)
    np.testing.assert_array_equal(ours.frames, ref.frames)


def test_text_stream_runs_once_per_caption(tiny_model, small_frame):
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    ff = rt.pipe.fast_forward
    rt.policy(small_frame, S)
    rt.policy(small_frame, S.replace(seed=9))
    assert ff.stats["text_misses"] == 1 and ff.stats["plans"] == 1
    rt.policy(small_frame, S.replace(prompt="open the drawer"))
    assert ff.stats["text_misses"] == 2


def test_fused_layers_match_stock_within_float32_noise(tiny_model, stock_rt, small_frame):
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fuse=True, attention="sdpa")
    assert rt.fast_options.fuse and rt.fast_options.uniform_time_embed and not rt.fast_options.exact
    ours = rt.policy(small_frame, S, return_latents=True)
    ref = stock_rt.policy(small_frame, S, return_latents=True)
    np.testing.assert_allclose(ours.actions, ref.actions, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.latents, ref.latents, rtol=0, atol=1e-4)
    # The module weights became views into the fused tensors: the stock modules still compute the same.
    layer = rt.pipe.transformer.layers[0]
    fused = rt.pipe.fast_forward._weights[0]["qkv"]
    assert layer.self_attn.add_q_proj.weight.data_ptr() == fused.data_ptr()


def test_fuse_linears_reuses_and_keeps_values():
    torch.manual_seed(0)
    lins = [torch.nn.Linear(8, 3, bias=False), torch.nn.Linear(8, 5, bias=False)]
    before = [lin.weight.detach().clone() for lin in lins]
    fused = fuse_linears(lins)
    assert fused.shape == (8, 8) and fuse_linears(lins) is fused
    for lin, w in zip(lins, before, strict=True):
        torch.testing.assert_close(lin.weight.detach(), w, rtol=0, atol=0)
    x = torch.randn(4, 8)
    torch.testing.assert_close(x @ fused.t(), torch.cat([lin(x) for lin in lins], dim=-1), rtol=0, atol=1e-6)


def test_fused_gen_layer_equals_reference_layer(tiny_model):
    from cosmos3_ros.bench.nano import build_random_components

    tr = build_random_components("tiny", seed=3)["transformer"]
    ff = FastCosmos3Forward(tr, FastOptions(fuse=True))
    ff.prepare()
    g = torch.Generator().manual_seed(0)
    n, u = 7, 5
    cfg = tr.config
    x = torch.randn(n, cfg.hidden_size, generator=g)
    cos = torch.randn(n, 1, cfg.head_dim, generator=g)
    sin = torch.randn(n, 1, cfg.head_dim, generator=g)
    k = torch.randn(u, cfg.num_key_value_heads, cfg.head_dim, generator=g)
    v = torch.randn(u, cfg.num_key_value_heads, cfg.head_dim, generator=g)
    with torch.no_grad():
        ref = ff._ref_gen_layer(tr.layers[0], x, cos, sin, [(k, v)])
        got = fused_gen_layer(
            x, cos, sin, k, v, ff._weights[0], ff.n_heads, ff.n_kv, ff.head_dim, ff.inter, ff.eps, "sdpa"
        )
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_unsupported_calls_fall_back_to_stock(tiny_model, small_frame):
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    ff = rt.pipe.fast_forward
    with torch.enable_grad():
        assert ff._unsupported((), {}) == "gradients enabled"
    with torch.no_grad():
        assert ff._unsupported((1,), {}) == "positional arguments"
        assert ff._unsupported((), {"sound_tokens": [torch.zeros(1)]}) == "sound"
    # Through a whole call: a step cache on the transformer makes every step take the stock path.
    tr = rt.pipe.transformer
    tr._cache_config = object()  # what CacheMixin.enable_cache leaves behind
    try:
        rt.policy(small_frame, S)
    finally:
        tr._cache_config = None
    assert ff.stats["fast_steps"] == 0 and ff.stats["stock_steps"] == S.num_steps
    assert ff.last_fallback == "a step cache is enabled"


def test_fast_forward_is_only_installed_during_calls(exact_rt, small_frame):
    tr = exact_rt.pipe.transformer
    exact_rt.policy(small_frame, S)
    assert "forward" not in tr.__dict__


def test_channels_last_decoder_frames_within_one_level(tiny_model, small_frame, exact_rt):
    actions = np.linspace(-1, 1, 16 * 10, dtype=np.float32).reshape(16, 10)
    ref = exact_rt.forward_dynamics(small_frame, actions, S).frames
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", vae_channels_last=True)
    assert rt.fast_options.vae_channels_last and not rt.fast_options.exact
    got = rt.forward_dynamics(small_frame, actions, S).frames
    assert got.shape == ref.shape
    assert np.abs(got.astype(np.int16) - ref.astype(np.int16)).max() <= 2


def test_preprocess_fast_path_equals_stock():
    from diffusers.video_processor import VideoProcessor

    from cosmos3_ros.model.pipeline import _cached_preprocess

    vp = VideoProcessor(vae_scale_factor=16, resample="bilinear")
    rng = np.random.default_rng(0)
    for shape in [(96, 128, 3), (50, 64, 3)]:  # on the fast path, and one that needs the stock resize
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        ref = vp.preprocess_video([img])
        with _cached_preprocess(vp, torch.device("cpu")):
            first = vp.preprocess_video([img])
            second = vp.preprocess_video([img])
        assert torch.equal(first, ref) and torch.equal(second, ref)
    assert "preprocess_video" not in vp.__dict__


def test_memoized_walks_answer_like_diffusers_and_are_removed_after(exact_rt, small_frame):
    from diffusers.models import modeling_utils as mu
    from diffusers.pipelines.cosmos import mixed_precision as mp

    from cosmos3_ros.model.pipeline import _memoized_walks

    originals = (mu.get_parameter_device, mu.get_parameter_dtype, mp._is_modelopt_fp8_backend)
    tr, vae = exact_rt.pipe.transformer, exact_rt.pipe.vae
    expected = (tr.device, tr.dtype, vae.dtype)
    memo: dict = {}
    with _memoized_walks(tr, (tr, vae), memo):
        assert mu.get_parameter_device is not originals[0]
        with _memoized_walks(tr, (tr, vae), memo):  # nested calls keep the wrappers
            pass
        assert (tr.device, tr.dtype, vae.dtype) == expected == (tr.device, tr.dtype, vae.dtype)
        assert mp._is_modelopt_fp8_backend(tr, None) is False and memo
        other = torch.nn.Linear(2, 2)
        assert mu.get_parameter_dtype(other) == torch.float32  # other modules pass through
    assert (mu.get_parameter_device, mu.get_parameter_dtype, mp._is_modelopt_fp8_backend) == originals
    exact_rt.policy(small_frame, S)
    assert (mu.get_parameter_device, mu.get_parameter_dtype, mp._is_modelopt_fp8_backend) == originals


def test_fused_weights_follow_a_moved_model(tiny_model, small_frame):
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fuse=True)
    first = rt.policy(small_frame, S).actions
    ff = rt.pipe.fast_forward
    old = ff._weights[0]["qkv"]
    rt.pipe.transformer.to(torch.float64).to(torch.float32)  # .to() replaces every weight: views are gone
    again = rt.policy(small_frame, S).actions
    assert ff._weights[0]["qkv"] is not old
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-4)


def test_plans_follow_the_known_row_layout_and_offset(tiny_model, small_frame):
    """A plan (and its CUDA graph) per action layout: which rows are known and where the action stream starts."""
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    ff = rt.pipe.fast_forward
    ff.max_plans = 16
    base = S.replace(domain_name="droid", raw_action_dim=8, num_steps=1)
    row = np.zeros((1, 8), np.float32)
    # 6 action rows, row 0 known, in both; the state row sits at frame 0 (offset 0), the prefix row at frame 1.
    # Same caption (the duration rounds to 1 s in both) and the same 2 latent frames: only the offset differs.
    rt.policy(small_frame, base.replace(action_chunk_size=5, use_state=True), state=row[0])
    rt.policy(small_frame, base.replace(action_chunk_size=6), prefix=row)
    assert ff.stats["plans"] == 2 and ff.stats["text_misses"] == 1
    rt.policy(small_frame, base.replace(action_chunk_size=6, seed=3), prefix=row + 1)  # same layout, other values
    assert ff.stats["plans"] == 2
    rt.policy(small_frame, base.replace(action_chunk_size=6), prefix=np.zeros((2, 8), np.float32))
    assert ff.stats["plans"] == 3
    assert ff.plans()[-1].action_noisy_frame_indexes[0].tolist() == [2, 3, 4, 5]
    assert ff.stats["stock_steps"] == 0


def test_fp8_keep_spec_parses_and_collapses():
    from cosmos3_ros.model.options import Fp8Keep

    keep = Fp8Keep.parse("qkv,0-1,3:down")
    assert keep.keeps(5, "qkv") and keep.keeps(1, "gate_up") and keep.keeps(3, "down")
    assert not keep.keeps(3, "o") and not keep.keeps(2, "down")
    assert Fp8Keep.from_pairs(keep.pairs(4), 4).spec == "qkv,0-1,3:down"
    assert Fp8Keep.from_pairs({(0, "o"), (1, "o"), (3, "o"), (2, "down")}, 4).spec == "0-1:o,3:o,2:down"
    assert Fp8Keep.parse("none").pairs(4) == set() and Fp8Keep.parse("").spec == "none"
    for bad in ("attn", "2-1:o", "0qkv", "1-:down"):
        with pytest.raises(ValueError, match="fp8_keep token"):
            Fp8Keep.parse(bad)
    with pytest.raises(ValueError, match="out of range"):
        Fp8Keep.parse("7:o").check(4)


def test_emulated_fp8_linear_rounds_like_e4m3():
    from cosmos3_ros.model.kernels import fp8_linear, quantize_fp8

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 64, generator=g), torch.randn(32, 64, generator=g)
    w8, scale = quantize_fp8(w)
    got = fp8_linear(x, w8, scale, torch.float32)
    err = float((got - x @ w.t()).norm() / (x @ w.t()).norm())
    assert 1e-3 < err < 8e-2  # e4m3 has 3 mantissa bits: percent-level, not float32-level, error


def test_noise_memo_gives_the_stock_draws_and_generator_state():
    from diffusers.pipelines.cosmos import pipeline_cosmos3_omni as po

    from cosmos3_ros.model.call_hooks import memoized_noise

    def draws(shapes, memo=None):
        gen = torch.Generator().manual_seed(3)
        if memo is None:
            return [po.randn_tensor(s, generator=gen, device=torch.device("cpu")) for s in shapes]
        with memoized_noise(memo):
            return [po.randn_tensor(s, generator=gen, device=torch.device("cpu")) for s in shapes]

    memo: dict = __import__("collections").OrderedDict()
    for shapes in ([(2, 3), (4,)], [(2, 3), (4,)], [(2, 3), (5,)]):  # miss, hit, hit then a new shape
        for a, b in zip(draws(shapes, memo), draws(shapes), strict=True):
            assert torch.equal(a, b)
    assert len(memo) == 3 and po.randn_tensor.__module__ == "diffusers.utils.torch_utils"


def test_frame_tables_are_the_stock_arithmetic():
    from PIL import Image

    from cosmos3_ros.model.call_hooks import unit_lut

    x = np.arange(256, dtype=np.float32)
    assert torch.equal(unit_lut("pil", "cpu"), 2.0 * torch.from_numpy(x / 255.0) - 1.0)
    assert torch.equal(unit_lut("framework", "cpu"), torch.from_numpy(x / np.float32(127.5) - 1.0))
    from diffusers.video_processor import VideoProcessor

    from cosmos3_ros.model.call_hooks import cached_preprocess

    vp = VideoProcessor(vae_scale_factor=16, resample="bilinear")
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8))
    ref = vp.preprocess_video([img])
    with cached_preprocess(vp, torch.device("cpu")):
        assert torch.equal(vp.preprocess_video([img]), ref)


def test_several_passes_in_one_forward_are_row_exact(exact_rt, small_frame):
    """Two different captions' passes stacked in one forward give each pass's own output, bit for bit."""
    ff = exact_rt.pipe.fast_forward
    captured = []
    tr = exact_rt.pipe.transformer
    handle = tr.register_forward_pre_hook(lambda m, a, kw: captured.append(dict(kw)), with_kwargs=True)
    try:
        exact_rt.policy(small_frame, S.replace(num_steps=1))
        exact_rt.policy(small_frame, S.replace(num_steps=1, prompt="open the drawer", seed=4))
    finally:
        handle.remove()
    ff.begin_call()
    with torch.inference_mode():
        plans = [ff._plan_for_call(kw) for kw in captured]
        inputs = [
            (kw["vision_tokens"][0], kw["vision_timesteps"], kw["action_tokens"][0], kw["action_timesteps"])
            for kw in captured
        ]
        both = ff.run_entries(list(zip(plans, inputs, strict=True)))
        alone = [ff.run_entries([(p, i)])[0] for p, i in zip(plans, inputs, strict=True)]
    for got, ref in zip(both, alone, strict=True):
        assert torch.equal(got[0][0], ref[0][0]) and torch.equal(got[2][0], ref[2][0])
