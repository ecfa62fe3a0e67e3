"""The tasks: one module each, found through a plain dict from task name to module.

A task module owns everything its task means, and provides:

    NAME: str                  the name in commands, config.json and output file names
    MASKED: bool               the network generates a masked region only (loss and scores on it)
    BASELINE: str              what `baseline` answers, for evaluation reports
    EVAL_OPTIONS: tuple[str]   the `evaluate.EvalSettings` fields that `degrade` and `check` take
    RECIPE: config.Recipe      what a new model of the task trains (objective) and how it samples
    degrade(target, generator, **eval_options) -> (cond, mask or None)
                               training input (no options) and evaluation input, at the training size
    check(**eval_options)      refuse evaluation options before any image is read
    baseline(cond, mask) -> the diffusion-free answer from the same input
    extra_scores(image) -> dict of task-specific scores (may be empty)
    prepare(photo, size, *, seed, **options) -> Prepared    a full-size photo -> model-size tensors
    finish(prepared, x) -> PIL image                      model-size samples (N, 3, S, S) -> full size
    view(region, cond, mask, size) -> (3, size, size)     what a frozen encoder sees (the base image)
    view_regions(prepared) -> [region per input]           the full-resolution picture behind each input
    fill_region(prepared) -> (region, mask)               optional (masked tasks with one input): the
                               full-resolution picture and hole a fill is refined up to (refine.py)

Adding a task is adding a module with these names, `REGISTRY[module.NAME] = module`, and a CLI
command. The residual base of residual diffusion is the same for every task (the source, its
hole mean-filled) and stays in `diffusion.residual_base`, where the loss and the samplers use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from ..config import Recipe
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


def check_names(names: Sequence[str], where: str) -> None:
    """Refuse task names no module is registered for (a model's tasks, its refine block's)."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise PaletteError(f"{where}: unknown task(s) {', '.join(map(repr, unknown))}; "
                           f"palette knows {', '.join(REGISTRY)}")


def recipe(names: Sequence[str]) -> Recipe:
    """The recipe of a run's first task (a generalist follows its first task)."""
    if not names:
        raise PaletteError("a run needs at least one task")
    return get(names[0]).RECIPE


def degrade(task: str, target: Tensor, generator: torch.Generator, **options) -> tuple[Tensor, Tensor | None]:
    """The conditioning image (and mask, for masked tasks) of a (3, H, W) target, as `task` makes it."""
    module = get(task)
    if target.dim() != 3 or target.shape[0] != 3:
        raise PaletteError(f"expected a target image shaped (3,H,W), got {tuple(target.shape)}")
    return module.degrade(target, generator, **options)


def encoder_view(task: str, region: Tensor, cond: Tensor, mask: Tensor | None, size: int) -> Tensor:
    """(3, size, size): the task's base image at a frozen encoder's own resolution.

    `region` is the picture `cond` was made from at the best resolution at hand (the photo, its
    crop or canvas), so the encoder sees at 256 px what the model sees at 64: the gray photo for
    colorize, the known pixels with the hole mean-filled for inpaint and uncrop, the JPEG for jpeg.
    """
    if get(task).MASKED and mask is None:
        raise PaletteError(f"{task} needs a mask for its encoder view")
    return get(task).view(region, cond, mask, size)
