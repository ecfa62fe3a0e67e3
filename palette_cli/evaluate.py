"""Evaluate a model on ground-truth photos: degrade, restore, score against the original and a baseline.

Each ground truth is resized (short side) and centre-cropped to the evaluation size (by default the
model's resolution), degraded with the task's own degradation (`tasks/<task>.py`) from a generator
keyed on (seed, image index), so two models evaluated with the same seed see identical inputs. At
the model's size the network restores it through `pipeline.restore_tensors`; at any other size it
goes through the full-resolution path of `palette <task>` (`pipeline.prepare`/`finish`). A
diffusion-free baseline is computed from the same input; both are rounded to 8 bits, as a saved PNG
would be, and scored against the ground truth: PSNR and SSIM, and in a frozen ImageNet classifier's
feature space (CA, FD, KID, PD), as the Palette paper scores restorations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import images, metrics, seeds, tasks
from .atomic import atomic_path, write_text
from .checkpoint import PaletteModel
from .errors import PaletteError
from .files import evaluation_images
from .pipeline import Sampling, autocast, finish, prepare, refine_samples, resolve_sampling, restore_tensors
from .settings import RestoreSettings
from .tasks.jpeg import DEFAULT_QUALITY

REPORT_VERSION = 1
GRID_GAP = 2  # white pixels between the cells of grid.png

# Metrics palette does not compute (it never downloads weights).
SKIPPED = {
    "fid": "needs Inception-v3 weights, which palette does not ship; `fd` is the same statistic in "
           "EfficientNet-Lite0's feature space",
    "lpips": "needs AlexNet/VGG weights and the lpips package; `pd` is the Palette paper's perceptual distance "
             "in EfficientNet-Lite0's feature space",
    "chimle_variance": "faithfulness-weighted variance (CHIMLE) is not implemented",
}
FEATURE_NOTE = ("ca: top-1 accuracy of the ImageNet classifier EfficientNet-Lite0 (224 px) on labelled images; "
                "fd: Fréchet distance and kid: unbiased kernel distance between pooled features of a set and of "
                "the ground truth; pd: mean feature distance of each image to its own ground truth. Not "
                "comparable to published FID/KID (another network, small N).")

Progress = Callable[[int, int], None]  # (images done, images total)


@dataclass(frozen=True)
class EvalSettings:
    """How to degrade, restore and score; None means the model's own default."""

    task: str
    num_samples: int = 1  # samples per input; 2 or more also measures diversity
    sampler: str | None = None
    steps: int | None = None
    strength: float | None = None  # sampler start level; None: the model's
    dtype: str = "auto"  # network precision (autocast), as `pipeline.autocast`
    seed: int = 0  # keys the degradation of every image and the samples' starting noise
    quality: int = DEFAULT_QUALITY  # jpeg only
    mask_mode: str = "center"  # inpaint only: one of tasks.inpaint.EVAL_MASK_MODES
    side: str = "right"  # uncrop only: one of tasks.uncrop.EVAL_SIDES
    image_size: int | None = None  # evaluation resolution; None: the model's training size
    batch_size: int | None = None  # samples per network call; None: all samples of an image at once
    limit: int | None = None  # first N images of the folder
    grid_rows: int = 4  # images shown in grid.png
    labels: str | None = None  # TSV of file name -> ImageNet class index; None: from nXXXXXXXX_ names
    features: bool = True  # score CA/FD/KID/PD with the frozen classifier
    guidance: float | None = None  # classifier-free guidance over the model's conditions; None: the model's
    normalized: bool = True  # PITI's normalized guidance; False: plain
    hints: int = 0  # colorize: colour hints drawn from the ground truth given to the model
    reference: bool = False  # colorize: the ground truth given as the colour reference
    refine: str = "auto"  # inpaint/uncrop above the model's size: coarse-to-fine fills ("auto" or "off")

    def restore_settings(self) -> RestoreSettings:
        """How each degraded image is restored, as the one settings object every restore takes (checked
        there); the degradation (quality, mask_mode, side) and the colour controls are evaluation's own."""
        return RestoreSettings(self.task, num_samples=self.num_samples, seed=self.seed, sampler=self.sampler,
                               steps=self.steps, strength=self.strength, guidance=self.guidance, refine=self.refine,
                               batch_size=self.batch_size, dtype=self.dtype)


@dataclass
class EvalResult:
    """The report (JSON-ready) and the picture grid (None when no image was evaluated)."""

    report: dict
    grid: Image.Image | None


def task_options(settings: EvalSettings) -> dict:
    """The settings that the task reads (its EVAL_OPTIONS), by name."""
    return {name: getattr(settings, name) for name in tasks.get(settings.task).EVAL_OPTIONS}


def load_ground_truth(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Decode as inference does, resize the short side to `size`, centre-crop: (3, size, size)."""
    image = images.load_photo(path).rgb
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return images.to_tensor(image)


def degrade_generator(seed: int, index: int) -> torch.Generator:
    """The generator that degrades image `index` of a run seeded with `seed` (masks, noise fill)."""
    return seeds.generator(seed, index, seeds.STREAMS["degrade"])


def score(task: str, image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
          points: list | None = None) -> dict[str, float]:
    """PSNR and SSIM against the ground truth (on the restored region for masked tasks), plus the task's own
    (colorize: also the colour error around `points` and the chroma-histogram distance)."""
    module = tasks.get(task)
    out = {"psnr": float(metrics.psnr(image, target, mask)), "ssim": float(metrics.ssim(image, target, mask))}
    if points is not None:
        out.update(module.control_scores(image, target, points))
    return {**out, **module.extra_scores(image)}


def _controls(settings: EvalSettings, target: torch.Tensor, index: int) -> tuple[list | None, dict]:
    """The task's scored control points of a ground truth and the controls given to the model, for a
    task that has them (colorize's `eval_controls`); else none."""
    controls = getattr(tasks.get(settings.task), "eval_controls", None)
    if controls is None:
        return None, {}
    generator = seeds.generator(settings.seed, index, seeds.STREAMS["eval_points"])
    return controls(target, generator, hints=settings.hints, reference=settings.reference)


def _mean_dict(rows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def _check(model: PaletteModel, settings: EvalSettings) -> int:
    """Refuse settings that cannot work before any image is read; return the evaluation size."""
    module = tasks.get(settings.task)
    if settings.task not in model.config.tasks:
        raise PaletteError(f"{model.source}: model was trained for {', '.join(model.config.tasks)}, "
                           f"not {settings.task}")
    settings.restore_settings()  # SettingsError for a sampling setting no restore takes
    module.check(**task_options(settings))
    size = settings.image_size or model.config.image_size
    factor = model.network.downsample_factor
    if size % factor or size < metrics.SSIM_WINDOW:
        raise PaletteError(f"image size {size} must be a multiple of {factor} (the network's downsampling) "
                           f"and at least {metrics.SSIM_WINDOW} (the SSIM window)")
    return size


def _visible_input(cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The input as a person should see it: the hole mid-gray instead of the noise the network gets."""
    return cond if mask is None else cond * (1 - mask)


def _evaluate_image(model: PaletteModel, target: torch.Tensor, index: int, settings: EvalSettings,
                    sampling: Sampling) -> tuple[dict, list[torch.Tensor], list[float], dict]:
    """Degrade, restore and score one ground truth: its report row, grid cells, sample-pair MS-SSIMs
    and the images (samples, baseline) for the feature-space scores."""
    task, module = settings.task, tasks.get(settings.task)
    cond, mask = module.degrade(target, degrade_generator(settings.seed, index), **task_options(settings))
    points, given = _controls(settings, target, index)
    samples = metrics.quantize(_restore(model, target, cond, mask, settings, sampling, given).float().cpu())
    per_sample = [score(task, s, target, mask, points) for s in samples]
    base = metrics.quantize(module.baseline(cond, mask))
    row: dict = {"model": _mean_dict(per_sample), "samples": per_sample,
                 "baseline": score(task, base, target, mask, points)}
    truth = module.extra_scores(target)
    if truth:
        row["ground_truth"] = truth
    if mask is not None:
        row["mask_fraction"] = float(mask.mean())
    pairs = metrics.pairwise_ms_ssim(samples).tolist()
    if pairs:
        row["diversity_ms_ssim"] = float(np.mean(pairs))
        row["diversity_abs_diff"] = float(metrics.pairwise_abs_diff(samples).mean())
    return row, [_visible_input(cond, mask), *samples, target], pairs, {"model": samples, "baseline": base}


def _restore(model: PaletteModel, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
             settings: EvalSettings, sampling: Sampling, given: dict | None = None) -> torch.Tensor:
    """(num_samples, 3, S, S) restorations of one degraded image.

    At the model's own size the network restores `cond` directly. At any other size, or with colour
    controls `given`, the task's `full_size_input` gives the photo a user would have, which goes through
    `palette <task>`'s own path (colorize: chroma on the input's luminance; jpeg: tiles; inpaint: a crop
    around the hole; uncrop: the known part grown back)."""
    module, encoder = tasks.get(settings.task), model.config.encoder
    options = dict(num_samples=settings.num_samples, sampling=sampling, seed=settings.seed,
                   batch_size=settings.batch_size)
    with autocast(model, settings.dtype):
        if target.shape[-1] == model.config.image_size and not given:
            views = (None if encoder is None else
                     tasks.encoder_view(settings.task, target, cond, mask, encoder.size)[None])
            return restore_tensors(model, cond[None], None if mask is None else mask[None], views=views, **options)[0]
        if not hasattr(module, "full_size_input"):
            raise PaletteError(f"{settings.task} can only be evaluated at the model's size "
                               f"({model.config.image_size})")
        photo, prepare_options = module.full_size_input(target, cond, mask, **task_options(settings), **(given or {}))
        prep = prepare(model, settings.task, photo, seed=settings.seed, **prepare_options)
        samples = restore_tensors(model, prep.cond, prep.mask, views=prep.view, condition=prep.condition, **options)
        samples = refine_samples(model, prep, samples, sampling, seed=settings.seed, batch_size=settings.batch_size)
    return torch.stack([images.to_tensor(out.convert("RGB")) for out in finish(prep, samples)])


def _used_settings(settings: EvalSettings, data: Path, model: PaletteModel, size: int, sampling: Sampling) -> dict:
    """The settings as resolved for this run, with only the options that apply to the task."""
    return {"data": str(data), "task": settings.task, "model": model.source, "image_size": size,
            "limit": settings.limit, "num_samples": settings.num_samples, "sampler": sampling.sampler,
            "steps": sampling.steps, "strength": sampling.strength, "guidance": sampling.guidance,
            **({"guidance_form": "plain"} if not sampling.normalized else {}),
            **({"hints": settings.hints} if settings.hints else {}),
            **({"reference": "ground truth"} if settings.reference else {}),
            **({} if sampling.refine is None else {"refine": dataclasses.asdict(sampling.refine)}),
            "dtype": settings.dtype, "seed": settings.seed,
            "batch_size": settings.batch_size, "grid_rows": settings.grid_rows, **task_options(settings)}


def _diversity(pair_values: list[float], size: int, abs_diffs: list[float]) -> dict:
    """Mean pairwise MS-SSIM and absolute difference between the samples of each input, or why they
    were not measured."""
    if not pair_values:
        return {"skipped": "needs --num-samples 2 or more"}
    return {"metric": "mean pairwise MS-SSIM between the samples of one input (lower = more diverse)",
            "mean": float(np.mean(pair_values)), "pairs": len(pair_values),
            "mean_abs_diff": float(np.mean(abs_diffs)),  # of 255, averaged over pairs then inputs
            "ms_ssim_scales": metrics.ms_ssim_scales(size, size), "histogram": metrics.histogram(pair_values)}


def _report(model: PaletteModel, settings: EvalSettings, used: dict, rows: list[dict], errors: list[dict],
            pair_values: list[float], seconds: float, scores: dict) -> dict:
    """The JSON report of a finished run."""
    module = tasks.get(settings.task)
    mean = {"model": _mean_dict([r["model"] for r in rows]), "baseline": _mean_dict([r["baseline"] for r in rows])}
    if "ground_truth" in rows[0]:
        mean["ground_truth"] = _mean_dict([r["ground_truth"] for r in rows])
    return {
        "version": REPORT_VERSION,
        "settings": used,
        "model": {"source": model.source, "tasks": list(model.config.tasks), "objective": model.config.objective,
                  "image_size": model.config.image_size,
                  "parameters": sum(p.numel() for p in model.network.parameters()),
                  "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")},
        "baseline": module.BASELINE,
        "scored_region": "restored region (mask)" if module.MASKED else "whole image",
        "psnr_cap_db": metrics.PSNR_CAP_DB,
        "num_images": len(rows),
        "mean": mean,
        "wins": {m: sum(r["model"][m] > r["baseline"][m] for r in rows) for m in ("psnr", "ssim")},
        "diversity": _diversity(pair_values, used["image_size"], [r["diversity_abs_diff"] for r in rows
                                                                   if "diversity_abs_diff" in r]),
        "features": scores,
        "skipped": SKIPPED,
        "timing": {"seconds_per_image": seconds / len(rows)},  # restore and score, not file reading
        "images": rows,
        "errors": errors,
    }


def evaluate(model: PaletteModel, data: str | os.PathLike, settings: EvalSettings, *,
             callback: Progress | None = None) -> EvalResult:
    """Degrade, restore and score every image of `data`; unreadable images are listed in report["errors"]."""
    size = _check(model, settings)
    run = settings.restore_settings()
    sampling = resolve_sampling(model, run.sampler, run.steps, run.strength, run.guidance, settings.normalized,
                                run.refine)
    if settings.features:  # a missing or altered weights file fails now, not after every image is restored
        from . import features

        features.load(device=model.device)
    data = Path(data)
    files = evaluation_images(data, settings.limit)
    rows, errors, grid, pair_values = [], [], [], []
    kept: dict[str, list[torch.Tensor]] = {"model": [], "baseline": [], "ground_truth": []}
    seconds = 0.0
    for index, path in enumerate(files):
        name = path.name if path == data else path.relative_to(data).as_posix()
        try:
            target = load_ground_truth(path, size)
        except PaletteError as err:  # one bad file must not cost the others
            errors.append({"file": name, "error": str(err)})
        else:
            start = time.perf_counter()
            row, cells, pairs, outputs = _evaluate_image(model, target, index, settings, sampling)
            seconds += time.perf_counter() - start
            for key, value in (*outputs.items(), ("ground_truth", target)):
                kept[key].append(value)
            rows.append({"file": name, **row})
            pair_values += pairs
            if len(grid) < settings.grid_rows:
                grid.append(cells)
        if callback:
            callback(index + 1, len(files))
    if not rows:
        shown = "; ".join(e["error"] for e in errors[:3])
        raise PaletteError(f"{data}: no image could be evaluated ({shown})")
    used = _used_settings(settings, data, model, size, sampling)
    scores = (feature_scores(kept, [r["file"] for r in rows], settings.labels, model.device)
              if settings.features else {"skipped": "turned off"})
    report = _report(model, settings, used, rows, errors, pair_values, seconds, scores)
    return EvalResult(report=report, grid=images.grid(grid, GRID_GAP, margin=GRID_GAP) if grid else None)


def read_labels(path: str | os.PathLike) -> dict[str, int]:
    """A labels file: one `file<TAB>class index` per line (more columns and # comments are ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PaletteError(f"{path}: cannot read labels file ({err})") from None
    labels = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if not line.strip() or line.startswith("#"):
            continue
        if len(fields) < 2 or not fields[1].strip().isdigit() or not 0 <= int(fields[1]) < 1000:
            raise PaletteError(f"{path}:{number}: expected `file<TAB>class index (0-999)`, got {line[:60]!r}")
        labels[fields[0].strip()] = int(fields[1])
    return labels


def image_labels(files: list[str], labels_file: str | os.PathLike | None) -> list[int]:
    """ImageNet class of each evaluated file (-1: unknown), from the labels file or `nXXXXXXXX_` names."""
    from . import features

    if labels_file is not None:
        table = read_labels(labels_file)
        return [table.get(f, table.get(Path(f).name, -1)) for f in files]
    return [c if (c := features.class_from_name(Path(f).name)) is not None else -1 for f in files]


def feature_scores(kept: dict[str, list[torch.Tensor]], files: list[str], labels_file: str | os.PathLike | None,
                   device: torch.device) -> dict:
    """CA, FD, KID and PD of the model's outputs, the baseline and the ground truth, side by side.

    Every output sample counts for CA and PD; FD and KID compare each set's first sample per image
    with the ground-truth set."""
    from . import features

    network = features.load(device=device).to(memory_format=torch.channels_last)
    labels = torch.tensor(image_labels(files, labels_file))
    truth = features.extract(torch.stack(kept["ground_truth"]), network=network)
    report: dict = {"network": features.NAME, "note": FEATURE_NOTE, "images": len(files),
                    "labelled": int((labels >= 0).sum()), "unlabelled": int((labels < 0).sum())}
    for name in ("model", "baseline"):
        stacks = torch.stack(kept[name])  # (N, samples, 3, S, S) or (N, 3, S, S)
        per_sample = stacks if stacks.dim() == 5 else stacks[:, None]
        n, k = per_sample.shape[:2]
        feats = features.extract(per_sample.flatten(0, 1), network=network)
        report[name] = _set_scores(feats.logits.reshape(n, k, -1), feats.pooled.reshape(n, k, -1), labels,
                                   truth.pooled)
    report["ground_truth"] = {"ca": metrics.top1(truth.logits, labels), "fd": 0.0, "kid": 0.0, "pd": 0.0}
    return report


def _set_scores(logits: torch.Tensor, pooled: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor) -> dict:
    """Scores of (N, K, ...) logits and pooled features of K samples per image against the truth."""
    k = logits.shape[1]
    many = truth.shape[0] >= 2
    accuracies = [metrics.top1(logits[:, j], labels) for j in range(k)]
    return {"ca": None if accuracies[0] is None else float(np.mean(accuracies)),
            "fd": metrics.frechet_distance(pooled[:, 0], truth) if many else None,
            "kid": metrics.kernel_distance(pooled[:, 0], truth) if many else None,
            "pd": float(np.mean([metrics.perceptual_distance(pooled[:, j], truth) for j in range(k)]))}


def save_report(result: EvalResult, directory: str | os.PathLike) -> list[Path]:
    """Write report.json (and grid.png when there is one) into `directory`, each atomically."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PaletteError(f"{directory}: cannot create the report folder ({err})") from None
    written = [directory / "report.json"]
    write_text(written[0], json.dumps(result.report, indent=2) + "\n")
    if result.grid is not None:
        written.append(directory / "grid.png")
        with atomic_path(written[-1]) as tmp:
            result.grid.save(tmp, format="PNG")
    return written
