# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros make-tiny-model DIR``: write a tiny random-weights Cosmos 3 checkpoint."""

from __future__ import annotations

import argparse
import time

HELP = "write a tiny random-weights Cosmos 3 checkpoint (diffusers format) for tests, demos and install checks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    parser.add_argument("out_dir", metavar="DIR", help="directory to create (must be absent or empty)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same weights)")


def run(args: argparse.Namespace) -> int:
    """Write the checkpoint."""
    from cosmos3_ros.bench.tiny import make_tiny_model

    t0 = time.perf_counter()
    path = make_tiny_model(args.out_dir, seed=args.seed)
    print(f"wrote tiny Cosmos 3 checkpoint to {path} in {time.perf_counter() - t0:.1f} s (seed {args.seed})")
    return 0
