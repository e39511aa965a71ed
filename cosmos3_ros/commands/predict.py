# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros predict``: one policy or forward_dynamics call on an image file, results to .npz."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cosmos3_ros.commands.flags import add_model_flags, add_sampling_flags, flag_values, settings_from_args

HELP = "run one Cosmos 3 policy (actions) or forward_dynamics (video) call on an image and write an .npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    add_model_flags(parser)
    parser.add_argument("--image", required=True, help="observation frame (PNG/JPEG)")
    parser.add_argument("--mode", choices=["policy", "forward_dynamics"], default="policy", help="[default: policy]")
    parser.add_argument("--actions", help="forward_dynamics: .npy [T, width] actions (model space)")
    parser.add_argument("--video", action="store_true", help="policy: also decode and save the predicted video")
    parser.add_argument("--out", required=True, help="output .npz")
    add_sampling_flags(parser)


def load_image(path: str) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; ValueError (one clear line) for anything that is not a whole image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError) as exc:  # truncated or corrupt image data
        raise ValueError(f"{path}: cannot read the image: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run the call and write the result."""
    from cosmos3_ros.backends import make_runtime

    settings = settings_from_args(args)
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"--image {args.image}: no such file")
    image = load_image(args.image)
    if args.mode == "forward_dynamics" and not args.actions:
        raise ValueError("--mode forward_dynamics needs --actions A.npy")
    runtime = make_runtime(flag_values(args, ("model", "device", "dtype", "guardrail", "fp8")))
    t0 = time.perf_counter()
    if args.mode == "policy":
        chunk = runtime.policy(image, settings, return_video=args.video)
        arrays = {"actions": chunk.actions}
        if chunk.video is not None:
            arrays["video"] = chunk.video
        timing = chunk.timing
    else:
        actions = np.load(args.actions, allow_pickle=False)
        forecast = runtime.forward_dynamics(image, actions, settings)
        arrays = {"video": forecast.frames, "actions": forecast.actions}
        timing = forecast.timing
    wall = time.perf_counter() - t0
    meta = {"mode": args.mode, "settings": settings.to_dict(), "timing": timing.to_dict(), "model": str(args.model)}
    np.savez(args.out, settings_json=np.array(json.dumps(meta)), **arrays)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"{args.mode}: {shapes} -> {args.out}")
    print(f"load {runtime.load_s:.2f} s; call {wall:.3f} s: {timing.summary()}")
    return 0
