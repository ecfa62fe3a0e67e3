"""The tasks: one module each, found through a plain dict from task name to module.

A task module owns everything its task means, and provides:

    NAME: str                  the name in commands, config.json and output file names
    MASKED: bool               the network generates a masked region only (loss and scores on it)
    BASELINE: str              what `baseline` answers, for evaluation reports
    EVAL_OPTIONS: tuple[str]   the `evaluate.EvalSettings` fields that `degrade` and `check` take
    degrade(target, generator, **eval_options) -> (cond, mask or None)
                               training input (no options) and evaluation input, at the training size
    check(**eval_options)      refuse evaluation options before any image is read
    baseline(cond, mask) -> the diffusion-free answer from the same input
    extra_scores(image) -> dict of task-specific scores (may be empty)
    prepare(photo, size, *, seed, **options) -> Prepared    a full-size photo -> model-size tensors
    finish(prepared, x) -> PIL image                      model-size samples (N, 3, S, S) -> full size

Adding a task is adding a module with these names, `REGISTRY[module.NAME] = module`, and a CLI
command. The residual base of residual diffusion is the same for every task (the source, its
hole mean-filled) and stays in `diffusion.residual_base`, where the loss and the samplers use it.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from ..errors import PaletteError
from . import colorize, inpaint, jpeg, uncrop

REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (colorize, inpaint, uncrop, jpeg)}

# The built-in tasks, in the order commands and help texts list them.
TASKS = tuple(REGISTRY)


def get(name: str) -> ModuleType:
    """The module of a task, or a PaletteError listing the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise PaletteError(f"unknown task {name!r}; choose one of {', '.join(REGISTRY)}") from None


def names() -> tuple[str, ...]:
    """Every registered task, built-in ones first."""
    return tuple(REGISTRY)


def degrade(task: str, target: Tensor, generator: torch.Generator, **options) -> tuple[Tensor, Tensor | None]:
    """The conditioning image (and mask, for masked tasks) of a (3, H, W) target, as `task` makes it."""
    module = get(task)
    if target.dim() != 3 or target.shape[0] != 3:
        raise PaletteError(f"expected a target image shaped (3,H,W), got {tuple(target.shape)}")
    return module.degrade(target, generator, **options)
