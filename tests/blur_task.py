"""A toy task for tests only: deblurring. It lives outside the package and joins through the registry."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from palette_cli import images
from palette_cli.config import Recipe
from palette_cli.tasks.base import Prepared

NAME = "blur"
MASKED = False
BASELINE = "the blurred input"
EVAL_OPTIONS: tuple[str, ...] = ()
RECIPE = Recipe("x0", True, "ddim", 2)


def blur(x: torch.Tensor) -> torch.Tensor:
    """A 5x5 box blur of (3, H, W) or (B, 3, H, W), edges replicated."""
    batch = x if x.dim() == 4 else x[None]
    out = F.avg_pool2d(F.pad(batch, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return out if x.dim() == 4 else out[0]


def degrade(target: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    return blur(target), None


def check(**options: Any) -> None:
    pass


def baseline(cond: torch.Tensor, mask: None) -> torch.Tensor:
    return cond


def extra_scores(image: torch.Tensor) -> dict[str, float]:
    return {}


def prepare(photo: images.Photo, size: int, *, seed: int = 0, **_other: Any) -> Prepared:
    return Prepared(NAME, photo, blur(images.resize(images.to_tensor(photo.rgb), (size, size)))[None])


def finish(prep: Prepared, x: torch.Tensor) -> Image.Image:
    w, h = prep.photo.size
    return images.to_pil(images.resize(x[0], (h, w)))
