"""Full-size inpaint and uncrop of one photo with the default fill: seconds, detail and repetition.

    python benchmarks/fill_speed.py kodim08.png [--threads 2] [--save OUTDIR] [--set harmonise=0]

The cases of issue 30's acceptance, on a 768x512 photo:
- inpaint, a 256x192 hole in the centre (`palette inpaint kodim08.png --mask-box 256,160,256,192`);
- inpaint, a centred box of 30% of the photo's area (420x280 on 768x512);
- uncrop, 768x512 -> 1536x512 (`palette uncrop kodim08.png --side right --ratio 0.5`).

Each runs the library's own steps after the models are loaded and warmed up on the same photo once:
pipeline.prepare (crop or canvas, the encoder's view), restore_tensors (the model's sample), the exemplar
completion (refine.complete_fill) and finish. Seconds: wall clock and the process's CPU seconds (the
CPU seconds over the threads used bound the wall time on an idle machine from below; on one thread
they are it). Detail: mean |Laplacian| of the luminance in the new pixels over that of the known
pixels (uncrop: the known half; inpaint: a 64 px band around the hole), 2 px away from the seam
(fill_detail.detail_ratio). Repetition: metrics.repetition of the completion's field, all patches and
textured ones. Seam: the tone step across the fill's border where the photo's side is flat, in levels
of 255 (fill_detail.seam_step). `--set` changes CompletionConfig fields (comma-separated).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import images, metrics, seeds, tasks  # noqa: E402
from palette_cli.checkpoint import load_model  # noqa: E402
from palette_cli.completion import CompletionConfig, complete  # noqa: E402
from palette_cli.pipeline import completion_for, finish, prepare, resolve_sampling, restore_tensors  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fill_detail import BAND, detail_ratio, grow, seam_step  # noqa: E402
from fill_eval import parse_config  # noqa: E402


def cases(w: int, h: int) -> list[tuple[str, str, dict]]:
    """(name, task, options) of the three cases for a w x h photo."""
    bw, bh = round(w * math.sqrt(0.3)), round(h * math.sqrt(0.3))
    return [("inpaint 256x192 hole", "inpaint", {"mask_box": ((w - 256) // 2, (h - 192) // 2, 256, 192)}),
            (f"inpaint 30% box ({bw}x{bh})", "inpaint", {"mask_box": ((w - bw) // 2, (h - bh) // 2, bw, bh)}),
            (f"uncrop {w}x{h} -> {2 * w}x{h}", "uncrop", {"side": "right", "ratio": 0.5})]


def run(model, task: str, path: Path, options: dict, config: CompletionConfig = CompletionConfig()):
    """One full restore with the default fill: the output, its completion, wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    prep = prepare(model, task, path, seed=0, **options)
    samples = restore_tensors(model, prep.cond, prep.mask, sampling=resolve_sampling(model, refine="off"), seed=0,
                              views=prep.view)
    region, mask = tasks.get(task).fill_region(prep)
    done = complete(region, mask, samples[0, 0], generator=seeds.stream(0, "refine", 1, 0),
                    config=completion_for(task, config))  # the task's default guide weight unless set
    out = finish(prep, done.image[None, None])[0]
    return out, done, region, mask, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--set", default="", help="CompletionConfig fields, e.g. harmonise=0")
    args = parser.parse_args()
    config = parse_config(args.set)
    torch.set_num_threads(args.threads)
    w, h = images.load_photo(args.photo).size
    models = {task: load_model(task, device="cpu") for task in ("inpaint", "uncrop")}
    print(f"{args.photo.name} ({w}x{h}), {args.threads} thread(s); seconds after a warm-up run of each case")
    print(f"{'case':34} {'wall s':>7} {'CPU s':>7} {'detail':>7} {'repeat':>7} {'visible':>7} {'seam':>6}")
    for name, task, options in cases(w, h):
        run(models[task], task, args.photo, options, config)  # warm-up: first calls allocate and load the encoder
        out, done, region, mask, wall, cpu = run(models[task], task, args.photo, options, config)
        x = images.to_tensor(out.convert("RGB"))
        if task == "uncrop":
            fill = torch.zeros(x.shape[-2:], dtype=torch.bool)
            fill[:, w:] = True
            around = ~fill
        else:
            fill = images.box_mask(h, w, options["mask_box"])[0] > 0
            around = grow(fill, BAND) & ~fill
        print(f"{name:34} {wall:7.2f} {cpu:7.2f} {detail_ratio(x, fill, around):7.2f} "
              f"{metrics.repetition(done.source, mask):7.3f} {metrics.repetition(done.source, mask, image=region):7.3f} "
              f"{seam_step(x, fill):6.2f}", flush=True)
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            out.save(args.save / f"{args.photo.stem}.{name.split()[0]}.{name.split()[1]}.png")


if __name__ == "__main__":
    main()
