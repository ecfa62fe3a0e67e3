"""JPEG artifact removal: the recompressed photo in, the clean one out, in overlapping tiles at any size."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .. import images
from ..errors import PaletteError
from .base import Prepared, no_extra_scores

NAME = "jpeg"
MASKED = False
BASELINE = "the JPEG input"
EVAL_OPTIONS = ("quality",)
DEFAULT_QUALITY = 10  # evaluation: Palette reports JPEG restoration at quality 5, 10 and 20

# Tiles overlap by this fraction of their side; seams are blended over the overlap.
TILE_OVERLAP = 0.25
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


# --- full resolution: overlapping tiles with blended seams -------------------------------------


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering `length`, evenly spread, neighbours overlapping >= `overlap`."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def fitted_side(length: int, most: int, overlap: int, multiple: int) -> int:
    """The smallest tile side (a multiple of `multiple`, at most about `most`) that covers `length` with
    as few tiles as `most` allows, neighbours overlapping >= `overlap`: little recomputed overlap."""
    if length <= most:
        return -(-length // multiple) * multiple
    n = math.ceil((length - overlap) / (most - overlap))
    return -(-math.ceil((length + (n - 1) * overlap) / n) // multiple) * multiple


def _ramp(tile: int, overlap: int) -> Tensor:
    """1-D blending weight: rises linearly over `overlap` pixels at both ends, never zero."""
    i = torch.arange(tile, dtype=torch.float32)
    edge = torch.minimum(i, tile - 1 - i) + 1
    return (edge / max(overlap, 1)).clamp(max=1.0)


@dataclass(frozen=True)
class Tiling:
    """Where the tiles of an image lie: the padded size, the tile shape and the tile corners."""

    height: int
    width: int
    tile: int  # tile height
    overlap: int
    corners: tuple[tuple[int, int], ...]  # (top, left) of each tile in the padded image
    tile_width: int = 0  # 0: square tiles

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of every tile."""
        return self.tile, self.tile_width or self.tile

    @property
    def padded(self) -> tuple[int, int]:
        """(H, W) after padding small images up to one tile."""
        th, tw = self.shape
        return max(self.height, th), max(self.width, tw)


def make_tiling(height: int, width: int, tile: int, overlap: int, tile_width: int = 0) -> Tiling:
    """Tiles of tile x tile (or tile x tile_width) over an image; images smaller than a tile are padded to one."""
    th, tw = tile, tile_width or tile
    ph, pw = max(height, th), max(width, tw)
    corners = tuple((t, l) for t in tile_starts(ph, th, overlap) for l in tile_starts(pw, tw, overlap))
    return Tiling(height, width, tile, overlap, corners, tile_width)


def split_tiles(x: Tensor, tiling: Tiling) -> Tensor:
    """(3, H, W) -> (N, 3, tile, tile_width); small images are padded by repeating their edge."""
    ph, pw = tiling.padded
    if (ph, pw) != tuple(x.shape[-2:]):
        x = F.pad(x[None], (0, pw - x.shape[-1], 0, ph - x.shape[-2]), mode="replicate")[0]
    th, tw = tiling.shape
    return torch.stack([x[:, t:t + th, l:l + tw] for t, l in tiling.corners])


def merge_tiles(tiles: Tensor, tiling: Tiling) -> Tensor:
    """(N, 3, tile, tile_width) -> (3, H, W): a weighted average where tiles overlap."""
    ph, pw = tiling.padded
    th, tw = tiling.shape
    weight = _ramp(th, tiling.overlap)[:, None] * _ramp(tw, tiling.overlap)[None, :]
    total = torch.zeros(3, ph, pw)
    norm = torch.zeros(1, ph, pw)
    for (t, l), x in zip(tiling.corners, tiles.float().cpu()):
        total[:, t:t + th, l:l + tw] += x * weight
        norm[:, t:t + th, l:l + tw] += weight
    return (total / norm)[:, :tiling.height, :tiling.width]


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
    overlap = round(size * TILE_OVERLAP)
    if not tile or tile == size:
        tiling = make_tiling(h, w, size, overlap)
    else:
        th, tw = (max(fitted_side(n, tile, overlap, TILE_MULTIPLE), size) for n in (h, w))
        tiling = make_tiling(h, w, th, overlap, tw)
    return Prepared(NAME, photo, split_tiles(images.to_tensor(photo.rgb), tiling), layout=tiling,
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
    return images.to_pil(merge_tiles(x, prep.layout))
