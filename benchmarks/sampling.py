"""Sampling throughput and peak memory of a palette network, against the reference trainer's way.

    python benchmarks/sampling.py --preset paper256 --image-size 256 --batch-size 1 --steps 2 \\
        --dtype bf16 --device cpu

"palette" is our path: batches of --batch-size, scaled_dot_product_attention, the chosen dtype
(bf16/fp16 through autocast), torch.inference_mode, optionally channels_last, torch.compile and
CUDA graphs. "reference" is the same work done as the public Palette trainer does it: fp32,
explicit einsum attention (guided-diffusion's QKVAttentionLegacy, patched in below, for the
benchmark only), one image after another. Both run the same DDIM sampler over the same network
weights, each in a fresh process so that peak memory (ru_maxrss on the CPU,
torch.cuda.max_memory_allocated on CUDA) belongs to one way only. Times are the median of
--repeats runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli.atomic import write_text  # noqa: E402
from palette_cli.config import PAPER_SAMPLE_SCHEDULE, PRESETS, preset  # noqa: E402
from palette_cli.diffusion import gammas as schedule_gammas  # noqa: E402
from palette_cli.samplers import sample  # noqa: E402
from palette_cli.seeds import generator as sample_generator  # noqa: E402
from palette_cli.unet import AttentionBlock, UNet  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; first match wins.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))


def legacy_attention_forward(self: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """AttentionBlock.forward as guided-diffusion / the Palette trainer compute it (QKVAttentionLegacy)."""
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = self.qkv(self.norm(x))
    bs, width, length = qkv.shape
    ch = width // (3 * self.num_heads)
    q, k, v = qkv.reshape(bs * self.num_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)  # (B*heads, T, T), materialised
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v)
    h = self.proj_out(a.reshape(bs, -1, length))
    return (x + h).reshape(b, c, *spatial)


def use_reference_attention(network: UNet) -> UNet:
    """Swap every attention block's forward for the reference einsum one (in place)."""
    for module in network.modules():
        if isinstance(module, AttentionBlock):
            if not module.legacy_order:
                raise SystemExit("the reference attention needs legacy_attention_order=True")
            module.forward = types.MethodType(legacy_attention_forward, module)
    return network


def build(preset_name: str, seed: int = 0) -> UNet:
    """The preset's network with seeded random weights (zero-initialised layers too, so attention counts)."""
    network = UNet(preset(preset_name))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return network.eval()


def forward_flops(preset_name: str, image_size: int) -> int:
    """FLOPs of one network forward on one image, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        network = use_reference_attention(UNet(preset(preset_name)))  # einsum attention: counted as bmm
        x, gamma = torch.zeros(1, 6, image_size, image_size), torch.ones(1)
    with FlopCounterMode(display=False) as counter:
        network(x, gamma)
    return counter.get_total_flops()


class GraphedNetwork:
    """The network's forward captured once in a CUDA graph and replayed: one launch per step."""

    def __init__(self, network: torch.nn.Module, x: torch.Tensor, gamma: torch.Tensor, dtype: torch.dtype):
        self.x, self.gamma = x.clone(), gamma.clone()
        autocast = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), autocast:  # warm up outside the graph, as capture requires
            for _ in range(3):
                network(self.x, self.gamma)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), autocast:
            self.out = network(self.x, self.gamma)

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.gamma.copy_(gamma)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites self.out


def measure(spec: dict) -> dict:
    """Run one way in this (fresh) process: seconds per run of all images, and peak memory."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    reference = spec["way"] == "reference"
    dtype = torch.float32 if reference else DTYPES[spec["dtype"]]
    batch = 1 if reference else spec["batch_size"]
    network = build(spec["preset"])
    if reference:
        use_reference_attention(network)
    network = network.to(device)
    channels_last = spec["channels_last"] and not reference
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if spec["compile"] and not reference:
        network = torch.compile(network, mode="reduce-overhead" if spec["cuda_graphs"] else "default")
    size, n = spec["image_size"], spec["images"]
    gen = torch.Generator().manual_seed(1)
    cond = torch.rand(n, 3, size, size, generator=gen).mul(2).sub(1).to(device)
    if channels_last:
        cond = cond.contiguous(memory_format=torch.channels_last)
    gammas = schedule_gammas(PAPER_SAMPLE_SCHEDULE)
    if spec["cuda_graphs"] and not reference and not spec["compile"]:
        x0 = torch.zeros(batch, 6, size, size, device=device)
        network = GraphedNetwork(network, x0, torch.ones(batch, device=device), dtype)
        dtype = torch.float32  # autocast is inside the graph

    def run() -> None:
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
        # The reference trainer samples under no_grad; ours under inference_mode.
        with (torch.no_grad() if reference else torch.inference_mode()), autocast:
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                sample(network, cond[start:stop], gammas, sampler="ddim", steps=spec["steps"],
                       generators=[sample_generator(0, i) for i in range(start, stop)])
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run()  # warm-up: allocator, oneDNN/cuDNN kernel choice, compilation
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        what = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        what = "peak RSS of the process (ru_maxrss)"
    return {"way": spec["way"], "seconds": statistics.median(times), "all_seconds": times,
            "peak_mib": peak, "memory": what, "threads": torch.get_num_threads()}


def in_fresh_process(spec: dict) -> dict:
    """measure() in a new interpreter, so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, spec).result()


def check_reference_attention(preset_name: str) -> float:
    """Largest difference between our attention and the reference einsum one on a small input."""
    network = build(preset_name)
    size = 8 * 2 ** (len(preset(preset_name).channel_mults) - 1)
    x, gamma = torch.randn(1, 6, size, size, generator=torch.Generator().manual_seed(2)), torch.full((1,), 0.5)
    with torch.no_grad():
        ours = network(x, gamma)
        return float((ours - use_reference_attention(network)(x, gamma)).abs().max())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper256", choices=sorted(PRESETS))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--images", type=int, default=None, help="images per run [default: one batch]")
    p.add_argument("--steps", type=int, default=2, help="sampling steps (network calls per image)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads [default: torch's choice]")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up; the median counts")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the network from a CUDA graph")
    p.add_argument("--no-reference", action="store_true", help="measure our way only")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of the device [default: table]")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return p.parse_args(argv)


def device_name(device: str) -> str:
    """A readable name of the device."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:  # Linux names the CPU model here; elsewhere the architecture has to do
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name} CPU ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    images = args.images or args.batch_size
    if args.cuda_graphs and (not args.device.startswith("cuda") or images % args.batch_size):
        raise SystemExit("--cuda-graphs needs --device cuda and --images a multiple of --batch-size")
    spec = {"preset": args.preset, "image_size": args.image_size, "batch_size": args.batch_size,
            "images": images, "steps": args.steps, "dtype": args.dtype, "device": args.device,
            "threads": args.threads, "repeats": args.repeats, "channels_last": args.channels_last,
            "compile": args.compile, "cuda_graphs": args.cuda_graphs}
    params = sum(p.numel() for p in UNet(preset(args.preset)).parameters())
    flops = forward_flops(args.preset, args.image_size)
    print(f"{args.preset} ({params / 1e6:.1f} M parameters, {flops / 1e9:.1f} GFLOP per {args.image_size}px "
          f"forward), {images} image(s), batch {args.batch_size}, {args.steps} DDIM steps, {args.dtype}, "
          f"{device_name(args.device)}, torch {torch.__version__}")
    results = {"settings": spec, "parameters": params, "forward_gflop": flops / 1e9,
               "device_name": device_name(args.device), "torch": torch.__version__}
    ways = ["palette"] if args.no_reference else ["palette", "reference"]
    if not args.no_reference:
        results["reference_attention_max_abs_diff"] = check_reference_attention(args.preset)
    peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS if k in results["device_name"]), None)
    for way in ways:
        r = in_fresh_process({**spec, "way": way})
        forwards = images * args.steps
        r["seconds_per_image"] = r["seconds"] / images
        r["images_per_second"] = images / r["seconds"]
        r["seconds_per_forward_per_image"] = r["seconds"] / forwards
        r["tflops"] = flops * forwards / r["seconds"] / 1e12
        results[way] = r
        label = "palette  " if way == "palette" else "reference"
        line = (f"{label}: {r['seconds_per_image']:.3f} s/image, {r['images_per_second']:.3f} images/s, "
                f"{r['seconds_per_forward_per_image']:.3f} s per forward per image, "
                f"{r['tflops'] * 1e3:.1f} GFLOP/s, peak {r['peak_mib']:.0f} MiB, {r['threads']} threads")
        if peak and args.device.startswith("cuda"):
            r["fraction_of_bf16_peak"] = r["tflops"] / peak
            line += f", {100 * r['tflops'] / peak:.1f}% of the {peak:.0f} TFLOP/s bf16 peak"
        print(line, flush=True)
    if not args.no_reference:
        results["speedup"] = results["reference"]["seconds"] / results["palette"]["seconds"]
        print(f"speed-up over the reference way: {results['speedup']:.2f}x "
              f"(attention outputs agree to {results['reference_attention_max_abs_diff']:.1e})")
    if args.json:
        write_text(args.json, json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
