# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros bench``: stock Cosmos 3 versus our runtime on random weights; JSON + markdown results."""

from __future__ import annotations

import argparse
import shlex
import sys

from cosmos3_ros.commands.flags import add_sampling_flags, add_setting_flags, flag_values, settings_from_args

HELP = (
    "benchmark the stock Cosmos3OmniPipeline against our runtime on random weights "
    "(Nano size on a GPU, tiny on CPU): policy and forward_dynamics, timings, parity, sustained loop"
)

#: The benchmark's own default sampling settings (a realistic prompt); flags override them.
BENCH_DEFAULTS = {"prompt": "Pick up the red block and place it in the bowl."}

VARIANTS = ("stock", "ours", "exact", "fp8", "loop", "micro", "autotune", "vae_cl")
#: Variants of ``--preset`` runs (see cosmos3_ros.bench.preset_bench).
PRESET_VARIANTS = ("stock", "ours", "interval", "fp8", "batch", "loop", "quality", "fp8_sweep")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _variants(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    known = set(VARIANTS) | set(PRESET_VARIANTS)
    unknown = sorted({x.split("@")[0] for x in values} - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; choose from {sorted(known)}")
    return values


def _presets(text: str) -> tuple[str, ...]:
    from cosmos3_ros.bench.presets import PRESETS

    values = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = sorted(set(values) - set(PRESETS))
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"unknown presets {unknown or [text]}; choose from {sorted(PRESETS)}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments."""
    add_setting_flags(parser, ["device", "dtype"])
    parser.add_argument("--size", choices=["tiny", "nano"], help="model size (default: nano on CUDA, tiny on CPU)")
    parser.add_argument("--height", type=int, default=480, help="camera frame height")
    parser.add_argument("--width", type=int, default=640, help="camera frame width")
    parser.add_argument("--steps", type=_int_list, default=(30, 10), help="denoising steps, first is the main one")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant (median reported)")
    parser.add_argument("--loop-cycles", type=int, default=20, help="policy + forecast cycles of the sustained loop")
    parser.add_argument(
        "--variants",
        type=_variants,
        default=None,
        help=f"comma-separated subset of {','.join(VARIANTS)} (exact, fp8, micro, autotune, vae_cl run on "
        "CUDA only; default: all but autotune and vae_cl)",
    )
    preset = parser.add_argument_group(
        "presets (--preset): stock against ours at the shipped parameter files' own sampling settings"
    )
    preset.add_argument(
        "--preset",
        type=_presets,
        help="droid, bridge or droid,bridge (config/<name>.yaml; the sampling flags are not used then, nor --height, "
        f"--width, --steps); variants: {','.join(PRESET_VARIANTS)} (default: all; name@preset: at that preset only)",
    )
    preset.add_argument("--samples", type=int, default=8, help="samples of the quality study (frames, prompts, seeds)")
    preset.add_argument("--batch-sizes", type=_int_list, default=(2, 4), help="policy_batch sizes to measure")
    preset.add_argument(
        "--fp8-keep",
        default=None,
        help="linear layers FP8 leaves in bf16 (see cosmos3_ros.model.options.FP8_KEEP_BF16; default: that list); "
        "auto: the fp8_sweep variant's choice in this run",
    )
    preset.add_argument("--sweep-band", type=int, default=3, help="layers per group of the FP8 sweep")
    preset.add_argument(
        "--exact-fp32", action="store_true", help="float32 reference without TF32 matmuls (slower on a GPU)"
    )
    parser.add_argument("--out-dir", default="bench/results", help="where <date>-<gpu>.json and .md go")
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    add_sampling_flags(
        parser, defaults=BENCH_DEFAULTS
    )  # num_steps is replaced by each of --steps; seed also seeds the random weights


DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v not in ("vae_cl", "autotune"))


def command_from_args(args: argparse.Namespace, device: str, size: str, dtype: str) -> str:
    """The full ``cosmos3-ros bench`` command (every option spelled out) that reproduces this run."""
    parts = [
        "cosmos3-ros bench",
        f"--device {device}",
        f"--size {size}",
        f"--dtype {dtype}",
        f"--height {args.height}",
        f"--width {args.width}",
        f"--steps {','.join(str(s) for s in args.steps)}",
        f"--repeats {args.repeats}",
        f"--loop-cycles {args.loop_cycles}",
        f"--variants {','.join(args.variants)}",
        f"--out-dir {shlex.quote(args.out_dir)}",
    ]
    for name, value in settings_from_args(args, BENCH_DEFAULTS).to_dict().items():
        if name != "num_steps":
            parts.append(f"--{name} {shlex.quote(str(value))}")
    if args.tag:
        parts.append(f"--tag {shlex.quote(args.tag)}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write the results."""
    import torch

    from cosmos3_ros.bench.benchmark import Bench, BenchConfig, write_results

    device, dtype = flag_values(args, ["device", "dtype"]).values()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch {torch.__version__} has no CUDA")
    size = args.size or ("nano" if device.startswith("cuda") else "tiny")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if getattr(args, "preset", None):
        return run_presets(args, device, size, dtype)
    args.variants = args.variants or DEFAULT_VARIANTS
    extra = sorted(set(args.variants) - set(VARIANTS))
    if extra or any("@" in v for v in args.variants):
        raise ValueError(f"variants {extra} need --preset")
    cfg = BenchConfig(
        device=device,
        size=size,
        dtype=dtype,
        height=args.height,
        width=args.width,
        steps=tuple(args.steps),
        repeats=max(1, args.repeats),
        loop_cycles=max(0, args.loop_cycles),
        settings=settings_from_args(args, BENCH_DEFAULTS),
        variants=tuple(args.variants),
        command=command_from_args(args, device, size, dtype),
        out_dir=args.out_dir,
        tag=args.tag,
    )
    res = Bench(cfg).run()
    jp, mp = write_results(res, cfg.out_dir, cfg.tag)
    print(mp.read_text())
    print(f"wrote {jp} and {mp}")
    return 0


def run_presets(args: argparse.Namespace, device: str, size: str, dtype: str) -> int:
    """``--preset``: one results file per preset (and the FP8 sweep's), see cosmos3_ros.bench.preset_bench."""
    import json
    from pathlib import Path

    from cosmos3_ros.bench.fp8_sweep import sweep_markdown
    from cosmos3_ros.bench.measure import gpu_slug
    from cosmos3_ros.bench.preset_bench import PresetBench, PresetBenchConfig
    from cosmos3_ros.bench.results import write_preset_results
    from cosmos3_ros.core.settings import PolicySettings

    given = sorted(n for n in PolicySettings.field_names() if hasattr(args, n))
    if given:
        raise ValueError(f"--preset takes its sampling settings from the preset file; drop {given}")
    variants = tuple(args.variants or PRESET_VARIANTS)
    extra = sorted({x.split("@")[0] for x in variants} - set(PRESET_VARIANTS))
    if extra:
        raise ValueError(f"variants {extra} are not preset variants; choose from {list(PRESET_VARIANTS)}")
    parts = [
        "cosmos3-ros bench",
        f"--preset {','.join(args.preset)}",
        f"--device {device}",
        f"--size {size}",
        f"--dtype {dtype}",
        f"--repeats {args.repeats}",
        f"--loop-cycles {args.loop_cycles}",
        f"--samples {args.samples}",
        f"--batch-sizes {','.join(str(b) for b in args.batch_sizes)}",
        f"--variants {','.join(variants)}",
        f"--sweep-band {args.sweep_band}",
    ]
    if args.fp8_keep is not None:
        parts.append(f"--fp8-keep {shlex.quote(args.fp8_keep)}")
    if args.exact_fp32:
        parts.append("--exact-fp32")
    parts.append(f"--out-dir {shlex.quote(args.out_dir)}")
    if args.tag:
        parts.append(f"--tag {shlex.quote(args.tag)}")
    cfg = PresetBenchConfig(
        device=device,
        size=size,
        dtype=dtype,
        presets=tuple(args.preset),
        repeats=max(1, args.repeats),
        loop_cycles=max(0, args.loop_cycles),
        samples=max(1, args.samples),
        batch_sizes=tuple(args.batch_sizes),
        variants=variants,
        fp8_keep=args.fp8_keep,
        sweep_band=max(1, args.sweep_band),
        exact_fp32=args.exact_fp32,
        small=not device.startswith("cuda"),
        command=" ".join(parts),
        out_dir=args.out_dir,
        tag=args.tag,
    )
    bench = PresetBench(cfg)

    def write(res):
        jp, mp = write_preset_results(res, cfg.out_dir, cfg.tag)
        print(mp.read_text())
        print(f"wrote {jp} and {mp}", flush=True)

    bench.on_preset = write

    def write_sweep(sweep):
        common = bench.common
        gpu = gpu_slug(common["gpu"]) if "cuda" in common["device"] else f"cpu-{size}"
        stem = Path(cfg.out_dir) / (f"{common['date']}-{gpu}-fp8-sweep" + (f"-{cfg.tag}" if cfg.tag else ""))
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(sweep, indent=2) + "\n")
        stem.with_suffix(".md").write_text(sweep_markdown(sweep, cfg.command, common["device"]))
        print(f"wrote {stem}.json and .md", flush=True)

    bench.on_sweep = write_sweep
    bench.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cosmos3_ros.commands.bench``: the same as ``cosmos3-ros bench`` without the other subcommands."""
    import logging

    parser = argparse.ArgumentParser(prog="cosmos3-ros bench", description=HELP)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
