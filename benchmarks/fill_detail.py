"""Detail and realism of inpaint and uncrop fills at full resolution: refinement off, on, and a mean-colour fill.

    python benchmarks/fill_detail.py PHOTOS [--limit 4] [--refine 0.3:1,0.5:1] [--save OUTDIR]

For each photo:
- inpaint: a 200x150 box in the centre (`palette inpaint --mask-box`) is filled;
- uncrop: the photo's left half is the input and `palette uncrop --side right` grows it back to the
  photo's size (so the photo itself is the ground truth of the new half, as in `palette eval`).

Detail is the mean |Laplacian| of the luminance (0..255) inside the fill divided by the same of the
known pixels around it (inpaint: a 64 px band around the hole; uncrop: the known half), both kept 2 px
away from the seam so that the seam's step does not count. 1.0: the fill is as detailed as the photo.
FD is the Fréchet distance of EfficientNet-Lite0 pooled features (`palette_cli.features`, as
`palette eval` scores) between the set of filled regions (inpaint: the hole with as much context again
on every side, 400x300; uncrop: the new half) and the same regions of the original photos. With a few
photos FD is noisy; compare rows of one run. Seconds are wall-clock per photo and task, on this
machine's threads (OMP_NUM_THREADS).

`--refine` lists refinement settings STRENGTH:STEPS[:BLOCK] to compare (default: the model config's block);
`--save` writes every output as PNG for looking at.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import features, images, metrics  # noqa: E402
from palette_cli.checkpoint import load_model  # noqa: E402
from palette_cli.config import RefineConfig  # noqa: E402
from palette_cli.files import folder_images  # noqa: E402
from palette_cli.pipeline import restore  # noqa: E402
from palette_cli.images import box_mask, mean_fill  # noqa: E402

HOLE = (200, 150)  # inpaint box, width x height
SEAM = 2  # pixels on either side of the fill's edge left out of the detail measure
BAND = 64  # inpaint: the known pixels within this distance of the hole are its surroundings

LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]


def luminance_laplacian(x: torch.Tensor) -> torch.Tensor:
    """|Laplacian| of the luminance (0..255) of a (3, H, W) image in [-1, 1], zero on the border."""
    y = (torch.tensor([0.299, 0.587, 0.114])[:, None, None] * (x + 1) * 127.5).sum(0)
    return F.conv2d(y[None, None], LAPLACE, padding=1)[0, 0].abs()


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """A (H, W) boolean mask dilated by `pixels` (a square neighbourhood)."""
    return F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)[0, 0] > 0


def detail_ratio(image: torch.Tensor, fill: torch.Tensor, around: torch.Tensor) -> float:
    """Mean |Laplacian| inside `fill` over that of `around` (both (H, W) booleans), away from their seam."""
    lap = luminance_laplacian(image)
    inside = fill & ~grow(~fill, SEAM)
    outside = around & ~grow(fill, SEAM)
    return float(lap[inside].mean() / lap[outside].mean())


def seam_step(image: torch.Tensor, fill: torch.Tensor, width: int = 4, flat: float = 3.0) -> float:
    """The tone step at a fill's border where it shows, in levels of 255: along the border, the mean of the
    known pixels within `width` minus the mean of the fill's within `width` ((2 width + 1)^2 box means),
    in absolute value, averaged over the channels and the border pixels whose known side is flat (its
    pixels' standard deviation under `flat` levels: sky, walls; on texture a step hides). NaN if none is."""
    def local(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        w = m.float()[None, None]
        total = F.avg_pool2d(x[None] * w, 2 * width + 1, stride=1, padding=width, count_include_pad=False)
        count = F.avg_pool2d(w, 2 * width + 1, stride=1, padding=width, count_include_pad=False)
        return (total / count.clamp(min=1e-6))[0]
    border = fill & grow(~fill, 1)
    inside, outside = fill & grow(~fill, width), ~fill & grow(fill, width)
    known_mean = local(outside, image)
    spread = (local(outside, image.square()) - known_mean.square()).clamp(min=0).sqrt().mean(0) * 127.5
    step = (known_mean - local(inside, image)).abs().mean(0)
    where = border & (spread < flat)
    return float(step[where].mean() * 127.5) if bool(where.any()) else float("nan")


def inpaint_case(photo: torch.Tensor) -> dict:
    """The centred box, the regions scored, and the restore options."""
    _, h, w = photo.shape
    x, y = (w - HOLE[0]) // 2, (h - HOLE[1]) // 2
    hole = box_mask(h, w, (x, y, *HOLE))[0].bool()
    box = (slice(max(y - HOLE[1] // 2, 0), y + HOLE[1] * 3 // 2), slice(max(x - HOLE[0] // 2, 0), x + HOLE[0] * 3 // 2))
    return {"input": photo, "fill": hole, "around": grow(hole, BAND) & ~hole, "region": box,
            "options": {"mask_box": (x, y, *HOLE)}}


def uncrop_case(photo: torch.Tensor) -> dict:
    """The left half as the input; the right half is the fill and the region scored."""
    _, h, w = photo.shape
    fill = torch.zeros(h, w, dtype=torch.bool)
    fill[:, w - w // 2:] = True
    return {"input": photo[:, :, :w - w // 2], "fill": fill, "around": ~fill,
            "region": (slice(0, h), slice(w - w // 2, w)), "options": {"side": "right", "ratio": 0.5}}


def run(model, task: str, case: dict, refine, seed: int) -> tuple[torch.Tensor, float]:
    """One output (3, H, W) and its seconds; refine None is the mean-colour fill."""
    start = time.perf_counter()
    if refine is None:
        photo, fill = case["input"], case["fill"][None].float()
        if task == "uncrop":  # the canvas the model would fill: the input, then nothing
            photo = torch.cat([photo, torch.zeros_like(photo)], dim=-1)[..., :fill.shape[-1]]
        return mean_fill(photo, fill), time.perf_counter() - start
    (out,) = restore(model, task, images.to_pil(case["input"]), seed=seed, refine=refine, **case["options"])
    return images.to_tensor(out), time.perf_counter() - start


def pooled(regions: list[torch.Tensor], network) -> torch.Tensor:
    """Pooled features of regions of any sizes (portrait and landscape photos mix), one row each."""
    return torch.cat([features.extract(r[None], network=network).pooled for r in regions])


def parse_refine(text: str | None) -> list[tuple[str, object]]:
    """Rows to compare: off, each STRENGTH:STEPS (or the model's block), and the mean-colour fill."""
    settings = [("auto", "auto")] if text is None else [
        (f"on {item}", RefineConfig(*(t(v) for t, v in zip((float, int, int), item.split(":")))))
        for item in text.split(",")]
    return [("off", "off"), *settings, ("mean fill", None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--model", default="inpaint")
    parser.add_argument("--tasks", default="inpaint,uncrop")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--refine", default=None, help="STRENGTH:STEPS[:BLOCK],... (default: the model's refine block)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="write every output here")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    model = load_model(args.model, device="cpu")
    photos = folder_images(args.photos)[:args.limit]
    rows = parse_refine(args.refine)
    network = features.load()
    print(f"{len(photos)} photo(s) from {args.photos.name}, model {args.model}, seed {args.seed}")
    print(f"{'task':8} {'fill':14} {'detail':>7} {'min':>6} {'FD':>8} {'s/photo':>8}")
    for task in args.tasks.split(","):
        originals = [images.to_tensor(images.load_photo(p).rgb) for p in photos]
        cases = [(p, (inpaint_case if task == "inpaint" else uncrop_case)(x)) for p, x in zip(photos, originals)]
        truth = pooled([x[:, c["region"][0], c["region"][1]] for x, (_, c) in zip(originals, cases)], network)
        for name, refine in rows:
            ratios, crops, seconds = [], [], 0.0
            for path, case in cases:
                out, took = run(model, task, case, refine, args.seed)
                seconds += took
                ratios.append(detail_ratio(out, case["fill"], case["around"]))
                crops.append(metrics.quantize(out[:, case["region"][0], case["region"][1]]))
                if args.save is not None:
                    args.save.mkdir(parents=True, exist_ok=True)
                    images.to_pil(out).save(args.save / f"{path.stem}.{task}.{name.replace(' ', '_')}.png")
            fd = metrics.frechet_distance(pooled(crops, network), truth)
            print(f"{task:8} {name:14} {sum(ratios) / len(ratios):7.3f} {min(ratios):6.3f} {fd:8.2f} "
                  f"{seconds / len(cases):8.2f}", flush=True)


if __name__ == "__main__":
    main()
