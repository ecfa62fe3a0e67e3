"""What `palette jpeg` costs on one photo, in units of this machine's own fp32 matrix-multiply speed.

    python benchmarks/jpeg_speed.py kodim05.png --threads 2
    python benchmarks/jpeg_speed.py kodim05.png --threads 2 --profile      # also the top operators

The clean photo is recompressed at --quality (the scan a user has), written as a .jpg, then restored
the way `palette jpeg` does it: decode, `pipeline.prepare`, `pipeline.restore_tensors`, `finish`,
PNG save. Interpreter start-up and model loading are not counted (once per run, not per photo).
The fp32 GEMM rate (2048x2048 matmuls, same threads) is measured before and after, in the same
process, and the cost is reported as seconds x GEMM rate / pixels (MFLOP-equivalents per pixel),
so it is comparable between machines. PSNR is against the clean photo, for the output and the JPEG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import images, metrics, pipeline  # noqa: E402
from palette_cli.checkpoint import load_model  # noqa: E402
from palette_cli.tasks.jpeg import encode_jpeg  # noqa: E402


def gemm_rate(size: int = 2048, repeats: int = 8) -> float:
    """Best fp32 matmul rate in FLOP/s over a few runs."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def restore_once(model, jpg: Path, out: Path, sampling, dtype: str):
    """Everything `palette jpeg` does for one photo after the model is loaded; returns the output image."""
    photo = images.load_photo(jpg)
    with torch.inference_mode(), pipeline.autocast(model, dtype):
        prep = pipeline.prepare(model, "jpeg", photo)
        samples = pipeline.restore_tensors(model, prep.cond, sampling=sampling, views=prep.view)
        image = pipeline.finish(prep, samples)[0]
    images.save_png(image, out, {"palette": "benchmark"})
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path, help="A clean photo (e.g. a 768x512 Kodak image).")
    parser.add_argument("--model", default="jpeg")
    parser.add_argument("--quality", type=int, default=10)
    parser.add_argument("--steps", type=int, help="Sampling steps [default: the model's].")
    parser.add_argument("--dtype", default="auto", help="auto, fp32 or bf16 (as palette jpeg --dtype).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="Print the top operators of one run.")
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model)
    sampling = pipeline.resolve_sampling(model, steps=args.steps)
    clean = images.load_photo(args.photo).rgb
    with tempfile.TemporaryDirectory() as tmp:
        jpg, out = Path(tmp) / "scan.jpg", Path(tmp) / "out.png"
        jpg.write_bytes(encode_jpeg(clean, args.quality))
        rate_before = gemm_rate()
        restore_once(model, jpg, out, sampling, args.dtype)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            image = restore_once(model, jpg, out, sampling, args.dtype)
            times.append(time.perf_counter() - start)
        rate_after = gemm_rate()
        if args.profile:
            _profile(model, jpg, out, sampling, args.dtype)
        scan = images.load_photo(jpg).rgb
    _report(args, clean, scan, image, times, (rate_before, rate_after), sampling)


def _profile(model, jpg: Path, out: Path, sampling, dtype: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        restore_once(model, jpg, out, sampling, dtype)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def _report(args, clean, scan, image, times, rates, sampling) -> None:
    w, h = clean.size
    seconds, rate = statistics.median(times), statistics.mean(rates)
    truth = images.to_tensor(clean)
    psnr_out = float(metrics.psnr(images.to_tensor(image.convert("RGB")), truth))
    psnr_jpeg = float(metrics.psnr(images.to_tensor(scan), truth))
    result = {"photo": args.photo.name, "size": [w, h], "model": args.model, "quality": args.quality,
              "sampler": sampling.sampler, "steps": sampling.steps, "dtype": args.dtype, "threads": args.threads,
              "seconds": seconds, "gemm_gflops": rate / 1e9, "gemm_gflops_before_after": [r / 1e9 for r in rates],
              "mflop_per_pixel": seconds * rate / (w * h) / 1e6, "psnr_jpeg": psnr_jpeg, "psnr_out": psnr_out,
              "gain_db": psnr_out - psnr_jpeg}
    print(f"{args.photo.name} {w}x{h} q{args.quality}: {seconds:.3f} s (median of {len(times)}), fp32 GEMM "
          f"{rate / 1e9:.1f} GFLOP/s -> {result['mflop_per_pixel']:.3f} GEMM-MFLOP/px; PSNR {psnr_out:.2f} dB vs "
          f"JPEG {psnr_jpeg:.2f} dB ({result['gain_db']:+.2f} dB)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
