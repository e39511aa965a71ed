# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Sampling settings for Cosmos 3 policy calls, and their validation.

Pure Python: no torch, no ROS. The field names mirror the hosted Cosmos 3 request
(`prompt`, `domain_name`, `action_chunk_size`, `fps`, `image_size`, `num_steps`,
`guidance`, `shift`, `seed`, `view_point`) so that a configuration reads the same
everywhere: node parameters, the sidecar protocol, the CLI and the bench.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Unpadded action width per embodiment domain (mirrors diffusers 0.42.1
#: ``_EMBODIMENT_TO_RAW_ACTION_DIM``; a test checks the two stay equal).
DOMAIN_ACTION_WIDTH: dict[str, int] = {
    "av": 9,
    "camera_pose": 9,
    "pusht": 2,
    "umi": 10,
    "bridge_orig_lerobot": 10,
    "droid_lerobot": 10,
    "robomind-franka": 10,
    "robomind-franka-dual": 20,
    "robomind-ur": 10,
    "galbot": 30,
    "agibotworld": 29,
    "agibot_gear_gripper": 29,
    "agibot_gear_gripper_ext": 29,
    "fractal": 10,
    "hand_pose": 57,
}

#: Resolution tiers the action modes accept.
RESOLUTION_TIERS: tuple[int, ...] = (256, 480, 704, 720)

#: Camera view points the action caption knows.
VIEW_POINTS: tuple[str, ...] = ("ego_view", "third_person_view", "wrist_view", "concat_view")

#: Short domain aliases users type; resolved to the canonical diffusers names.
DOMAIN_ALIASES: dict[str, str] = {
    "bridge": "bridge_orig_lerobot",
    "droid": "droid_lerobot",
}


class SettingsError(ValueError):
    """A sampling setting is out of range or unknown."""


def resolve_domain(name: str) -> str:
    """Return the canonical domain name for ``name`` (aliases allowed), or raise SettingsError."""
    canonical = DOMAIN_ALIASES.get(name, name)
    if canonical not in DOMAIN_ACTION_WIDTH:
        known = sorted(set(DOMAIN_ACTION_WIDTH) | set(DOMAIN_ALIASES))
        raise SettingsError(f"unknown domain_name {name!r}; expected one of {known}")
    return canonical


@dataclass(frozen=True)
class PolicySettings:
    """Everything that selects what one Cosmos 3 action call computes.

    ``shift`` ``None`` keeps the checkpoint's own scheduler (the released one uses Karras
    sigmas and ignores a flow shift); a number switches to the native flow-matching
    schedule with that shift, so the value is honoured, never silently ignored.
    """

    prompt: str = "Perform the task."
    domain_name: str = "bridge_orig_lerobot"
    action_chunk_size: int = 16
    fps: float = 5.0
    image_size: int = 480
    num_steps: int = 30
    guidance: float = 1.0
    shift: float | None = None
    seed: int = 0
    view_point: str = "ego_view"
    negative_prompt: str = ""
    use_system_prompt: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain_name", resolve_domain(self.domain_name))
        self.validate()

    @property
    def action_width(self) -> int:
        """Unpadded action width of the configured domain."""
        return DOMAIN_ACTION_WIDTH[self.domain_name]

    @property
    def num_frames(self) -> int:
        """Frames in the clip paired with one chunk (chunk + 1)."""
        return self.action_chunk_size + 1

    def validate(self) -> None:
        """Raise SettingsError naming the first bad value."""
        if not isinstance(self.prompt, str):
            raise SettingsError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if int(self.action_chunk_size) != self.action_chunk_size or self.action_chunk_size < 1:
            raise SettingsError(f"action_chunk_size must be an integer >= 1, got {self.action_chunk_size!r}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise SettingsError(f"fps must be a finite number > 0, got {self.fps!r}")
        if self.image_size not in RESOLUTION_TIERS:
            raise SettingsError(
                f"image_size {self.image_size!r} is not a resolution tier; expected one of {list(RESOLUTION_TIERS)}"
            )
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise SettingsError(f"num_steps must be an integer >= 1, got {self.num_steps!r}")
        if not (math.isfinite(self.guidance) and self.guidance >= 1.0):
            raise SettingsError(f"guidance must be a finite number >= 1.0, got {self.guidance!r}")
        if self.shift is not None and not (math.isfinite(self.shift) and self.shift > 0):
            raise SettingsError(
                f"shift must be a finite number > 0 (or None for the checkpoint schedule), got {self.shift!r}"
            )
        if int(self.seed) != self.seed or not (0 <= self.seed < 2**63):
            raise SettingsError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.view_point not in VIEW_POINTS:
            raise SettingsError(f"view_point {self.view_point!r} unknown; expected one of {list(VIEW_POINTS)}")

    def replace(self, **changes: Any) -> PolicySettings:
        """Return a copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for metadata, logs and the sidecar protocol)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySettings:
        """Build from a dict, rejecting unknown keys by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**data)


def validate_image(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an HxWx3 uint8 array with H, W >= 1, else raise ValueError naming what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape HxWx3 uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} must have shape HxWx3, got {image.shape}")
    return image


def validate_actions(actions: Any, settings: PolicySettings, name: str = "actions") -> np.ndarray:
    """Check an action chunk for ``settings``: 2-D, width of the domain, at least one row, finite.

    Returns the actions as float32. Rows beyond the chunk size are allowed (the pipeline
    truncates) and shorter chunks repeat their last row.
    """
    arr = np.asarray(actions)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [T, D], got {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got {arr.shape}")
    if arr.shape[1] != settings.action_width:
        raise ValueError(
            f"{name} width {arr.shape[1]} does not match domain {settings.domain_name!r} "
            f"(width {settings.action_width})"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contain {bad} non-finite value(s)")
    return arr


@dataclass(frozen=True)
class Timing:
    """Where the time of one model call went, in seconds."""

    preprocess_s: float = 0.0
    encode_s: float = 0.0
    denoise_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """Plain-dict form."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"total {self.total_s * 1e3:.1f} ms (preprocess {self.preprocess_s * 1e3:.1f}, "
            f"encode {self.encode_s * 1e3:.1f}, "
            f"denoise {self.denoise_s * 1e3:.1f}, decode {self.decode_s * 1e3:.1f})"
        )


@dataclass(frozen=True)
class ActionChunk:
    """One policy result: ``actions`` [chunk, width] float32 in the model's normalized space.

    ``observation_stamp`` is the time (seconds, on whatever clock the caller used) of the frame
    the chunk was computed from; ``video`` holds the jointly predicted frames (uint8
    [chunk + 1, H, W, 3], frame 0 is the condition) when they were asked for, ``latents`` the
    predicted video latents when asked for.
    """

    actions: np.ndarray
    settings: PolicySettings
    timing: Timing
    observation_stamp: float | None = None
    video: np.ndarray | None = None
    latents: np.ndarray | None = None

    def __post_init__(self) -> None:
        a = self.actions
        if a.dtype != np.float32 or a.ndim != 2:
            raise ValueError(f"actions must be float32 [T, D], got {a.dtype} {a.shape}")
        if not np.isfinite(a).all():
            raise NonFiniteOutputError(f"action chunk contains {int((~np.isfinite(a)).sum())} non-finite value(s)")


@dataclass(frozen=True)
class Forecast:
    """A forward-dynamics result: ``frames`` uint8 [chunk + 1, H, W, 3] (frame 0 is the condition)."""

    frames: np.ndarray
    actions: np.ndarray
    settings: PolicySettings
    timing: Timing
    observation_stamp: float | None = None


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or Inf; the result is discarded."""


@dataclass(frozen=True)
class ModelInfo:
    """What a backend serves: used in connect metadata, diagnostics and logs."""

    model: str
    action_dim: int
    domains: tuple[str, ...]
    device: str
    dtype: str
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        d = dataclasses.asdict(self)
        d["domains"] = list(self.domains)
        return d
