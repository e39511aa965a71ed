# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""One denoising step of the generation stream, for one or several passes, captured as a CUDA graph.

A graph belongs to a *group*: the plans of the passes it runs (a conditional and an unconditional pass of one call,
or the passes of several robots' calls) and which of them share inputs (both guidance passes read the same noisy
tokens). Replays copy the step's inputs into the graph's static buffers and clone its outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

#: The step inputs of one pass: vision tokens, vision timesteps, action tokens, action timesteps (None: absent).
Inputs = tuple[Any, Any, Any, Any]


def share_pattern(inputs: Sequence[Inputs]) -> tuple[list[Inputs], tuple[int, ...]]:
    """Distinct input sets (by identity of their tensors) and, per pass, the index of its set."""
    uniq: list[Inputs] = []
    pattern = []
    for inp in inputs:
        for j, u in enumerate(uniq):
            if all(a is b for a, b in zip(inp, u, strict=True)):
                pattern.append(j)
                break
        else:
            pattern.append(len(uniq))
            uniq.append(inp)
    return uniq, tuple(pattern)


class StepGraph:
    """The step of a group captured once; ``__call__(unique_inputs)`` replays it with new inputs."""

    def __init__(self, fn: Callable[[list[Inputs]], list], example: list[Inputs], warmup: int = 2):
        with torch.inference_mode(False):  # plain tensors: copy_ works in and out of inference mode
            self.static = [[None if t is None else t.clone() for t in inp] for inp in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a batched call captures in one thread while the others wait (they launch nothing).
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = fn(self.static)

    def __call__(self, inputs: list[Inputs]) -> list:
        for bufs, inp in zip(self.static, inputs, strict=True):
            for buf, x in zip(bufs, inp, strict=True):
                if buf is not None:
                    buf.copy_(x)
        self.graph.replay()
        return [
            ([t.clone() for t in vision], None, None if action is None else [t.clone() for t in action])
            for vision, _, action in self.out
        ]
