# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Known action rows, an explicit action width and NVIDIA's caption/frame contract, on diffusers 0.42.1.

diffusers 0.42.1 conditions action rows only in ``forward_dynamics`` (all of them) and reads the action width
from its per-domain table. NVIDIA's DROID policy needs more (see the contract notes, section 4):

* a **state row** prepended before the chunk as a known row (``use_state``, history length 1): layout
  ``[state | chunk]``, the action stream's mRoPE ``start_frame_offset`` ``1 - history_length`` (0) instead of the
  hard-coded 1, so the state row sits at video frame 0;
* **prefix rows**: the first ``d`` rows of the chunk known (real-time chunking);
* the **width** the checkpoint was trained with (8 for the joint-position DROID policy, where the table says 10);
* the plain caption and the unresized, padded frame (:mod:`cosmos3_ros.model.contract`).

Known rows enter the denoising exactly as diffusers' ``forward_dynamics`` conditions rows: a clean value in the
initial latents (``mask * x0 + (1 - mask) * noise``), listed in the action segment's condition frame indexes (so
they get no timestep embedding and no prediction), zero velocity every step (``_mask_velocity_predictions``), channels
``>= raw_action_dim`` zeroed. The noise of the unknown rows is the stock draw (same generator order and shape), so
without known rows nothing changes, bit for bit.

Override points in ``Cosmos3OmniPipeline`` (diffusers 0.42.1): ``__call__`` (per-call request and output trimming),
``prepare_latents`` (known rows, mask, condition indexes), ``_prepare_action_segment`` (mRoPE start offset),
``tokenize_prompt`` (caption) and ``_prepare_action_video_conditioning`` (frame).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import (
    _ACTION_RESOLUTION_BINS,
    _EMBODIMENT_TO_DOMAIN_ID,
    CosmosActionCondition,
    get_3d_mrope_ids_vae_tokens,
)

from cosmos3_ros.model.contract import CONDITIONINGS, canvas_for, framework_caption, framework_conditioning


def check_given_rows(
    state: Any, prefix: Any, *, width: int, chunk_size: int, use_state: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate a policy call's known rows; return them as float32 (``state`` None unless ``use_state``).

    ``state`` is one row [width]; ``prefix`` [d, width] with 1 <= d < chunk_size. Raises ValueError naming what is
    wrong: ``use_state`` without a state, a wrong width or length, non-numeric or non-finite values.
    """
    state_row = None
    if use_state:
        if state is None:
            raise ValueError("use_state is set but no state was given (the robot state as one action row)")
        state_row = _finite_float32(state, "state")
        if state_row.ndim != 1 or state_row.shape[0] != width:
            raise ValueError(f"state must have shape [{width}] (the action width), got {list(state_row.shape)}")
    prefix_rows = None
    if prefix is not None:
        prefix_rows = _finite_float32(prefix, "prefix")
        if prefix_rows.ndim != 2 or prefix_rows.shape[1] != width:
            raise ValueError(f"prefix must have shape [d, {width}] (the action width), got {list(prefix_rows.shape)}")
        if not 1 <= prefix_rows.shape[0] < chunk_size:
            raise ValueError(
                f"prefix must have 1 to {chunk_size - 1} rows (fewer than action_chunk_size {chunk_size}), "
                f"got {prefix_rows.shape[0]}"
            )
    return state_row, prefix_rows


def _finite_float32(value: Any, name: str) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr


@dataclass
class ActionRequest(CosmosActionCondition):
    """``CosmosActionCondition`` plus an explicit action width, known rows and the conditioning contract.

    ``raw_action_width`` replaces diffusers' per-domain width (None: the table's); ``state`` [width] is a known row
    before the chunk (history length 1); ``prefix`` [d, width] are the chunk's known first rows; ``conditioning`` is
    ``"diffusers"`` (stock caption and frame) or ``"cosmos_framework"`` (NVIDIA's, needs ``image``).
    """

    raw_action_width: int | None = None
    state: Any = None
    prefix: Any = None
    conditioning: str = "diffusers"

    def __post_init__(self) -> None:
        if self.raw_action_width is None:
            super().__post_init__()
            width = int(self.raw_action_dim)
        else:
            width = int(self.raw_action_width)
            self._check_explicit_width(width)
            self.raw_action_dim = width
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning {self.conditioning!r} unknown; expected one of {list(CONDITIONINGS)}")
        if self.conditioning == "cosmos_framework" and self.image is None:
            raise ValueError("conditioning='cosmos_framework' needs `image` (one frame), not `video`")
        if (self.state is not None or self.prefix is not None) and self.mode != "policy":
            raise ValueError(f"known action rows (state, prefix) are for mode='policy', not {self.mode!r}")
        state, prefix = check_given_rows(
            self.state, self.prefix, width=width, chunk_size=self.chunk_size, use_state=self.state is not None
        )
        self.state = None if state is None else torch.from_numpy(state)
        self.prefix = None if prefix is None else torch.from_numpy(prefix)

    def _check_explicit_width(self, width: int) -> None:
        """The stock checks, with the width given here instead of looked up per domain."""
        if self.mode not in ("policy", "forward_dynamics", "inverse_dynamics"):
            raise ValueError(f"Unsupported action mode={self.mode!r}")
        if self.chunk_size < 1:
            raise ValueError(f"action `chunk_size` must be >= 1, got {self.chunk_size}.")
        if self.domain_name not in _EMBODIMENT_TO_DOMAIN_ID:
            raise ValueError(f"Unknown Cosmos3 action domain_name={self.domain_name!r}")
        if str(self.resolution_tier) not in _ACTION_RESOLUTION_BINS:
            raise ValueError(f"Unsupported action resolution_tier={self.resolution_tier!r}")
        if (self.image is None) == (self.video is None):
            raise ValueError("Provide exactly one of `image` or `video` for the action condition.")
        if self.mode == "inverse_dynamics" and self.video is None:
            raise ValueError("action mode='inverse_dynamics' requires `video` conditioning.")
        if width < 1:
            raise ValueError(f"raw_action_width must be >= 1, got {width}")
        if self.mode == "forward_dynamics":
            raw = self.raw_actions
            if raw is None or raw.ndim != 2 or raw.shape[0] < 1:
                raise ValueError("action mode='forward_dynamics' requires `raw_actions` of shape [T >= 1, D].")
            if raw.shape[1] != width:
                raise ValueError(f"`raw_actions` width ({raw.shape[1]}) does not match the action width ({width}).")

    @property
    def history_length(self) -> int:
        """Known rows before the chunk: 1 with a state row, else 0."""
        return 0 if self.state is None else 1

    @property
    def num_prefix(self) -> int:
        """Known first rows of the chunk."""
        return 0 if self.prefix is None else int(self.prefix.shape[0])


def _request(action: Any) -> ActionRequest | None:
    return action if isinstance(action, ActionRequest) else None


def _frame_hw(image: Any) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    if isinstance(image, torch.Tensor):
        return (int(image.shape[-2]), int(image.shape[-1])) if image.shape[0] == 3 else tuple(image.shape[:2])
    return int(image.size[1]), int(image.size[0])  # PIL


class GivenRowsMixin:
    """Put before ``Cosmos3OmniPipeline`` in the bases: known rows, explicit width, NVIDIA's contract per request.

    Without an :class:`ActionRequest` (or with one that has no known rows and ``conditioning="diffusers"``) every
    override returns the stock result unchanged.
    """

    def __call__(self, *args: Any, **kwargs: Any):
        request = _request(kwargs.get("action"))
        self._given_request = request
        self._history_length = 0
        try:
            with contextlib.ExitStack() as stack:
                if request is not None and request.conditioning == "cosmos_framework" and getattr(self, "fast", False):
                    stack.enter_context(_shape_only_probe(self.video_processor, request.image))
                out = super().__call__(*args, **kwargs)
        finally:
            self._given_request = None
            self._history_length = 0
        return _trim_known_rows(out, request)

    def _framework_request(self) -> ActionRequest | None:
        request = getattr(self, "_given_request", None)
        return request if request is not None and request.conditioning == "cosmos_framework" else None

    def prepare_latents(self, *args: Any, **kwargs: Any):
        """Stock latents; then the known rows of an :class:`ActionRequest` become conditioned rows.

        The stock draw gives the noise of the chunk rows (so unknown rows get exactly the noise they get without
        known rows); a state row is prepended, and the known rows take their clean values under a mask of ones.
        """
        out = super().prepare_latents(*args, **kwargs)
        request = _request(kwargs.get("action"))
        if request is None or (request.history_length == 0 and request.num_prefix == 0):
            return out
        out = list(out)
        noise, raw_dim = out[2], out[10]
        hist, d = request.history_length, request.num_prefix
        device, dtype = noise.device, noise.dtype
        n_rows, dim = hist + noise.shape[0], noise.shape[1]
        x0 = torch.zeros((n_rows, dim), device=device, dtype=dtype)
        if hist:
            x0[0, : request.state.shape[0]] = request.state.to(device=device, dtype=dtype)
        if d:
            x0[hist : hist + d, : request.prefix.shape[1]] = request.prefix.to(device=device, dtype=dtype)
        mask = torch.zeros((n_rows, 1), device=device, dtype=dtype)
        mask[: hist + d] = 1.0
        noise = torch.cat([noise.new_zeros((hist, dim)), noise]) if hist else noise
        latents = mask * x0 + (1.0 - mask) * noise
        if raw_dim is not None:
            latents[:, raw_dim:] = 0
        out[2], out[7], out[11] = latents, mask, list(range(hist + d))
        self._history_length = hist
        return tuple(out)

    def _prepare_action_segment(
        self,
        input_action_tokens: torch.Tensor,
        condition_frame_indexes: list[int],
        mrope_offset: int | float,
        action_fps: float | None,
        curr: int,
        device: torch.device | str,
        history_length: int | None = None,
    ) -> dict[str, Any]:
        """Stock segment; with ``history_length`` rows before the chunk the mRoPE start offset is ``1 - history``.

        ``history_length`` None reads the current call's (0 without a state row: the stock offset 1).
        """
        seg = super()._prepare_action_segment(
            input_action_tokens=input_action_tokens,
            condition_frame_indexes=condition_frame_indexes,
            mrope_offset=mrope_offset,
            action_fps=action_fps,
            curr=curr,
            device=device,
        )
        hist = getattr(self, "_history_length", 0) if history_length is None else int(history_length)
        if hist:
            config = self.transformer.config
            mrope_ids, _ = get_3d_mrope_ids_vae_tokens(
                grid_t=input_action_tokens.shape[0],
                grid_h=1,
                grid_w=1,
                temporal_offset=mrope_offset,
                reset_spatial_indices=config.unified_3d_mrope_reset_spatial_ids,
                fps=action_fps if config.enable_fps_modulation else None,
                base_fps=float(config.base_fps),
                temporal_compression_factor=1,
                base_temporal_compression_factor=self.vae_scale_factor_temporal,
                start_frame_offset=1 - hist,
            )
            seg["action_mrope_ids"] = mrope_ids.to(device)
        return seg

    def tokenize_prompt(self, prompt: str, negative_prompt: str | None = None, **kwargs: Any):
        """Stock tokenization; for ``cosmos_framework`` NVIDIA's plain caption (no JSON) and the raw negative prompt."""
        request = self._framework_request()
        if request is None or kwargs.get("action_mode") is None:
            return super().tokenize_prompt(prompt, negative_prompt, **kwargs)
        height, width = canvas_for(*_frame_hw(request.image), request.resolution_tier)
        num_frames, fps = kwargs.get("num_frames", request.chunk_size + 1), float(kwargs.get("fps", 24.0))
        caption = framework_caption(
            prompt, view_point=request.view_point, num_frames=num_frames, fps=fps, height=height, width=width
        )
        # With the templates off and no action mode the stock code tokenizes both texts as they are.
        return super().tokenize_prompt(
            caption,
            negative_prompt or "",
            num_frames=num_frames,
            height=height,
            width=width,
            fps=fps,
            use_system_prompt=kwargs.get("use_system_prompt"),
            add_resolution_template=False,
            add_duration_template=False,
            action_mode=None,
        )

    def _prepare_action_video_conditioning(
        self,
        conditioning_clip: Any,
        resolution_tier: int,
        num_frames: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        """Stock frame preparation; for ``cosmos_framework`` the frame padded into the canvas without a resize."""
        request = self._framework_request()
        if request is None:
            return super()._prepare_action_video_conditioning(
                conditioning_clip, resolution_tier, num_frames, device, dtype
            )
        return framework_conditioning(conditioning_clip[0], resolution_tier, num_frames, device, dtype)


def _trim_known_rows(out: Any, request: ActionRequest | None) -> Any:
    """Drop the state row from the predicted actions and return the given prefix rows exactly as given."""
    if request is None or (request.history_length == 0 and request.num_prefix == 0):
        return out
    actions = out.action if not isinstance(out, tuple) else out[2]
    if not actions:
        return out
    act = actions[0][request.history_length :].clone()
    if request.num_prefix:
        act[: request.num_prefix] = request.prefix[:, : act.shape[1]].to(act.dtype)
    if isinstance(out, tuple):
        return (*out[:2], [act], *out[3:])
    out.action = [act]
    return out


@contextlib.contextmanager
def _shape_only_probe(video_processor: Any, image: Any):
    """Inside the block, the stock ``__call__``'s size probe of ``image`` returns an empty tensor of its shape.

    The probe only sizes the caption's canvas, which ``cosmos_framework`` computes from the frame itself, so the
    stock resize of the frame to 16-pixel multiples is skipped. Everything else passes through.
    """
    previous = video_processor.__dict__.get("preprocess_video")
    inner = video_processor.preprocess_video

    def preprocess_video(video, *args, **kwargs):
        if not args and not kwargs and isinstance(video, list) and len(video) == 1 and video[0] is image:
            h, w = _frame_hw(image)
            return torch.zeros((), dtype=torch.float32).expand(1, 3, 1, h, w)
        return inner(video, *args, **kwargs)

    video_processor.preprocess_video = preprocess_video
    try:
        yield
    finally:
        if previous is None:
            del video_processor.preprocess_video
        else:
            video_processor.preprocess_video = previous
