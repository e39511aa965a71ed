# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""What model calls return: action chunks, forecasts, timings, model descriptions. Pure Python + numpy."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_ros.core.settings import PolicySettings


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
