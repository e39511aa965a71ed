# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Loading a checkpoint for the runtime: where it is (never downloading), device and dtype, quiet libraries."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from cosmos3_ros.core.backend import BackendError

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


def _resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    _torch_dtype(dtype)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but torch has no CUDA ({torch.__version__})")
    return device, dtype


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """diffusers' and transformers' own progress bars and INFO chatter off while loading (``-v`` restores them)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar()


def _check_guardrail(guardrail: bool) -> None:
    if guardrail:
        from diffusers.utils import is_cosmos_guardrail_available

        if not is_cosmos_guardrail_available():
            raise BackendError("guardrail=True needs the cosmos-guardrail package: pip install cosmos-guardrail")
