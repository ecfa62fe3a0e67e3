"""The README's inpaint and uncrop figures: the built-in models on full-size Kodak photos, default fills.

    python benchmarks/fill_figures.py KODAK_DIR [--out benchmarks/figures]

- inpaint.jpg: kodim03 (hats) with the box 300,180,160,120 filled (`palette inpaint hats.png --mask-box
  300,180,160,120`), a 320x260 crop around it at 1:1: the input (hole in gray), the model's fill scaled up
  (`--refine off`: the layout the completion follows), and the exemplar completion (the default);
- uncrop.jpg: kodim14 (river) grown by a quarter to the right (`palette uncrop river.png --side right
  --ratio 0.25`, 768x512 -> 1024x512) at half size: the input, the model's fill scaled up (`--refine off`)
  and the exemplar completion (the default).

Both go through the library's own steps (pipeline.prepare, restore_tensors, refine.complete_fill,
finish), seed 0, and are saved as JPEG at quality 90.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import images, tasks  # noqa: E402
from palette_cli.checkpoint import load_model  # noqa: E402
from palette_cli.completion import CompletionConfig  # noqa: E402
from palette_cli.pipeline import completion_for, finish, prepare, resolve_sampling, restore_tensors  # noqa: E402
from palette_cli.refine import complete_fill  # noqa: E402

GAP = 6  # white pixels between panels
BOX = (300, 180, 160, 120)  # inpaint: x, y, width, height on kodim03
CROP = (220, 110, 540, 370)  # the 320x260 crop shown, around the box


def fills(task: str, path: Path, **options) -> tuple[Image.Image, Image.Image]:
    """The model's fill scaled up and the completed fill of one photo, at full size."""
    model = load_model(task, device="cpu")
    prep = prepare(model, task, path, seed=0, **options)
    samples = restore_tensors(model, prep.cond, prep.mask, sampling=resolve_sampling(model, refine="off"), seed=0,
                              views=prep.view)
    region, mask = tasks.get(task).fill_region(prep)
    completed = complete_fill(region, mask, samples[0, 0], seed=0, sample=0,
                              config=completion_for(task, CompletionConfig()))  # the task's default
    return finish(prep, samples)[0], finish(prep, completed[None, None])[0]


def row(panels: list[Image.Image]) -> Image.Image:
    """Panels side by side on white, GAP pixels apart."""
    width = sum(p.width for p in panels) + GAP * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + GAP
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kodak", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    hats = args.kodak / "kodim03.png"
    scaled, completed = fills("inpaint", hats, mask_box=BOX)
    shown = images.load_photo(hats).rgb.copy()
    shown.paste((128, 128, 128), (BOX[0], BOX[1], BOX[0] + BOX[2], BOX[1] + BOX[3]))
    row([im.crop(CROP) for im in (shown, scaled, completed)]).save(args.out / "inpaint.jpg", quality=90)

    river = args.kodak / "kodim14.png"
    scaled, completed = fills("uncrop", river, side="right", ratio=0.25)
    photo = images.load_photo(river).rgb
    half = [im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS) for im in (photo, scaled, completed)]
    row(half).save(args.out / "uncrop.jpg", quality=90)
    print(f"wrote {args.out / 'inpaint.jpg'} and {args.out / 'uncrop.jpg'}")


if __name__ == "__main__":
    main()
