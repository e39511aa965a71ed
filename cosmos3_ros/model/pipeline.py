# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``Cosmos3OmniPipeline`` with exact (number-preserving) speed-ups for the action modes, and timing.

Each speed-up keeps actions equal to the stock pipeline's for the same inputs and seed:

* In policy and forward_dynamics only latent frame 0 of the conditioning clip stays clean;
  the other latent frames are replaced by noise. The causal Wan VAE computes latent frame 0
  from pixel frame 0 alone, so we preprocess and VAE-encode that one frame and zero-fill the
  other latent frames (they are multiplied by a zero mask).
* The caller skips the VAE decode when no video is needed (``output_type="latent"``).
* With a :class:`~cosmos3_ros.model.fast_transformer.FastCosmos3Forward` attached
  (``fast_forward``), the transformer runs the text stream once per caption and only the
  generation stream per step (exact), plus the GPU levers its options enable (bf16 noise).
  The fast forward is installed on the transformer for the duration of a call only, so a
  stock pipeline sharing the same transformer is unaffected.
* No host syncs per step: the velocity masks' ``sum() > 0`` checks are decided once per call,
  the (tiny) action condition mask lives on the CPU so the loop's ``mask.sum() < numel()``
  costs nothing, and with the sync-free scheduler the timesteps stay on the CPU. The GPU then
  runs the captured steps back to back while the host prepares the next one.
* Per call: the conditioning frame is converted once (the stock code preprocesses it twice,
  to probe its size and to use it), as bytes sent to the device and mapped through a table of
  the stock arithmetic's 256 values; diffusers' whole-model walks (``.device``, ``.dtype``,
  ModelOpt detection, ~1000 modules each) run once.
* Across calls (:mod:`cosmos3_ros.model.call_hooks`): the tokenized caption, the text, vision
  and action segments (positions, indexes) and the initial noise (per generator state and
  shape) are remembered: a control loop with one prompt and seed prepares a call in ~3 ms.
* ``guidance_steps`` N > 0 guides the first N steps only (opt-in, changes the actions); the
  fast forward learns which unconditional layout follows each conditional one and runs both
  guidance passes of a step as one batched forward (``pass_hint``).
* ``decode_to_uint8`` decodes and converts frames to uint8 on the device (same numbers as
  ``output_type="np"`` plus the runtime's conversion) and copies only bytes through pinned
  memory; optionally with a channels-last decoder (bf16-level change, opt-out).

With ``fast=False`` the class behaves exactly like the stock pipeline (used by parity
tests and the benchmark's baseline), plus what an ``ActionRequest`` asks for
(:mod:`cosmos3_ros.model.given_rows`: known action rows, explicit action width, NVIDIA's contract).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from typing import Any

import torch
from diffusers import Cosmos3OmniPipeline

from cosmos3_ros.model.call_hooks import (
    cached_preprocess,
    cudnn_benchmark,
    installed_forward,
    memoized_noise,
    memoized_walks,
)
from cosmos3_ros.model.fast_transformer import PassHint
from cosmos3_ros.model.given_rows import GivenRowsMixin

# Old names, kept for callers of the private helpers.
_cached_preprocess, _memoized_walks = cached_preprocess, memoized_walks

_MEMO_SIZE = 16
_memo_lock = threading.Lock()


class Cosmos3ActionPipeline(GivenRowsMixin, Cosmos3OmniPipeline):
    """Stock pipeline plus the exact action-mode speed-ups and per-phase timing marks.

    :class:`~cosmos3_ros.model.given_rows.GivenRowsMixin` adds what an
    :class:`~cosmos3_ros.model.given_rows.ActionRequest` asks for (known action rows, an explicit action width,
    NVIDIA's caption and frame contract), in the fast and the stock code path alike.
    """

    fast: bool = True
    #: FastCosmos3Forward used during calls when ``fast`` (None: the stock forward).
    fast_forward: Any = None
    #: Let cuDNN pick the fastest convolution algorithms for the VAE during our calls (GPU).
    cudnn_benchmark: bool = False
    #: Record per-step times (adds a device sync per step; the benchmark turns it on).
    step_timing: bool = False

    def _reset_marks(self) -> None:
        self._marks: dict[str, float] = {}
        self._step_ends: list[float] = []

    def _mark(self, name: str) -> None:
        marks = getattr(self, "_marks", None)
        if marks is None:
            return
        self._sync()
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
        with self._memos()["vae_lock"]:  # the Wan VAE keeps its feature cache on the module: one call at a time
            out = self._encode_first_or_all(x)
        self._mark("encode_end")
        return out

    def _encode_first_or_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and getattr(self, "_first_frame_only", False) and x.shape[2] > 1:
            t_lat = (x.shape[2] - 1) // self.vae_scale_factor_temporal + 1
            first = super()._encode_video(x[:, :, :1].contiguous())
            out = torch.zeros(
                (first.shape[0], first.shape[1], t_lat, first.shape[3], first.shape[4]),
                dtype=first.dtype,
                device=first.device,
            )
            out[:, :, :1] = first
            return out
        return super()._encode_video(x)

    def __call__(self, *args: Any, guidance_steps: int = 0, **kwargs: Any):
        """The stock call; ``guidance_steps`` N > 0 runs classifier-free guidance on the first N steps only."""
        action = kwargs.get("action")
        self._first_frame_only = action is not None and action.mode in ("policy", "forward_dynamics")
        user_cb = kwargs.pop("callback_on_step_end", None)
        n_steps = int(kwargs.get("num_inference_steps", 35))
        self._guidance_steps = max(0, int(guidance_steps or 0))
        self._step = 0
        self._uncond_ids = None

        def _on_step_end(pipe, i, t, cb_kwargs):
            self._step = i + 1
            if self.step_timing:
                self._sync()
                self._step_ends.append(time.perf_counter())
            if i == n_steps - 1:
                self._mark("denoise_end")
            if user_cb is not None:
                return user_cb(pipe, i, t, cb_kwargs)
            return {}

        self._reset_marks()
        self._mark("start")
        self._mask_has_noise: dict[int, tuple[torch.Tensor, bool]] = {}
        memos = self._memos()
        with contextlib.ExitStack() as stack:
            stack.callback(setattr, self, "_first_frame_only", False)
            stack.callback(setattr, self, "_guidance_steps", 0)
            stack.callback(self._mask_has_noise.clear)
            if self.fast and self.fast_forward is not None:
                stack.enter_context(installed_forward(self.transformer, self.fast_forward, self.pass_hint))
            if self.fast:
                stack.enter_context(memoized_walks(self.transformer, (self.transformer, self.vae), memos["fp8"]))
                stack.enter_context(memoized_noise(memos["noise"]))
            if self.fast:
                stack.enter_context(cached_preprocess(self.video_processor, self._device()))
            out = super().__call__(*args, callback_on_step_end=_on_step_end, **kwargs)
        self._mark("end")
        return out

    @property
    def do_classifier_free_guidance(self):
        """Stock (guidance scale other than 1), and with ``guidance_steps`` only on the first that many steps."""
        steps = getattr(self, "_guidance_steps", 0)
        return self._guidance_scale != 1.0 and (not steps or getattr(self, "_step", 0) < steps)

    def pass_hint(self) -> PassHint:
        """What the fast forward needs to know about the pass being run (see ``PassHint``)."""
        return PassHint(step=self._step, cfg=self.do_classifier_free_guidance, uncond=self._uncond_ids)

    # -- memos of the per-call preparation (fast path; the stock results, remembered) ---------------------------

    def _memos(self) -> dict:
        memos = self.__dict__.get("_memo_tables")
        if memos is None:
            memos = {name: OrderedDict() for name in ("tokens", "text", "vision", "action", "noise")}
            memos["fp8"] = {}
            memos["vae_lock"] = threading.Lock()
            self._memo_tables = memos
        return memos

    def _remember(self, table: str, key: Any, compute):
        if not self.fast:
            return compute()
        memo = self._memos()[table]
        with _memo_lock:  # views of one pipeline (a batched call) share the tables
            hit = memo.get(key)
            if hit is not None:
                memo.move_to_end(key)
        if hit is None:
            hit = compute()
            with _memo_lock:
                memo[key] = hit
                while len(memo) > _MEMO_SIZE:
                    memo.popitem(last=False)
        return hit

    def tokenize_prompt(self, prompt: str, negative_prompt: str | None = None, **kwargs: Any):
        """Stock tokenization (with the request's contract), remembered per caption in fast mode."""
        from cosmos3_ros.model.given_rows import _frame_hw

        request = self._framework_request()
        contract = None
        if request is not None:
            contract = (request.conditioning, _frame_hw(request.image), request.resolution_tier, request.view_point)
        key = (prompt, negative_prompt, tuple(sorted(kwargs.items())), contract)
        cond, uncond = self._remember(
            "tokens", key, lambda: super(Cosmos3ActionPipeline, self).tokenize_prompt(prompt, negative_prompt, **kwargs)
        )
        self._uncond_ids = uncond
        return list(cond), list(uncond)

    def _prepare_text_segment(self, input_ids, device):
        key = (tuple(input_ids), str(device))
        seg = self._remember(
            "text", key, lambda: super(Cosmos3ActionPipeline, self)._prepare_text_segment(input_ids, device=device)
        )
        return dict(seg)

    def _prepare_vision_segment(self, input_vision_tokens, has_image_condition, mrope_offset, vision_fps, curr,
                                device, condition_frame_indexes=None):  # fmt: skip
        key = (tuple(input_vision_tokens.shape), has_image_condition, mrope_offset, vision_fps, curr, str(device),
               None if condition_frame_indexes is None else tuple(condition_frame_indexes))  # fmt: skip
        seg = self._remember("vision", key, lambda: super(Cosmos3ActionPipeline, self)._prepare_vision_segment(
            input_vision_tokens, has_image_condition, mrope_offset, vision_fps, curr, device,
            condition_frame_indexes=condition_frame_indexes,
        ))  # fmt: skip
        return dict(seg)

    def _prepare_action_segment(self, input_action_tokens, condition_frame_indexes, mrope_offset, action_fps, curr,
                                device, history_length=None):  # fmt: skip
        hist = getattr(self, "_history_length", 0) if history_length is None else int(history_length)
        key = (tuple(input_action_tokens.shape), tuple(condition_frame_indexes), mrope_offset, action_fps, curr,
               str(device), hist)  # fmt: skip
        seg = self._remember("action", key, lambda: super(Cosmos3ActionPipeline, self)._prepare_action_segment(
            input_action_tokens, condition_frame_indexes, mrope_offset, action_fps, curr, device,
            history_length=hist,
        ))  # fmt: skip
        return dict(seg)

    def prepare_latents(self, *args: Any, **kwargs: Any):
        """Stock ``prepare_latents``; in fast mode the (small) action condition mask is returned on the CPU.

        The loop checks ``action_condition_mask.sum() < numel()`` every step, a host sync when the
        mask lives on the GPU; on the CPU it is free, and the masking below keeps its device copy.
        """
        out = super().prepare_latents(*args, **kwargs)
        if not self.fast or out[7] is None:
            return out
        out = list(out)
        out[7] = out[7].cpu()
        return tuple(out)

    def _mask_velocity_predictions(
        self,
        preds_vision,
        preds_sound,
        vision_condition_mask,
        sound_condition_mask=None,
        preds_action=None,
        action_condition_mask=None,
        raw_action_dim=None,
    ):
        """Stock masking without its per-step host syncs (``mask.sum() > 0`` is decided once per call)."""
        if not self.fast:
            return Cosmos3OmniPipeline._mask_velocity_predictions(
                preds_vision,
                preds_sound,
                vision_condition_mask=vision_condition_mask,
                sound_condition_mask=sound_condition_mask,
                preds_action=preds_action,
                action_condition_mask=action_condition_mask,
                raw_action_dim=raw_action_dim,
            )

        def masked(pred, cond_mask, transpose=False):
            noisy, has_noise = self._noisy_mask(cond_mask, pred, transpose)
            return pred * noisy if has_noise else torch.zeros_like(pred)

        velocity_vision = masked(preds_vision[0], vision_condition_mask[0])
        velocity_sound = None
        if preds_sound is not None and sound_condition_mask is not None:
            velocity_sound = masked(preds_sound[0], sound_condition_mask[0], transpose=True)
        velocity_action = None
        if preds_action is not None and action_condition_mask is not None:
            velocity_action = masked(preds_action[0], action_condition_mask[0])
            if raw_action_dim is not None:
                velocity_action[:, raw_action_dim:] = 0
        return velocity_vision, velocity_sound, velocity_action

    def _noisy_mask(self, cond_mask: torch.Tensor, pred: torch.Tensor, transpose: bool):
        """``(1 - mask)`` on ``pred``'s device and dtype, and whether it is non-zero: computed once per call."""

        def compute():
            noisy = 1.0 - cond_mask
            if transpose:
                noisy = noisy.T
            return noisy.to(dtype=pred.dtype, device=pred.device), bool(noisy.sum() > 0)

        cache = getattr(self, "_mask_has_noise", None)
        if cache is None:
            return compute()
        key = (id(cond_mask), pred.dtype, pred.device, transpose)
        hit = cache.get(key)
        if hit is None or hit[0] is not cond_mask:
            hit = (cond_mask, *compute())
            cache[key] = hit
        return hit[1], hit[2]

    def use_channels_last_decoder(self) -> None:
        """Store the VAE decoder's (and post-quant conv's) conv weights channels-last; ``decode_to_uint8`` follows."""
        for module in (self.vae.decoder, self.vae.post_quant_conv):
            for p in module.parameters():
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
                elif p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
        self._channels_last_decoder = True

    def decode_to_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode ``latents`` [1, C, T, h, w] to uint8 frames [T', H, W, 3] on the device.

        Same arithmetic as the stock ``output_type="np"`` decode followed by the runtime's
        float-to-uint8 conversion (``clip(x, 0, 1) * 255 + 0.5``, truncated), done before the
        copy to the host so only bytes travel. Raises ValueError on non-finite pixels.
        """
        dtype = next(self.vae.parameters()).dtype
        self._mark("decode_start")
        in_dtype = latents.dtype
        mean = self._vae_latents_mean.to(device=latents.device, dtype=dtype)
        inv_std = self._vae_latents_inv_std.to(device=latents.device, dtype=dtype)
        z_raw = latents.to(dtype) / inv_std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)
        if self.fast and getattr(self, "_channels_last_decoder", False):
            z_raw = z_raw.contiguous(memory_format=torch.channels_last_3d)
        with contextlib.ExitStack() as stack:
            if self.fast and self.cudnn_benchmark and latents.device.type == "cuda":
                stack.enter_context(cudnn_benchmark(True))
            with self._memos()["vae_lock"]:
                decoded = self.vae.decode(z_raw).sample.to(in_dtype)
        video = (decoded[0] * 0.5 + 0.5).clamp(0, 1)  # postprocess's denormalize, [3, T, H, W]
        finite = torch.isfinite(video).all()
        frames = (video * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 3, 0).contiguous()  # [T, H, W, 3]
        if frames.device.type == "cuda":
            out = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
            out.copy_(frames, non_blocking=True)
            torch.cuda.current_stream(frames.device).synchronize()
        else:
            out = frames.cpu()
        if not bool(finite):
            raise ValueError("predicted video contains non-finite pixels")
        self._mark("decode_end")
        return out

    def _sync(self) -> None:
        device = self._device()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def _device(self) -> torch.device:
        """The transformer's device from its first parameter (``ModelMixin.device`` walks ~1000 modules)."""
        return next(self.transformer.parameters()).device

    def _get_execution_device(self) -> torch.device:
        """Stock answer, remembered per transformer device in fast mode (the stock one walks every module)."""
        if not self.fast:
            return super()._get_execution_device()
        key = (id(self.transformer), self._device())
        cached = getattr(self, "_exec_device_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, super()._get_execution_device())
            self._exec_device_cache = cached
        return cached[1]

    def last_step_times(self) -> list[float]:
        """Seconds per denoising step in the last call (the first includes the time up to step 0's end)."""
        ends = getattr(self, "_step_ends", [])
        start = getattr(self, "_marks", {}).get("encode_end")
        if not ends or start is None:
            return []
        return [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]

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
