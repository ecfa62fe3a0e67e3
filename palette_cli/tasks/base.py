"""What a prepared photo carries from a task's `prepare` to its `finish`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..images import Photo


@dataclass
class Prepared:
    """A photo turned into conditioning tensors at the model's resolution, with what `finish` needs."""

    task: str
    photo: Photo
    cond: torch.Tensor  # (N, 3, S, S): one per tile (jpeg) or a single image, crop or canvas
    mask: torch.Tensor | None = None  # (N, 1, S, S) at the model's resolution; None for unmasked tasks
    layout: Any = None  # the task's own record for `finish` (a tiling, a crop box, a canvas mask)
    offset: tuple[int, int] = (0, 0)  # (top, left) of the photo in the output: where its alpha goes
    view: torch.Tensor | None = None  # (N, 3, V, V): what the model's frozen encoder sees, if it has one
    condition: dict[str, torch.Tensor] = field(default_factory=dict)  # network keyword inputs, N first (hints)
    seconds: float = 0.0  # time spent preparing
    settings: dict[str, Any] = field(default_factory=dict)  # task options, for metadata


def no_extra_scores(image: torch.Tensor) -> dict[str, float]:
    """For tasks scored by PSNR and SSIM alone."""
    return {}
