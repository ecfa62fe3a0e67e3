"""Choose a colour head's decoding on val: `palette eval` over temperatures and prior adjustments.

    python benchmarks/colour_head_sweep.py PHOTOS --run RUN_DIR [--base colorize] -n 4 \
        --setting 0.38:0 --setting 0.3:0.2 [--use colour] [--noise 1.0] [--limit 40] [--json out.json]

For each `temperature:adjust` setting it writes a model directory (the base model with the run's
head attached, `train_head.write_model`) into a temporary folder and scores it through the same path
as `palette eval` (the gray photo, then the model): colourfulness, CA and FD of the samples against
the gray input's, and the mean pairwise absolute difference between a photo's `-n` samples (0..255).
One JSON line per setting; pick the setting whose colourfulness lands in 30-40 with the best FD.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from palette_cli.checkpoint import load_model
from palette_cli.evaluate import EvalSettings, evaluate
from palette_cli.train_head import write_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--run", required=True, help="a colour head run folder (head.safetensors)")
    ap.add_argument("--base", default="colorize", help="the colorize model the head is attached to")
    ap.add_argument("--setting", action="append", required=True, help="temperature:adjust, repeatable")
    ap.add_argument("--use", default="colour", choices=("colour", "hints"))
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--noise-grid", type=int, default=2)
    ap.add_argument("--confidence", type=float, default=1.0, help="hints: only where entropy / log Q is below")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("-n", "--num-samples", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(args.setting):
            temperature, adjust = (float(v) for v in text.split(":"))
            directory = write_model(args.base, args.run, Path(tmp) / str(i), temperature=temperature,
                                    adjust=adjust, noise=args.noise, noise_grid=args.noise_grid, use=args.use,
                                    confidence=args.confidence)
            settings = EvalSettings(task="colorize", num_samples=args.num_samples, image_size=args.image_size,
                                    limit=args.limit, seed=args.seed, labels=args.labels)
            report = evaluate(load_model(directory, device="cpu"), args.data, settings).report
            feats, mean = report["features"], report["mean"]
            row = {"temperature": temperature, "adjust": adjust, "use": args.use, "noise": args.noise,
                   "confidence": args.confidence,
                   "colorfulness": mean["model"].get("colorfulness"), "psnr": mean["model"]["psnr"],
                   "ca": feats["model"].get("ca"), "fd": feats["model"].get("fd"),
                   "abs_diff": (report.get("diversity") or {}).get("mean_abs_diff"),
                   "gray_ca": feats["baseline"].get("ca"), "gray_fd": feats["baseline"].get("fd")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
