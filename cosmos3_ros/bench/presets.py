# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The benchmark's presets: the shipped parameter files' sampling settings, their camera frames and sample sets.

``droid`` is ``config/droid.yaml`` (NVIDIA's released DROID policy: 4 steps, guidance 3, chunk 32, 15 fps, a state
row, 8-wide actions, NVIDIA's caption and frame contract) on a 540x640 frame composed as NVIDIA composes its three
cameras (a 360x640 wrist frame over two 180x320 exterior frames); ``bridge`` is ``config/bridge.yaml`` (the diffusers
documentation example: 30 steps, guidance 1, chunk 16) on a 480x640 frame. The numbers are the files' own, read
through :func:`~cosmos3_ros.core.params_file.read_params_file`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos3_ros.core.settings import PolicySettings

PRESETS = {"droid": "droid.yaml", "bridge": "bridge.yaml"}

#: Instructions of the quality study's samples (one per sample, with its own frame and seed).
SAMPLE_PROMPTS = (
    "Pick up the object and place it in the bowl.",
    "Open the top drawer.",
    "Put the spoon in the pot.",
    "Stack the red block on the blue block.",
    "Push the mug to the left.",
    "Close the cabinet door.",
    "Wipe the table with the towel.",
    "Move the banana into the basket.",
    "Turn the faucet on.",
    "Fold the cloth in half.",
    "Press the green button.",
    "Take the lid off the pot.",
)


def preset_file(name: str) -> Path:
    """The shipped parameter file of preset ``name`` (config/ of a checkout, or the installed share directory)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} unknown; expected one of {sorted(PRESETS)}")
    file = PRESETS[name]
    candidates = [
        Path(__file__).resolve().parents[2] / "config" / file,
        Path(sys.prefix) / "share/cosmos3_ros/config" / file,
    ]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("cosmos3_ros")) / "config" / file)
    except Exception:  # no ament index (pip install without ROS)
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"parameter file {file} not found in {[str(c.parent) for c in candidates]}")


@dataclass(frozen=True)
class Preset:
    """A preset's sampling settings, frame size, and what a control loop at it must fit."""

    name: str
    settings: PolicySettings
    height: int
    width: int
    path: str

    @property
    def replan_budget_s(self) -> float:
        """Replanning after half a chunk: the next chunk must be ready within chunk/2 actions at the preset's fps
        (DROID: 16 of 32 actions at 15 fps, 1.07 s)."""
        return self.settings.action_chunk_size / 2 / self.settings.fps

    def frame(self, t: float = 0.0, seed: int | None = None) -> np.ndarray:
        """The preset's camera frame at scene time ``t`` (``seed``: random pixels instead)."""
        if seed is not None:
            rng = np.random.default_rng(seed)
            parts = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(3)]
        else:
            from cosmos3_ros.core.synthetic import moving_scene_frame

            parts = [moving_scene_frame(t + k, 360, 640) for k in range(3)]
        if self.name == "droid":
            from cosmos3_ros.core.compose import compose

            frames = {"wrist": parts[0], "left": parts[1], "right": parts[2]}
            out = compose(frames, ["wrist", "left", "right"], "droid")
            if (self.height, self.width) != out.shape[:2]:
                from cosmos3_ros.core.compose import resize

                out = resize(out, self.height, self.width)
            return out
        from cosmos3_ros.core.synthetic import moving_scene_frame

        if seed is not None:
            return np.random.default_rng(seed).integers(0, 256, (self.height, self.width, 3), dtype=np.uint8)
        return moving_scene_frame(t, self.height, self.width)

    def state(self, k: int = 0) -> np.ndarray | None:
        """A robot state row for sample ``k`` when the preset gives the model the state, else None."""
        if not self.settings.use_state:
            return None
        return np.linspace(-0.5, 0.5, self.settings.action_width, dtype=np.float32) * (1 + 0.1 * k)

    def sample(self, k: int) -> tuple[np.ndarray, PolicySettings, np.ndarray | None]:
        """Sample ``k`` of the quality study: its own frame, prompt and seed (the preset's other settings)."""
        prompt = SAMPLE_PROMPTS[k % len(SAMPLE_PROMPTS)]
        return self.frame(t=0.7 * k), self.settings.replace(prompt=prompt, seed=k), self.state(k)


def load_preset(name: str, *, small: bool = False) -> Preset:
    """Preset ``name`` from its parameter file. ``small`` (CPU smoke runs): a 96x128-ish frame, tier 256, 2 steps,
    chunk 8, the rest as the file says."""
    from cosmos3_ros.core.params_file import read_params_file

    path = preset_file(name)
    report = read_params_file(path)
    if report.fatal or report.problems:
        raise ValueError(f"preset {name}: {'; '.join(report.warnings())}")
    settings = PolicySettings.from_values(report.values)
    height, width = (540, 640) if name == "droid" else (480, 640)
    if small:
        settings = settings.replace(image_size=256, num_steps=min(settings.num_steps, 2), action_chunk_size=8)
        height, width = (108, 128) if name == "droid" else (96, 128)
    return Preset(name=name, settings=settings, height=height, width=width, path=str(path))
