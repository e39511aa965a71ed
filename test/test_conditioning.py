# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
# ruff: noqa: SLF001  (these tests spy on the pipeline's diffusers override points, like test_runtime.py)
"""``conditioning: cosmos_framework``: NVIDIA's plain caption and its unresized, padded frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.model.contract import (
    CONCAT_VIEW_DESCRIPTION,
    canvas_for,
    fit_to_canvas,
    framework_caption,
    framework_conditioning,
)

DROID_PROMPT = "Pick up the banana and place it in the bowl"
#: What NVIDIA's DROID server feeds the model for DROID_PROMPT (cosmos-framework's legacy string appenders).
DROID_CAPTION = (
    "Pick up the banana and place it in the bowl. This video contains concatenated views from multiple camera "
    "perspectives. The top row is from the wrist-mounted camera. The bottom row contains two horizontally "
    "concatenated third-person perspective views of the scene from opposite sides, with the robot visible. "
    "The video is 2.0 seconds long and is of 15 FPS. This video is of 544x736 resolution."
)
#: NVIDIA's DROID serving settings, small where it does not matter (steps; the tiny model is random anyway).
DROID = PolicySettings(
    prompt=DROID_PROMPT,
    domain_name="droid",
    raw_action_dim=8,
    use_state=True,
    action_chunk_size=32,
    fps=15.0,
    image_size=480,
    view_point="concat_view",
    conditioning="cosmos_framework",
    num_steps=1,
)


def droid_frame(seed: int = 0) -> np.ndarray:
    """A 540x640 composed DROID frame (wrist 360x640 on top, two 180x320 exteriors below), random pixels."""
    return np.random.default_rng(seed).integers(0, 256, (540, 640, 3), dtype=np.uint8)


def test_droid_caption_is_nvidias_string():
    height, width = canvas_for(540, 640, 480)
    assert (height, width) == (544, 736)
    caption = framework_caption(
        DROID_PROMPT, view_point="concat_view", num_frames=33, fps=15.0, height=height, width=width
    )
    assert caption == DROID_CAPTION
    assert CONCAT_VIEW_DESCRIPTION in caption and "{" not in caption


def test_caption_for_other_view_points_and_punctuation():
    kw = {"num_frames": 17, "fps": 5.0, "height": 256, "width": 320}
    assert framework_caption("open the drawer.", view_point="wrist_view", **kw) == (
        "open the drawer. This video is captured from a wrist-mounted camera. "
        "The video is 3.0 seconds long and is of 5 FPS. This video is of 256x320 resolution."
    )
    ego = framework_caption("open the drawer  ", view_point="ego_view", **kw)
    assert ego.startswith("open the drawer. This video is captured from a first-person perspective")
    assert CONCAT_VIEW_DESCRIPTION not in ego
    assert framework_caption("", view_point="concat_view", **kw) == ""  # the unconditional caption stays empty


def test_540x640_is_padded_without_resizing():
    img = droid_frame(1)
    frames, image_size, h, w = framework_conditioning(img, 480, 1, "cpu", torch.float32)
    assert (h, w) == (544, 736) and frames.shape == (1, 3, 1, 544, 736)
    assert image_size.tolist() == [544.0, 736.0, 540.0, 640.0]
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0
    got = frames[0, :, 0]
    torch.testing.assert_close(got[:, :540, :640], x, rtol=0, atol=0)  # the input's pixels, unresized
    # Reflection padding, right 96 and bottom 4 (no edge row repeated).
    torch.testing.assert_close(got[:, :540, 640:], x[:, :, 543:639].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(got[:, 540:, :640], x[:, 535:539, :].flip(-2), rtol=0, atol=0)
    # diffusers 0.42.1 resizes the same frame to 528 rows first.
    from diffusers.video_processor import VideoProcessor

    assert VideoProcessor(vae_scale_factor=16).preprocess_video([img]).shape[-2:] == (528, 640)


def test_larger_frame_is_resized_then_padded():
    frame = torch.from_numpy(droid_frame(2)).permute(2, 0, 1)
    out, ch, cw = fit_to_canvas(frame, 256, 320)  # scale min(320/640, 256/540) = 0.474
    assert (ch, cw) == (256, 303) and out.shape == (3, 256, 320)
    assert out[:, :, :303].dtype == torch.float32 and torch.equal(out, out.round())  # uint8 values
    small, ch, cw = fit_to_canvas(frame[:, :20, :30], 256, 320)  # pads larger than the content: edge
    assert (ch, cw) == (20, 30) and torch.equal(small[:, 255, 319], frame[:, 19, 29].float())


@pytest.fixture(scope="module")
def runtimes(tiny_model):
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    return Cosmos3PolicyRuntime(str(tiny_model), device="cpu"), Cosmos3PolicyRuntime(
        str(tiny_model), device="cpu", fast=False
    )


def _captured_call(rt, image, settings, state):
    """Run one policy call; return (user texts given to the chat template, VAE inputs, actions)."""
    pipe = rt.pipe
    texts, encoded = [], []
    template, encode = pipe.text_tokenizer.apply_chat_template, pipe._encode_video

    def spy_template(conversation, *args, **kwargs):
        texts.append([m["content"] for m in conversation])
        return template(conversation, *args, **kwargs)

    def spy_encode(x):
        encoded.append(x[:, :, :1].detach().clone())
        return encode(x)

    pipe.text_tokenizer.apply_chat_template, pipe._encode_video = spy_template, spy_encode
    try:
        actions = rt.policy(image, settings, state=state).actions
    finally:
        del pipe.text_tokenizer.apply_chat_template, pipe._encode_video
    return texts, encoded, actions


def test_policy_call_uses_nvidias_caption_and_unresized_frame(runtimes):
    fast, stock = runtimes
    img = droid_frame(3)
    state = np.linspace(-1, 1, 8, dtype=np.float32)
    texts, encoded, actions = _captured_call(fast, img, DROID, state)
    assert texts == [[DROID_CAPTION], [""]]  # no system prompt, empty negative prompt
    x = encoded[0]
    assert x.shape[-2:] == (544, 736)
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0
    torch.testing.assert_close(x[0, :, 0, :540, :640], expected, rtol=0, atol=0)
    assert actions.shape == (32, 8)
    # The stock code path (fast=False) gives the same caption, frame and actions (a shorter chunk: cheaper VAE).
    short = DROID.replace(action_chunk_size=4)
    f_texts, f_encoded, f_actions = _captured_call(fast, img, short, state)
    s_texts, s_encoded, s_actions = _captured_call(stock, img, short, state)
    assert s_texts == f_texts and "The video is 0.0 seconds long and is of 15 FPS." in f_texts[0][0]
    torch.testing.assert_close(s_encoded[0], f_encoded[0], rtol=0, atol=0)
    np.testing.assert_array_equal(s_actions, f_actions)


def test_diffusers_conditioning_is_unchanged(runtimes):
    fast, _ = runtimes
    img = droid_frame(4)
    s = DROID.replace(conditioning="diffusers", action_chunk_size=4, use_state=False)
    texts, encoded, _ = _captured_call(fast, img, s, None)
    assert texts[0][0].startswith('{"cinematography"')  # diffusers' JSON action caption
    x = encoded[0]
    assert x.shape[-2:] == (544, 736)
    # diffusers resized the 540 rows to 528 before padding: the content is not the input's pixels.
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0
    assert not torch.allclose(x[0, :, 0, :528, :640], expected[:, :528], atol=1e-3)
