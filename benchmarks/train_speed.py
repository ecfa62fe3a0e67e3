"""Training speed against the machine's own peak: images/s, FLOPs per image, and the fraction.

    python benchmarks/train_speed.py --json                  # the built-in colorize recipe
    python benchmarks/train_speed.py --preset tiny --image-size 32 --no-encoder --no-controls --json

Runs the real training loop (`palette_cli.train.train`: data loading, the frozen encoder, forward,
backward, Adam, EMA) on a folder of photos for `--steps` steps and times every step but the first
`--warmup` from inside the loop's callback. Between steps, every `--peak-every` steps, it times a
square matrix multiply in the run's precision on the same threads (the machine's matmul peak,
measured interleaved with the training so that both see the same load). FLOPs are counted with
`torch.utils.flop_counter.FlopCounterMode` over one whole training step of the same run (network
forward and backward, and the encoder's forward when the model has one; 2 FLOPs per multiply-add).

    fraction = (training images/s x FLOPs per image) / matmul FLOP/s

Prints a summary, or with `--json` one JSON line (with the 1-minute load average before and after).

    python benchmarks/train_speed.py --cache-ab --json       # encoder in the loop vs a feature cache

`--cache-ab` times the same recipe with the encoder in the loop and trained from a feature cache
(built first, untimed), alternating the two `--rounds` times, and reports each round's images/s and
images per CPU-second of the process (steady under load, where wall time is not) and the ratios.
On a machine whose cores are shared, compare `--threads 1` with the default: there one thread
trained 4-13x faster than two (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import train  # noqa: E402
from palette_cli.devices import native_bf16, resolve_precision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The built-in colorize model's recipe (weights/colorize/README.md), as far as speed goes.
RECIPE = dict(tasks=("colorize",), preset="small", image_size=64, batch_size=8, encoder="efficientnet-lite0",
              controls=True, crop="fit", lr=2e-4, warmup=200, ema_decay=0.999)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_flops(dtype: torch.dtype, n: int = 2048, seconds: float = 0.6) -> float:
    """FLOP/s of an n x n x n matrix multiply in `dtype` on the current threads (best of a short loop)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # first call: oneDNN picks its kernel
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


class StepClock:
    """The loop's callback: seconds of each step, and the matmul peak timed between steps."""

    def __init__(self, dtype: torch.dtype, peak_every: int, peak_size: int):
        self.dtype, self.peak_every, self.peak_size = dtype, peak_every, peak_size
        self.steps: list[float] = []
        self.peaks: list[float] = []
        self.resumed = time.perf_counter()

    def __call__(self, event) -> None:
        now = time.perf_counter()
        if event.kind == "step":
            self.steps.append(now - self.resumed)
            if len(self.steps) % self.peak_every == 0:
                self.peaks.append(matmul_flops(self.dtype, self.peak_size))
        self.resumed = time.perf_counter()  # time spent here (and before the loop) is not the step's


class CpuClock(StepClock):
    """StepClock that also keeps each step's CPU seconds of this process (what a step costs whatever the
    machine's load: with one thread, images per CPU-second is images/s on a core of one's own)."""

    def __init__(self):
        super().__init__(torch.float32, 10 ** 9, 0)
        self.cpu: list[float] = []
        self.cpu_resumed = time.process_time()

    def __call__(self, event) -> None:
        now = time.process_time()
        if event.kind == "step":
            self.cpu.append(now - self.cpu_resumed)
        super().__call__(event)
        self.cpu_resumed = time.process_time()


def count_flops(data: list[Path], config: train.TrainConfig) -> float:
    """FLOPs of one training step of `config` (compile off: the count is the same, the tracing is not)."""
    from torch.utils.flop_counter import FlopCounterMode

    one = dataclasses.replace(config, steps=1, sample_every=0, save_every=1, log_every=1)
    one = _without_compile(one)
    with tempfile.TemporaryDirectory() as run, FlopCounterMode(display=False) as counter:
        train.train(data, Path(run) / "run", one, device="cpu")
    return float(counter.get_total_flops())


def _without_compile(config: train.TrainConfig) -> train.TrainConfig:
    """The config with torch.compile off, where the config has that switch."""
    return dataclasses.replace(config, compile=False) if hasattr(config, "compile") else config


def timed_run(data: list[Path], config: train.TrainConfig, clock: StepClock,
              features: train.FeatureSource | None = None) -> None:
    """The real loop for config.steps steps, reporting to `clock` (encoder maps from `features` if given)."""
    config = dataclasses.replace(config, sample_every=0, save_every=config.steps, log_every=config.steps)
    with tempfile.TemporaryDirectory() as run:
        train.train(data, Path(run) / "run", config, device="cpu", callback=clock, features=features)


def cache_ab(args: argparse.Namespace) -> dict:
    """Images/s with the encoder in the loop (A) and from a feature cache (B), interleaved A/B/A/B... so
    that both see the same machine load; the cache is built first, untimed."""
    config = make_config(args)
    precision = resolve_precision(config.precision, torch.device("cpu"), training=True)
    config = dataclasses.replace(config, precision=precision)
    data = [Path(p) for p in args.data]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        source = train.FeatureSource(Path(tmp) / "cache", args.cache_views)
        timed_run(data, dataclasses.replace(config, steps=1), CpuClock(), source)
        for r in range(args.rounds):
            for name, features in (("encoder", None), ("cache", source)):
                clock = CpuClock()
                timed_run(data, config, clock, features)
                wall, cpu = clock.steps[args.warmup:], clock.cpu[args.warmup:]
                rounds.append({"round": r, "variant": name, "images_per_s": config.batch_size * len(wall) / sum(wall),
                               "images_per_cpu_s": config.batch_size * len(cpu) / sum(cpu)})
    ratios = [b["images_per_cpu_s"] / a["images_per_cpu_s"] for a, b in zip(rounds[::2], rounds[1::2])]
    median = {v: statistics.median(x["images_per_cpu_s"] for x in rounds if x["variant"] == v)
              for v in ("encoder", "cache")}
    return {"preset": config.preset, "image_size": config.image_size, "batch": config.batch_size,
            "precision": precision, "threads": torch.get_num_threads(), "steps_timed": args.steps,
            "cache_views": args.cache_views,
            "rounds": [{k: round(v, 2) if isinstance(v, float) else v for k, v in x.items()} for x in rounds],
            "median_images_per_cpu_s": {k: round(v, 2) for k, v in median.items()},
            "ratio_cache_over_encoder": [round(x, 2) for x in ratios], "cpu": cpu_name(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def optimisations(config: train.TrainConfig) -> dict:
    """The speed-relevant switches of a run, as the training code has them."""
    names = ("channels_last", "compile", "fused_adam", "workers", "cache_features")
    return {n: getattr(config, n) for n in names if hasattr(config, n)}


def measure(args: argparse.Namespace) -> dict:
    """Run the benchmark and return its figures."""
    config = make_config(args)
    native = native_bf16(torch.device("cpu"))
    precision = resolve_precision(config.precision, torch.device("cpu"), training=True)
    config = dataclasses.replace(config, precision=precision)
    data = [Path(p) for p in args.data]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    flops_step = count_flops(data, config)
    clock = StepClock(DTYPES[precision], args.peak_every, args.peak_size)
    clock.peaks.append(matmul_flops(clock.dtype, args.peak_size))
    timed_run(data, config, clock)
    clock.peaks.append(matmul_flops(clock.dtype, args.peak_size))
    timed = clock.steps[args.warmup:]
    images_per_s = config.batch_size * len(timed) / sum(timed)
    achieved = images_per_s * flops_step / config.batch_size
    peak = statistics.median(clock.peaks)
    return {"recipe": "colorize" if args.recipe_default else "custom", "preset": config.preset,
            "image_size": config.image_size, "batch": config.batch_size, "tasks": list(config.tasks),
            "encoder": config.encoder, "controls": config.controls, "precision": precision,
            "threads": torch.get_num_threads(), "steps_timed": len(timed),
            "step_s_median": round(statistics.median(timed), 4), "images_per_s": round(images_per_s, 2),
            "flops_per_image": round(flops_step / config.batch_size), "achieved_gflops": round(achieved / 1e9, 1),
            "peak_gflops": round(peak / 1e9, 1), "peak_gflops_all": [round(p / 1e9, 1) for p in clock.peaks],
            "peak_matmul": f"{args.peak_size}^3 {precision}", "fraction": round(achieved / peak, 3),
            "optimisations": optimisations(config), "torch": torch.__version__, "cpu": cpu_name(),
            "native_bf16": native, "load_avg_1min": [load_before, os.getloadavg()[0] if load_before is not None else None]}


def make_config(args: argparse.Namespace) -> train.TrainConfig:
    """The recipe with the command line's changes."""
    fields = dict(RECIPE)
    if args.no_encoder:
        fields["encoder"] = None
    if args.no_controls:
        fields["controls"] = False
    for name in ("preset", "image_size", "batch_size", "precision", "workers"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    args.recipe_default = fields == RECIPE
    known = {f.name for f in dataclasses.fields(train.TrainConfig)}
    for name in ("channels_last", "compile", "fused_adam", "cache_features"):
        if getattr(args, name) is not None and name in known:
            fields[name] = getattr(args, name)
    return train.TrainConfig(**fields, steps=args.warmup + args.steps, seed=0)


def cpu_name() -> str:
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[str(ROOT / "tests" / "data")],
                        help="training photos: folders, files or list files [default: tests/data]")
    parser.add_argument("--preset", help="network size [default: the recipe's, small]")
    parser.add_argument("--image-size", type=int, help="crop size [default: 64]")
    parser.add_argument("--batch-size", type=int, help="images per step [default: 8]")
    parser.add_argument("--precision", help="auto, fp32, bf16 [default: auto]")
    parser.add_argument("--workers", type=int, help="data loader processes [default: the training default]")
    parser.add_argument("--no-encoder", action="store_true", help="without the frozen EfficientNet-Lite0 prior")
    parser.add_argument("--no-controls", action="store_true", help="without the colour-control inputs")
    for name in ("channels-last", "compile", "fused-adam", "cache-features"):
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                            help=f"{name} on or off [default: the training default]")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=20, help="steps timed")
    parser.add_argument("--warmup", type=int, default=3, help="steps run before timing")
    parser.add_argument("--peak-every", type=int, default=5, help="steps between matmul peak measurements")
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul")
    parser.add_argument("--cache-ab", action="store_true",
                        help="compare the encoder in the loop with a feature cache, interleaved (A/B/A/B)")
    parser.add_argument("--rounds", type=int, default=3, help="--cache-ab: A/B rounds")
    parser.add_argument("--cache-views", type=int, default=2, help="--cache-ab: views per photo in the cache")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = cache_ab(args) if args.cache_ab else measure(args)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
