"""Does `torch.compile` pay for itself? One network forward on a tile, eager against compiled.

    python benchmarks/compile_speed.py --model jpeg --size 512 --threads 2

Times the model's network on one (1, C, size, size) input under each precision given (autocast as
`palette` runs it), eager and after `torch.compile`, and reports the compile time (first call) and
how many forwards of this shape it takes to earn it back. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import pipeline  # noqa: E402
from palette_cli.checkpoint import load_model  # noqa: E402


def best_seconds(call, repeats: int) -> float:
    """Fastest of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(network, x: torch.Tensor, gamma: torch.Tensor, repeats: int) -> dict:
    """Eager and compiled seconds per forward, the compile time, and the break-even count."""
    eager = best_seconds(lambda: network(x, gamma), repeats)
    compiled_net = torch.compile(network)
    start = time.perf_counter()
    compiled_net(x, gamma)
    first = time.perf_counter() - start
    compiled = best_seconds(lambda: compiled_net(x, gamma), repeats)
    saved = eager - compiled
    return {"eager_s": round(eager, 4), "compiled_s": round(compiled, 4), "compile_s": round(first, 1),
            "speedup": round(eager / compiled, 2),
            "break_even_forwards": round((first - compiled) / saved) if saved > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="jpeg", help="built-in name or model directory")
    parser.add_argument("--size", type=int, default=512, help="input side (a tile of the model's)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtypes", default="fp32,bf16", help="precisions to time, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    network = model.network.eval()
    x = torch.randn(1, model.config.unet.in_channels, args.size, args.size).contiguous(
        memory_format=torch.channels_last)
    gamma = torch.full((1,), 0.5)
    report = {"model": args.model, "size": args.size, "threads": args.threads, "torch": torch.__version__}
    for dtype in args.dtypes.split(","):
        with torch.inference_mode(), pipeline.autocast(model, dtype):
            report[dtype] = measure(network, x, gamma, args.repeats)
        torch._dynamo.reset()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
