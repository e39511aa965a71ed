# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""NVIDIA's policy-server contract (``conditioning: cosmos_framework``): its caption string and its frame padding.

NVIDIA's DROID server (``cosmos_framework/scripts/action_policy_server_robolab.py`` and the framework's
``ActionTransformPipeline``) prepares a call differently from diffusers 0.42.1:

* **Caption.** A plain string built by the framework's legacy appenders (``ViewpointTextInfo``,
  ``DurationFPSTextTimeStamps``, ``ResolutionTextInfo``), not diffusers' JSON action caption:
  ``prompt + ". " + viewpoint sentence [+ " " + concat-view description] + " The video is {int(T / fps):.1f} seconds
  long and is of {fps:.0f} FPS." + " This video is of {H}x{W} resolution."`` with ``H x W`` the padded canvas. Each
  appender joins with ``" "`` after a caption ending in ``.`` and with ``". "`` otherwise; an empty caption stays
  empty (the unconditional pass).
* **Frame.** The frame is placed in the tier's canvas (``find_closest_target_size``: the bin closest to its own ``H/W``)
  without any resize when it fits (scale ``min(W_c / W, H_c / H, 1)``): a 540x640 frame is reflection-padded right
  96 and bottom 4 to 544x736. diffusers 0.42.1 first rounds the frame down to 16-pixel multiples by *resizing*
  (540 -> 528). A frame larger than the canvas is resized as the framework does (bicubic, antialiased, on uint8,
  rounded back to uint8), then padded (``edge`` instead of ``reflect`` when a pad is at least the content size).
  Pixels map to [-1, 1] as ``x / 127.5 - 1`` (true division, the same on every device).

Pure functions: the pipeline (:mod:`cosmos3_ros.model.given_rows`) calls them when a request asks for this contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

CONDITIONINGS = ("diffusers", "cosmos_framework")

#: ``_CONCAT_VIEW_DESCRIPTION`` of NVIDIA's DROID server: the layout of its composed RoboArena frame.
CONCAT_VIEW_DESCRIPTION = (
    "The top row is from the wrist-mounted camera. The bottom row contains two horizontally concatenated "
    "third-person perspective views of the scene from opposite sides, with the robot visible."
)

DURATION_TEMPLATE = "The video is {duration:.1f} seconds long and is of {fps:.0f} FPS."
RESOLUTION_TEMPLATE = "This video is of {height}x{width} resolution."


def _viewpoint_sentence(view_point: str) -> str | None:
    """The sentence diffusers (and the framework's ``DEFAULT_VIEWPOINT_TEMPLATES``) use for ``view_point``."""
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import _ACTION_VIEWPOINT_TEMPLATES

    return _ACTION_VIEWPOINT_TEMPLATES.get(view_point)


def _join(caption: str, text: str) -> str:
    """The framework appenders' separator rule: ``" "`` after a caption ending in ``.``, else ``". "``."""
    return caption + (" " if caption.rstrip().endswith(".") else ". ") + text


def framework_caption(prompt: str, *, view_point: str, num_frames: int, fps: float, height: int, width: int) -> str:
    """NVIDIA's plain caption for ``prompt``: viewpoint, duration/FPS and resolution sentences appended.

    ``num_frames`` is the clip length (chunk + 1), ``height`` x ``width`` the padded canvas. ``concat_view`` adds
    NVIDIA's concat-view layout description after the viewpoint sentence; other view points add their sentence only.
    An empty prompt stays empty, as the framework leaves an empty caption alone.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if prompt == "":
        return ""
    caption = prompt
    template = _viewpoint_sentence(view_point)
    if template is not None:  # ViewpointTextInfo
        if view_point == "concat_view":
            template = template + (" " if template.endswith(".") else ". ") + CONCAT_VIEW_DESCRIPTION.rstrip()
        caption = _join(caption.rstrip(), template)
    if fps > 0:  # DurationFPSTextTimeStamps
        caption = _join(caption, DURATION_TEMPLATE.format(duration=int(num_frames / fps), fps=fps))
    return _join(caption, RESOLUTION_TEMPLATE.format(height=int(height), width=int(width)))  # ResolutionTextInfo


def canvas_for(height: int, width: int, resolution_tier: int) -> tuple[int, int]:
    """The tier's canvas (H, W) whose ``H/W`` is closest to the frame's own (no rounding of the frame first)."""
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import _ACTION_RESOLUTION_BINS
    from diffusers.video_processor import VideoProcessor

    key = str(resolution_tier)
    if key not in _ACTION_RESOLUTION_BINS:
        raise ValueError(
            f"resolution tier {resolution_tier!r} unknown; expected one of {sorted(map(int, _ACTION_RESOLUTION_BINS))}"
        )
    return VideoProcessor.classify_height_width_bin(int(height), int(width), ratios=_ACTION_RESOLUTION_BINS[key])


def frame_to_uint8_chw(image: Any) -> torch.Tensor:
    """An RGB frame (HxWx3 uint8 numpy, PIL image, or [3, H, W] uint8 tensor) as a uint8 [3, H, W] CPU tensor."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
            t = t.permute(2, 0, 1)
    else:
        if not isinstance(image, np.ndarray):  # PIL
            image = np.asarray(image.convert("RGB"))
        arr = np.ascontiguousarray(image)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).permute(2, 0, 1)
    if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"conditioning frame must be RGB uint8 HxWx3, got {tuple(t.shape)} {t.dtype}")
    return t


def fit_to_canvas(frame: torch.Tensor, target_h: int, target_w: int) -> tuple[torch.Tensor, int, int]:
    """``reflection_pad_to_target`` of the framework on one uint8 [3, H, W] frame: returns (frame, content h, w)."""
    h, w = int(frame.shape[-2]), int(frame.shape[-1])
    scale = min(target_w / w, target_h / h, 1.0)
    content_h, content_w = int(scale * h + 0.5), int(scale * w + 0.5)
    if (content_h, content_w) != (h, w):
        # torchvision's resize of a uint8 tensor: float bicubic (antialiased), clamp, round back to uint8.
        x = F.interpolate(
            frame.unsqueeze(0).float(), size=(content_h, content_w), mode="bicubic", align_corners=False, antialias=True
        )
        frame = x.clamp(0, 255).round().to(torch.uint8).squeeze(0)
    pad_right, pad_bottom = target_w - content_w, target_h - content_h
    if pad_right or pad_bottom:
        mode = "replicate" if pad_right >= content_w or pad_bottom >= content_h else "reflect"
        # reflect/replicate pads copy values, so padding the float frame equals padding the uint8 one.
        frame = F.pad(frame.unsqueeze(0).float(), (0, pad_right, 0, pad_bottom), mode=mode).squeeze(0)
    return frame, content_h, content_w


def framework_conditioning(
    image: Any, resolution_tier: int, num_frames: int, device: torch.device | str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """What ``_prepare_action_video_conditioning`` returns, prepared as NVIDIA's server does.

    Returns ``(frames [1, 3, num_frames, H_c, W_c] in [-1, 1], image_size [H_c, W_c, h, w], H_c, W_c)``; every frame
    of the clip is the conditioning frame (an expanded view: only latent frame 0 is used in policy and
    forward_dynamics). A frame that fits the canvas travels as bytes and is padded on ``device``; the pixel values
    come from a table of ``x / 127.5 - 1`` (the same numbers on every device).
    """
    from cosmos3_ros.model.call_hooks import unit_lut

    frame = frame_to_uint8_chw(image)
    target_h, target_w = canvas_for(frame.shape[-2], frame.shape[-1], resolution_tier)
    h, w = int(frame.shape[-2]), int(frame.shape[-1])
    scale = min(target_w / w, target_h / h, 1.0)
    lut = unit_lut("framework", device)
    if (int(scale * h + 0.5), int(scale * w + 0.5)) == (h, w):
        content_h, content_w = h, w
        x = lut[frame.to(device).long()]
        pad_right, pad_bottom = target_w - w, target_h - h
        if pad_right or pad_bottom:
            mode = "replicate" if pad_right >= w or pad_bottom >= h else "reflect"
            x = F.pad(x.unsqueeze(0), (0, pad_right, 0, pad_bottom), mode=mode).squeeze(0)
    else:
        padded, content_h, content_w = fit_to_canvas(frame, target_h, target_w)
        x = lut[padded.to(device).long()]  # _normalize_video_databatch_inplace of the padded uint8 values
    frames = x.to(dtype).unsqueeze(0).unsqueeze(2)
    if num_frames > 1:
        frames = frames.expand(-1, -1, num_frames, -1, -1)
    image_size = torch.tensor([target_h, target_w, content_h, content_w], device=device, dtype=torch.float32)
    return frames, image_size, target_h, target_w
