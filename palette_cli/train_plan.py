"""Run planning: what a training run starts from, decided once before any training.

A run is new (a network built from a preset and its task's recipe), a finetune (a saved model,
grown by an encoder, colour controls or the encoder's finer maps when asked) or resumed (state.pt
of its run directory). `plan_run` turns the user's TrainConfig and that origin into the config the
run trains with, the network's config, and the weights it starts from. A model's colour head
(colour_head.py) is not trained by the UNet's loop: its weights are split off here and carried
through to every saved model unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import config as cfg
from . import tasks as task_modules
from .cards import TrainingHistory, read_history
from .checkpoint import CARD_NAME, build_network, read_config, read_weights, resolve, split_head
from .config import DEFAULT_IMAGE_SIZE, TrainConfig
from .devices import resolve_precision
from .errors import PaletteError
from .tasks.colorize import with_controls

MODEL_DIR = "model"
STATE_NAME = "state.pt"
STATE_FORMAT = 1

# Fields a resumed run may not change: they shape the network or its optimizer.
FIXED_ON_RESUME = ("preset", "objective", "residual", "freeze", "encoder", "controls", "pyramid")

# Parts a finetune may add, each with a zero output.
_GROWN = ("feature_embed.", "feature_map_in.", "reference_embed.", "pyramid_in.")
_FIRST_CONV = "input_blocks.0.0.weight"  # gains zero columns for added hint channels


@dataclass
class RunPlan:
    """Where a run starts: its checked config, its network's config and the weights it starts from."""

    config: TrainConfig  # every field resolved: tasks, objective, image size, encoder, precision
    model_config: cfg.ModelConfig
    state: dict[str, Any] | None  # a resumed run's state.pt
    weights: dict[str, torch.Tensor] | None  # the UNet's; None for a new network
    head: dict[str, torch.Tensor]  # the model's colour head weights, carried unchanged (may be empty)
    init: str | None  # the model a finetune started from


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


def config_from_json(text: str) -> TrainConfig:
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


def resumed_config(run_dir: Path, changes: dict[str, Any] | None) -> TrainConfig:
    """The saved config of the run in `run_dir` with the options given again; refuses changing a fixed one."""
    saved = config_from_json(read_state(run_dir)["train_config"])
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
    return dataclasses.replace(saved, **changes)


def plan_run(run_dir: Path, config: TrainConfig, init: str | None, resume: bool, device: torch.device) -> RunPlan:
    """Check `config` and decide what the run starts from; fields the origin fixes are filled in."""
    config = with_recipe(cfg.check_training(dataclasses.replace(config, tasks=parse_tasks(config.tasks))))
    plan = _origin(run_dir, config, init, resume)
    config, model_config = plan.config, plan.model_config
    size = config.image_size or (model_config.image_size if (plan.init or resume) else
                                 DEFAULT_IMAGE_SIZE.get(config.preset, 64))
    encoder = model_config.encoder
    plan.config = dataclasses.replace(config, image_size=size, encoder=encoder.name if encoder else None,
                                      controls=bool(model_config.unet.hint_channels),
                                      pyramid=bool(model_config.unet.pyramid_channels),
                                      precision=resolve_precision(config.precision, device, training=True))
    # The size the model runs at: a new model's is its crop; a finetune at a smaller crop (for speed)
    # keeps the model's own, and one at a larger crop runs at that.
    run_size = max(size, model_config.image_size) if (plan.init or resume) else size
    plan.model_config = dataclasses.replace(model_config, tasks=config.tasks, image_size=run_size)
    return plan


def _origin(run_dir: Path, config: TrainConfig, init: str | None, resume: bool) -> RunPlan:
    """The plan of a resumed, finetuned or new run, before the image size and precision are settled."""
    if resume:
        state = read_state(run_dir)
        model_config = cfg.from_dict(json.loads(state["model_config"]))
        return RunPlan(config, model_config, state, state["model"], dict(state.get("colour_head", {})),
                       state.get("init") or None)
    if (run_dir / STATE_NAME).exists():
        raise PaletteError(f"{run_dir}: already holds a training run ({STATE_NAME}); pass --resume to "
                           f"continue it, or choose another output directory")
    if init is None:
        return RunPlan(config, new_model_config(config), None, None, {}, None)
    directory = resolve(init)
    model_config = read_config(directory)
    weights, head = split_head(read_weights(directory))
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
                                 preset=preset_name(model_config.unet))
    return RunPlan(config, model_config, None, weights, head, init)


def prior_history(plan: RunPlan) -> TrainingHistory:
    """The training behind the weights this session starts from, this run counted: a resumed run's
    saved history, else the finetuned model's card's (nothing recorded there counts as nothing)."""
    if plan.state is not None:
        saved = TrainingHistory.from_dict(plan.state.get("history"))
        step = int(plan.state["step"])  # a state written before histories were kept: its own steps
        return saved or TrainingHistory(step, step * plan.config.batch_size, 0.0, 1)
    before = None
    if plan.init is not None:
        card = resolve(plan.init) / CARD_NAME
        before = read_history(card.read_text(encoding="utf-8")) if card.is_file() else None
    return (before or TrainingHistory()).plus(0, 0, 0.0, runs=1)


def preset_name(unet: cfg.UNetConfig) -> str:
    """The preset a network config matches, or 'custom'."""
    return next((name for name, p in cfg.PRESETS.items() if p == unet), "custom")
