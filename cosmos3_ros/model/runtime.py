# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""In-process Cosmos 3 policy runtime: load a diffusers checkpoint, run policy and forward_dynamics.

No ROS imports. Implements :class:`cosmos3_ros.core.backend.PolicyBackend`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage

from cosmos3_ros.core.backend import BackendError, PolicyCall
from cosmos3_ros.core.results import ActionChunk, Forecast, ModelInfo, NonFiniteOutputError, Timing
from cosmos3_ros.core.settings import DOMAIN_ACTION_WIDTH, PolicySettings, validate_actions, validate_image
from cosmos3_ros.model.loading import (
    DTYPES,
    CheckpointNotFoundError,
    _check_guardrail,
    _resolve_device_dtype,
    _torch_dtype,
    quiet_libraries,
    resolve_checkpoint,
)

__all__ = ["DTYPES", "FAST_OPTION_NAMES", "CheckpointNotFoundError", "Cosmos3PolicyRuntime", "resolve_checkpoint"]

log = logging.getLogger(__name__)

#: Keyword arguments of the constructors that select the fast path's levers (see FastOptions.resolve).
FAST_OPTION_NAMES = (
    *"compile cuda_graphs attention fuse fp8 fp8_keep vae_autotune sync_free_scheduler".split(),
    *"vae_channels_last batch_cfg".split(),
)


class Cosmos3PolicyRuntime:
    """Cosmos 3 in policy and forward_dynamics mode, in this process.

    ``device`` ``"auto"`` picks CUDA when available; ``dtype`` ``"auto"`` picks bfloat16 on
    CUDA and float32 on CPU. ``guardrail`` turns on NVIDIA's Cosmos guardrail (needs the
    ``cosmos-guardrail`` package and its models; the NVIDIA Open Model License asks for it
    with the released weights). ``fast`` enables the speed-ups; ``False`` runs the stock
    pipeline code (for comparisons).

    With ``fast``, the exact levers are always on (first-frame VAE encode, no decode without
    video, text stream computed once per caption, host-sync-free masking and probe). On CUDA
    the bf16-noise levers default on (``"auto"``): ``fuse`` (fused projections, one timestep
    embedding), ``compile`` (``torch.compile`` of the layer; a string is a ``torch.compile``
    mode), ``cuda_graphs`` (one graph per step layout), ``attention`` (``"sdpa"``: SDPA with GQA
    as stock calls it; ``"flash"``/``"cudnn"`` force a kernel), ``vae_autotune`` (cuDNN picks the
    VAE decoder's convolution algorithms), ``vae_channels_last`` (decoder weights and input
    channels-last), ``sync_free_scheduler`` (UniPC without host syncs; bit-identical on CPU).
    ``batch_cfg`` (default on; exact on the CPU) runs both guidance passes of a step as one
    batched forward. ``fp8=True`` (opt-in, changes actions) runs the blocks' generation-stream
    linear layers in float8 except those ``fp8_keep`` names (default
    :data:`~cosmos3_ros.model.options.FP8_KEEP_BF16`). :meth:`policy_batch` runs several calls
    (robots) in one denoising loop. Call :meth:`warmup` before the control loop.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        guardrail: bool = False,
        fast: bool = True,
        compile: bool | str = "auto",
        cuda_graphs: bool | str = "auto",
        attention: str = "auto",
        fuse: bool | str = "auto",
        fp8: bool = False,
        fp8_keep: str | None = None,
        vae_autotune: bool | str = "auto",
        sync_free_scheduler: bool | str = "auto",
        vae_channels_last: bool | str = "auto",
        batch_cfg: bool | str = "auto",
    ) -> None:
        from cosmos3_ros.model.pipeline import Cosmos3ActionPipeline

        args = locals()
        device, dtype = _resolve_device_dtype(device, dtype)
        torch_dtype = _torch_dtype(dtype)
        _check_guardrail(guardrail)
        self.model = model
        self.path = resolve_checkpoint(model)
        t0 = time.perf_counter()
        with quiet_libraries():
            pipe = Cosmos3ActionPipeline.from_pretrained(
                str(self.path), dtype=torch_dtype, enable_safety_checker=guardrail, local_files_only=True
            )
        self._setup(
            pipe.to(device),
            device=device,
            dtype=dtype,
            guardrail=guardrail,
            fast=fast,
            options={name: args[name] for name in FAST_OPTION_NAMES},
        )
        self.load_s = time.perf_counter() - t0
        log.info("loaded %s on %s (%s) in %.2f s", self.path, device, dtype, self.load_s)
        log.debug("fast path options: %s", self.fast_options)

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        *,
        model_name: str = "in-memory",
        guardrail: bool = False,
        fast: bool = True,
        compile: bool | str = "auto",
        cuda_graphs: bool | str = "auto",
        attention: str = "auto",
        fuse: bool | str = "auto",
        fp8: bool = False,
        fp8_keep: str | None = None,
        vae_autotune: bool | str = "auto",
        sync_free_scheduler: bool | str = "auto",
        vae_channels_last: bool | str = "auto",
        batch_cfg: bool | str = "auto",
    ) -> Cosmos3PolicyRuntime:
        """Wrap an already built :class:`Cosmos3ActionPipeline` (e.g. random weights for the bench)."""
        from cosmos3_ros.model.pipeline import Cosmos3ActionPipeline

        args = locals()
        if not isinstance(pipe, Cosmos3ActionPipeline):
            raise TypeError(f"expected a Cosmos3ActionPipeline, got {type(pipe).__name__}")
        self = cls.__new__(cls)
        self.model = model_name
        self.path = None
        device = str(pipe.transformer.device)
        dtype = str(pipe.transformer.dtype).removeprefix("torch.")
        _check_guardrail(guardrail)
        self._setup(
            pipe,
            device=device,
            dtype=dtype,
            guardrail=guardrail,
            fast=fast,
            options={name: args[name] for name in FAST_OPTION_NAMES},
        )
        self.load_s = 0.0
        return self

    def _setup(self, pipe: Any, *, device: str, dtype: str, guardrail: bool, fast: bool, options: dict) -> None:
        from cosmos3_ros.model.fast_scheduler import sync_free
        from cosmos3_ros.model.fast_transformer import FastCosmos3Forward, FastOptions

        self.device = device
        self.dtype = dtype
        self.guardrail = guardrail
        self._lock = threading.Lock()
        self._pool = None
        self.fast_options = FastOptions.resolve(device, fast=fast, **options)
        pipe.fast = fast
        pipe.fast_forward = FastCosmos3Forward(pipe.transformer, self.fast_options) if fast else None
        pipe.cudnn_benchmark = self.fast_options.vae_autotune
        if self.fast_options.vae_channels_last:
            pipe.use_channels_last_decoder()
        pipe.set_progress_bar_config(disable=True)
        if self.fast_options.sync_free_scheduler:
            pipe.scheduler = sync_free(pipe.scheduler)
        self.pipe = pipe
        self.cold_start_s: float | None = None
        self._released_scheduler = self.pipe.scheduler
        self._native_schedulers: dict[float, Any] = {}
        self._native_default = bool(self.pipe.config.use_native_flow_schedule)
        self.action_dim = int(self.pipe.transformer.config.action_dim or 0)

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

    def warmup(self, settings: PolicySettings, *, image_shape: tuple[int, int] | None = None) -> float:
        """Compile and capture everything the loop will run, so no control cycle is a cold start; return seconds.

        Runs one policy and one forward_dynamics call (video decoded) at ``settings`` on a frame of
        ``image_shape`` (height, width; default 480x640 on CUDA, 240x320 on CPU). On CUDA this fuses the
        projections, compiles the layer function, captures the CUDA graph of each call's layout
        and lets cuDNN choose the VAE's convolution algorithms. A frame size or caption seen for
        the first time later costs one graph capture (a fraction of a second), never a recompile.
        """
        t0 = time.perf_counter()
        h, w = image_shape or ((480, 640) if self.device.startswith("cuda") else (240, 320))
        yy, xx = np.mgrid[0:h, 0:w]
        frame = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 127)], -1)
        frame = frame.astype(np.uint8)
        # Enough steps for a guided and (with guidance_steps) an unguided step; a guided loop runs twice, since
        # the first call learns which unconditional layout follows the conditional one (batched from then on).
        steps = min(settings.num_steps, max(2, settings.guidance_steps + 1))
        short = settings.replace(num_steps=steps)
        with self._lock:
            if self.pipe is not None and self.pipe.fast_forward is not None:
                self.pipe.fast_forward.prepare()
        state = np.zeros(short.action_width, np.float32) if short.use_state else None
        for _ in range(2 if settings.guidance != 1.0 else 1):
            chunk = self.policy(frame, short, state=state)
            self.forward_dynamics(frame, chunk.actions, short)
        self.cold_start_s = time.perf_counter() - t0
        o = self.fast_options
        extra = [what for what, on in (("compile", o.compile), ("CUDA graph capture", o.cuda_graphs)) if on]
        log.info(
            "warm-up (one policy and one forward_dynamics call%s) took %.2f s",
            f", with {' and '.join(extra)}" if extra else "",
            self.cold_start_s,
        )
        return self.cold_start_s

    def policy(
        self,
        image: np.ndarray,
        settings: PolicySettings,
        *,
        observation_stamp: float | None = None,
        return_video: bool = False,
        return_latents: bool = False,
        state: np.ndarray | None = None,
        prefix: np.ndarray | None = None,
    ) -> ActionChunk:
        """Predict an action chunk from one frame. Raises ValueError on bad input, NonFiniteOutputError on NaN/Inf.

        ``state`` ([width] float, model units) is, with ``settings.use_state``, a known row before the chunk (NVIDIA's
        layout ``[state | chunk]``; ValueError when missing), ignored otherwise. ``prefix`` ([d, width], 1 <= d <
        chunk) are the chunk's known first rows; they come back exactly as given (as float32). Known rows are
        conditioned rows of the denoising (clean value, zero velocity, no timestep embedding), as diffusers'
        forward_dynamics conditions rows; ``width`` is ``settings.action_width``.
        """
        from cosmos3_ros.model.given_rows import check_given_rows

        validate_image(image)
        self._check_domain(settings)
        width, chunk = settings.action_width, settings.action_chunk_size
        known = check_given_rows(state, prefix, width=width, chunk_size=chunk, use_state=settings.use_state)
        out, timing, frames = self._run("policy", image, settings, video=return_video, known=known)
        latents = None
        if return_latents and not return_video:
            latents = out.video.float().cpu().numpy()
        return self._chunk(out, settings, timing, observation_stamp, video=frames if return_video else None,
                           latents=latents)  # fmt: skip

    def policy_batch(self, calls: Sequence[PolicyCall]) -> list[ActionChunk]:
        """Several policy calls (robots) in one denoising loop: one transformer forward per step for all of them.

        Returns one ActionChunk per call, in order, each what :meth:`policy` returns for that call alone (its
        prompt, negative prompt, seed, state, prefix and frame; bit for bit on the CPU, bf16 noise on a GPU, where
        the batched GEMMs may pick other kernels). Calls must share a :func:`~cosmos3_ros.core.backend.batch_key`:
        a ValueError names the first that does not, or the first with bad input. Without the fast path the calls
        run one after the other.
        """
        from cosmos3_ros.core.backend import batch_key
        from cosmos3_ros.model.batching import WorkerPool, run_lockstep
        from cosmos3_ros.model.given_rows import check_given_rows

        calls = list(calls)
        if not calls:
            return []
        key = batch_key(calls[0])
        knowns = []
        for i, c in enumerate(calls):
            if not isinstance(c, PolicyCall):
                raise ValueError(f"call {i} is a {type(c).__name__}, not a PolicyCall")
            if batch_key(c) != key:
                raise ValueError(f"call {i} cannot share a batch with call 0 (shapes or sampling schedule differ)")
            try:
                validate_image(c.image)
                self._check_domain(c.settings)
                s = c.settings
                width, chunk = s.action_width, s.action_chunk_size
                knowns.append(check_given_rows(c.state, c.prefix, width=width, chunk_size=chunk, use_state=s.use_state))
            except ValueError as exc:
                raise ValueError(f"call {i}: {exc}") from None
        if len(calls) == 1:
            c = calls[0]
            return [self.policy(c.image, c.settings, observation_stamp=c.observation_stamp, state=c.state,
                                prefix=c.prefix)]  # fmt: skip
        with self._lock:
            if self.pipe is None:
                raise BackendError("runtime is closed")
            self._use_schedule(calls[0].settings.shift)
            jobs = [
                (lambda pipe, c=c, k=k: self._invoke(pipe, "policy", c.image, c.settings, video=False, known=k))
                for c, k in zip(calls, knowns, strict=True)
            ]
            if self.pipe.fast and self.pipe.fast_forward is not None:
                if self._pool is None:
                    self._pool = WorkerPool()
                results = run_lockstep(self.pipe, jobs, self._pool)
            else:
                results = [job(self.pipe) for job in jobs]
        return [
            self._chunk(out, c.settings, timing, c.observation_stamp)
            for (out, timing, _), c in zip(results, calls, strict=True)
        ]

    @staticmethod
    def _chunk(out, settings: PolicySettings, timing, stamp, *, video=None, latents=None) -> ActionChunk:
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
        return ActionChunk(
            actions=actions, settings=settings, timing=timing, observation_stamp=stamp, video=video, latents=latents
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
        _, timing, frames = self._run(
            "forward_dynamics", image, settings, video=True, raw_actions=torch.from_numpy(acts)
        )
        return Forecast(
            frames=frames, actions=acts, settings=settings, timing=timing, observation_stamp=observation_stamp
        )

    def close(self) -> None:
        """Drop the pipeline and free accelerator memory."""
        import gc

        import torch

        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            if self.pipe is not None:
                self.pipe.fast_forward = None
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

    def _use_schedule(self, shift: float) -> None:
        """Select the checkpoint scheduler (shift 0) or the native flow schedule with ``shift``."""
        from diffusers import UniPCMultistepScheduler

        from cosmos3_ros.model.fast_scheduler import SyncFreeUniPCMultistepScheduler

        if not shift:
            self.pipe.scheduler = self._released_scheduler
            self.pipe.register_to_config(use_native_flow_schedule=self._native_default)
            return
        sched = self._native_schedulers.get(shift)
        if sched is None:
            sync_free = self.fast_options.sync_free_scheduler
            cls = SyncFreeUniPCMultistepScheduler if sync_free else UniPCMultistepScheduler
            sched = cls.from_config(
                self._released_scheduler.config, flow_shift=float(shift), use_karras_sigmas=False, use_flow_sigmas=True
            )
            self._native_schedulers[shift] = sched
        self.pipe.scheduler = sched
        self.pipe.register_to_config(use_native_flow_schedule=True)

    def _run(
        self,
        mode: str,
        image: np.ndarray,
        settings: PolicySettings,
        *,
        video: bool,
        raw_actions=None,
        known: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
    ):
        """One pipeline call; returns (output, Timing, uint8 frames or None). ``known``: (state row, prefix rows).

        With ``fast`` and no guardrail the video is decoded by ``decode_to_uint8`` (same numbers,
        converted on the device); otherwise by the stock ``output_type="np"`` path.
        """
        with self._lock:
            if self.pipe is None:
                raise BackendError("runtime is closed")
            self._use_schedule(settings.shift)
            return self._invoke(self.pipe, mode, image, settings, video=video, raw_actions=raw_actions, known=known)

    def _invoke(self, pipe, mode, image, settings: PolicySettings, *, video: bool, raw_actions=None, known=(None,) * 2):
        """One call of ``pipe`` (the runtime's pipeline, or a view of it in a batched call); the lock is held."""
        import torch

        from cosmos3_ros.model.given_rows import ActionRequest

        framework = settings.conditioning == "cosmos_framework"
        cond = ActionRequest(
            mode=mode,
            chunk_size=settings.action_chunk_size,
            domain_name=settings.domain_name,
            resolution_tier=settings.image_size,
            # diffusers: a PIL image, as the pipeline's docs pass it (diffusers 0.42.1 scales a uint8 *numpy*
            # frame to [-1, 509] instead of [-1, 1]). cosmos_framework: the uint8 frame, padded as NVIDIA does.
            image=image if framework else PILImage.fromarray(image),
            raw_actions=raw_actions,
            view_point=settings.view_point,
            raw_action_width=settings.action_width,
            state=known[0],
            prefix=known[1],
            conditioning=settings.conditioning,
        )
        generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
        own_decode = video and pipe.fast and not self.guardrail
        output_type = "np" if video and not own_decode else "latent"
        try:
            with torch.inference_mode():
                out = pipe(
                    prompt=settings.prompt,
                    negative_prompt=settings.negative_prompt or None,
                    action=cond,
                    num_inference_steps=settings.num_steps,
                    guidance_scale=settings.guidance,
                    guidance_steps=settings.guidance_steps,
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
        frames = None
        decode_s = 0.0
        if own_decode:
            t0 = time.perf_counter()
            try:
                with torch.inference_mode():
                    frames = pipe.decode_to_uint8(out.video).numpy()
            except ValueError as exc:
                raise NonFiniteOutputError(str(exc)) from exc
            except Exception as exc:
                raise BackendError(f"{mode} decode failed: {type(exc).__name__}: {exc}") from exc
            decode_s = time.perf_counter() - t0
        elif video:
            frames = _video_to_uint8(out.video)
        timing = pipe.last_timing()
        timing["decode_s"] += decode_s
        timing["total_s"] += decode_s
        return out, Timing(**timing), frames


def _video_to_uint8(video: Any) -> np.ndarray:
    """Pipeline ``np`` output (float [T, H, W, 3] in [0, 1]) to uint8; non-finite pixels are an error."""
    arr = np.asarray(video, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise NonFiniteOutputError("predicted video contains non-finite pixels")
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
