# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Batched calls on the tiny model (CPU): policy_batch and both guidance passes in one forward, exact per sample;
the guidance interval."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.core.backend import BatchedPolicy, PolicyCall, batch_key
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

# DROID-shaped and small: guided, a state row, 8-wide actions.
S = PolicySettings(
    prompt="stack the blocks",
    domain_name="droid",
    raw_action_dim=8,
    action_chunk_size=6,
    fps=15.0,
    num_steps=3,
    image_size=256,
    guidance=2.5,
    use_state=True,
)
PROMPTS = [("stack the blocks", ""), ("open the drawer", "blurry"), ("pick up the cup", "")]


def _calls(settings=S, prefix_rows: int = 1) -> list[PolicyCall]:
    out = []
    for i, (prompt, negative) in enumerate(PROMPTS):
        prefix = np.full((prefix_rows, 8), -0.2 * i, np.float32) if prefix_rows else None
        out.append(
            PolicyCall(
                moving_scene_frame(0.3 * i, 96, 128),
                settings.replace(prompt=prompt, seed=i, negative_prompt=negative),
                observation_stamp=float(i),
                state=np.full(8, 0.1 * i, np.float32),
                prefix=prefix,
            )
        )
    return out


@pytest.fixture(scope="module")
def rt(tiny_model):
    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu")


def test_policy_batch_is_each_single_call_bit_for_bit(rt):
    calls = _calls()
    assert isinstance(rt, BatchedPolicy) and len({batch_key(c) for c in calls}) == 1
    first = rt.policy_batch(calls)  # learns which unconditional layout follows each conditional one
    assert rt.pipe.last_batch["calls"] == 3 and rt.pipe.last_batch["forwards"] > S.num_steps
    again = rt.policy_batch(calls)
    # From the second call on, one forward per step carries every call's conditional and unconditional pass.
    assert rt.pipe.last_batch == {"calls": 3, "forwards": S.num_steps, "max_passes": 6}
    for c, a, b in zip(calls, first, again, strict=True):
        one = rt.policy(c.image, c.settings, state=c.state, prefix=c.prefix)
        np.testing.assert_array_equal(a.actions, one.actions)
        np.testing.assert_array_equal(b.actions, one.actions)
        np.testing.assert_array_equal(a.actions[:1], c.prefix)  # given rows come back as given
        assert a.observation_stamp == c.observation_stamp and a.timing.total_s > 0
    assert not np.allclose(first[0].actions, first[1].actions)  # each sample keeps its own prompt and seed


def test_policy_batch_equals_the_stock_code_path(rt, tiny_model):
    stock = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fast=False)
    calls = _calls(S.replace(guidance=1.0), prefix_rows=0)
    got = rt.policy_batch(calls)
    ref = stock.policy_batch(calls)  # no fast path: one call after the other
    assert "last_batch" not in stock.pipe.__dict__
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)


def test_policy_batch_rejects_what_cannot_share_a_batch(rt):
    calls = _calls()
    with pytest.raises(ValueError, match="call 1 cannot share a batch"):
        rt.policy_batch([calls[0], PolicyCall(calls[1].image, calls[1].settings.replace(num_steps=2))])
    bad = PolicyCall(calls[2].image, calls[2].settings, state=np.full(8, np.nan, np.float32), prefix=calls[2].prefix)
    with pytest.raises(ValueError, match="call 2: state contains"):
        rt.policy_batch([*calls[:2], bad])
    assert rt.policy_batch([]) == []
    single = rt.policy_batch(calls[:1])
    np.testing.assert_array_equal(
        single[0].actions,
        rt.policy(calls[0].image, calls[0].settings, state=calls[0].state, prefix=calls[0].prefix).actions,
    )


def test_both_guidance_passes_in_one_forward_are_exact(rt, tiny_model):
    stock = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fast=False)
    c = _calls()[1]
    ff = rt.pipe.fast_forward
    for _ in range(2):
        before = ff.stats["cfg_batched_steps"]
        ours = rt.policy(c.image, c.settings, state=c.state, prefix=c.prefix).actions
        np.testing.assert_array_equal(ours, stock.policy(c.image, c.settings, state=c.state, prefix=c.prefix).actions)
    assert ff.stats["cfg_batched_steps"] - before == S.num_steps  # the second call batched every step


def test_guidance_steps_guides_the_first_steps_only(rt, tiny_model):
    stock = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fast=False)
    c = _calls()[0]
    interval = c.settings.replace(guidance_steps=1)
    ours = rt.policy(c.image, interval, state=c.state).actions
    np.testing.assert_array_equal(ours, stock.policy(c.image, interval, state=c.state).actions)
    full = rt.policy(c.image, c.settings, state=c.state).actions
    assert not np.allclose(ours, full)
    unguided = rt.policy(c.image, c.settings.replace(guidance=1.0), state=c.state).actions
    assert not np.allclose(ours, unguided)
    # As many steps as the loop has: the same as guiding every step.
    every = rt.policy(c.image, c.settings.replace(guidance_steps=S.num_steps), state=c.state).actions
    np.testing.assert_array_equal(every, full)
    assert batch_key(PolicyCall(c.image, interval)) != batch_key(PolicyCall(c.image, c.settings))


def test_fp8_emulated_keeps_the_listed_layers(tiny_model):
    rt = Cosmos3PolicyRuntime(str(tiny_model), device="cpu", fp8=True, fp8_keep="qkv,1")
    c = _calls()[0]
    got = rt.policy(c.image, c.settings, state=c.state).actions
    w = rt.pipe.fast_forward.weights
    assert not isinstance(w[0]["qkv"], tuple) and isinstance(w[0]["gu"], tuple) and isinstance(w[0]["down"], tuple)
    assert all(not isinstance(w[1][k], tuple) for k in ("qkv", "o", "gu", "down"))
    assert np.isfinite(got).all() and got.shape == (6, 8)
