"""The README's colorize figures, with the model's default settings.

    python benchmarks/colorize_figures.py --bw benchmarks/figures/bw/*.{png,jpg} -o benchmarks/figures/colorize-bw.jpg
    python benchmarks/colorize_figures.py --samples 4 tests/data/parrots-gray.jpg --height 160 -o benchmarks/figures/colorize-n4.jpg

--bw: one row per photo, the input then its colouring (seed 0). --samples N: one row, the input
then N colourings (seeds 0..N-1, as `palette colorize -n N`). Rows are scaled to --height pixels.
"""

from __future__ import annotations

import argparse

from PIL import Image

from palette_cli import pipeline
from palette_cli.checkpoint import load_model


def row(images: list[Image.Image], height: int, gap: int = 6) -> Image.Image:
    """Images side by side at one height, on white."""
    scaled = [im.convert("RGB").resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS)
              for im in images]
    out = Image.new("RGB", (sum(s.width for s in scaled) + gap * (len(scaled) - 1), height), "white")
    x = 0
    for s in scaled:
        out.paste(s, (x, 0))
        x += s.width + gap
    return out


def stack(rows: list[Image.Image], gap: int = 6) -> Image.Image:
    """Rows one above the other, left-aligned, on white."""
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + gap
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--model", default="colorize")
    ap.add_argument("--samples", type=int, default=0, help="N colourings of the first photo instead of --bw rows")
    ap.add_argument("--bw", action="store_true", help="one row per photo: input, colouring")
    ap.add_argument("--height", type=int, default=244)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    model = load_model(args.model)
    with pipeline.autocast(model, "auto"):  # the precision `palette colorize` uses by default
        figure = make_figure(model, args)
    figure.save(args.output, quality=90)


def make_figure(model, args: argparse.Namespace) -> Image.Image:
    if args.samples:
        photo = Image.open(args.photos[0])
        outputs = pipeline.restore(model, "colorize", args.photos[0], num_samples=args.samples, seed=0)
        return row([photo, *outputs], args.height)
    return stack([row([Image.open(p), pipeline.restore(model, "colorize", p, seed=0)[0]], args.height)
                  for p in args.photos])


if __name__ == "__main__":
    main()
