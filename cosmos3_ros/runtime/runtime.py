# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""In-process Cosmos 3 policy runtime: load a diffusers checkpoint, run policy and forward_dynamics.

No ROS imports. Implements :class:`cosmos3_ros.core.backend.PolicyBackend`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_ros.core.backend import BackendError
from cosmos3_ros.core.settings import (
    DOMAIN_ACTION_WIDTH,
    ActionChunk,
    Forecast,
    ModelInfo,
    NonFiniteOutputError,
    PolicySettings,
    Timing,
    validate_actions,
    validate_image,
)

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


class CheckpointNotFoundError(FileNotFoundError):
    """The model is neither a local diffusers directory nor in the local Hugging Face cache."""


def resolve_checkpoint(model: str, cache_dir: str | Path | None = None) -> Path:
    """Return a local directory for ``model``: a path, or a Hugging Face id already in the local cache.

    Never downloads. A missing id raises CheckpointNotFoundError saying how to fetch it.
    ``cache_dir`` overrides the Hugging Face hub cache (default: ``HF_HUB_CACHE`` / ``HF_HOME``).
    """
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise CheckpointNotFoundError(f"{path} has no model_index.json: not a diffusers-format checkpoint")
        return path
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise CheckpointNotFoundError(f"model {model!r}: no such directory, and not a Hugging Face id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=model, local_files_only=True, cache_dir=cache_dir))
    except Exception as exc:  # huggingface_hub raises several kinds for a cache miss
        raise CheckpointNotFoundError(
            f"model {model!r} is not in the local Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}). "
            f"Download it once on a networked machine with `hf download {model}` (accept its licence first), "
            f"or pass a local directory."
        ) from exc


def _torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} unknown; expected one of {list(DTYPES)}")
    return getattr(torch, name)


class Cosmos3PolicyRuntime:
    """Cosmos 3 in policy and forward_dynamics mode, in this process.

    ``device`` ``"auto"`` picks CUDA when available; ``dtype`` ``"auto"`` picks bfloat16 on
    CUDA and float32 on CPU. ``guardrail`` turns on NVIDIA's Cosmos guardrail (needs the
    ``cosmos-guardrail`` package and its models; the NVIDIA Open Model License asks for it
    with the released weights). ``fast`` enables the exact speed-ups; ``False`` runs the stock
    pipeline code (for comparisons).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        guardrail: bool = False,
        fast: bool = True,
    ) -> None:
        import torch

        from cosmos3_ros.runtime.pipeline import Cosmos3ActionPipeline

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        torch_dtype = _torch_dtype(dtype)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but torch has no CUDA ({torch.__version__})")
        if guardrail:
            from diffusers.utils import is_cosmos_guardrail_available

            if not is_cosmos_guardrail_available():
                raise BackendError("guardrail=True needs the cosmos-guardrail package: pip install cosmos-guardrail")
        self.model = model
        self.path = resolve_checkpoint(model)
        self.device = device
        self.dtype = dtype
        self.guardrail = guardrail
        self._lock = threading.Lock()
        t0 = time.perf_counter()
        pipe = Cosmos3ActionPipeline.from_pretrained(
            str(self.path), dtype=torch_dtype, enable_safety_checker=guardrail, local_files_only=True
        )
        pipe.fast = fast
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.load_s = time.perf_counter() - t0
        self._released_scheduler = self.pipe.scheduler
        self._native_schedulers: dict[float, Any] = {}
        self._native_default = bool(self.pipe.config.use_native_flow_schedule)
        self.action_dim = int(self.pipe.transformer.config.action_dim or 0)
        log.info("loaded %s on %s/%s in %.2f s", self.path, device, dtype, self.load_s)

    # -- PolicyBackend -------------------------------------------------------------------

    def info(self) -> ModelInfo:
        """Describe the loaded model."""
        import diffusers
        import torch

        from cosmos3_ros import __version__

        domains = tuple(sorted(d for d, w in DOMAIN_ACTION_WIDTH.items() if w <= self.action_dim))
        return ModelInfo(
            model=str(self.model),
            action_dim=self.action_dim,
            domains=domains,
            device=self.device,
            dtype=self.dtype,
            versions={"cosmos3_ros": __version__, "diffusers": diffusers.__version__, "torch": torch.__version__},
        )

    def warmup(self, settings: PolicySettings) -> float:
        """Run one policy and one forward_dynamics call on a grey frame; return seconds."""
        t0 = time.perf_counter()
        frame = np.full((240, 320, 3), 127, dtype=np.uint8)
        chunk = self.policy(frame, settings.replace(num_steps=min(settings.num_steps, 2)))
        self.forward_dynamics(frame, chunk.actions, settings.replace(num_steps=min(settings.num_steps, 2)))
        return time.perf_counter() - t0

    def policy(
        self,
        image: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
        return_video: bool = False,
        return_latents: bool = False,
    ) -> ActionChunk:
        """Predict an action chunk from one frame. Raises ValueError on bad input, NonFiniteOutputError on NaN/Inf."""
        validate_image(image)
        self._check_domain(settings)
        out, timing = self._run("policy", image, settings, output_type="np" if return_video else "latent")
        if not out.action:
            raise BackendError("pipeline returned no action for mode='policy'")
        actions = out.action[0].float().numpy().astype(np.float32, copy=False)
        if actions.shape != (settings.action_chunk_size, settings.action_width):
            raise BackendError(
                f"pipeline returned actions of shape {actions.shape}, expected "
                f"{(settings.action_chunk_size, settings.action_width)}"
            )
        if not np.isfinite(actions).all():
            raise NonFiniteOutputError(
                f"policy produced {int((~np.isfinite(actions)).sum())} non-finite action value(s); chunk discarded"
            )
        video = _video_to_uint8(out.video) if return_video else None
        latents = None
        if return_latents and not return_video:
            latents = out.video.float().cpu().numpy()
        return ActionChunk(
            actions=actions,
            settings=settings,
            timing=timing,
            observation_stamp=observation_stamp,
            video=video,
            latents=latents,
        )

    def forward_dynamics(
        self,
        image: np.ndarray,
        actions: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
    ) -> Forecast:
        """Predict frames (uint8 [chunk + 1, H, W, 3]) that follow ``image`` under ``actions``."""
        import torch

        validate_image(image)
        self._check_domain(settings)
        acts = validate_actions(actions, settings)
        out, timing = self._run(
            "forward_dynamics", image, settings, output_type="np", raw_actions=torch.from_numpy(acts)
        )
        frames = _video_to_uint8(out.video)
        return Forecast(
            frames=frames, actions=acts, settings=settings, timing=timing, observation_stamp=observation_stamp
        )

    def close(self) -> None:
        """Drop the pipeline and free accelerator memory."""
        import gc

        import torch

        with self._lock:
            self.pipe = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- internals -------------------------------------------------------------------------

    def _check_domain(self, settings: PolicySettings) -> None:
        if settings.action_width > self.action_dim:
            raise ValueError(
                f"domain {settings.domain_name!r} needs action width {settings.action_width}, "
                f"but this checkpoint's action_dim is {self.action_dim}"
            )

    def _use_schedule(self, shift: float | None) -> None:
        """Select the checkpoint scheduler (shift None) or the native flow schedule with ``shift``."""
        from diffusers import UniPCMultistepScheduler

        if shift is None:
            self.pipe.scheduler = self._released_scheduler
            self.pipe.register_to_config(use_native_flow_schedule=self._native_default)
            return
        sched = self._native_schedulers.get(shift)
        if sched is None:
            sched = UniPCMultistepScheduler.from_config(
                self._released_scheduler.config, flow_shift=float(shift), use_karras_sigmas=False, use_flow_sigmas=True
            )
            self._native_schedulers[shift] = sched
        self.pipe.scheduler = sched
        self.pipe.register_to_config(use_native_flow_schedule=True)

    def _run(self, mode: str, image: np.ndarray, settings: PolicySettings, *, output_type: str, raw_actions=None):
        import torch
        from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

        with self._lock:
            if self.pipe is None:
                raise BackendError("runtime is closed")
            self._use_schedule(settings.shift)
            cond = CosmosActionCondition(
                mode=mode,
                chunk_size=settings.action_chunk_size,
                domain_name=settings.domain_name,
                resolution_tier=settings.image_size,
                image=image,
                raw_actions=raw_actions,
                view_point=settings.view_point,
            )
            generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
            try:
                with torch.inference_mode():
                    out = self.pipe(
                        prompt=settings.prompt,
                        negative_prompt=settings.negative_prompt or None,
                        action=cond,
                        num_inference_steps=settings.num_steps,
                        guidance_scale=settings.guidance,
                        fps=float(settings.fps),
                        generator=generator,
                        output_type=output_type,
                        use_system_prompt=settings.use_system_prompt,
                        enable_safety_check=self.guardrail,
                    )
            except (ValueError, TypeError):
                raise
            except Exception as exc:
                raise BackendError(f"{mode} call failed: {type(exc).__name__}: {exc}") from exc
            timing = Timing(**self.pipe.last_timing())
        return out, timing


def _video_to_uint8(video: Any) -> np.ndarray:
    """Pipeline ``np`` output (float [T, H, W, 3] in [0, 1]) to uint8; non-finite pixels are an error."""
    arr = np.asarray(video, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise NonFiniteOutputError("predicted video contains non-finite pixels")
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
