# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros predict``: one policy or forward_dynamics call on an image file, results to .npz."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cosmos3_ros.core.settings import DOMAIN_ACTION_WIDTH, RESOLUTION_TIERS, VIEW_POINTS, PolicySettings

HELP = "run one Cosmos 3 policy (actions) or forward_dynamics (video) call on an image and write an .npz"


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Sampling settings shared by predict, sidecar and bench (names as in hosted Cosmos 3)."""
    d = PolicySettings()
    g = parser.add_argument_group("sampling settings")
    g.add_argument("--prompt", default=d.prompt, help="task instruction")
    g.add_argument(
        "--domain",
        dest="domain_name",
        default=d.domain_name,
        help=f"embodiment domain (aliases bridge, droid); one of {sorted(DOMAIN_ACTION_WIDTH)}",
    )
    g.add_argument("--chunk", dest="action_chunk_size", type=int, default=d.action_chunk_size, help="actions per chunk")
    g.add_argument("--fps", type=float, default=d.fps, help="policy rate (must match the embodiment's training fps)")
    g.add_argument("--image-size", type=int, default=d.image_size, choices=RESOLUTION_TIERS, help="resolution tier")
    g.add_argument("--num-steps", type=int, default=d.num_steps, help="denoising steps")
    g.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance (1.0 = off)")
    g.add_argument(
        "--shift",
        type=float,
        default=None,
        help="flow shift; when given, the native flow schedule with this shift replaces the checkpoint's",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="noise seed")
    g.add_argument("--view-point", default=d.view_point, choices=VIEW_POINTS, help="camera view point")


def settings_from_args(args: argparse.Namespace) -> PolicySettings:
    """Build validated PolicySettings from parsed arguments."""
    return PolicySettings(
        prompt=args.prompt,
        domain_name=args.domain_name,
        action_chunk_size=args.action_chunk_size,
        fps=args.fps,
        image_size=args.image_size,
        num_steps=args.num_steps,
        guidance=args.guidance,
        shift=args.shift,
        seed=args.seed,
        view_point=args.view_point,
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model selection arguments shared by the commands that load a model."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=True, help="diffusers-format checkpoint directory or a cached Hugging Face id")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    g.add_argument("--guardrail", action="store_true", help="enable NVIDIA's Cosmos guardrail (needs cosmos-guardrail)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    add_model_arguments(parser)
    parser.add_argument("--image", required=True, help="observation frame (PNG/JPEG)")
    parser.add_argument("--mode", choices=["policy", "forward_dynamics"], default="policy")
    parser.add_argument("--actions", help="forward_dynamics: .npy [T, width] actions (model space)")
    parser.add_argument("--video", action="store_true", help="policy: also decode and save the predicted video")
    parser.add_argument("--out", required=True, help="output .npz")
    add_settings_arguments(parser)


def load_image(path: str) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def run(args: argparse.Namespace) -> int:
    """Run the call and write the result."""
    from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime

    settings = settings_from_args(args)
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"--image {args.image}: no such file")
    image = load_image(args.image)
    if args.mode == "forward_dynamics" and not args.actions:
        raise ValueError("--mode forward_dynamics needs --actions A.npy")
    runtime = Cosmos3PolicyRuntime(args.model, device=args.device, dtype=args.dtype, guardrail=args.guardrail)
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
