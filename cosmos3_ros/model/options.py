# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Options of the fast path (which levers are on); see :mod:`cosmos3_ros.model.fast_transformer`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Decode with the VAE decoder's weights and input channels-last on CUDA (frames change at bf16 level;
#: Wan 2.2 decode of 17 frames at 640x480 on an H100: 296 ms against 331 ms, PSNR 53 dB to the default).
VAE_CHANNELS_LAST_DEFAULT = True

ATTENTION_CHOICES = ("stock", "sdpa", "flash", "cudnn", "efficient", "math")

#: The generation stream's linear layers per decoder layer, as the fast path fuses them.
FP8_PROJECTIONS = ("qkv", "o", "gate_up", "down")

#: Linear layers of the transformer blocks that stay bf16 when ``fp8=True`` (everything outside the blocks'
#: generation-stream linears always does: embeddings, norms, attention, the text stream, the heads): the attention
#: projections (Q/K/V and output) of every layer, 21.6% of the block FLOPs; the MLPs run in FP8. The per-layer sweep
#: (``bench/results/2026-11-30-h200-fp8-sweep.md``) found them carrying the most error per FLOP, as vllm-omni's sweep
#: on Cosmos 3 Nano did. Measured over 8 samples on an H200 (random Nano weights, the quality study's samples):
#: FP8 against our bf16 2.64e-2 at the bridge preset (1.43x the bf16 noise floor 1.84e-2) and 8.14e-2 at the DROID
#: preset (1.41x its floor 5.77e-2), 1.32x / 1.28x faster than bf16
#: (``bench/results/2026-11-30-h200-*-fp8-keep-qkv-o.md``). Alternatives measured: ``qkv,o,0-2,3-17:down`` (the
#: sweep's first choice) 0.86x / 1.29x the floor at 1.25x / 1.21x; ``qkv,o,0-2`` 0.95x / 1.36x at 1.29x / 1.26x;
#: ``o`` 4.6x / 1.47x at 1.40x / 1.35x. Syntax: comma-separated ``[layers:]projection`` or ``layers`` (all four
#: projections of those layers); layers ``i`` or ``i-j``; ``none`` quantizes every block linear.
FP8_KEEP_BF16 = "qkv,o"

_TOKEN = re.compile(r"^(?:(\d+)(?:-(\d+))?)?(?::?([a-z_]+))?$")


@dataclass(frozen=True)
class Fp8Keep:
    """Which (layer, projection) pairs of the blocks stay bf16 under FP8: parsed from a spec string."""

    spec: str
    rules: tuple[tuple[int | None, int | None, str | None], ...]

    @classmethod
    def parse(cls, spec: str) -> Fp8Keep:
        """Parse ``spec`` (see :data:`FP8_KEEP_BF16`); ValueError naming the bad token."""
        spec = (spec or "").strip()
        if spec in ("", "none"):
            return cls("none", ())
        rules = []
        for token in (t.strip() for t in spec.split(",")):
            m = _TOKEN.match(token)
            if not token or m is None or (m.group(1) is None and m.group(3) is None):
                raise ValueError(f"fp8_keep token {token!r}: expected [i[-j]:]projection or i[-j]")
            lo = None if m.group(1) is None else int(m.group(1))
            hi = lo if m.group(2) is None else int(m.group(2))
            proj = m.group(3)
            if proj is not None and proj not in FP8_PROJECTIONS:
                raise ValueError(f"fp8_keep token {token!r}: projection must be one of {list(FP8_PROJECTIONS)}")
            if lo is not None and hi < lo:
                raise ValueError(f"fp8_keep token {token!r}: empty layer range")
            if m.group(1) is not None and m.group(3) is not None and ":" not in token:
                raise ValueError(f"fp8_keep token {token!r}: write layers:projection")
            rules.append((lo, hi, proj))
        return cls(spec, tuple(rules))

    @classmethod
    def from_pairs(cls, pairs, num_layers: int) -> Fp8Keep:
        """A short spec for a set of (layer, projection) pairs: whole projections, whole layers, then ranges."""
        pairs = set(pairs)
        rest = set(pairs)
        tokens = []
        for proj in FP8_PROJECTIONS:
            if all((i, proj) in pairs for i in range(num_layers)):
                tokens.append(proj)
                rest -= {(i, proj) for i in range(num_layers)}
        full = [i for i in range(num_layers) if all((i, p) in pairs for p in FP8_PROJECTIONS)]
        tokens += _ranges(full, "")
        rest -= {(i, p) for i in full for p in FP8_PROJECTIONS}
        for proj in FP8_PROJECTIONS:
            tokens += _ranges(sorted(i for i, p in rest if p == proj), f":{proj}")
        return cls.parse(",".join(tokens) or "none")

    def keeps(self, layer: int, proj: str) -> bool:
        """True when ``proj`` of decoder layer ``layer`` stays bf16."""
        for lo, hi, p in self.rules:
            if (lo is None or lo <= layer <= hi) and (p is None or p == proj):
                return True
        return False

    def pairs(self, num_layers: int) -> set[tuple[int, str]]:
        """Every kept (layer, projection) pair of a model with ``num_layers`` layers."""
        return {(i, p) for i in range(num_layers) for p in FP8_PROJECTIONS if self.keeps(i, p)}

    def check(self, num_layers: int) -> None:
        """ValueError for a layer index the model does not have."""
        for lo, hi, _ in self.rules:
            if lo is not None and hi >= num_layers:
                raise ValueError(f"fp8_keep {self.spec!r}: layer {hi} out of range (the model has {num_layers})")


def _ranges(layers: list[int], suffix: str) -> list[str]:
    """``[0, 1, 2, 5]`` -> ``["0-2<suffix>", "5<suffix>"]``."""
    out, start = [], None
    for k, i in enumerate(layers):
        if start is None:
            start = i
        if k + 1 == len(layers) or layers[k + 1] != i + 1:
            out.append(f"{start}{suffix}" if start == i else f"{start}-{i}{suffix}")
            start = None
    return out


@dataclass
class FastOptions:
    """Which levers the fast forward uses. :meth:`resolve` picks defaults per device."""

    text_cache: bool = True
    sync_free_scheduler: bool = False
    vae_autotune: bool = False
    vae_channels_last: bool = False
    fuse: bool = False
    uniform_time_embed: bool = False
    compile: bool = False
    compile_mode: str | None = None
    cuda_graphs: bool = False
    attention: str = "stock"
    fp8: bool = False
    fp8_keep: str = FP8_KEEP_BF16
    #: Run both guidance passes (conditional and unconditional) of a step as one batched forward.
    batch_cfg: bool = False

    @classmethod
    def resolve(
        cls,
        device: str,
        *,
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
    ) -> FastOptions:
        """Defaults: on CUDA every bf16-noise lever; on CPU only the exact ones (text cache, batched guidance).

        ``fp8`` on the CPU is emulated (quantized and dequantized values in float32 GEMMs): the same rounding of the
        operands, no speed-up; for tests and the benchmark's CPU smoke run.
        """
        cuda = str(device).startswith("cuda")

        def pick(value, default):
            return default if value == "auto" or value is None else bool(value)

        if not fast:
            return cls(text_cache=False)
        if vae_autotune not in ("auto", None) and vae_autotune and not cuda:
            raise ValueError("vae_autotune (cuDNN autotuning) needs a CUDA device")
        if attention == "auto":
            # SDPA with enable_gqa (the stock call; cuDNN's GQA kernel on H100 with torch 2.11) measured
            # 4.4 ms per Nano step against 8.6 ms for flash with repeated KV heads, 6.1 ms for cuDNN with them.
            attention = "sdpa" if cuda else "stock"
        if attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention {attention!r} unknown; expected one of {list(ATTENTION_CHOICES)}")
        keep = Fp8Keep.parse(FP8_KEEP_BF16 if fp8_keep is None else fp8_keep)
        compile_mode = None
        if isinstance(compile, str) and compile != "auto":
            compile_mode, compile = compile, True
        opts = cls(
            compile_mode=compile_mode,
            text_cache=True,
            vae_autotune=pick(vae_autotune, cuda),
            sync_free_scheduler=pick(sync_free_scheduler, True),
            vae_channels_last=pick(vae_channels_last, VAE_CHANNELS_LAST_DEFAULT and cuda),
            fuse=pick(fuse, cuda),
            compile=pick(compile, cuda),
            cuda_graphs=pick(cuda_graphs, cuda),
            attention=attention,
            fp8=bool(fp8),
            fp8_keep=keep.spec,
            batch_cfg=pick(batch_cfg, True),
        )
        opts.uniform_time_embed = opts.fuse
        if opts.fp8:
            opts.fuse = True
        if opts.cuda_graphs and not cuda:
            raise ValueError("cuda_graphs needs a CUDA device")
        return opts

    @property
    def exact(self) -> bool:
        """True when the result is bit-identical to the stock forward (on the CPU; batching changes GEMM shapes)."""
        levers = (self.fuse, self.compile, self.fp8, self.uniform_time_embed, self.vae_autotune, self.vae_channels_last)
        # The sync-free scheduler is bit-identical on the CPU, last-bit float32 on a GPU.
        return not any(levers) and self.attention == "stock"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return dict(self.__dict__)
