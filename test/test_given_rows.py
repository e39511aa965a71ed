# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
# ruff: noqa: SLF001  (these tests spy on the pipeline's diffusers override points, like test_runtime.py)
"""Known action rows (state row, prefix rows) and an explicit action width on the tiny model (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

# NVIDIA's DROID policy shape, small: joint positions + gripper (8 wide), a state row, a short chunk.
S = PolicySettings(
    prompt="stack the blocks",
    domain_name="droid",
    raw_action_dim=8,
    action_chunk_size=6,
    fps=15.0,
    num_steps=2,
    image_size=256,
)
STATE = np.linspace(-0.5, 0.9, 8, dtype=np.float32)
PREFIX = (np.arange(16, dtype=np.float32).reshape(2, 8) - 7.5) / 4.0


@pytest.fixture(scope="module")
def small_frame():
    from cosmos3_ros.core.synthetic import moving_scene_frame

    return moving_scene_frame(0.7, 96, 128)


@pytest.fixture(scope="module")
def rt(tiny_model):
    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu")


@pytest.fixture(scope="module")
def stock_rt(tiny_model):
    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fast=False)


def test_prefix_rows_come_back_unchanged_and_condition_the_rest(rt, small_frame):
    a = rt.policy(small_frame, S, prefix=PREFIX).actions
    other = PREFIX[::-1] * 3.0
    b = rt.policy(small_frame, S, prefix=other).actions
    free = rt.policy(small_frame, S).actions
    assert a.shape == b.shape == (6, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:2], PREFIX)  # bit for bit
    np.testing.assert_array_equal(b[:2], other)
    assert not np.allclose(a[2:], b[2:]), "the other rows must depend on the given prefix"
    assert not np.allclose(a[2:], free[2:])
    one = rt.policy(small_frame, S, prefix=PREFIX[:1]).actions
    np.testing.assert_array_equal(one[:1], PREFIX[:1])
    assert not np.allclose(one[1:2], PREFIX[1:2])  # row 1 is generated now


def test_state_row_conditions_the_chunk_and_is_trimmed(rt, small_frame):
    s = S.replace(use_state=True)
    a = rt.policy(small_frame, s, state=STATE).actions
    b = rt.policy(small_frame, s, state=-STATE * 2).actions
    assert a.shape == b.shape == (6, 8)  # the state row is not returned
    assert not np.allclose(a, b), "the state row must change the chunk"
    assert not np.allclose(a, rt.policy(small_frame, S).actions)
    # With use_state off a state is ignored.
    np.testing.assert_array_equal(rt.policy(small_frame, S, state=STATE).actions, rt.policy(small_frame, S).actions)
    both = rt.policy(small_frame, s, state=STATE, prefix=PREFIX).actions
    assert both.shape == (6, 8)
    np.testing.assert_array_equal(both[:2], PREFIX)


def test_same_inputs_and_seed_give_the_same_chunk(rt, small_frame):
    s = S.replace(use_state=True, seed=4)
    a = rt.policy(small_frame, s, state=STATE, prefix=PREFIX).actions
    b = rt.policy(small_frame, s, state=STATE.copy(), prefix=PREFIX.copy()).actions
    c = rt.policy(small_frame, s.replace(seed=5), state=STATE, prefix=PREFIX).actions
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[2:], c[2:])


@pytest.mark.parametrize(
    "changes,state,prefix",
    [
        ({"use_state": True}, STATE, None),
        ({}, None, PREFIX),
        ({"use_state": True}, STATE, PREFIX),
        ({"use_state": True, "guidance": 2.0, "negative_prompt": "blurry", "seed": 9}, STATE, PREFIX[:1]),
    ],
)
def test_fast_path_equals_stock_code_path_with_known_rows(rt, stock_rt, small_frame, changes, state, prefix):
    s = S.replace(**changes)
    ours = rt.policy(small_frame, s, state=state, prefix=prefix, return_latents=True)
    ref = stock_rt.policy(small_frame, s, state=state, prefix=prefix, return_latents=True)
    np.testing.assert_array_equal(ours.actions, ref.actions)
    np.testing.assert_array_equal(ours.latents, ref.latents)
    assert rt.pipe.fast_forward.stats["stock_steps"] == 0


def test_no_known_rows_is_the_stock_pipeline_bit_for_bit(rt, tiny_model, small_frame):
    """Through ActionRequest with nothing given (and the table's width spelt out) the stock pipeline's actions."""
    from diffusers import Cosmos3OmniPipeline
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition
    from PIL import Image

    s = S.replace(raw_action_dim=10, seed=2)
    pipe = Cosmos3OmniPipeline.from_pretrained(str(tiny_model))
    stock = pipe(
        prompt=s.prompt,
        action=CosmosActionCondition(
            mode="policy",
            chunk_size=s.action_chunk_size,
            domain_name=s.domain_name,
            resolution_tier=s.image_size,
            image=Image.fromarray(small_frame),
        ),
        num_inference_steps=s.num_steps,
        guidance_scale=s.guidance,
        fps=s.fps,
        generator=torch.Generator().manual_seed(s.seed),
        output_type="latent",
        use_system_prompt=False,
    )
    np.testing.assert_array_equal(rt.policy(small_frame, s).actions, stock.action[0].numpy())


def test_raw_action_dim_sets_the_width_and_masks_the_other_channels(rt, stock_rt, small_frame):
    seen: dict = {}
    for runtime in (rt, stock_rt):
        pipe = runtime.pipe
        prepare, mask = pipe.prepare_latents, pipe._mask_velocity_predictions

        def spy_prepare(*args, _orig=prepare, **kwargs):
            out = _orig(*args, **kwargs)
            seen["latents"], seen["raw"] = out[2].clone(), out[10]
            return out

        def spy_mask(*args, _orig=mask, **kwargs):
            out = _orig(*args, **kwargs)
            seen.setdefault("velocity", []).append(out[2].clone())
            seen.setdefault("raw_arg", set()).add(kwargs.get("raw_action_dim"))
            return out

        pipe.prepare_latents, pipe._mask_velocity_predictions = spy_prepare, spy_mask
        try:
            chunk = runtime.policy(small_frame, S.replace(use_state=True), state=STATE, prefix=PREFIX)
        finally:
            del pipe.prepare_latents, pipe._mask_velocity_predictions
        assert chunk.actions.shape == (6, 8)
        assert seen["raw"] == 8 and seen["raw_arg"] == {8}
        lat = seen["latents"]
        assert lat.shape == (7, 64) and torch.count_nonzero(lat[:, 8:]) == 0
        torch.testing.assert_close(lat[0, :8], torch.from_numpy(STATE), rtol=0, atol=0)
        torch.testing.assert_close(lat[1:3, :8], torch.from_numpy(PREFIX), rtol=0, atol=0)
        for v in seen.pop("velocity"):
            assert torch.count_nonzero(v[:, 8:]) == 0 and torch.count_nonzero(v[:3]) == 0  # known rows: zero velocity
        seen.clear()
    # The domain's table width when raw_action_dim is 0.
    assert rt.policy(small_frame, S.replace(raw_action_dim=0)).actions.shape == (6, 10)


def test_prepare_action_segment_offset_is_zero_with_a_state_row(rt):
    from diffusers import Cosmos3OmniPipeline
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import get_3d_mrope_ids_vae_tokens

    pipe = rt.pipe
    cfg = pipe.transformer.config
    tokens = torch.zeros(7, 64)

    def expected(offset):
        ids, _ = get_3d_mrope_ids_vae_tokens(
            7, 1, 1, 1000.0, True, 15.0, float(cfg.base_fps), 1, pipe.vae_scale_factor_temporal, offset
        )
        return ids

    kwargs = {"mrope_offset": 1000.0, "action_fps": 15.0, "curr": 40, "device": "cpu"}
    with_state = pipe._prepare_action_segment(tokens, [0, 1, 2], history_length=1, **kwargs)
    without = pipe._prepare_action_segment(tokens, [0, 1], history_length=0, **kwargs)
    stock = Cosmos3OmniPipeline._prepare_action_segment(pipe, tokens, [0, 1], **kwargs)
    torch.testing.assert_close(with_state["action_mrope_ids"], expected(0), rtol=0, atol=0)
    torch.testing.assert_close(without["action_mrope_ids"], expected(1), rtol=0, atol=0)
    assert float(with_state["action_mrope_ids"][0, 0]) == 1000.0  # the state row sits at video frame 0
    for key in ("action_mrope_ids", "action_mse_loss_indexes", "action_sequence_indexes"):
        torch.testing.assert_close(without[key], stock[key], rtol=0, atol=0)
    assert with_state["action_mse_loss_indexes"].tolist() == list(range(43, 47))
    assert with_state["num_noisy_action_tokens"] == 4
    # Inside a call the offset follows the call's state row.
    got = []
    segment = pipe._prepare_action_segment

    def spy(*args, **kw):
        out = segment(*args, **kw)
        got.append(out["action_mrope_ids"][0, :2].tolist())
        return out

    pipe._prepare_action_segment = spy
    try:
        rt.policy(np.zeros((64, 64, 3), np.uint8), S.replace(use_state=True, action_chunk_size=2), state=STATE)
        rt.policy(np.zeros((64, 64, 3), np.uint8), S.replace(action_chunk_size=2))
    finally:
        del pipe._prepare_action_segment
    step = got[0][1] - got[0][0]
    assert got[0][1] == got[2][0] and got[2][0] - got[0][0] == step  # offset 0, then 1: one frame later


@pytest.mark.parametrize(
    "changes,state,prefix,match",
    [
        ({"use_state": True}, None, None, "use_state is set but no state"),
        ({"use_state": True}, np.zeros(7, np.float32), None, r"state must have shape \[8\]"),
        ({"use_state": True}, np.zeros((1, 8), np.float32), None, r"state must have shape \[8\]"),
        ({"use_state": True}, np.full(8, np.nan, np.float32), None, "state contains 8 non-finite"),
        ({"use_state": True}, np.array(["a"] * 8), None, "state must be numeric"),
        ({}, None, np.zeros((2, 10), np.float32), r"prefix must have shape \[d, 8\]"),
        ({}, None, np.zeros(8, np.float32), r"prefix must have shape \[d, 8\]"),
        ({}, None, np.zeros((0, 8), np.float32), "prefix must have 1 to 5 rows"),
        ({}, None, np.zeros((6, 8), np.float32), "prefix must have 1 to 5 rows"),
        ({}, None, np.full((2, 8), np.inf, np.float32), "prefix contains 16 non-finite"),
    ],
)
def test_bad_known_rows_are_clear_errors(rt, small_frame, changes, state, prefix, match):
    with pytest.raises(ValueError, match=match):
        rt.policy(small_frame, S.replace(**changes), state=state, prefix=prefix)


def test_action_request_checks(small_frame):
    from cosmos3_ros.model.given_rows import ActionRequest

    base = {"chunk_size": 4, "domain_name": "droid_lerobot", "image": small_frame, "raw_action_width": 8}
    with pytest.raises(ValueError, match="for mode='policy'"):
        ActionRequest(mode="forward_dynamics", raw_actions=torch.zeros(4, 8), prefix=np.zeros((1, 8)), **base)
    with pytest.raises(ValueError, match=r"width \(10\) does not match the action width \(8\)"):
        ActionRequest(mode="forward_dynamics", raw_actions=torch.zeros(4, 10), **base)
    with pytest.raises(ValueError, match="conditioning 'nvidia' unknown"):
        ActionRequest(mode="policy", conditioning="nvidia", **base)
    req = ActionRequest(mode="policy", state=np.ones(8), prefix=np.ones((3, 8)), **base)
    assert req.raw_action_dim == 8 and req.history_length == 1 and req.num_prefix == 3
    assert req.state.dtype == torch.float32 and req.prefix.shape == (3, 8)
    stock_width = ActionRequest(mode="policy", chunk_size=4, domain_name="droid_lerobot", image=small_frame)
    assert stock_width.raw_action_dim == 10  # no explicit width: diffusers' table


def test_forward_dynamics_takes_the_explicit_width(rt, stock_rt, small_frame):
    actions = np.linspace(-1, 1, 6 * 8, dtype=np.float32).reshape(6, 8)
    ours = rt.forward_dynamics(small_frame, actions, S)
    ref = stock_rt.forward_dynamics(small_frame, actions, S)
    assert ours.frames.shape == (5, 96, 128, 3)  # 7 frames -> 2 latent frames -> 5 decoded
    np.testing.assert_array_equal(ours.frames, ref.frames)
