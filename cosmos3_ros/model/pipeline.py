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
  to probe its size and to use it), on the device for uint8 frames; diffusers' whole-model
  walks (``.device``, ``.dtype``, ModelOpt detection, ~1000 modules each) run once.
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
from typing import Any

import torch
from diffusers import Cosmos3OmniPipeline

from cosmos3_ros.model.given_rows import GivenRowsMixin


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
        with contextlib.ExitStack() as stack:
            stack.callback(setattr, self, "_first_frame_only", False)
            stack.callback(self._mask_has_noise.clear)
            if self.fast and self.fast_forward is not None:
                stack.enter_context(_installed_forward(self.transformer, self.fast_forward))
            if self.fast:
                if getattr(self, "_fp8_memo", None) is None:
                    self._fp8_memo = {}
                stack.enter_context(_memoized_walks(self.transformer, (self.transformer, self.vae), self._fp8_memo))
            if self.fast and self.cudnn_benchmark and self._device().type == "cuda":
                stack.enter_context(_cudnn_benchmark(True))
            if self.fast:
                stack.enter_context(_cached_preprocess(self.video_processor, self._device()))
            out = super().__call__(*args, callback_on_step_end=_on_step_end, **kwargs)
        self._mark("end")
        return out

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
                stack.enter_context(_cudnn_benchmark(True))
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


_walk_lock = threading.Lock()
_walk_depth = 0
_walk_originals: tuple | None = None
_walk_local = threading.local()


def _walk_device(module):
    scope = getattr(_walk_local, "scope", None)
    if scope is None or id(module) not in scope["ids"]:
        return _walk_originals[0](module)
    cache = scope["device"]
    if id(module) not in cache:
        cache[id(module)] = _walk_originals[0](module)
    return cache[id(module)]


def _walk_dtype(module):
    scope = getattr(_walk_local, "scope", None)
    if scope is None or id(module) not in scope["ids"]:
        return _walk_originals[1](module)
    cache = scope["dtype"]
    if id(module) not in cache:
        cache[id(module)] = _walk_originals[1](module)
    return cache[id(module)]


def _walk_fp8(module, quantization_config=None, *args, **kwargs):
    scope = getattr(_walk_local, "scope", None)
    if scope is None or module is not scope["transformer"] or args or kwargs:
        return _walk_originals[2](module, quantization_config, *args, **kwargs)
    memo = scope["fp8"]
    key = (id(module), repr(quantization_config))
    if key not in memo:
        memo[key] = _walk_originals[2](module, quantization_config)
    return memo[key]


@contextlib.contextmanager
def _memoized_walks(transformer: torch.nn.Module, modules: tuple, fp8_memo: dict):
    """Inside the block (one pipeline call), diffusers' whole-model walks run once per model.

    ``ModelMixin.device`` / ``.dtype`` walk every submodule looking for offloading and casting
    hooks, and ``Cosmos3MixedPrecisionConfig.resolve`` walks them for ModelOpt FP8 layers: ~1000
    modules for Nano, a few ms each, over a dozen times per call while the GPU waits. Nothing
    moves, casts, hooks or quantizes the models during a call, so the first answer holds (the
    FP8 answer, in ``fp8_memo``, also across calls). The wrappers are installed while any such
    call runs and answer for this thread's call only; every other caller gets the original.
    """
    global _walk_depth, _walk_originals
    from diffusers.models import modeling_utils as mu
    from diffusers.pipelines.cosmos import mixed_precision as mp

    scope = {
        "ids": {id(m) for m in modules if m is not None},
        "transformer": transformer,
        "device": {},
        "dtype": {},
        "fp8": fp8_memo,
    }
    previous = getattr(_walk_local, "scope", None)
    _walk_local.scope = scope
    with _walk_lock:
        if _walk_depth == 0:
            _walk_originals = (mu.get_parameter_device, mu.get_parameter_dtype, mp._is_modelopt_fp8_backend)
            mu.get_parameter_device, mu.get_parameter_dtype = _walk_device, _walk_dtype
            mp._is_modelopt_fp8_backend = _walk_fp8
        _walk_depth += 1
    try:
        yield
    finally:
        with _walk_lock:
            _walk_depth -= 1
            if _walk_depth == 0:
                mu.get_parameter_device, mu.get_parameter_dtype, mp._is_modelopt_fp8_backend = _walk_originals
        _walk_local.scope = previous


@contextlib.contextmanager
def _installed_forward(transformer: torch.nn.Module, forward: Any):
    """Route ``transformer(...)`` through ``forward`` inside the block (instance attribute)."""
    forward.begin_call()
    transformer.forward = forward
    try:
        yield
    finally:
        del transformer.forward


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


@contextlib.contextmanager
def _cached_preprocess(video_processor: Any, device: torch.device):
    """Inside the block, preprocessing the same one-frame numpy clip twice reuses the first result.

    The stock ``__call__`` preprocesses the conditioning frame once to probe its size and again
    to condition on it; the second result equals the first. A uint8 frame whose sides are
    multiples of the VAE factor (no resize) is converted on ``device``: ``2.0 * x - 1.0`` of
    integers, the same float32 values as the stock CPU path.
    """
    import numpy as np

    factor = int(video_processor.config.vae_scale_factor)

    def convert(img: np.ndarray):
        cfg = video_processor.config
        plain = (
            img.dtype == np.uint8
            and img.ndim == 3
            and img.shape[2] == 3
            and img.shape[0] % factor == 0
            and img.shape[1] % factor == 0
            and cfg.do_normalize
            and not cfg.do_binarize
            and not cfg.do_convert_grayscale
        )
        if not plain:
            return original([img])
        x = torch.from_numpy(np.ascontiguousarray(img)).to(device)
        x = x.permute(2, 0, 1).unsqueeze(0)  # numpy_to_pt: [1, 3, H, W] uint8
        x = 2.0 * x - 1.0  # normalize
        return x.unsqueeze(0).permute(0, 2, 1, 3, 4)  # stack + permute: [1, 3, 1, H, W]

    original = video_processor.preprocess_video
    last: list[Any] = []

    def preprocess_video(video, height=None, width=None, **kwargs):
        single = (
            not kwargs
            and height is None
            and width is None
            and isinstance(video, list)
            and len(video) == 1
            and isinstance(video[0], np.ndarray)
        )
        if not single:
            return original(video, height=height, width=width, **kwargs)
        if last and last[0] is video[0]:
            return last[1].clone()
        out = convert(video[0])
        last[:] = [video[0], out]
        return out.clone()

    video_processor.preprocess_video = preprocess_video
    try:
        yield
    finally:
        del video_processor.preprocess_video
