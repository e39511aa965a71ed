# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Context managers the fast pipeline enters for one call: each keeps the stock numbers and removes host work.

* :func:`memoized_walks`: diffusers' whole-model walks (``.device``, ``.dtype``, the ModelOpt check) once per call.
* :func:`memoized_noise`: the initial noise drawn once per (generator state, shape): a fixed seed, as a control loop
  uses, draws the same noise every call; the generator ends in the state the draw leaves.
* :func:`cached_preprocess`: the conditioning frame converted once per call (the stock code converts it twice), on
  the device, through a table of the 256 values the stock CPU arithmetic gives (so the numbers are the same).
* :func:`installed_forward`, :func:`cudnn_benchmark`.

Patches of diffusers' module functions are installed while any call is inside the block and answer for the
calling thread's call only (several pipeline calls may run at once in a batched call); everything else gets the
original.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

_lock = threading.Lock()
_memo_lock = threading.Lock()
_local = threading.local()
_depth: dict[str, int] = {}
_originals: dict[str, Any] = {}


def _scope(name: str) -> dict | None:
    return getattr(_local, name, None)


@contextlib.contextmanager
def _patched(name: str, targets: list[tuple[Any, str, Any]], scope: dict):
    """Install ``targets`` (module, attribute, wrapper) while any thread is inside; ``scope`` is this thread's."""
    previous = _scope(name)
    setattr(_local, name, scope)
    with _lock:
        if _depth.get(name, 0) == 0:
            _originals[name] = [getattr(mod, attr) for mod, attr, _ in targets]
            for mod, attr, wrapper in targets:
                setattr(mod, attr, wrapper)
        _depth[name] = _depth.get(name, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _depth[name] -= 1
            if _depth[name] == 0:
                for (mod, attr, _), original in zip(targets, _originals[name], strict=True):
                    setattr(mod, attr, original)
        setattr(_local, name, previous)


# -- whole-model walks ------------------------------------------------------------------------------------------


def _walk_device(module):
    scope = _scope("walks")
    if scope is None or id(module) not in scope["ids"]:
        return _originals["walks"][0](module)
    cache = scope["device"]
    if id(module) not in cache:
        cache[id(module)] = _originals["walks"][0](module)
    return cache[id(module)]


def _walk_dtype(module):
    scope = _scope("walks")
    if scope is None or id(module) not in scope["ids"]:
        return _originals["walks"][1](module)
    cache = scope["dtype"]
    if id(module) not in cache:
        cache[id(module)] = _originals["walks"][1](module)
    return cache[id(module)]


def _walk_fp8(module, quantization_config=None, *args, **kwargs):
    scope = _scope("walks")
    if scope is None or module is not scope["transformer"] or args or kwargs:
        return _originals["walks"][2](module, quantization_config, *args, **kwargs)
    memo = scope["fp8"]
    key = (id(module), repr(quantization_config))
    if key not in memo:
        memo[key] = _originals["walks"][2](module, quantization_config)
    return memo[key]


def memoized_walks(transformer: torch.nn.Module, modules: tuple, fp8_memo: dict):
    """Inside the block (one pipeline call), diffusers' whole-model walks run once per model.

    ``ModelMixin.device`` / ``.dtype`` walk every submodule looking for offloading and casting
    hooks, and ``Cosmos3MixedPrecisionConfig.resolve`` walks them for ModelOpt FP8 layers: ~1000
    modules for Nano, a few ms each, over a dozen times per call while the GPU waits. Nothing
    moves, casts, hooks or quantizes the models during a call, so the first answer holds (the
    FP8 answer, in ``fp8_memo``, also across calls).
    """
    from diffusers.models import modeling_utils as mu
    from diffusers.pipelines.cosmos import mixed_precision as mp

    scope = {
        "ids": {id(m) for m in modules if m is not None},
        "transformer": transformer,
        "device": {},
        "dtype": {},
        "fp8": fp8_memo,
    }
    targets = [
        (mu, "get_parameter_device", _walk_device),
        (mu, "get_parameter_dtype", _walk_dtype),
        (mp, "_is_modelopt_fp8_backend", _walk_fp8),
    ]
    return _patched("walks", targets, scope)


# -- initial noise --------------------------------------------------------------------------------------------


def _randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
    original = _originals["noise"][0]
    scope = _scope("noise")
    cpu = isinstance(generator, torch.Generator) and generator.device.type == "cpu"
    if scope is None or not cpu or layout not in (None, torch.strided):
        return original(shape, generator=generator, device=device, dtype=dtype, layout=layout)
    state = generator.get_state()
    key = (hashlib.sha1(state.numpy().tobytes()).hexdigest(), tuple(shape), str(device), str(dtype))
    memo: OrderedDict = scope["memo"]
    with _memo_lock:
        hit = memo.get(key)
        if hit is not None:
            memo.move_to_end(key)
    if hit is None:
        noise = original(shape, generator=generator, device=device, dtype=dtype, layout=layout)
        hit = (noise, generator.get_state())
        with _memo_lock:
            memo[key] = hit
            while len(memo) > scope["size"]:
                memo.popitem(last=False)
    else:
        generator.set_state(hit[1])
    return hit[0].clone()


def memoized_noise(memo: OrderedDict, size: int = 8):
    """Inside the block, ``randn_tensor`` of the Cosmos 3 pipeline remembers its draws from CPU generators.

    Keyed by the generator's state before the draw, the shape, device and dtype: the same state gives the same
    numbers, so a hit returns a copy of them and sets the generator to the state the draw left (later draws in the
    call are the stock ones). ``memo`` (LRU, ``size`` entries) lives across calls.
    """
    from diffusers.pipelines.cosmos import pipeline_cosmos3_omni as po

    return _patched("noise", [(po, "randn_tensor", _randn_tensor)], {"memo": memo, "size": size})


# -- conditioning frame ---------------------------------------------------------------------------------------

_LUTS: dict[tuple[str, str], torch.Tensor] = {}


def unit_lut(kind: str, device: torch.device | str) -> torch.Tensor:
    """float32 [256] table of what the stock CPU arithmetic gives for each uint8 value, on ``device``.

    ``"pil"``: diffusers' ``pil_to_numpy`` then ``normalize`` (``2 * (x / 255) - 1``); ``"uint8"``: its numpy-uint8
    path (``2 * x - 1``, unscaled); ``"framework"``: NVIDIA's ``x / 127.5 - 1``.
    """
    key = (kind, str(device))
    lut = _LUTS.get(key)
    if lut is None:
        x = np.arange(256, dtype=np.float32)
        if kind == "pil":
            base = 2.0 * torch.from_numpy(x / 255.0) - 1.0
        elif kind == "uint8":
            base = 2.0 * torch.from_numpy(x) - 1.0
        elif kind == "framework":
            base = torch.from_numpy(x) / 127.5 - 1.0
        else:
            raise ValueError(f"unknown table {kind!r}")
        lut = base.to(device)
        _LUTS[key] = lut
    return lut


def frame_to_device(img: np.ndarray, kind: str, device: torch.device | str) -> torch.Tensor:
    """HxWx3 uint8 -> [1, 3, 1, H, W] float32 on ``device`` through :func:`unit_lut` (only bytes travel)."""
    arr = np.ascontiguousarray(img)
    x = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(device)
    x = unit_lut(kind, device)[x.permute(2, 0, 1).long()]
    return x.unsqueeze(0).unsqueeze(2)


@contextlib.contextmanager
def cached_preprocess(video_processor: Any, device: torch.device):
    """Inside the block, preprocessing the same one-frame clip twice reuses the first result.

    The stock ``__call__`` preprocesses the conditioning frame once to probe its size and again
    to condition on it; the second result equals the first. An RGB uint8 numpy frame or PIL image whose sides are
    multiples of the VAE factor (no resize) is converted on ``device`` (:func:`frame_to_device`): the same float32
    values as the stock CPU path.
    """
    import PIL.Image

    factor = int(video_processor.config.vae_scale_factor)
    cfg = video_processor.config

    def convert(img: Any):
        plain = cfg.do_normalize and not cfg.do_binarize and not cfg.do_convert_grayscale
        if isinstance(img, PIL.Image.Image):
            ok = plain and img.mode == "RGB" and img.width % factor == 0 and img.height % factor == 0
            if ok:
                return frame_to_device(np.asarray(img), "pil", device)
        elif (
            plain
            and img.dtype == np.uint8
            and img.ndim == 3
            and img.shape[2] == 3
            and img.shape[0] % factor == 0
            and img.shape[1] % factor == 0
        ):
            return frame_to_device(img, "uint8", device)
        return original([img])

    original = video_processor.preprocess_video
    last: list[Any] = []

    def preprocess_video(video, height=None, width=None, **kwargs):
        single = (
            not kwargs
            and height is None
            and width is None
            and isinstance(video, list)
            and len(video) == 1
            and isinstance(video[0], (np.ndarray, PIL.Image.Image))
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


# -- forward and cuDNN ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def installed_forward(transformer: torch.nn.Module, forward: Any, hint: Any = None):
    """Route ``transformer(...)`` through ``forward`` inside the block (instance attribute); ``hint`` is the
    callable the fast forward asks for the :class:`~cosmos3_ros.model.fast_transformer.PassHint` of a pass."""
    if hasattr(forward, "begin_call"):
        forward.begin_call()
    previous_hint = getattr(forward, "hint", None)
    if hint is not None:
        forward.hint = hint
    transformer.forward = forward
    try:
        yield
    finally:
        del transformer.forward
        if hint is not None:
            forward.hint = previous_hint


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old
