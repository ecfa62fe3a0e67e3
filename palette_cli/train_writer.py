"""The run writer: everything a run directory holds besides what the loop computes.

    model/            the latest model directory (EMA weights, with a colour head carried through)
    state.pt          the full training state, for exact resume
    metrics.jsonl     one JSON line per logging interval
    samples/step-XXXXXXXXX.png   source | sample | target on a fixed validation batch

Only rank 0 writes. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import config as cfg
from . import images, seeds
from . import tasks as task_modules
from .atomic import atomic_path, write_text
from .cards import TrainingHistory
from .checkpoint import HEAD_PREFIX, default_card, save_model
from .config import TrainConfig
from .data import Item
from .diffusion import gammas as schedule_gammas
from .pipeline import resolve_sampling
from .samplers import sample
from .train_plan import MODEL_DIR, STATE_FORMAT, STATE_NAME
from .train_state import TrainingState, lr_at

METRICS_NAME = "metrics.jsonl"
SAMPLES_DIR = "samples"


def write_grid(path: Path, rows: Sequence[Sequence[torch.Tensor]], gap: int = 2) -> None:
    """Write rows of equal-size images as one PNG with white gaps, atomically."""
    with atomic_path(path) as tmp:
        images.grid(rows, gap).save(tmp, format="PNG")


def card(model_config: cfg.ModelConfig, config: TrainConfig, step: int, data_names: Sequence[str],
         count: int, init: str | None, history: TrainingHistory | None = None) -> str:
    """A model card saying how the weights were made."""
    origin = f"Finetuned from `{init}`" if init else f"Trained from scratch (preset `{config.preset}`)"
    runs_at = (f" (it runs at {model_config.image_size}x{model_config.image_size})"
               if model_config.image_size != config.image_size else "")
    body = (f"{origin} with `palette` for {step} steps of {config.batch_size} images at "
            f"{config.image_size}x{config.image_size}{runs_at}, objective `{config.objective}`, "
            f"loss `{config.loss}`{f' + {config.perceptual} x perceptual' if config.perceptual else ''}, "
            f"precision `{config.precision}`, tasks {', '.join(config.tasks)}"
            f"{f', conditioned on a frozen `{config.encoder}`' if config.encoder else ''}.\n\n"
            f"Training data: {', '.join(data_names)} ({count} images). Weights are the EMA weights.\n")
    if history is not None:
        body += f"\n{history.sentence()}\n"
    return default_card(model_config, body, history=history)


class RunWriter:
    """Writes one run's directory: checkpoints, the model, metrics lines and sample grids."""

    def __init__(self, run_dir: Path, model_config: cfg.ModelConfig, config: TrainConfig, init: str | None,
                 head: dict[str, torch.Tensor], extra: dict[str, Any] | None = None):
        self.run_dir, self.model_config, self.config, self.init = run_dir, model_config, config, init
        self.head = head  # the model's colour head, saved unchanged with every checkpoint
        self.extra = extra or {}  # more plain data for state.pt (where the feature cache is)

    def trim_metrics(self, step: int) -> None:
        """Drop metric lines past the resumed step: they belong to steps that will be redone."""
        file = self.run_dir / METRICS_NAME
        if not file.exists():
            return
        lines = file.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
        if len(keep) != len(lines):
            write_text(file, "".join(ln + "\n" for ln in keep))

    def log(self, step: int, window: np.ndarray, elapsed: float) -> dict[str, Any]:
        """Append the window's metrics line; returns it."""
        c, ntasks = self.config, len(self.config.tasks)
        line: dict[str, Any] = {"step": step, "loss": window[0] / window[1], "lr": lr_at(c, step - 1),
                                "images_per_s": window[1] / elapsed if elapsed > 0 else None}
        line["task_loss"] = {t: window[2 + i] / window[2 + ntasks + i]
                             for i, t in enumerate(c.tasks) if window[2 + ntasks + i]}
        with open(self.run_dir / METRICS_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        return line

    def save(self, step: int, training: TrainingState, history: TrainingHistory, data_names: Sequence[str],
             count: int, world: int) -> None:
        """state.pt, then the model directory (EMA weights and the carried colour head)."""
        assert training.ema is not None
        state = {"format": STATE_FORMAT, "step": step, **training.snapshot(),
                 "train_config": json.dumps(dataclasses.asdict(self.config)),
                 "model_config": json.dumps(cfg.to_dict(self.model_config)),
                 "init": self.init or "", "world_size": world, "history": history.to_dict()}
        if self.head:
            state["colour_head"] = self.head
        state.update(self.extra)
        with atomic_path(self.run_dir / STATE_NAME) as tmp:
            torch.save(state, tmp)
        text = card(self.model_config, self.config, step, data_names, count, self.init, history)
        weights: Any = training.ema
        if self.head:
            weights = {**training.ema.state_dict(), **{HEAD_PREFIX + k: v for k, v in self.head.items()}}
        save_model(self.run_dir / MODEL_DIR, self.model_config, weights, card=text)

    @torch.no_grad()
    def sample(self, step: int, ema: torch.nn.Module, validation: Sequence[Item],
               grid_network: Callable[[list[int]], Any], device: torch.device) -> Path:
        """The sample grid of the fixed validation batch: source | sample | target per row."""
        c, mc = self.config, self.model_config
        ema.eval()
        target = torch.stack([v.target for v in validation]).to(device)
        cond = torch.stack([v.cond for v in validation]).to(device)
        out = torch.empty_like(target)
        gammas = schedule_gammas(mc.sample_schedule).to(device)
        how = resolve_sampling(dataclasses.replace(mc, colour_head=None), steps=c.sample_steps)  # the UNet's own
        for t in sorted({v.task for v in validation}):  # one sampler call per task: masks differ
            rows = [i for i, v in enumerate(validation) if v.task == t]
            mask = None
            if task_modules.get(c.tasks[t]).MASKED:
                mask = torch.stack([validation[i].mask for i in rows]).to(device)
            out[rows] = sample(grid_network(rows), cond[rows], gammas, sampler=how.sampler, steps=how.steps,
                               generators=[seeds.generator(c.seed, i) for i in rows], mask=mask,
                               objective=mc.objective, residual=mc.residual, strength=how.strength)
        path = self.run_dir / SAMPLES_DIR / f"step-{step:09d}.png"
        path.parent.mkdir(exist_ok=True)
        write_grid(path, [[cond[i], out[i], target[i]] for i in range(len(out))])
        return path


def session_history(prior: TrainingHistory, done: int, batch_size: int, began: float) -> TrainingHistory:
    """The history behind the weights after `done` steps of this session, begun at perf_counter `began`."""
    return prior.plus(done, done * batch_size, time.perf_counter() - began)
