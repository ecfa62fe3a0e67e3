"""JPEG artifact removal: the recompressed photo in, the clean one out, in overlapping tiles at any size."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import images
from ..config import Recipe
from ..errors import PaletteError
from .base import Prepared, no_extra_scores

NAME = "jpeg"
MASKED = False
BASELINE = "the JPEG input"
RECIPE = Recipe("x0", True, "ddim", 2)  # training objective and sampling of a new model (config.Recipe)
EVAL_OPTIONS = ("quality",)
DEFAULT_QUALITY = 10  # evaluation: Palette reports JPEG restoration at quality 5, 10 and 20

TILE_MULTIPLE = 16  # fitted tile sides are multiples of this (a network halving the image up to 4 times)


def _check_quality(quality: int) -> None:
    """Reject a JPEG quality outside 1..100."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise PaletteError(f"JPEG quality must be an integer in 1..100, got {quality!r}")


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """JPEG bytes of an image encoded in memory at `quality` (1..100)."""
    _check_quality(quality)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg_recompress(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip an image through JPEG at `quality` and return the decoded RGB image."""
    with Image.open(io.BytesIO(encode_jpeg(img, quality))) as decoded:
        return decoded.convert("RGB")


def jpeg_recompress_tensor(img: Tensor, quality: int) -> Tensor:
    """JPEG round trip of a (3,H,W) or (B,3,H,W) tensor in [-1, 1] via uint8."""
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise PaletteError(f"expected an image shaped (3,H,W) or (B,3,H,W), got {tuple(img.shape)}")
    _check_quality(quality)
    batch = img if img.dim() == 4 else img[None]
    out = torch.stack([images.to_tensor(jpeg_recompress(images.to_pil(x), quality)) for x in batch])
    out = out.to(device=img.device, dtype=img.dtype)
    return out if img.dim() == 4 else out[0]


def sample_jpeg_quality(generator: torch.Generator, low: int = 5, high: int = 30) -> int:
    """Palette's training JPEG quality: integer Q in [low, high] with P(Q) ∝ exp(-Q/10)."""
    if not 1 <= low <= high <= 100:
        raise PaletteError(f"JPEG quality range must satisfy 1 <= low <= high <= 100, got [{low}, {high}]")
    qualities = torch.arange(low, high + 1, dtype=torch.float64)
    weights = torch.exp(-qualities / 10.0).to(generator.device)
    return low + int(torch.multinomial(weights, 1, generator=generator).item())


def degrade(target: Tensor, generator: torch.Generator, *, quality: int | None = None) -> tuple[Tensor, None]:
    """The target recompressed at `quality`, or at a quality drawn as in training."""
    q = quality if quality is not None else sample_jpeg_quality(generator)
    return jpeg_recompress_tensor(target, q), None


def check(*, quality: int = DEFAULT_QUALITY, **_other: Any) -> None:
    """Refuse an evaluation quality outside 1..100 before any image is read."""
    if not 1 <= quality <= 100:
        raise PaletteError(f"JPEG quality must be an integer in 1..100, got {quality}")


def baseline(cond: Tensor, mask: None) -> Tensor:
    """The diffusion-free answer: the JPEG input itself."""
    return cond


extra_scores = no_extra_scores


# --- full resolution: overlapping tiles with blended seams (images.make_tiling) ----------------


def prepare(photo: images.Photo, size: int, *, seed: int = 0, quality: int | None = None, tile: int | None = None,
            **_other: Any) -> Prepared:
    """Tiles of the photo at the model's size; with a larger `tile` (a fully convolutional model's
    tile_size), tiles of at most that side fitted to the photo, so little is computed twice. With
    `quality`, a clean photo is recompressed first (demos)."""
    settings = {}
    if quality is not None:
        photo = images.Photo(jpeg_recompress(photo.rgb, quality), photo.alpha, photo.icc_profile, photo.mode)
        settings["quality"] = quality
    w, h = photo.size
    overlap = round(size * images.TILE_OVERLAP)
    if not tile or tile == size:
        tiling = images.make_tiling(h, w, size, overlap)
    else:
        th, tw = (max(images.fitted_side(n, tile, overlap, TILE_MULTIPLE), size) for n in (h, w))
        tiling = images.make_tiling(h, w, th, overlap, tw)
    return Prepared(NAME, photo, images.split_tiles(images.to_tensor(photo.rgb), tiling), layout=tiling,
                    settings=settings)


def full_size_input(target: Tensor, cond: Tensor, mask: None, *, quality: int = DEFAULT_QUALITY
                    ) -> tuple[Image.Image, dict]:
    """Evaluation at another size than the model's: the clean photo, recompressed by `prepare`."""
    return images.to_pil(target), {"quality": quality}


def view(region: Tensor, cond: Tensor, mask: None, size: int) -> Tensor:
    """What a frozen encoder sees: the JPEG tile itself, scaled up (its artifacts exist only at the
    model's scale)."""
    return images.resize(cond, (size, size))


def view_regions(prep: Prepared) -> list[Tensor]:
    """The tiles themselves."""
    return list(prep.cond)


def finish(prep: Prepared, x: Tensor) -> Image.Image:
    """The restored tiles blended back into one image."""
    return images.to_pil(images.merge_tiles(x, prep.layout))
