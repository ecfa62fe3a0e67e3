"""Fills of inpaint and uncrop scored as `palette eval` scores them, several fills from one model sample each.

    python benchmarks/fill_eval.py PHOTOS --task inpaint [--limit 20] [--set guide_weight=0.5 --set ...]

For each photo: the ground truth at `--image-size` (short side, centre crop), degraded with the task's
evaluation mask from `palette eval`'s generator (inpaint: the centre half, uncrop: the right half),
grown back to a photo as `palette eval` does above the model's size (`full_size_input`), prepared and
sampled once (`pipeline.prepare`, `restore_tensors`), then finished by every fill of the table:

- model: the model-size sample scaled up (`--refine off`);
- exemplar: guided exemplar completion (refine.complete_fill, completion.py) with the defaults, and one
  row per `--set` (comma-separated CompletionConfig fields, e.g. `guide_weight=0.5,row_weight=0`);
- mean fill: the hole in the known pixels' mean colour (the tasks' baseline in `palette eval`);
- mirror fill (uncrop): the known half reflected across the seam.

Scores over the whole image, as `palette eval`'s: FD of EfficientNet-Lite0 pooled features against the
ground truths, CA (top-1 on labelled photos, from `nXXXXXXXX_` names; none otherwise); detail: mean
|Laplacian| of the luminance in the hole over the known pixels' (benchmarks/fill_detail.py); repetition
(exemplar rows): the share of hole pixels copied from a source patch used more than twice, and
(visible) from a textured one (luminance std of 4/255 or more: a reused patch of sky or wall looks the
same anywhere) (metrics.repetition); seam: the tone step across the fill's border where the photo's side is
flat, in levels of 255, with the ground truths' own in the header (fill_detail.seam_step). `--start mirror:S`
samples uncrop's model from the mirror fill noised to strength S. Seconds are the fill's own CPU seconds per photo
(process time: on one thread, its wall time on an idle core; other load does not change it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli import completion, features, metrics, seeds, tasks  # noqa: E402
from palette_cli.checkpoint import load_model  # noqa: E402
from palette_cli.evaluate import degrade_generator, image_labels, load_ground_truth  # noqa: E402
from palette_cli.files import evaluation_images  # noqa: E402
from palette_cli import images  # noqa: E402
from palette_cli.images import to_tensor  # noqa: E402
from palette_cli.pipeline import completion_for, finish, prepare, resolve_sampling, restore_tensors  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fill_detail import detail_ratio, grow, seam_step  # noqa: E402

OPTIONS = {"inpaint": {"mask_mode": "center"}, "uncrop": {"side": "right"}}


def mirror_fill(cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hole (one side's half) as the known half reflected across the seam."""
    hole = mask[0] > 0.5
    cols, rows = hole.all(0), hole.all(1)
    out = cond * (1 - mask)
    if cols.any():  # a left or right strip
        n = int(cols.sum())
        known = cond[..., ~cols]
        out[..., cols] = torch.flip(known[..., -n:] if bool(cols[-1]) else known[..., :n], dims=[-1])
    else:
        n = int(rows.sum())
        known = cond[..., ~rows, :]
        out[..., rows, :] = torch.flip(known[..., -n:, :] if bool(rows[-1]) else known[..., :n, :], dims=[-2])
    return out


def extra_guide(spec: str, region: torch.Tensor, hole: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """A guide other than the model's sample, for `--guide` (see its help)."""
    mirror = mirror_fill(region, hole)
    kind, _, value = spec.partition(":")
    if kind == "mirror":
        return mirror
    if kind == "mix":
        a = float(value)
        return a * mirror + (1 - a) * images.resize(sample.float(), tuple(region.shape[-2:]))
    if kind == "blur":
        f = int(value)
        h, w = region.shape[-2:]
        small = torch.nn.functional.avg_pool2d(mirror[None], f, ceil_mode=True)
        return images.resize(small[0], (h, w)) * hole + region * (1 - hole)
    raise SystemExit(f"--guide {spec}: expected mirror, mix:A or blur:F")


def parse_config(item: str) -> completion.CompletionConfig:
    """CompletionConfig with the comma-separated `field=value` changes of one --set (each value read as its
    field's default's type; a field that defaults to None as a number)."""
    default = completion.CompletionConfig()
    fields = dict(kv.split("=") for kv in item.split(",") if kv)
    return completion.CompletionConfig(**{k: (float if getattr(default, k) is None else type(getattr(default, k)))(v)
                                          for k, v in fields.items()})


def parse_sets(items: list[str]) -> list[tuple[str, completion.CompletionConfig]]:
    """The exemplar rows: the defaults, then one per --set."""
    return [("exemplar", completion.CompletionConfig())] + [(f"exemplar {item}", parse_config(item)) for item in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--task", choices=tuple(OPTIONS), default="inpaint")
    parser.add_argument("--model", default=None, help="default: the built-in model of the task")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="CompletionConfig fields of one more row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guide", action="append", default=[],
                        help="more guides for the exemplar rows (uncrop): mirror, mix:A (A x mirror + (1 - A) x "
                             "the model's sample), blur:F (the mirror fill averaged over F x F pixel blocks)")
    parser.add_argument("--start", default=None, metavar="mirror:S",
                        help="(uncrop) sample the model from the mirror fill noised to strength S (SDEdit) instead of "
                             "from pure noise")
    parser.add_argument("--save", type=Path, default=None,
                        help="write one strip per photo there: the truth, then every fill in the table's order")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model or args.task, device="cpu")
    module = tasks.get(args.task)
    sampling = resolve_sampling(model, refine="off")
    rows = [(name, completion_for(args.task, config)) for name, config in parse_sets(args.set)]  # the task's weight
    files = evaluation_images(args.photos, args.limit)
    outputs: dict[str, list[torch.Tensor]] = {}
    extra: dict[str, list[float]] = {}
    truths = []
    for index, path in enumerate(files):
        target = load_ground_truth(path, args.image_size)
        cond, mask = module.degrade(target, degrade_generator(args.seed, index), **OPTIONS[args.task])
        photo, options = module.full_size_input(target, cond, mask, **OPTIONS[args.task])
        prep = prepare(model, args.task, photo, seed=args.seed, **options)
        if args.start:
            strength = float(args.start.partition(":")[2])
            init = torch.stack([mirror_fill(c, m) for c, m in zip(prep.cond, prep.mask)])
            samples = restore_tensors(model, prep.cond, prep.mask, sampling=resolve_sampling(
                model, strength=strength, refine="off"), seed=args.seed, views=prep.view, init=init)
        else:
            samples = restore_tensors(model, prep.cond, prep.mask, sampling=sampling, seed=args.seed, views=prep.view)
        region, hole = module.fill_region(prep)
        fills = {"model": (samples, 0.0, None)}
        guides = [("", samples[0, 0])] + [(f" ({spec} guide)", extra_guide(spec, region, hole, samples[0, 0]))
                                          for spec in args.guide]
        for (name, config), (suffix, guide) in ((r, g) for r in rows for g in guides):
            name += suffix
            start = time.process_time()
            done = completion.complete(region, hole, guide, generator=seeds.stream(args.seed, "refine", 1, 0),
                                       config=config)
            seconds = time.process_time() - start
            fills[name] = (done.image[None, None], seconds, (metrics.repetition(done.source, hole),
                                                             metrics.repetition(done.source, hole, image=region)))
        for name, (x, seconds, repeated) in fills.items():
            out = metrics.quantize(to_tensor(finish(prep, x)[0].convert("RGB")))
            outputs.setdefault(name, []).append(out)
            extra.setdefault(f"{name}/s", []).append(seconds)
            extra.setdefault(f"{name}/detail", []).append(detail_ratio(out, mask[0] > 0.5, ~grow(mask[0] > 0.5, 0)))
            extra.setdefault(f"{name}/seam", []).append(seam_step(out, mask[0] > 0.5))
            if repeated is not None:
                extra.setdefault(f"{name}/repetition", []).append(repeated[0])
                extra.setdefault(f"{name}/textured", []).append(repeated[1])
        for name, fill in (("mean fill", module.baseline(cond, mask)), ("mirror fill", mirror_fill(cond, mask))):
            if name == "mirror fill" and args.task != "uncrop":
                continue
            out = metrics.quantize(fill)
            outputs.setdefault(name, []).append(out)
            extra.setdefault(f"{name}/detail", []).append(detail_ratio(out, mask[0] > 0.5, ~grow(mask[0] > 0.5, 0)))
            extra.setdefault(f"{name}/seam", []).append(seam_step(out, mask[0] > 0.5))
        extra.setdefault("truth/seam", []).append(seam_step(metrics.quantize(target), mask[0] > 0.5))
        truths.append(target)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            strip = torch.cat([metrics.quantize(target)] + [v[-1] for v in outputs.values()], dim=-1)
            images.to_pil(strip).save(args.save / f"{path.stem}.png")
    network = features.load()
    labels = torch.tensor(image_labels([f.name for f in files], None))
    truth = features.extract(torch.stack(truths), network=network)
    print(f"{args.task}: {len(files)} photo(s) of {args.photos.name} at {args.image_size} px, model "
          f"{args.model or args.task}, seed {args.seed}, {args.threads} thread(s)"
          + (f", sampled from {args.start}" if args.start else ""))
    for key, values in extra.items():  # the seam of a photo with no flat border counts nowhere
        extra[key] = [v for v in values if v == v] or [float("nan")]
    truth_seam = sum(extra["truth/seam"]) / len(extra["truth/seam"])
    print(f"{'fill':44} {'FD':>7} {'CA':>6} {'detail':>7} {'repeat':>7} {'visible':>7} {'s/photo':>8} "
          f"{'seam':>6} (the photos' own: {truth_seam:.2f})")
    for name, images_ in outputs.items():
        feats = features.extract(torch.stack(images_), network=network)
        ca = metrics.top1(feats.logits, labels)
        mean = {k.split("/")[1]: sum(v) / len(v) for k, v in extra.items() if k.split("/")[0] == name}
        print(f"{name:44} {metrics.frechet_distance(feats.pooled, truth.pooled):7.1f} "
              f"{'-' if ca is None else f'{100 * ca:.1f}':>6} {mean['detail']:7.2f} "
              f"{'-' if 'repetition' not in mean else format(mean['repetition'], '.3f'):>7} "
              f"{'-' if 'textured' not in mean else format(mean['textured'], '.3f'):>7} "
              f"{'-' if 's' not in mean else format(mean['s'], '.2f'):>8} {mean['seam']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
