# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""In-process runtime: parity with the stock pipeline, validation, checkpoint round trip, shift, timing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cosmos3_ros.bench.tiny import make_tiny_model
from cosmos3_ros.core.results import NonFiniteOutputError
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.model.runtime import CheckpointNotFoundError, Cosmos3PolicyRuntime, resolve_checkpoint

FAST = PolicySettings(prompt="pick up the red cup", num_steps=4)


@pytest.fixture(scope="module")
def runtime(tiny_model):
    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu")


def _stock_policy(path, image, settings: PolicySettings, output_type="latent"):
    """Call Cosmos3OmniPipeline directly, the way its docs show (a PIL image)."""
    from diffusers import Cosmos3OmniPipeline
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

    pipe = Cosmos3OmniPipeline.from_pretrained(str(path))
    out = pipe(
        prompt=settings.prompt,
        action=CosmosActionCondition(
            mode="policy",
            chunk_size=settings.action_chunk_size,
            domain_name=settings.domain_name,
            resolution_tier=settings.image_size,
            image=Image.fromarray(image),
        ),
        num_inference_steps=settings.num_steps,
        guidance_scale=settings.guidance,
        fps=settings.fps,
        generator=torch.Generator().manual_seed(settings.seed),
        output_type=output_type,
        use_system_prompt=False,
    )
    return out


def test_policy_actions_equal_stock_pipeline(runtime, tiny_model, frame):
    settings = FAST.replace(seed=3)
    ours = runtime.policy(frame, settings)
    stock = _stock_policy(tiny_model, frame, settings)
    np.testing.assert_array_equal(ours.actions, stock.action[0].numpy())
    assert ours.actions.shape == (16, 10) and ours.actions.dtype == np.float32


def test_policy_video_equals_stock_video(runtime, tiny_model, frame):
    settings = FAST.replace(seed=1, action_chunk_size=4)
    ours = runtime.policy(frame, settings, return_video=True)
    stock = _stock_policy(tiny_model, frame, settings, output_type="np")
    np.testing.assert_array_equal(ours.actions, stock.action[0].numpy())
    expected = (np.clip(stock.video, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(ours.video, expected)
    assert ours.video.shape == (5, 240, 320, 3)


def test_forward_dynamics_equals_stock(runtime, tiny_model, frame):
    from diffusers import Cosmos3OmniPipeline
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

    settings = FAST.replace(action_chunk_size=4)
    actions = np.linspace(-1, 1, 40, dtype=np.float32).reshape(4, 10)
    ours = runtime.forward_dynamics(frame, actions, settings)
    pipe = Cosmos3OmniPipeline.from_pretrained(str(tiny_model))
    stock = pipe(
        prompt=settings.prompt,
        action=CosmosActionCondition(
            mode="forward_dynamics",
            chunk_size=4,
            domain_name=settings.domain_name,
            image=Image.fromarray(frame),
            raw_actions=torch.from_numpy(actions),
        ),
        num_inference_steps=settings.num_steps,
        guidance_scale=1.0,
        fps=settings.fps,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        use_system_prompt=False,
    )
    np.testing.assert_array_equal(ours.frames, (np.clip(stock.video, 0, 1) * 255 + 0.5).astype(np.uint8))
    assert ours.frames.shape == (5, 240, 320, 3) and ours.frames.dtype == np.uint8


def test_fast_path_equals_stock_code_path(tiny_model, runtime, frame):
    stock_rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fast=False)
    for settings in (FAST, FAST.replace(guidance=2.0, negative_prompt="blurry", seed=7, view_point="wrist_view")):
        np.testing.assert_array_equal(runtime.policy(frame, settings).actions, stock_rt.policy(frame, settings).actions)


def test_deterministic_per_seed_and_seed_matters(runtime, frame):
    a = runtime.policy(frame, FAST.replace(seed=11)).actions
    b = runtime.policy(frame, FAST.replace(seed=11)).actions
    c = runtime.policy(frame, FAST.replace(seed=12)).actions
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_shift_is_honoured(runtime, frame):
    base = runtime.policy(frame, FAST).actions
    s1 = runtime.policy(frame, FAST.replace(shift=1.0)).actions
    s5 = runtime.policy(frame, FAST.replace(shift=5.0)).actions
    assert not np.allclose(s1, s5), "different shifts must give different samples"
    assert not np.allclose(base, s5), "a shift must switch away from the checkpoint's Karras schedule"
    # And back: None restores the checkpoint schedule exactly.
    np.testing.assert_array_equal(runtime.policy(frame, FAST).actions, base)


@pytest.mark.parametrize(
    "domain,width", [("bridge", 10), ("droid_lerobot", 10), ("pusht", 2), ("galbot", 30), ("hand_pose", 57)]
)
def test_every_domain_width(runtime, frame, domain, width):
    chunk = runtime.policy(frame, FAST.replace(domain_name=domain, action_chunk_size=2, num_steps=2))
    assert chunk.actions.shape == (2, width)


def test_timing_breakdown_and_stamp(runtime, frame):
    chunk = runtime.policy(frame, FAST, observation_stamp=12.5)
    t = chunk.timing
    assert chunk.observation_stamp == 12.5
    assert t.total_s > 0 and t.denoise_s > 0 and t.encode_s > 0
    parts = t.preprocess_s + t.encode_s + t.denoise_s + t.decode_s
    assert abs(parts - t.total_s) < 1e-6


def test_policy_returns_latents_when_asked(runtime, frame):
    chunk = runtime.policy(frame, FAST, return_latents=True)
    assert chunk.latents is not None and chunk.latents.shape[:3] == (1, 48, 5)


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((240, 320), np.uint8), "HxWx3"),
        (np.zeros((240, 320, 4), np.uint8), "HxWx3"),
        (np.zeros((240, 320, 3), np.float32), "uint8"),
        (np.zeros((0, 320, 3), np.uint8), "HxWx3"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_are_clear_errors(runtime, image, match):
    with pytest.raises(ValueError, match=match):
        runtime.policy(image, FAST)


def test_bad_actions_for_forward_dynamics(runtime, frame):
    with pytest.raises(ValueError, match="width 7 does not match"):
        runtime.forward_dynamics(frame, np.zeros((16, 7), np.float32), FAST)
    with pytest.raises(ValueError, match="non-finite"):
        runtime.forward_dynamics(frame, np.full((16, 10), np.nan, np.float32), FAST)
    with pytest.raises(ValueError, match=r"shape \[T, D\]"):
        runtime.forward_dynamics(frame, np.zeros(10, np.float32), FAST)


def test_non_finite_output_never_returned(tiny_model, frame):
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu")
    with torch.no_grad():
        rt.pipe.transformer.norm_moe_gen.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match="non-finite"):
        rt.policy(frame, FAST)


def test_domain_wider_than_checkpoint_rejected(runtime, frame):
    runtime_dim = runtime.action_dim
    try:
        runtime.action_dim = 8
        with pytest.raises(ValueError, match="action_dim is 8"):
            runtime.policy(frame, FAST)
    finally:
        runtime.action_dim = runtime_dim


def test_tiny_checkpoint_round_trip_and_determinism(tmp_path, tiny_model):
    a = make_tiny_model(tmp_path / "a", seed=0)
    b = make_tiny_model(tmp_path / "b", seed=5)
    index = json.loads((a / "model_index.json").read_text())
    assert index["_class_name"] == "Cosmos3OmniPipeline"
    for sub in ("transformer", "vae", "scheduler", "text_tokenizer"):
        assert (a / sub).is_dir()
    same = (a / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert same == (tiny_model / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert same != (b / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError):
        make_tiny_model(a)
    from diffusers import Cosmos3OmniPipeline

    pipe = Cosmos3OmniPipeline.from_pretrained(str(a))
    assert pipe.transformer.config.action_gen and pipe.transformer.config.action_dim == 64
    assert pipe.text_tokenizer.convert_tokens_to_ids("<|vision_start|>") != pipe.text_tokenizer.unk_token_id


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not in the local Hugging Face cache"):
        resolve_checkpoint("nvidia/Cosmos3-Nano-Policy", cache_dir=tmp_path / "hf")
    with pytest.raises(CheckpointNotFoundError, match="no such directory"):
        resolve_checkpoint(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match=r"model_index\.json"):
        resolve_checkpoint(str(tmp_path / "empty"))


def test_resolve_checkpoint_from_hf_cache(tmp_path, monkeypatch, tiny_model):
    """A model id present in the local HF cache layout resolves offline."""
    import shutil

    hub = tmp_path / "hf" / "hub"
    snap = hub / "models--acme--tiny-cosmos" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snap)
    (hub / "models--acme--tiny-cosmos" / "refs").mkdir(parents=True)
    (hub / "models--acme--tiny-cosmos" / "refs" / "main").write_text("0" * 40)
    assert resolve_checkpoint("acme/tiny-cosmos", cache_dir=hub) == snap
    with pytest.raises(CheckpointNotFoundError, match="not in the local Hugging Face cache"):
        resolve_checkpoint("acme/other-model", cache_dir=hub)


def test_domain_table_matches_diffusers():
    from diffusers.pipelines.cosmos import pipeline_cosmos3_omni as p

    from cosmos3_ros.core.settings import DOMAIN_ACTION_WIDTH, RESOLUTION_TIERS, VIEW_POINTS

    assert p._EMBODIMENT_TO_RAW_ACTION_DIM == DOMAIN_ACTION_WIDTH
    assert sorted(int(k) for k in p._ACTION_RESOLUTION_BINS) == list(RESOLUTION_TIERS)
    assert set(p._ACTION_VIEWPOINT_TEMPLATES) == set(VIEW_POINTS)


def test_conditioning_frame_is_normalised_to_unit_range(runtime, frame):
    """The VAE must see pixels in [-1, 1]: diffusers leaves uint8 numpy frames unscaled, so we pass PIL."""
    seen = []
    original = runtime.pipe._encode_video

    def spy(x):
        seen.append((float(x.min()), float(x.max())))
        return original(x)

    runtime.pipe._encode_video = spy
    try:
        runtime.policy(frame, FAST)
    finally:
        runtime.pipe._encode_video = original
    lo, hi = seen[0]
    assert -1.0 <= lo and hi <= 1.0 and hi - lo > 1.0


def test_the_fp8_setting_reaches_the_runtime(tiny_model):
    """``fp8: true`` (node parameter, sidecar and predict flag) builds the runtime with FP8 (emulated on a CPU)."""
    from cosmos3_ros.backends import make_runtime
    from cosmos3_ros.control.config import values_from_overrides

    values = values_from_overrides({"model": str(tiny_model), "device": "cpu", "fp8": True})
    rt = make_runtime(values)
    try:
        assert rt.fast_options.fp8 is True
    finally:
        rt.close()
