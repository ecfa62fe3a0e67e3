"""How different are the `-n` samples of one photo, and how colourful: `palette eval` over settings.

    python benchmarks/diversity.py PHOTOS --model colorize --image-size 256 -n 4 \
        --setting ddim:2 --setting ddim:8 --setting ddpm:8 [--limit 40] [--labels LABELS.tsv] [--json out.json]
    python benchmarks/diversity.py PHOTOS --model uncrop --task uncrop -n 4 [--refine off]

For each `sampler:steps[:guidance]` setting it restores every photo `-n` times through the same path
as `palette eval` (the task's degradation, then the model) and prints one line: the mean pairwise
absolute difference between the samples of a photo (0..255, averaged over pairs and photos; the
colorize target is >= 4.0), the mean pairwise MS-SSIM, the colourfulness of the samples and the
classifier's CA and FD against the degraded input's (gray for colorize).
"""

from __future__ import annotations

import argparse
import json
import sys

from palette_cli.checkpoint import load_model
from palette_cli.evaluate import EvalSettings, evaluate


def parse_setting(text: str) -> dict:
    """'ddim:8' or 'ddpm:8:1.0' -> sampler, steps and guidance."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--setting {text!r}: expected sampler:steps[:guidance]")
    return {"sampler": parts[0], "steps": int(parts[1]), "guidance": float(parts[2]) if len(parts) == 3 else None}


def measure(model, data: str, task: str, setting: dict, args: argparse.Namespace) -> dict:
    settings = EvalSettings(task=task, num_samples=args.num_samples, image_size=args.image_size,
                            limit=args.limit, seed=args.seed, labels=args.labels, refine=args.refine, **setting)
    report = evaluate(model, data, settings).report
    feats, mean = report["features"], report["mean"]
    return {**setting, "abs_diff": report["diversity"]["mean_abs_diff"], "ms_ssim": report["diversity"]["mean"],
            "colorfulness": mean["model"].get("colorfulness"), "psnr": mean["model"]["psnr"],
            "ca": feats["model"].get("ca"), "fd": feats["model"].get("fd"),
            "input_ca": feats["baseline"].get("ca"), "input_fd": feats["baseline"].get("fd")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--model", default="colorize")
    ap.add_argument("--task", default="colorize")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("-n", "--num-samples", type=int, default=4)
    ap.add_argument("--setting", action="append", default=None, help="sampler:steps[:guidance], repeatable")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", default=None, help="file<TAB>ImageNet class per line; default: from nXXXXXXXX_ names")
    ap.add_argument("--refine", default="auto", choices=("auto", "off"),
                    help="inpaint/uncrop: the default fill (auto: exemplar completion) or the model's own (off)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    if args.num_samples < 2:
        raise SystemExit("-n must be at least 2 to compare samples")
    model = load_model(args.model, device="cpu")
    rows = []
    for text in args.setting or ["default:0"]:
        setting = {} if text == "default:0" else parse_setting(text)
        row = measure(model, args.data, args.task, setting, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
