"""Inpaint: fill a hole; the network sees a crop around it, and only masked pixels are pasted back."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import images, seeds
from ..diffusion import fill_noise
from ..config import Recipe
from ..errors import PaletteError
from .base import Prepared, no_extra_scores
from .masks import (box_mask, center_mask, check_mask, degrade_with_mask, free_form_mask, masked_view,
                    mean_fill, random_box_mask, train_inpaint_mask)

NAME = "inpaint"
MASKED = True  # the network generates the hole only; the loss and the scores look at the hole
BASELINE = "mean-colour fill (mean of the known pixels)"
RECIPE = Recipe("x0", True, "ddim", 1)  # measured with the built-in inpaint model (its card)
EVAL_OPTIONS = ("mask_mode",)

# Evaluation masks, drawn at the evaluation size from the image's degradation generator.
EVAL_MASKS = {
    "center": lambda h, w, g: center_mask(h, w),
    "free-form": free_form_mask,
    "box": random_box_mask,
    "train": train_inpaint_mask,
}
EVAL_MASK_MODES = tuple(EVAL_MASKS)
USER_MASK_MODES = ("center", "free-form")  # --mask-mode of `palette inpaint`


def degrade(target: Tensor, generator: torch.Generator, *, mask_mode: str = "train",
            mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The target with a hole of noise: `mask` if given, else one drawn as `mask_mode` says."""
    return degrade_with_mask(target, generator, mask, EVAL_MASKS[mask_mode])


def check(*, mask_mode: str = "center", **_other: Any) -> None:
    """Refuse an unknown evaluation mask mode before any image is read."""
    if mask_mode not in EVAL_MASKS:
        raise PaletteError(f"unknown mask mode {mask_mode!r}; choose one of {', '.join(EVAL_MASKS)}")


baseline = mean_fill  # the diffusion-free answer: the hole filled with the mean colour of the known pixels
extra_scores = no_extra_scores


# --- full resolution: a crop around the mask ---------------------------------------------------


def inpaint_mask(photo: images.Photo, *, mask: Image.Image | Tensor | None = None,
                 mask_box: tuple[int, int, int, int] | None = None, mask_mode: str | None = None,
                 seed: int = 0) -> Tensor:
    """The full-resolution (1, H, W) hole: from a mask image or tensor, a box, or a mode."""
    w, h = photo.size
    given = [m for m in (mask, mask_box, mask_mode) if m is not None]
    if len(given) != 1:
        raise PaletteError("inpaint needs exactly one of a mask image, a mask box or a mask mode")
    if isinstance(mask, Image.Image):
        if mask.size != (w, h):
            raise PaletteError(f"mask is {mask.size[0]}x{mask.size[1]} but the image is {w}x{h}")
        return images.mask_from_image(mask, h, w)
    if isinstance(mask, Tensor):
        check_mask(mask, h, w)
        return (mask > 0.5).float()
    if mask_box is not None:
        return box_mask(h, w, mask_box)
    if mask_mode == "center":
        return center_mask(h, w)
    if mask_mode == "free-form":
        return free_form_mask(h, w, seeds.stream(seed, "mask"))
    raise PaletteError(f"unknown mask mode {mask_mode!r}; use 'center' or 'free-form'")


def mask_crop_box(mask: Tensor, min_side: int, context: float = 2.0) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop around the mask's bounding box.

    The crop is about `context` times the box's longer side, at least `min_side` (no point in
    upsampling to the model's resolution), square where the image allows, clipped to the image.
    """
    _, h, w = mask.shape
    rows = torch.nonzero(mask[0].any(dim=1)).flatten()
    cols = torch.nonzero(mask[0].any(dim=0)).flatten()
    if len(rows) == 0:
        raise PaletteError("mask is empty (no pixel to inpaint)")
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    side = max(math.ceil(context * max(bottom - top, right - left)), min_side)

    def span(lo: int, hi: int, length: int) -> tuple[int, int]:
        size = min(side, length)
        start = min(max((lo + hi - size) // 2, 0), length - size)
        return start, start + size

    x0, x1 = span(left, right, w)
    y0, y1 = span(top, bottom, h)
    return x0, y0, x1, y1


def paste_masked(original: Image.Image, generated: Tensor, mask: Tensor,
                 box: tuple[int, int, int, int]) -> Image.Image:
    """The original with only its masked pixels inside `box` replaced by `generated` (3, bh, bw)."""
    x0, y0, x1, y1 = box
    out = np.array(original.convert("RGB"))
    region = out[y0:y1, x0:x1]
    hole = mask[0, y0:y1, x0:x1].numpy() > 0.5
    region[hole] = images.to_uint8(generated)[hole]
    return Image.fromarray(out, mode="RGB")


def prepare(photo: images.Photo, size: int, *, seed: int = 0, mask: Image.Image | Tensor | None = None,
            mask_box: tuple[int, int, int, int] | None = None, mask_mode: str | None = None,
            **_other: Any) -> Prepared:
    """A crop around the hole at the model's size, the hole filled with seeded noise."""
    hole = inpaint_mask(photo, mask=mask, mask_box=mask_box, mask_mode=mask_mode, seed=seed)
    box = mask_crop_box(hole, min_side=size)
    x0, y0, x1, y1 = box
    crop = images.resize(images.to_tensor(photo.rgb)[:, y0:y1, x0:x1], (size, size))
    small_mask = images.resize_mask(hole[:, y0:y1, x0:x1], (size, size))
    cond = fill_noise(crop, small_mask, seeds.stream(seed, "fill"))
    settings = {"mask": "image" if mask is not None else
                (",".join(map(str, mask_box)) if mask_box is not None else mask_mode)}
    return Prepared(NAME, photo, cond[None], small_mask[None], layout=(hole, box), settings=settings)


def full_size_input(target: Tensor, cond: Tensor, mask: Tensor, **_options: Any) -> tuple[Image.Image, dict]:
    """Evaluation at another size than the model's: the photo and its hole."""
    return images.to_pil(target), {"mask": mask}


def view(region: Tensor, cond: Tensor, mask: Tensor, size: int) -> Tensor:
    """What a frozen encoder sees: the crop with its hole mean-filled."""
    return masked_view(region, mask, size)


def view_regions(prep: Prepared) -> list[Tensor]:
    """The crop around the hole, at the photo's resolution."""
    _, (x0, y0, x1, y1) = prep.layout
    return [images.to_tensor(prep.photo.rgb)[:, y0:y1, x0:x1]]


def fill_region(prep: Prepared) -> tuple[Tensor, Tensor]:
    """The crop around the hole and its hole, at the photo's resolution: what a fill is refined up to."""
    hole, (x0, y0, x1, y1) = prep.layout
    return images.to_tensor(prep.photo.rgb)[:, y0:y1, x0:x1], hole[:, y0:y1, x0:x1]


def finish(prep: Prepared, x: Tensor) -> Image.Image:
    """The photo with only the hole replaced, from the generated crop (model-size or refined) resized back."""
    hole, box = prep.layout
    x0, y0, x1, y1 = box
    return paste_masked(prep.photo.rgb, images.resize(x[0], (y1 - y0, x1 - x0)), hole, box)
