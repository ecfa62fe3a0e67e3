"""What the feature-space metrics (CA, FD, KID, PD) add to `palette eval`: seconds for N images.

    python benchmarks/eval_features.py --images 100 --size 256 --threads 2

`palette eval` scores three sets per run with EfficientNet-Lite0 (model outputs, baseline, ground
truth), so this times `evaluate.feature_scores` on three sets of N images at size x size, built from
the photos in tests/data (cropped and flipped to make N different images), after one warm-up run
that also reads and hash-checks the weights once, as a run of `palette eval` does. Prints seconds
in all and per image; `--json FILE` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import evaluate, features  # noqa: E402
from palette_cli.atomic import write_text  # noqa: E402
from palette_cli.images import resize, to_tensor  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def image_sets(count: int, size: int) -> dict[str, list[torch.Tensor]]:
    """Three sets of `count` different (3, size, size) images from the test photos."""
    photos = [to_tensor(Image.open(p).convert("RGB")) for p in sorted(DATA.glob("**/*.png"))]
    made = []
    for i in range(count):
        x = photos[i % len(photos)]
        h, w = x.shape[-2:]
        side = min(h, w) - (i // len(photos)) % 8
        crop = x[:, :side, :side].flip(-1) if i % 2 else x[:, h - side:, w - side:]
        made.append(resize(crop, (size, size)))
    return {"model": [m.flip(-2) for m in made], "baseline": [m * 0.9 for m in made], "ground_truth": made}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = image_sets(args.images, args.size)
    names = [f"n01440764_{i}.JPEG" for i in range(args.images)]  # labelled, so CA is computed too
    evaluate.feature_scores(sets, names, None, torch.device("cpu"))  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        evaluate.feature_scores(sets, names, None, torch.device("cpu"))
        times.append(time.perf_counter() - start)
    best = min(times)
    result = {"images": args.images, "size": args.size, "threads": args.threads, "seconds": best,
              "seconds_per_image": best / args.images, "sets": 3, "network": features.NAME,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    print(f"feature metrics for {args.images} images at {args.size}px (3 sets, {args.threads} threads): "
          f"{best:.1f} s, {1000 * best / args.images:.0f} ms per image")
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
