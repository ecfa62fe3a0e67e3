"""Training and finetuning: the loop, EMA, exact resume, metrics, sample grids, DDP.

A run directory holds:
    model/            the latest model directory (EMA weights), loadable by every inference command
    state.pt          the full training state (model, EMA, optimizer, step, RNG), for exact resume
    metrics.jsonl     one JSON line per logging interval
    samples/step-XXXXXXXXX.png   source | sample | target on a fixed validation batch

Determinism: item k of the run (k = step * batch_size + position) is drawn from its own seeded
generator (see data.py), and the diffusion noise of each micro-batch from a generator seeded by
(seed, step, rank, micro-batch). Nothing depends on a stateful data iterator, so resuming at step
N reproduces an uninterrupted run exactly (same number of processes), and the images a step sees
do not depend on the number of processes at all.

Under `torchrun` (WORLD_SIZE > 1) the same code runs DistributedDataParallel (NCCL on GPUs, gloo on
the CPU); every process trains on its own slice of each batch and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import config as cfg
from .config import DEFAULT_IMAGE_SIZE, TrainConfig
from .atomic import atomic_path, write_text
from .cards import TrainingHistory, read_history
from .checkpoint import CARD_NAME
from .checkpoint import build_network, default_card, read_config, read_weights, resolve, save_model
from . import images, seeds
from . import tasks as task_modules
from .tasks.colorize import with_controls
from .devices import pick_device, resolve_precision
from .data import TrainingImages, check_images, validation_batch
from .diffusion import gammas as schedule_gammas
from .diffusion import training_loss
from .errors import PaletteError
from .files import training_images
from .pipeline import resolve_sampling
from .samplers import sample

MODEL_DIR = "model"
STATE_NAME = "state.pt"
METRICS_NAME = "metrics.jsonl"
SAMPLES_DIR = "samples"
STATE_FORMAT = 1

# Fields a resumed run may not change: they shape the network or its optimizer.
FIXED_ON_RESUME = ("preset", "objective", "residual", "freeze", "encoder", "controls", "pyramid")
PERCEPTUAL_SIZE = 128  # input side of the perceptual loss's classifier (a 4x4 final map; 224 cost 3x more)

# Parameter-name prefixes of the two halves of the UNet; the noise-level embedding feeds the
# down path, so it goes with the encoder.
_PARTS = {"encoder": ("cond_embed.", "input_blocks.", "middle_block."), "decoder": ("output_blocks.", "out.")}


def new_model_config(config: TrainConfig) -> cfg.ModelConfig:
    """The config of a network trained from scratch, with the sampling defaults of its objective.

    Every new model samples by respacing its own training schedule: 61% of the paper's 1000-step
    inference schedule is near-pure noise (gamma < 1e-3), and it scored lower on eps models too.
    Palette's eps models keep the paper's 50 DDIM steps; x0/v models take their task recipe's
    sampler, steps and strength. Edit config.json (or pass --sampler/--steps) to change these."""
    config = with_recipe(config)
    unet = cfg.preset(config.preset)
    if config.objective == "regression":
        made = cfg.ModelConfig(unet=unet, objective="regression", residual=config.residual, steps=1)
    elif config.objective == "eps":
        made = cfg.ModelConfig(unet=unet, objective="eps", residual=config.residual,
                               sample_schedule=cfg.TRAIN_SCHEDULE)
    else:
        r = task_modules.recipe(config.tasks)
        made = cfg.ModelConfig(unet=unet, objective=config.objective, residual=config.residual,
                               sample_schedule=cfg.TRAIN_SCHEDULE, sampler=r.sampler, steps=r.steps,
                               strength=r.strength)
    made = with_encoder(made, config.encoder) if config.encoder else made
    made = with_pyramid(made) if config.pyramid else made
    return with_controls(dataclasses.replace(made, tasks=config.tasks)) if config.controls else made


def with_encoder(model_config: cfg.ModelConfig, name: str) -> cfg.ModelConfig:
    """The config with a frozen pretrained encoder (features.NAME) conditioning its UNet."""
    from . import features

    features.check_encoder(name)
    unet = dataclasses.replace(model_config.unet, encoder_channels=features.FEATURES)
    encoder = cfg.EncoderConfig(name=name, sha256=features.SHA256)
    return dataclasses.replace(model_config, unet=unet, encoder=encoder)


def with_pyramid(model_config: cfg.ModelConfig) -> cfg.ModelConfig:
    """The config with the encoder's finer maps (strides 4, 8, 16) entering its first UNet levels."""
    from . import features

    if model_config.encoder is None:
        raise PaletteError("the encoder's finer maps (--pyramid) need an encoder (--encoder efficientnet-lite0)")
    levels = min(len(features.PYRAMID_CHANNELS), len(model_config.unet.channel_mults))
    unet = dataclasses.replace(model_config.unet, pyramid_channels=features.PYRAMID_CHANNELS[:levels])
    return dataclasses.replace(model_config, unet=unet)


def with_recipe(config: TrainConfig) -> TrainConfig:
    """The config with an unset objective and residual taken from its first task's measured recipe
    (residual only with the recipe's objective: `objective="eps"` alone is Palette's own setup)."""
    r = task_modules.recipe(config.tasks)
    objective = r.objective if config.objective is None else config.objective
    residual = (r.residual and objective == r.objective) if config.residual is None else config.residual
    return dataclasses.replace(config, objective=objective, residual=residual)


# Parts a finetune may add, each with a zero output.
_GROWN = ("feature_embed.", "feature_map_in.", "reference_embed.", "pyramid_in.")
_FIRST_CONV = "input_blocks.0.0.weight"  # gains zero columns for added hint channels


def _grown(model_config: cfg.ModelConfig, weights: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Trained weights plus freshly initialised (zero-output) encoder or colour-control parts: the
    grown network computes exactly what the trained one did until it learns to use them."""
    fresh = build_network(model_config).state_dict()
    missing = set(fresh) - set(weights)
    if set(weights) - set(fresh) or any(not k.startswith(_GROWN) for k in missing):
        raise PaletteError(f"{where}: weights do not match the network with an encoder or colour controls added")
    weights = dict(weights)
    conv, new = weights[_FIRST_CONV], fresh[_FIRST_CONV]
    if conv.shape != new.shape:
        if conv.shape[0] != new.shape[0] or conv.shape[2:] != new.shape[2:] or conv.shape[1] > new.shape[1]:
            raise PaletteError(f"{where}: the first convolution does not match the grown network")
        weights[_FIRST_CONV] = torch.cat([conv, conv.new_zeros(conv.shape[0], new.shape[1] - conv.shape[1],
                                                               *conv.shape[2:])], dim=1)
    return {**fresh, **weights}


@dataclass
class TrainEvent:
    """What the loop reports to its callback (on rank 0 only)."""

    kind: str  # "start", "warning", "step", "log", "save", "sample"
    step: int  # optimizer steps done
    total: int  # steps of the run
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


Callback = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """How a run ended."""

    run_dir: Path
    step: int  # optimizer steps done
    total: int
    stopped: bool  # stopped early on request (Ctrl-C); a checkpoint was saved
    images: int  # readable training images
    skipped: list[Path]  # unreadable images left out

    @property
    def model_dir(self) -> Path:
        return self.run_dir / MODEL_DIR


# --- helpers ----------------------------------------------------------------------------------


def lr_at(config: TrainConfig, step: int) -> float:
    """Fixed learning rate after a linear warmup (Palette, App. B)."""
    if config.warmup <= 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup)


def ema_decay_at(config: TrainConfig, updates: int) -> float:
    """EMA decay after `updates` updates: warmed up so a short run's EMA is not its initial weights."""
    return min(config.ema_decay, (1 + updates) / (10 + updates))


def parse_tasks(text: str | Sequence[str]) -> tuple[str, ...]:
    """'colorize,inpaint' -> ('colorize', 'inpaint'), checked and deduplicated."""
    items = text.split(",") if isinstance(text, str) else list(text)
    tasks = tuple(dict.fromkeys(t.strip() for t in items if t.strip()))
    unknown = [t for t in tasks if t not in task_modules.REGISTRY]
    if unknown or not tasks:
        raise PaletteError(f"unknown task(s) {', '.join(unknown) or '(none)'}; "
                           f"choose from {', '.join(task_modules.names())}")
    return tasks


def validate(config: TrainConfig, world: int, downsample: int) -> None:
    """Check a config before any work: its fields (config.check_training), its tasks, and what depends on
    the network and the processes."""
    cfg.check_training(config)
    parse_tasks(config.tasks)
    size = config.image_size or 0
    if size % downsample:
        raise PaletteError(f"image_size: {size} must be a multiple of {downsample} "
                           f"(the network halves the image {int(math.log2(downsample))} times)")
    if config.batch_size % (world * config.grad_accum):
        raise PaletteError(f"batch_size: {config.batch_size} must be a multiple of processes x grad_accum "
                           f"= {world} x {config.grad_accum}")


def _config_from_json(text: str) -> TrainConfig:
    """TrainConfig from the JSON kept in state.pt."""
    data = json.loads(text)
    data["tasks"] = tuple(data["tasks"])
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in known})


def read_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Load state.pt of a run directory (tensors and plain data only: weights_only)."""
    file = Path(run_dir) / STATE_NAME
    if not file.is_file():
        raise PaletteError(f"{run_dir}: no {STATE_NAME} to resume from; start the run without --resume")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged pickle raises many types; all mean the same to the user
        raise PaletteError(f"{file}: corrupt or truncated training state ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise PaletteError(f"{file}: not a palette training state (format {STATE_FORMAT})")
    return state


# --- distributed ------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down


def _setup_distributed(device: str | torch.device | None) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return _Dist(0, 1, dev, False)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


# --- the objective ----------------------------------------------------------------------------


class _Objective(nn.Module):
    """The training loss of a mixed-task batch, one `training_loss` per task group.

    One module call per micro-batch keeps DistributedDataParallel's one-forward-one-backward
    contract even though the network runs once per task present in the batch.
    """

    def __init__(self, network: nn.Module, tasks: Sequence[str], train_gammas: torch.Tensor,
                 loss: str, objective: str, residual: bool, perceptual: Callable | None = None):
        super().__init__()
        self.network = network
        self.perceptual = perceptual
        self.tasks = tuple(tasks)
        self.train_gammas = train_gammas  # a plain attribute: DDP must not broadcast it
        self.loss, self.objective, self.residual = loss, objective, residual

    def forward(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, task: torch.Tensor,
                generator: torch.Generator, condition: dict[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss averaged over items, per-task [sum of loss x items, items]) of one micro-batch."""
        total = target.new_zeros(())
        per_task = torch.zeros(2, len(self.tasks))
        for t in sorted(set(task.tolist())):
            sel = task == t
            m = mask[sel] if task_modules.get(self.tasks[t]).MASKED else None  # loss on the hole only
            value = training_loss(self.network, target[sel], cond[sel], train_gammas=self.train_gammas,
                                  mask=m, loss=self.loss, objective=self.objective, residual=self.residual,
                                  generator=generator, condition={k: v[sel] for k, v in (condition or {}).items()},
                                  perceptual=self.perceptual)
            n = int(sel.sum())
            total = total + value * (n / target.shape[0])
            per_task[0, t] += value.detach().float().cpu() * n
            per_task[1, t] += n
        return total, per_task


# --- writing ----------------------------------------------------------------------------------


def write_grid(path: Path, rows: Sequence[Sequence[torch.Tensor]], gap: int = 2) -> None:
    """Write rows of equal-size images as one PNG with white gaps, atomically."""
    with atomic_path(path) as tmp:
        images.grid(rows, gap).save(tmp, format="PNG")


def _card(model_config: cfg.ModelConfig, config: TrainConfig, step: int, data_names: Sequence[str],
          images: int, init: str | None, history: TrainingHistory | None = None) -> str:
    """A model card saying how the weights were made."""
    origin = f"Finetuned from `{init}`" if init else f"Trained from scratch (preset `{config.preset}`)"
    body = (f"{origin} with `palette` for {step} steps of {config.batch_size} images at "
            f"{model_config.image_size}x{model_config.image_size}, objective `{config.objective}`, "
            f"loss `{config.loss}`{f' + {config.perceptual} x perceptual' if config.perceptual else ''}, "
            f"precision `{config.precision}`, tasks {', '.join(config.tasks)}"
            f"{f', conditioned on a frozen `{config.encoder}`' if config.encoder else ''}.\n\n"
            f"Training data: {', '.join(data_names)} ({images} images). Weights are the EMA weights.\n")
    if history is not None:
        body += f"\n{history.sentence()}\n"
    return default_card(model_config, body, history=history)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Global RNG states (used only by dropout: every other draw has its own seeded generator)."""
    cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


# --- the run ----------------------------------------------------------------------------------


def train(data: Sequence[str | os.PathLike], run_dir: str | os.PathLike, config: TrainConfig, *,
          device: str | torch.device | None = None, callback: Callback | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train a new model from scratch on the images in `data`; writes `run_dir`."""
    return _run(data, Path(run_dir), config, init=None, resume=False, device=device, callback=callback,
                should_stop=should_stop)


def finetune(model: str | os.PathLike, data: Sequence[str | os.PathLike], run_dir: str | os.PathLike,
             config: TrainConfig, *, device: str | torch.device | None = None, callback: Callback | None = None,
             should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Continue training a saved model (any model spec) on `data`, keeping its network config."""
    return _run(data, Path(run_dir), config, init=str(model), resume=False, device=device, callback=callback,
                should_stop=should_stop)


def resume(data: Sequence[str | os.PathLike], run_dir: str | os.PathLike, changes: dict[str, Any] | None = None,
           *, device: str | torch.device | None = None, callback: Callback | None = None,
           should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Continue the run in `run_dir` from its state.pt, with optional changes (e.g. more steps)."""
    run_dir = Path(run_dir)
    saved = _config_from_json(read_state(run_dir)["train_config"])
    changes = dict(changes or {})
    for name in FIXED_ON_RESUME:
        if name in changes and changes[name] != getattr(saved, name):
            raise PaletteError(f"{run_dir}: --{name} cannot change when resuming (the run used "
                               f"{getattr(saved, name)!r}); start a new run or finetune from {run_dir / MODEL_DIR}")
    unknown = set(changes) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise PaletteError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    if "tasks" in changes:
        changes["tasks"] = parse_tasks(changes["tasks"])
    return _run(data, run_dir, dataclasses.replace(saved, **changes), init=None, resume=True, device=device,
                callback=callback, should_stop=should_stop)


def _run(data: Sequence[str | os.PathLike], run_dir: Path, config: TrainConfig, *, init: str | None,
         resume: bool, device: str | torch.device | None, callback: Callback | None,
         should_stop: Callable[[], bool] | None) -> TrainResult:
    d = _setup_distributed(device)
    try:
        return _Trainer(data, run_dir, config, init, resume, d, callback, should_stop).run()
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Trainer:
    """One run: set up once, then `run()` the loop."""

    def __init__(self, data: Sequence[str | os.PathLike], run_dir: Path, config: TrainConfig, init: str | None,
                 resume: bool, d: _Dist, callback: Callback | None, should_stop: Callable[[], bool] | None):
        self.d, self.run_dir = d, run_dir
        self.emit = callback if (callback and d.rank == 0) else (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        config = with_recipe(cfg.check_training(dataclasses.replace(config, tasks=parse_tasks(config.tasks))))
        state, model_config, weights, config, init = self._origin(config, init, resume)
        size = config.image_size or (model_config.image_size if (init or resume) else
                                     DEFAULT_IMAGE_SIZE.get(config.preset, 64))
        encoder = model_config.encoder
        config = dataclasses.replace(config, image_size=size, encoder=encoder.name if encoder else None,
                                     controls=bool(model_config.unet.hint_channels),
                                     pyramid=bool(model_config.unet.pyramid_channels),
                                     precision=resolve_precision(config.precision, d.device, training=True))
        self.model_config = dataclasses.replace(model_config, tasks=config.tasks, image_size=size)
        self.config, self.init = config, init

        torch.manual_seed(config.seed)  # the initial weights of a new network
        network = build_network(self.model_config, weights, where=str(init or run_dir))
        validate(config, d.world, network.downsample_factor)
        self._setup_data(data)
        self._setup_optimizer(network, state)
        self.start = self._restore(state)
        self.history = self._prior_history(state)
        train_gammas = schedule_gammas(self.model_config.train_schedule)
        self.objective = _Objective(self.network, config.tasks, train_gammas, config.loss, config.objective,
                                    config.residual, self._perceptual())
        self.module: nn.Module = self.objective
        if d.world > 1:
            self.module = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        self.last_saved = self.start if resume else None

        if d.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._trim_metrics(self.start)
        _barrier(d)

    # -- setting up --

    def _origin(self, config: TrainConfig, init: str | None, resume: bool):
        """(state, model config, weights, config, init) of a resumed, finetuned or new run."""
        state: dict[str, Any] | None = None
        if resume:
            state = read_state(self.run_dir)
            model_config = cfg.from_dict(json.loads(state["model_config"]))
            init = state.get("init") or None
            weights = state["model"]
        elif (self.run_dir / STATE_NAME).exists():
            raise PaletteError(f"{self.run_dir}: already holds a training run ({STATE_NAME}); pass --resume to "
                               f"continue it, or choose another output directory")
        elif init is not None:
            directory = resolve(init)
            model_config = read_config(directory)
            weights = read_weights(directory)
            grown = model_config
            if config.encoder and model_config.encoder is None:  # the encoder's projections start at zero
                grown = with_encoder(grown, config.encoder)
            if config.controls and not model_config.unet.hint_channels:
                grown = with_controls(dataclasses.replace(grown, tasks=config.tasks))
            if config.pyramid and not model_config.unet.pyramid_channels:
                grown = with_pyramid(grown)
            if grown != model_config:
                model_config, weights = grown, _grown(grown, weights, str(directory))
            config = dataclasses.replace(config, objective=model_config.objective, residual=model_config.residual,
                                         preset=_preset_name(model_config.unet))
        else:
            model_config = new_model_config(config)
            weights = None
        return state, model_config, weights, config, init

    def _setup_data(self, data: Sequence[str | os.PathLike]) -> None:
        """Every process scans the same list; rank 0 reports what it skips."""
        c = self.config
        paths = training_images(data)
        if not paths:
            raise PaletteError(f"no images found in {', '.join(str(p) for p in data)}")
        self.data_names = [Path(p).name for p in data]
        good, self.skipped = check_images(paths, warn=lambda m: self.emit(TrainEvent("warning", 0, c.steps, m)))
        encoder = self.model_config.encoder
        view = encoder.size if encoder else None
        self.dataset = TrainingImages(good, c.tasks, c.image_size, c.seed, c.crop, view)
        self.validation = (validation_batch(good, c.tasks, c.image_size, c.seed, c.sample_count, c.crop, view)
                           if c.sample_every and self.d.rank == 0 else [])
        self.encoder = None
        if encoder:
            from . import features

            self.encoder = features.load(encoder.sha256, self.d.device).to(memory_format=torch.channels_last)

    def _setup_optimizer(self, network: nn.Module, state: dict[str, Any] | None) -> None:
        """The trained network, its optimizer, the EMA copy (rank 0) and the loss scaler."""
        c, d = self.config, self.d
        self.network = network.to(d.device, memory_format=_layout(c.precision)).train()
        frozen = _PARTS.get(c.freeze, ())
        for name, p in self.network.named_parameters():
            p.requires_grad_(not name.startswith(frozen))
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = _adam(trainable, lr_at(c, 0))
        # The EMA network is what gets saved; only rank 0 saves, so only rank 0 keeps it.
        self.ema: nn.Module | None = None
        if d.rank == 0:
            self.ema = build_network(self.model_config, state["ema"] if state else None).to(
                d.device, memory_format=_layout(c.precision))
            if state is None:
                self.ema.load_state_dict(self.network.state_dict())
            self.ema.requires_grad_(False)
        self.scaler = torch.amp.GradScaler(d.device.type, enabled=c.precision == "fp16")

    def _prior_history(self, state: dict[str, Any] | None) -> TrainingHistory:
        """The training behind the weights this session starts from, this run counted: a resumed run's
        saved history, else the finetuned model's card's (nothing recorded there counts as nothing)."""
        if state is not None:
            saved = TrainingHistory.from_dict(state.get("history"))
            step = int(state["step"])  # a state written before histories were kept: its own steps
            return saved or TrainingHistory(step, step * self.config.batch_size, 0.0, 1)
        before = None
        if self.init is not None:
            card = resolve(self.init) / CARD_NAME
            before = read_history(card.read_text(encoding="utf-8")) if card.is_file() else None
        return (before or TrainingHistory()).plus(0, 0, 0.0, runs=1)

    def _restore(self, state: dict[str, Any] | None) -> int:
        """Optimizer, scaler and RNG of a resumed run; the step it starts at."""
        if state is None:
            return 0
        c, d = self.config, self.d
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and c.precision == "fp16":
            self.scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if d.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"][0], d.device)
        if start >= c.steps:
            raise PaletteError(f"{self.run_dir}: the run already did {start} of {c.steps} steps; "
                               f"pass a larger --steps to continue")
        return start

    # -- the loop --

    def run(self) -> TrainResult:
        c, d = self.config, self.d
        micro = c.batch_size // (d.world * c.grad_accum)
        batches = _StepBatches(self.start, c.steps, c.batch_size, c.grad_accum, d.world, d.rank)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=c.workers,
                                             pin_memory=d.device.type == "cuda")
        self.emit(TrainEvent("start", self.start, c.steps, f"{len(self.dataset)} images, "
                             f"{len(self.skipped)} skipped, {d.world} process(es), {micro} images per micro-batch",
                             {"images": len(self.dataset), "skipped": len(self.skipped), "world_size": d.world}))
        # loss x items, items, per-task loss x items, per-task items; since t0
        self._window, self._t0 = np.zeros(2 + 2 * len(c.tasks)), time.perf_counter()
        self._began = self._t0  # this session's wall-clock time goes into the model's history
        step, stopped, consistent = self.start, False, True
        it = iter(loader)
        try:
            while step < c.steps and not stopped:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(c, step)
                flags = self._all_reduce(self._accumulate(step, it))
                if flags[0] > 0:
                    self._diverged(step + 1)
                consistent = False  # the optimizer and EMA updates must not be cut in half
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self._update_ema(step)
                step += 1
                consistent = True
                stopped = bool(flags[1] > 0)
                self._after_step(step, flags, stopped)
        except KeyboardInterrupt:
            # A hard interrupt: keep what was done unless it came mid-update.
            if consistent and step > (self.last_saved or 0):
                self._save(step)
            raise
        return TrainResult(self.run_dir, step, c.steps, stopped, len(self.dataset), self.skipped)

    def _accumulate(self, step: int, it) -> torch.Tensor:
        """Forward and backward over the step's micro-batches; per-task [loss x items, items]."""
        c, d = self.config, self.d
        autocast = (torch.autocast(d.device.type, dtype=torch.bfloat16 if c.precision == "bf16" else torch.float16)
                    if c.precision != "fp32" else contextlib.nullcontext())
        per_task = torch.zeros(2, len(c.tasks))
        for m in range(c.grad_accum):
            batch = _next(it)
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            gen = seeds.stream(c.seed, "noise", (step * d.world + d.rank) * c.grad_accum + m)
            sync = self.module.no_sync() if d.world > 1 and m < c.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    condition = self._condition(batch, step * c.grad_accum + m)
                    loss, groups = self.module(batch["target"], batch["cond"], batch["mask"], batch["task"], gen,
                                               condition)
                self.scaler.scale(loss / c.grad_accum).backward()
            per_task += groups
        return per_task

    def _all_reduce(self, per_task: torch.Tensor) -> torch.Tensor:
        """One small all-reduce per step: [non-finite flag, stop request, loss statistics...]."""
        stop_request = bool(self.should_stop())
        finite = bool(torch.isfinite(per_task[0]).all())
        flags = torch.cat([torch.tensor([float(not finite), float(stop_request)]), per_task.flatten()])
        if self.d.world > 1:
            flags = flags.to(self.d.device)
            dist.all_reduce(flags)
            flags = flags.cpu()
        return flags

    def _after_step(self, step: int, flags: torch.Tensor, stopped: bool) -> None:
        """Report the step; log, sample and save when due (writing is kept out of images/s)."""
        c, ntasks, window = self.config, len(self.config.tasks), self._window
        sums, counts = flags[2:2 + ntasks].numpy(), flags[2 + ntasks:].numpy()
        window += np.concatenate([[sums.sum(), counts.sum()], sums, counts])
        step_loss = float(sums.sum() / max(counts.sum(), 1))
        elapsed = time.perf_counter() - self._t0
        rate = window[1] / elapsed if elapsed > 0 else 0.0
        self.emit(TrainEvent("step", step, c.steps, metrics={"loss": step_loss, "lr": lr_at(c, step - 1),
                                                             "images_per_s": rate}))
        if step % c.log_every == 0 or step == c.steps or stopped:
            self._log(step, window, elapsed, ntasks)
            window[:] = 0
            self._t0 = time.perf_counter()
        paused = False
        if c.sample_every and (step % c.sample_every == 0 or step == c.steps):
            self._sample(step)
            paused = True
        if step % c.save_every == 0 or step == c.steps or stopped:
            self._save(step)
            paused = True
        if paused:
            _barrier(self.d)
            window[:] = 0
            self._t0 = time.perf_counter()

    # -- pieces of the loop --

    def _condition(self, batch: dict[str, torch.Tensor], micro: int) -> dict[str, torch.Tensor]:
        """The network's extra conditions for a micro-batch: the frozen encoder's maps of its views,
        colour hints and a reference vector. A share `encoder.dropout` of items gets every condition
        null (zeros) together, so the model also works, and can be guided, without them."""
        condition = self._controls(batch, micro)
        if self.encoder is not None:
            from . import features

            condition["features"] = features.encode(self.encoder, batch["view"], self.model_config.encoder.size,
                                                    pyramid=bool(self.model_config.unet.pyramid_channels))
        if condition and self.model_config.encoder is not None:
            gen = seeds.stream(self.config.seed, "dropout", micro * self.d.world + self.d.rank)
            keep = torch.rand(batch["target"].shape[0], generator=gen) >= self.model_config.encoder.dropout
            condition = {k: v * keep.to(v).view(-1, *[1] * (v.dim() - 1)) for k, v in condition.items()}
        return condition

    def _controls(self, batch: dict[str, torch.Tensor], micro: int) -> dict[str, torch.Tensor]:
        """Network inputs a task adds to its own items (colorize's colour controls: `training_condition`)."""
        condition: dict[str, torch.Tensor] = {}
        for index, name in enumerate(self.config.tasks):
            add = getattr(task_modules.get(name), "training_condition", None)
            if add is not None:
                gen = seeds.stream(self.config.seed, "hints", micro * self.d.world + self.d.rank)
                mine = (batch["task"] == index).to(batch["target"].device)
                condition.update(add(self.model_config, batch["target"], mine, gen))
        return condition

    def _grid_network(self, rows: list[int]):
        """The EMA network for sample-grid rows, given their encoder maps if the model has an encoder."""
        if self.encoder is None:
            return self.ema
        from . import features

        views = torch.stack([self.validation[i].view for i in rows]).to(self.d.device)
        return functools.partial(self.ema, features=features.encode(
            self.encoder, views, self.model_config.encoder.size, pyramid=bool(self.model_config.unet.pyramid_channels)))

    def _perceptual(self) -> Callable | None:
        """W x the frozen classifier's feature distance between predicted and true clean images."""
        weight = self.config.perceptual
        if not weight:
            return None
        from . import features

        network = self.encoder or features.load(device=self.d.device).to(memory_format=torch.channels_last)
        return lambda x_hat, x: weight * features.perceptual_distance(network, x_hat, x, PERCEPTUAL_SIZE)

    @torch.no_grad()
    def _update_ema(self, updates: int) -> None:
        if self.ema is None:
            return
        weight = 1.0 - ema_decay_at(self.config, updates)
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.network.parameters()], weight)
        for e, b in zip(self.ema.buffers(), self.network.buffers()):
            e.copy_(b)

    def _diverged(self, step: int) -> None:
        where = (f"the last checkpoint (step {self.last_saved}) in {self.run_dir} is intact"
                 if self.last_saved else f"no checkpoint was written to {self.run_dir} yet")
        raise PaletteError(f"step {step}: the training loss is not finite (NaN or inf); stopped, {where}. "
                           f"Lower --lr, lengthen --warmup or use --precision fp32")

    def _log(self, step: int, window: np.ndarray, elapsed: float, ntasks: int) -> None:
        if self.d.rank != 0 or window[1] == 0:
            return
        c = self.config
        line: dict[str, Any] = {"step": step, "loss": window[0] / window[1], "lr": lr_at(c, step - 1),
                                "images_per_s": window[1] / elapsed if elapsed > 0 else None}
        line["task_loss"] = {t: window[2 + i] / window[2 + ntasks + i]
                             for i, t in enumerate(c.tasks) if window[2 + ntasks + i]}
        with open(self.run_dir / METRICS_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.emit(TrainEvent("log", step, c.steps, metrics=line))

    def _trim_metrics(self, step: int) -> None:
        """Drop metric lines past the resumed step: they belong to steps that will be redone."""
        file = self.run_dir / METRICS_NAME
        if not file.exists():
            return
        lines = file.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
        if len(keep) != len(lines):
            write_text(file, "".join(ln + "\n" for ln in keep))

    def _save(self, step: int) -> None:
        if self.d.rank != 0 or self.ema is None:
            return
        c = self.config
        done = step - self.start  # steps of this session
        history = self.history.plus(done, done * c.batch_size, time.perf_counter() - self._began)
        state = {
            "format": STATE_FORMAT,
            "step": step,
            "model": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": _rng_state(self.d.device),
            "train_config": json.dumps(dataclasses.asdict(c)),
            "model_config": json.dumps(cfg.to_dict(self.model_config)),
            "init": self.init or "",
            "world_size": self.d.world,
            "history": history.to_dict(),
        }
        with atomic_path(self.run_dir / STATE_NAME) as tmp:
            torch.save(state, tmp)
        card = _card(self.model_config, c, step, self.data_names, len(self.dataset), self.init, history)
        save_model(self.run_dir / MODEL_DIR, self.model_config, self.ema, card=card)
        self.last_saved = step
        self.emit(TrainEvent("save", step, c.steps, path=self.run_dir))

    @torch.no_grad()
    def _sample(self, step: int) -> None:
        if self.d.rank != 0 or self.ema is None or not self.validation:
            return
        c, mc = self.config, self.model_config
        self.ema.eval()
        target = torch.stack([v.target for v in self.validation]).to(self.d.device)
        cond = torch.stack([v.cond for v in self.validation]).to(self.d.device)
        out = torch.empty_like(target)
        gammas = schedule_gammas(mc.sample_schedule).to(self.d.device)
        how = resolve_sampling(mc, steps=c.sample_steps)
        for t in sorted({v.task for v in self.validation}):  # one sampler call per task: masks differ
            rows = [i for i, v in enumerate(self.validation) if v.task == t]
            mask = None
            if task_modules.get(c.tasks[t]).MASKED:
                mask = torch.stack([self.validation[i].mask for i in rows]).to(self.d.device)
            out[rows] = sample(self._grid_network(rows), cond[rows], gammas, sampler=how.sampler, steps=how.steps,
                               generators=[seeds.generator(c.seed, i) for i in rows], mask=mask,
                               objective=mc.objective, residual=mc.residual, strength=how.strength)
        path = self.run_dir / SAMPLES_DIR / f"step-{step:09d}.png"
        path.parent.mkdir(exist_ok=True)
        write_grid(path, [[cond[i], out[i], target[i]] for i in range(len(out))])
        self.emit(TrainEvent("sample", step, c.steps, path=path))


class _StepBatches(torch.utils.data.Sampler):
    """Item indices of this process's micro-batches, step by step from `start`.

    Step s uses items s * batch .. (s + 1) * batch - 1; each process takes its own slices.
    """

    def __init__(self, start: int, total: int, batch: int, accum: int, world: int, rank: int):
        self.start, self.total, self.batch, self.accum, self.world, self.rank = start, total, batch, accum, world, rank
        self.micro = batch // (world * accum)

    def __iter__(self):
        for step in range(self.start, self.total):
            for m in range(self.accum):
                first = step * self.batch + (m * self.world + self.rank) * self.micro
                yield list(range(first, first + self.micro))

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum


def _layout(precision: str) -> torch.memory_format:
    """NHWC for half-precision training: oneDNN's (and cuDNN's) bf16/fp16 convolutions want it, backward
    included (measured 5-8% faster in bf16 here); plain NCHW in fp32, where NHWC measured 5-10% slower."""
    return torch.channels_last if precision in ("bf16", "fp16") else torch.contiguous_format


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel where this torch has one for the device (one pass over all
    parameters: 3x faster than the per-tensor loop on the CPU), else the multi-tensor one."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused Adam needs torch >= 2.4 on the CPU, floating CUDA/CPU params
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _next(it) -> dict[str, torch.Tensor]:
    """Next batch; a PaletteError raised in a loader worker comes back as its own one-line message."""
    try:
        return next(it)
    except PaletteError as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        last = lines[-1] if lines else str(err)
        raise PaletteError(last.split("PaletteError: ", 1)[-1]) from None


def _preset_name(unet: cfg.UNetConfig) -> str:
    """The preset a network config matches, or 'custom'."""
    return next((name for name, p in cfg.PRESETS.items() if p == unet), "custom")
