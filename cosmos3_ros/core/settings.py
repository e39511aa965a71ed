# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``PolicySettings``: the sampling settings of one Cosmos 3 call, as a typed value.

Its fields are exactly the ``sampling`` scope of :mod:`cosmos3_ros.core.schema` (a test keeps them equal): defaults,
bounds and choices come from that table, so the node, the CLI, the sidecar and the benchmark check the same rules.
Pure Python: no torch, no ROS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos3_ros.core.schema import (
    BY_NAME,
    DOMAIN_ACTION_WIDTH,
    DOMAIN_ALIASES,
    RESOLUTION_TIERS,
    VIEW_POINTS,
    SettingsError,
    resolve_domain,
)

__all__ = [
    "DOMAIN_ACTION_WIDTH",
    "DOMAIN_ALIASES",
    "RESOLUTION_TIERS",
    "VIEW_POINTS",
    "PolicySettings",
    "SettingsError",
    "resolve_domain",
    "validate_actions",
    "validate_image",
]


def _default(name: str) -> Any:
    return BY_NAME[name].default


#: Most denoising steps the released scheduler config (UniPC, Karras sigmas; ``shift`` 0) runs in diffusers 0.42.1:
#: from 52 steps on, its sigma schedule repeats timesteps and the solver asserts (measured on the tiny checkpoint,
#: which ships that config).
MAX_STEPS_CHECKPOINT_SCHEDULER = 51


@dataclass(frozen=True)
class PolicySettings:
    """Everything that selects what one Cosmos 3 action call computes (see the ``sampling`` scope of the schema).

    ``shift`` 0 keeps the checkpoint's own scheduler (the released one uses Karras sigmas and ignores a flow shift);
    a positive value switches to the native flow-matching schedule with that shift, so it is honoured, never
    silently ignored.
    """

    prompt: str = _default("prompt")
    domain_name: str = _default("domain_name")
    action_chunk_size: int = _default("action_chunk_size")
    fps: float = _default("fps")
    image_size: int = _default("image_size")
    num_steps: int = _default("num_steps")
    guidance: float = _default("guidance")
    shift: float = _default("shift")
    seed: int = _default("seed")
    view_point: str = _default("view_point")
    negative_prompt: str = _default("negative_prompt")
    use_system_prompt: bool = _default("use_system_prompt")
    raw_action_dim: int = _default("raw_action_dim")
    use_state: bool = _default("use_state")
    conditioning: str = _default("conditioning")
    guidance_steps: int = _default("guidance_steps")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, BY_NAME[f.name].validate(getattr(self, f.name)))
        object.__setattr__(self, "domain_name", resolve_domain(self.domain_name))
        if self.shift == 0 and self.num_steps > MAX_STEPS_CHECKPOINT_SCHEDULER:
            raise SettingsError(
                f"num_steps {self.num_steps} with shift 0: the checkpoint's own scheduler (UniPC with Karras sigmas) "
                f"fails above {MAX_STEPS_CHECKPOINT_SCHEDULER} steps in diffusers 0.42.1; set shift > 0 (the native "
                "flow schedule, e.g. 5.0) for more steps"
            )

    @property
    def action_width(self) -> int:
        """Unpadded action width: ``raw_action_dim`` when set, else the domain's width in diffusers."""
        return self.raw_action_dim or DOMAIN_ACTION_WIDTH[self.domain_name]

    @property
    def num_frames(self) -> int:
        """Frames in the clip paired with one chunk (chunk + 1)."""
        return self.action_chunk_size + 1

    def replace(self, **changes: Any) -> PolicySettings:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for metadata, logs and the sidecar protocol)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the fields (the schema's sampling settings)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySettings:
        """Build from a dict, rejecting unknown keys by name; other keys of a node's values are an error too."""
        names = set(cls.field_names())
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> PolicySettings:
        """The sampling settings among a full set of node values (other keys are ignored)."""
        return cls(**{name: values[name] for name in cls.field_names() if name in values})


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

    Returns the actions as float32. Rows beyond the chunk size are allowed (the pipeline truncates) and shorter
    chunks repeat their last row.
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
