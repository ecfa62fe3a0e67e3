"""Colorize: the gray photo in, colour out; chroma predicted at the model's size, luminance kept at full size."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .. import images, metrics
from ..errors import PaletteError
from .base import Prepared

NAME = "colorize"
MASKED = False  # the network generates every pixel
BASELINE = "the gray input"
EVAL_OPTIONS: tuple[str, ...] = ()  # EvalSettings fields this task reads

# ITU-R BT.601 luma weights (JPEG's full-range YCbCr); luma is linear, so it applies to [-1, 1] values.
_KR, _KG, _KB = 0.299, 0.587, 0.114


def to_gray(img: Tensor) -> Tensor:
    """BT.601 luminance of a (3,H,W) or (B,3,H,W) image, repeated to 3 channels."""
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise PaletteError(f"expected an image shaped (3,H,W) or (B,3,H,W), got {tuple(img.shape)}")
    weights = torch.tensor((_KR, _KG, _KB), dtype=img.dtype, device=img.device).view(3, 1, 1)
    y = (img * weights).sum(dim=-3, keepdim=True)
    return y.expand_as(img).contiguous()


def degrade(target: Tensor, generator: torch.Generator) -> tuple[Tensor, None]:
    """Training and evaluation input: the gray image."""
    return to_gray(target), None


def check(**options: Any) -> None:
    """Colorize has no options to check."""


def baseline(cond: Tensor, mask: None) -> Tensor:
    """The diffusion-free answer: the gray input itself."""
    return cond


def extra_scores(image: Tensor) -> dict[str, float]:
    """Colourfulness, reported for outputs, baseline and ground truth alike."""
    return {"colorfulness": float(metrics.colorfulness(image))}


# --- full resolution: chroma at model resolution, luminance at full resolution ----------------


def _rgb_to_ycbcr(x: Tensor) -> Tensor:
    """(3, H, W) RGB in [-1, 1] -> Y, Cb, Cr in [-1, 1] (BT.601 full range)."""
    r, g, b = x
    y = _KR * r + _KG * g + _KB * b
    return torch.stack([y, (b - y) / (2 * (1 - _KB)), (r - y) / (2 * (1 - _KR))])


def _ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Inverse of `_rgb_to_ycbcr`."""
    y, cb, cr = x
    r = y + 2 * (1 - _KR) * cr
    b = y + 2 * (1 - _KB) * cb
    g = (y - _KR * r - _KB * b) / _KG
    return torch.stack([r, g, b])


def recombine_chroma(original: Image.Image, colour: Tensor) -> Image.Image:
    """The original's full-resolution luminance with the chroma of `colour` (3, h, w) upsampled.

    Colours outside the RGB cube are desaturated towards gray rather than clipped, so the
    luminance stays the original's at every pixel.
    """
    w, h = original.size
    luma = _rgb_to_ycbcr(images.to_tensor(original))[0]
    chroma = _rgb_to_ycbcr(colour.float().cpu())[1:]
    if tuple(chroma.shape[-2:]) != (h, w):
        chroma = F.interpolate(chroma[None], size=(h, w), mode="bicubic", antialias=True,
                               align_corners=False)[0]
    # RGB = Y + t * offset, linear in the chroma; the largest t <= 1 that stays in [-1, 1].
    offset = _ycbcr_to_rgb(torch.cat([torch.zeros_like(luma)[None], chroma]))
    room = torch.where(offset > 0, 1 - luma, -1 - luma) / offset.where(offset != 0, torch.ones(()))
    t = room.where(offset != 0, torch.ones(())).amin(dim=0).clamp(0, 1)
    return images.to_pil((luma + t * offset).clamp(-1, 1))


def prepare(photo: images.Photo, size: int, *, seed: int = 0, **_other: Any) -> Prepared:
    """The whole photo, resized to the model's size and made gray (options of other tasks are ignored)."""
    small = images.resize(images.to_tensor(photo.rgb), (size, size))
    return Prepared(NAME, photo, to_gray(small)[None])


def full_size_input(target: Tensor, cond: Tensor, mask: None) -> tuple[Image.Image, dict]:
    """Evaluation at another size than the model's: the gray photo a user would colorize."""
    return images.to_pil(cond), {}


def view(region: Tensor, cond: Tensor, mask: None, size: int) -> Tensor:
    """What a frozen encoder sees: the gray photo at its own size x size (`region`: the photo)."""
    return to_gray(images.resize(region, (size, size)))


def view_regions(prep: Prepared) -> list[Tensor]:
    """The picture behind each model-size input, at full resolution: the whole photo."""
    return [images.to_tensor(prep.photo.rgb)]


def finish(prep: Prepared, x: Tensor) -> Image.Image:
    """The photo's own luminance under the predicted colour."""
    return recombine_chroma(prep.photo.rgb, x[0])
