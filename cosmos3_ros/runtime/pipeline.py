# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``Cosmos3OmniPipeline`` with exact (number-preserving) speed-ups for the action modes, and timing.

Each speed-up keeps actions equal to the stock pipeline's for the same inputs and seed:

* In policy and forward_dynamics only latent frame 0 of the conditioning clip stays clean;
  the other latent frames are replaced by noise. The causal Wan VAE computes latent frame 0
  from pixel frame 0 alone, so we preprocess and VAE-encode that one frame and zero-fill the
  other latent frames (they are multiplied by a zero mask).
* The caller skips the VAE decode when no video is needed (``output_type="latent"``).

With ``fast=False`` the class behaves exactly like the stock pipeline (used by parity
tests and the benchmark's baseline).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from diffusers import Cosmos3OmniPipeline


class Cosmos3ActionPipeline(Cosmos3OmniPipeline):
    """Stock pipeline plus the exact action-mode speed-ups and per-phase timing marks."""

    fast: bool = True

    def _reset_marks(self) -> None:
        self._marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        marks = getattr(self, "_marks", None)
        if marks is None:
            return
        if self.transformer.device.type == "cuda":
            torch.cuda.synchronize(self.transformer.device)
        marks.setdefault(name, time.perf_counter())

    def _prepare_action_video_conditioning(
        self,
        conditioning_clip: Any,
        resolution_tier: int,
        num_frames: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        single_frame = isinstance(conditioning_clip, list) and len(conditioning_clip) == 1
        if not (self.fast and single_frame):
            return super()._prepare_action_video_conditioning(
                conditioning_clip, resolution_tier, num_frames, device, dtype
            )
        # The stock code repeats the one frame num_frames times and resizes/pads each copy;
        # doing it once and expanding gives the same tensor.
        frames, image_size, target_h, target_w = super()._prepare_action_video_conditioning(
            conditioning_clip, resolution_tier, 1, device, dtype
        )
        return frames.expand(-1, -1, num_frames, -1, -1), image_size, target_h, target_w

    def _encode_video(self, x: torch.Tensor) -> torch.Tensor:
        self._mark("encode_start")
        if self.fast and getattr(self, "_first_frame_only", False) and x.shape[2] > 1:
            t_lat = (x.shape[2] - 1) // self.vae_scale_factor_temporal + 1
            first = super()._encode_video(x[:, :, :1].contiguous())
            out = torch.zeros(
                (first.shape[0], first.shape[1], t_lat, first.shape[3], first.shape[4]),
                dtype=first.dtype,
                device=first.device,
            )
            out[:, :, :1] = first
        else:
            out = super()._encode_video(x)
        self._mark("encode_end")
        return out

    def __call__(self, *args: Any, **kwargs: Any):
        action = kwargs.get("action")
        self._first_frame_only = action is not None and action.mode in ("policy", "forward_dynamics")
        user_cb = kwargs.pop("callback_on_step_end", None)
        n_steps = int(kwargs.get("num_inference_steps", 35))

        def _on_step_end(pipe, i, t, cb_kwargs):
            if i == 0:
                self._mark("first_step_end")
            if i == n_steps - 1:
                self._mark("denoise_end")
            if user_cb is not None:
                return user_cb(pipe, i, t, cb_kwargs)
            return {}

        self._reset_marks()
        self._mark("start")
        try:
            out = super().__call__(*args, callback_on_step_end=_on_step_end, **kwargs)
        finally:
            self._first_frame_only = False
        self._mark("end")
        return out

    def last_timing(self) -> dict[str, float]:
        """Seconds spent per phase in the last call: preprocess, encode, denoise, decode, total."""
        m = getattr(self, "_marks", {})
        start, end = m.get("start", 0.0), m.get("end", 0.0)
        enc0 = m.get("encode_start", start)
        enc1 = m.get("encode_end", enc0)
        den1 = m.get("denoise_end", enc1)
        return {
            "preprocess_s": enc0 - start,
            "encode_s": enc1 - enc0,
            "denoise_s": den1 - enc1,
            "decode_s": end - den1,
            "total_s": end - start,
        }
