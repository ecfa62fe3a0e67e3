"""Evaluate a model on ground-truth photos: degrade, restore, score against the original and a baseline.

Each ground truth is resized (short side) and centre-cropped to the model's resolution, degraded
with the task's own preprocessing (`tasks.degrade`) from a generator keyed on (seed, image index),
so two models evaluated with the same seed see identical inputs. The model restores it through
`pipeline.restore_tensors`; a diffusion-free baseline is computed from the same input; both are
rounded to 8 bits, as a saved PNG would be, and scored against the ground truth.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from . import metrics
from .atomic import atomic_path, write_text
from .checkpoint import PaletteModel
from .errors import PaletteError
from .images import to_tensor
from .tasks import MASKED_TASKS, TASKS, UNCROP_SIDES, center_mask, degrade, encoder_view, free_form_mask, \
    random_box_mask, train_inpaint_mask, train_uncrop_mask, uncrop_mask

REPORT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MASK_MODES = ("center", "free-form", "box", "train")  # inpaint masks
UNCROP_MODES = (*UNCROP_SIDES, "random")  # "random": the training mix of sides
DEFAULT_QUALITY = 10  # Palette reports JPEG restoration at quality 5, 10 and 20
GRID_GAP = 2  # white pixels between the cells of grid.png

BASELINES = {
    "colorize": "the gray input",
    "jpeg": "the JPEG input",
    "inpaint": "mean-colour fill (mean of the known pixels)",
    "uncrop": "mean-colour fill (mean of the known pixels)",
}
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
_DEGRADE_STREAM = 0x6576616C  # keeps degradation noise apart from the sampler's noise streams

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
    mask_mode: str = "center"  # inpaint only: one of MASK_MODES
    side: str = "right"  # uncrop only: one of UNCROP_MODES
    image_size: int | None = None  # evaluation resolution; None: the model's training size
    batch_size: int | None = None  # samples per network call; None: all samples of an image at once
    limit: int | None = None  # first N images of the folder
    grid_rows: int = 4  # images shown in grid.png
    labels: str | None = None  # TSV of file name -> ImageNet class index; None: from nXXXXXXXX_ names
    features: bool = True  # score CA/FD/KID/PD with the frozen classifier
    guidance: float | None = None  # classifier-free guidance over the encoder's features; None: the model's


@dataclass
class EvalResult:
    """The report (JSON-ready) and the picture grid (None when no image was evaluated)."""

    report: dict
    grid: Image.Image | None


def find_images(data: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files of a folder (recursively, sorted) or a single file; the first `limit` of them."""
    data = Path(data)
    if data.is_file():
        files = [data]
    elif data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(data).parts))
        if not files:
            raise PaletteError(f"{data}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    else:
        raise PaletteError(f"{data}: no such file or folder")
    if limit is not None:
        if limit < 1:
            raise PaletteError(f"--limit must be at least 1, got {limit}")
        files = files[:limit]
    return files


def load_ground_truth(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read an image, apply its EXIF orientation, resize the short side to `size`, centre-crop: (3, size, size)."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise PaletteError(f"{path}: cannot read image ({err})") from None
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return to_tensor(image)


def degrade_generator(seed: int, index: int) -> torch.Generator:
    """The generator that degrades image `index` of a run seeded with `seed` (masks, noise fill)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, index, _DEGRADE_STREAM]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & 0x7FFFFFFFFFFFFFFF)


def eval_mask(settings: EvalSettings, size: int, generator: torch.Generator) -> torch.Tensor | None:
    """The (1, size, size) mask of a masked task under the settings' mask mode or side; None otherwise."""
    if settings.task == "inpaint":
        makers = {"center": lambda: center_mask(size, size),
                  "free-form": lambda: free_form_mask(size, size, generator),
                  "box": lambda: random_box_mask(size, size, generator),
                  "train": lambda: train_inpaint_mask(size, size, generator)}
        return makers[settings.mask_mode]()
    if settings.task == "uncrop":
        if settings.side == "random":
            return train_uncrop_mask(size, size, generator)
        return uncrop_mask(size, size, settings.side)
    return None


def baseline(task: str, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The diffusion-free answer from the same input: the input itself, or a mean-colour fill of the hole."""
    if task not in MASKED_TASKS:
        return cond
    known = 1 - mask
    # Mean colour of the known pixels (mid-gray when nothing is known).
    mean = (cond * known).sum(dim=(-2, -1), keepdim=True) / known.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    return cond * known + mean * mask


def score(task: str, image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> dict[str, float]:
    """PSNR and SSIM against the ground truth (on the restored region for masked tasks); colourfulness for colorize."""
    out = {"psnr": float(metrics.psnr(image, target, mask)), "ssim": float(metrics.ssim(image, target, mask))}
    if task == "colorize":
        out["colorfulness"] = float(metrics.colorfulness(image))
    return out


def _mean_dict(rows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def _check(model: PaletteModel, settings: EvalSettings) -> int:
    """Refuse settings that cannot work before any image is read; return the evaluation size."""
    if settings.task not in TASKS:
        raise PaletteError(f"unknown task {settings.task!r}; choose one of {', '.join(TASKS)}")
    if settings.task not in model.config.tasks:
        raise PaletteError(f"{model.source}: model was trained for {', '.join(model.config.tasks)}, "
                           f"not {settings.task}")
    if settings.num_samples < 1:
        raise PaletteError(f"--num-samples must be at least 1, got {settings.num_samples}")
    if settings.task == "jpeg" and not 1 <= settings.quality <= 100:
        raise PaletteError(f"JPEG quality must be an integer in 1..100, got {settings.quality}")
    if settings.task == "inpaint" and settings.mask_mode not in MASK_MODES:
        raise PaletteError(f"unknown mask mode {settings.mask_mode!r}; choose one of {', '.join(MASK_MODES)}")
    if settings.task == "uncrop" and settings.side not in UNCROP_MODES:
        raise PaletteError(f"unknown uncrop side {settings.side!r}; choose one of {', '.join(UNCROP_MODES)}")
    size = settings.image_size or model.config.image_size
    factor = model.network.downsample_factor
    if size % factor or size < metrics.SSIM_WINDOW:
        raise PaletteError(f"image size {size} must be a multiple of {factor} (the network's downsampling) "
                           f"and at least {metrics.SSIM_WINDOW} (the SSIM window)")
    return size


def _visible_input(cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The input as a person should see it: the hole mid-gray instead of the noise the network gets."""
    return cond if mask is None else cond * (1 - mask)


def make_grid(rows: list[list[torch.Tensor]], gap: int = GRID_GAP) -> Image.Image:
    """Tile rows of equally sized (3, S, S) images in [-1, 1] on a white background."""
    s = rows[0][0].shape[-1]
    cols = max(len(r) for r in rows)
    canvas = torch.ones(3, len(rows) * (s + gap) + gap, cols * (s + gap) + gap)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = gap + i * (s + gap), gap + j * (s + gap)
            canvas[:, y : y + s, x : x + s] = cell.float().cpu()
    arr = ((canvas.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, mode="RGB")


def _evaluate_image(model: PaletteModel, target: torch.Tensor, index: int, settings: EvalSettings,
                    sampler: str, steps: int) -> tuple[dict, list[torch.Tensor], list[float], dict]:
    """Degrade, restore and score one ground truth: its report row, grid cells, sample-pair MS-SSIMs
    and the images (sample 0, baseline) for the feature-space metrics."""
    task = settings.task
    generator = degrade_generator(settings.seed, index)
    mask = eval_mask(settings, target.shape[-1], generator)
    cond, mask = degrade(task, target, generator, mask=mask, quality=settings.quality)
    samples = metrics.quantize(_restore(model, target, cond, mask, settings, sampler, steps).float().cpu())
    per_sample = [score(task, s, target, mask) for s in samples]
    base = metrics.quantize(baseline(task, cond, mask))
    row: dict = {"model": _mean_dict(per_sample), "samples": per_sample,
                 "baseline": score(task, base, target, mask)}
    if task == "colorize":
        row["ground_truth"] = {"colorfulness": float(metrics.colorfulness(target))}
    if mask is not None:
        row["mask_fraction"] = float(mask.mean())
    pairs = metrics.pairwise_ms_ssim(samples).tolist()
    if pairs:
        row["diversity_ms_ssim"] = float(np.mean(pairs))
    return row, [_visible_input(cond, mask), *samples, target], pairs, {"model": samples, "baseline": base}


def _restore(model: PaletteModel, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
             settings: EvalSettings, sampler: str, steps: int) -> torch.Tensor:
    """(num_samples, 3, S, S) restorations of one degraded image.

    At the model's own size the network restores `cond` directly. At any other size the image goes
    through the same full-resolution path as `palette <task>` on a photo (colorize: chroma at the
    model's size on the input's luminance; jpeg: tiles; inpaint: a crop around the hole; uncrop: the
    known part grown to a canvas)."""
    from . import images, pipeline

    options = dict(num_samples=settings.num_samples, sampler=None if sampler == "regression" else sampler,
                   steps=steps, seed=settings.seed, batch_size=settings.batch_size, strength=settings.strength,
                   guidance=settings.guidance)
    size = target.shape[-1]
    with pipeline.autocast(model, settings.dtype):
        if size == model.config.image_size:
            views = None
            if model.config.encoder is not None:
                views = encoder_view(settings.task, target, cond, mask, model.config.encoder.size)[None]
            return pipeline.restore_tensors(model, cond[None], None if mask is None else mask[None], views=views,
                                            **options)[0]
        prep = _full_size_input(model, settings, target, cond, mask)
        samples = pipeline.restore_tensors(model, prep.cond, prep.mask, views=prep.view, **options)
    return torch.stack([images.to_tensor(out.convert("RGB")) for out in pipeline.finish(prep, samples)])


def _full_size_input(model: PaletteModel, settings: EvalSettings, target: torch.Tensor, cond: torch.Tensor,
                     mask: torch.Tensor | None):
    """`pipeline.prepare` of the photo a user would have: the gray image, the clean photo (recompressed
    by prepare), the photo with its hole, or the known part that uncrop grows back."""
    from . import images, pipeline

    task = settings.task
    if task == "colorize":
        return pipeline.prepare(model, task, images.to_pil(cond), seed=settings.seed)
    if task == "jpeg":
        return pipeline.prepare(model, task, images.to_pil(target), quality=settings.quality, seed=settings.seed)
    if task == "inpaint":
        return pipeline.prepare(model, task, images.to_pil(target), mask=mask, seed=settings.seed)
    if settings.side not in UNCROP_SIDES:
        raise PaletteError(f"uncrop side {settings.side!r} cannot be evaluated at a size other than the "
                           f"model's; use {', '.join(UNCROP_SIDES)}")
    top, left, kh, kw = images.known_box(mask)
    return pipeline.prepare(model, task, images.to_pil(target[:, top:top + kh, left:left + kw]),
                            side=settings.side, ratio=0.5, seed=settings.seed)


def _used_settings(settings: EvalSettings, data: Path, model: PaletteModel, size: int, sampler: str,
                   steps: int) -> dict:
    """The settings as resolved for this run, with only the options that apply to the task."""
    used = {"data": str(data), "task": settings.task, "model": model.source, "image_size": size,
            "limit": settings.limit, "num_samples": settings.num_samples, "sampler": sampler, "steps": steps,
            "strength": model.config.strength if settings.strength is None else settings.strength,
            "guidance": (settings.guidance if settings.guidance is not None else
                         model.config.encoder.guidance if model.config.encoder else None),
            "dtype": settings.dtype, "seed": settings.seed, "batch_size": settings.batch_size, "grid_rows": settings.grid_rows}
    if settings.task == "jpeg":
        used["quality"] = settings.quality
    if settings.task == "inpaint":
        used["mask_mode"] = settings.mask_mode
    if settings.task == "uncrop":
        used["side"] = settings.side
    return used


def evaluate(model: PaletteModel, data: str | os.PathLike, settings: EvalSettings, *,
             callback: Progress | None = None) -> EvalResult:
    """Degrade, restore and score every image of `data`; unreadable images are listed in report["errors"]."""
    size = _check(model, settings)
    data = Path(data)
    files = find_images(data, settings.limit)
    task = settings.task
    regression = model.config.objective == "regression"
    sampler = "regression" if regression else settings.sampler or model.config.sampler
    steps = 1 if regression else settings.steps or model.config.steps

    images, errors, grid, pair_values = [], [], [], []
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
            row, cells, pairs, outputs = _evaluate_image(model, target, index, settings, sampler, steps)
            seconds += time.perf_counter() - start
            if settings.features:
                kept["model"].append(outputs["model"])
                kept["baseline"].append(outputs["baseline"])
                kept["ground_truth"].append(target)
            images.append({"file": name, **row})
            pair_values += pairs
            if len(grid) < settings.grid_rows:
                grid.append(cells)
        if callback:
            callback(index + 1, len(files))
    if not images:
        shown = "; ".join(e["error"] for e in errors[:3])
        raise PaletteError(f"{data}: no image could be evaluated ({shown})")

    mean = {"model": _mean_dict([r["model"] for r in images]),
            "baseline": _mean_dict([r["baseline"] for r in images])}
    if task == "colorize":
        mean["ground_truth"] = _mean_dict([r["ground_truth"] for r in images])
    if pair_values:
        diversity = {"metric": "mean pairwise MS-SSIM between the samples of one input (lower = more diverse)",
                     "mean": float(np.mean(pair_values)), "pairs": len(pair_values),
                     "ms_ssim_scales": metrics.ms_ssim_scales(size, size),
                     "histogram": metrics.histogram(pair_values)}
    else:
        diversity = {"skipped": "needs --num-samples 2 or more"}
    report = {
        "version": REPORT_VERSION,
        "settings": _used_settings(settings, data, model, size, sampler, steps),
        "model": {"source": model.source, "tasks": list(model.config.tasks), "objective": model.config.objective,
                  "image_size": model.config.image_size,
                  "parameters": sum(p.numel() for p in model.network.parameters()),
                  "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")},
        "baseline": BASELINES[task],
        "scored_region": "restored region (mask)" if task in MASKED_TASKS else "whole image",
        "psnr_cap_db": metrics.PSNR_CAP_DB,
        "num_images": len(images),
        "mean": mean,
        "wins": {m: sum(r["model"][m] > r["baseline"][m] for r in images) for m in ("psnr", "ssim")},
        "diversity": diversity,
        "features": (feature_scores(kept, [r["file"] for r in images], settings.labels, model.device)
                     if settings.features else {"skipped": "turned off"}),
        "skipped": SKIPPED,
        "timing": {"seconds_per_image": seconds / len(images)},  # restore and score, not file reading
        "images": images,
        "errors": errors,
    }
    return EvalResult(report=report, grid=make_grid(grid) if grid else None)


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
        logits, pooled = feats.logits.reshape(n, k, -1), feats.pooled.reshape(n, k, -1)
        report[name] = _set_scores(logits, pooled, labels, truth.pooled)
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
