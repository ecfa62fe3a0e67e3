"""`palette train/finetune --colour-head`: a colour head (colour_head.py) trained onto a colorize model.

The head learns from a feature cache of the training photos (train_cache.py builds what it lacks)
with train_head.train_head, and the run's model is the base colorize model with the head's EMA
weights attached (train_head.write_model). A run directory holds:

    features/          the feature cache, unless another folder is named
    head/              the head's training state (head_state.pt) and EMA weights (head.safetensors)
    colour_head.json   what the run started from: the base model, the cache, the views per photo
    model/             the base model with the head: what every inference command loads

The head trains on every view in the cache: a shared cache (named with `features`) is a larger
training set than the photos given. `finetune` continues a model's own head (its bins and weights)
when it has one, and keeps its decoding settings (temperature, prior adjustment, noise, use).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import write_text
from .checkpoint import read_config, read_weights, resolve, split_head
from .data import check_images
from .devices import pick_device, resolve_precision
from .errors import PaletteError
from .files import training_images
from .train import MODEL_DIR, Callback, TrainEvent, TrainResult
from .train_cache import FeatureSource, build, default_folder
from .train_head import HeadTrainConfig, train_head, write_model

HEAD_DIR = "head"
RUN_FILE = "colour_head.json"
DEFAULT_BASE = "colorize"  # the built-in colorize model carries a new head


@dataclass
class _HeadJob:
    """A colour head run, set up: where it writes, what it trains from, what carries the head."""

    run_dir: Path
    config: HeadTrainConfig
    source: FeatureSource
    base_dir: Path
    base_config: Any  # config.ModelConfig of the base model
    init: dict[str, torch.Tensor] | None  # the base model's own head, the start of a new run
    images: int
    skipped: list[Path]


def train_colour_head(data: Sequence[str | os.PathLike], run_dir: str | os.PathLike, config: HeadTrainConfig, *,
                      base: str | os.PathLike | None = None, features: FeatureSource | None = None,
                      resume: bool = False, device: str | torch.device | None = None,
                      callback: Callback | None = None, should_stop: Callable[[], bool] | None = None,
                      log_every: int = 10, save_every: int = 500) -> TrainResult:
    """Train (or resume) a colour head on the photos in `data` and attach it to `base` (default: the
    built-in colorize model) as `run_dir/model`. A base that has a colour head is finetuned: its head's
    bins and weights are the start."""
    emit, dev = callback or (lambda event: None), pick_device(device)
    job = _setup(data, Path(run_dir), config, base, features, resume, dev, emit)
    state_file = job.run_dir / HEAD_DIR / "head_state.pt"
    start = int(torch.load(state_file, weights_only=False)["step"]) if resume else 0
    if start >= config.steps:
        raise PaletteError(f"{run_dir}: the run already did {start} of {config.steps} steps; "
                           f"pass a larger --steps to continue")
    emit(TrainEvent("start", start, config.steps, f"{job.images} images, {len(job.skipped)} skipped, colour head, "
                    f"{config.batch_size} cached views per step", {"images": job.images, "skipped": len(job.skipped)}))

    def report(event: Any) -> None:
        metrics = {"loss": event.loss, "val_loss": event.val_loss, "images_per_s": event.views_per_second}
        emit(TrainEvent("step", event.step, config.steps, metrics=metrics))
        emit(TrainEvent("log", event.step, config.steps, metrics={"step": event.step, **metrics}))

    train_head(job.source.folder, job.run_dir / HEAD_DIR, config, resume=resume, device=str(dev),
               on_event=report, log_every=log_every, save_every=save_every, should_stop=should_stop, init=job.init)
    step = int(torch.load(state_file, weights_only=False)["step"])
    spec = job.base_config.colour_head  # a finetuned head keeps how it decodes
    decoding = ("temperature", "adjust", "noise", "noise_grid", "use", "confidence")
    kept = {k: getattr(spec, k) for k in decoding} if spec else {}
    write_model(job.base_dir, job.run_dir / HEAD_DIR, job.run_dir / MODEL_DIR,
                card=_card(job.base_dir, step, config, job.images), **kept)
    emit(TrainEvent("save", step, config.steps, path=job.run_dir))
    return TrainResult(job.run_dir, step, config.steps, step < config.steps, job.images, job.skipped)


def _setup(data: Sequence[str | os.PathLike], run_dir: Path, config: HeadTrainConfig,
           base: str | os.PathLike | None, features: FeatureSource | None, resume: bool, device: torch.device,
           emit: Callback) -> _HeadJob:
    """Check the base model, find the photos, add their missing views to the cache, record the run."""
    record = _record(run_dir, base, features, resume)
    source = FeatureSource.from_dict(record["features"])
    base_dir = resolve(record["base"])
    base_config = read_config(base_dir)
    if base_config.encoder is None or "colorize" not in base_config.tasks:
        raise PaletteError(f"{record['base']}: a colour head needs a colorize model with an encoder")
    paths = training_images(data)
    if not paths:
        raise PaletteError(f"no images found in {', '.join(str(p) for p in data)}")
    good, skipped = check_images(paths, warn=lambda m: emit(TrainEvent("warning", 0, config.steps, m)),
                                 progress=lambda done, total: emit(TrainEvent("check", done, total)))
    readable = set(good)
    photos = [(p, Path(arg).name) for arg in data for p in training_images([arg]) if p in readable]
    build(source, photos, config.seed, device,
          lambda done, total: emit(TrainEvent("cache", done, total, str(source.folder))))
    init = None
    if base_config.colour_head is not None:
        init = split_head(read_weights(base_dir))[1]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / RUN_FILE, json.dumps(record, indent=2) + "\n")
    return _HeadJob(run_dir, config, source, base_dir, base_config, init, len(good), skipped)


def _record(run_dir: Path, base: str | os.PathLike | None, features: FeatureSource | None,
            resume: bool) -> dict[str, Any]:
    """What the run starts from: given now, or (resuming) as it was recorded, a new cache folder allowed."""
    file = run_dir / RUN_FILE
    if resume:
        if not file.is_file() or not (run_dir / HEAD_DIR / "head_state.pt").is_file():
            raise PaletteError(f"{run_dir}: no colour head run to resume; start the run without --resume")
        record = json.loads(file.read_text(encoding="utf-8"))
        if base is not None and str(base) != record["base"]:
            raise PaletteError(f"{run_dir}: the run's model cannot change when resuming (it used {record['base']})")
        return {**record, **({"features": features.to_dict()} if features else {})}
    if file.exists() or (run_dir / HEAD_DIR).exists():
        raise PaletteError(f"{run_dir}: already holds a colour head run; pass --resume to continue it, "
                           f"or choose another output directory")
    source = features or FeatureSource(default_folder(run_dir))
    return {"base": str(base or DEFAULT_BASE), "features": source.to_dict()}


def _card(base_dir: Path, step: int, config: HeadTrainConfig, images: int) -> str:
    """The base model's card with a paragraph on the head."""
    from .checkpoint import CARD_NAME

    card = base_dir / CARD_NAME
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    head = (f"\n\n## Colour head\n\nA colour head (Zhang et al.'s classification over chroma bins, annealed mean) "
            f"trained with `palette` for {step} steps of {config.batch_size} cached views of {images} training "
            f"images (rebalancing lambda {config.rebalance}) from the frozen encoder's maps.\n")
    return text.rstrip() + head


def head_config(run_dir: str | os.PathLike, resume: bool, device: str | torch.device | None = None,
                **changes: Any) -> HeadTrainConfig:
    """The head's training config: HeadTrainConfig's defaults (or, resuming, the run's own) with `changes`
    (the options given, None meaning not given); precision "auto" is bf16 where it runs natively."""
    given = {k: v for k, v in changes.items() if v is not None}
    if given.get("precision") == "auto":
        given["precision"] = resolve_precision("auto", pick_device(device), training=True)
    if given.get("precision", "bf16") not in ("bf16", "fp32"):
        raise PaletteError(f"precision: a colour head trains in bf16 or fp32, not {given['precision']}")
    if not resume:
        return HeadTrainConfig(**given)
    state_file = Path(run_dir) / HEAD_DIR / "head_state.pt"
    if not state_file.is_file():
        raise PaletteError(f"{run_dir}: no colour head run to resume; start the run without --resume")
    saved = torch.load(state_file, weights_only=False)["config"]
    return HeadTrainConfig(**{**saved, **given})


def is_colour_head_run(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` holds a colour head run (what --resume continues)."""
    return (Path(run_dir) / RUN_FILE).is_file()
