# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sync-free UniPC scheduler is bit-identical to diffusers' on the CPU, over whole schedules."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UniPCMultistepScheduler

from cosmos3_ros.bench.tiny import RELEASED_SCHEDULER
from cosmos3_ros.model.fast_scheduler import SyncFreeUniPCMultistepScheduler, sync_free


@pytest.mark.parametrize(
    "config",
    [
        RELEASED_SCHEDULER,  # Karras sigmas, as released
        dict(RELEASED_SCHEDULER, use_karras_sigmas=False, flow_shift=3.0),  # native flow schedule with a shift
        dict(RELEASED_SCHEDULER, solver_order=3),  # exercises the linalg.solve branches
    ],
)
@pytest.mark.parametrize("steps", [1, 2, 10, 30])
def test_same_samples_as_stock(config, steps):
    stock = UniPCMultistepScheduler(**config)
    ours = SyncFreeUniPCMultistepScheduler.from_config(stock.config)
    g = torch.Generator().manual_seed(steps)
    x_a = torch.randn(1, 48, 5, 6, 8, generator=g)
    x_b = x_a.clone()
    act_a = torch.randn(1, 16, 64, generator=g)
    act_b = act_a.clone()
    stock.set_timesteps(steps)
    ours.set_timesteps(steps)
    stock_act, ours_act = copy.deepcopy(stock), copy.deepcopy(ours)
    for t in stock.timesteps:
        v = torch.randn(x_a.shape, generator=g)
        va = torch.randn(act_a.shape, generator=g)
        x_a = stock.step(v, t, x_a, return_dict=False)[0]
        x_b = ours.step(v, t, x_b, return_dict=False)[0]
        act_a = stock_act.step(va, t, act_a, return_dict=False)[0]
        act_b = ours_act.step(va, t, act_b, return_dict=False)[0]
        torch.testing.assert_close(x_b, x_a, rtol=0, atol=0)
        torch.testing.assert_close(act_b, act_a, rtol=0, atol=0)


def test_sync_free_wraps_only_unipc():
    unipc = UniPCMultistepScheduler(**RELEASED_SCHEDULER)
    wrapped = sync_free(unipc)
    assert type(wrapped) is SyncFreeUniPCMultistepScheduler and wrapped.config == unipc.config
    assert sync_free(wrapped) is wrapped
    other = object()
    assert sync_free(other) is other
