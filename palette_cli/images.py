"""Images in and out: decoding, colour modes, tensors, and full-resolution recombination.

The network runs at its training resolution; these helpers carry its output back to the
user's resolution: colorize puts upsampled chroma on the original luminance, jpeg works in
overlapping tiles with blended seams, inpaint works on a crop around the mask and pastes only
masked pixels, uncrop grows the canvas and keeps every original pixel.

Tensors are float32 in [-1, 1], shaped (3, H, W); masks are (1, H, W) with 1 = generate.
Outputs are 8-bit RGB, or RGBA when the input had transparency: its alpha is re-attached
unchanged (uncrop's new area is opaque).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin

from . import tasks
from .atomic import atomic_path
from .errors import PaletteError

# BT.601 full-range YCbCr (JPEG's), the same luma weights as tasks.to_gray.
_KR, _KG, _KB = 0.299, 0.587, 0.114


def max_pixels() -> int | None:
    """The decompression-bomb limit: Pillow's own error threshold (twice its warning limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


@dataclass
class Photo:
    """A decoded input: 8-bit RGB with EXIF orientation applied, plus what the output keeps."""

    rgb: Image.Image  # mode "RGB"
    alpha: Image.Image | None = None  # mode "L": the input's transparency, re-attached to outputs
    icc_profile: bytes | None = None  # an RGB colour profile, copied to outputs
    mode: str = "RGB"  # the input's PIL mode, for metadata and messages

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.size


def _sixteen_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit gray (modes I;16*, I) to 8-bit L by scaling 0..65535 to 0..255."""
    arr = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), mode="L")


def photo_from_pil(image: Image.Image, name: str = "image") -> Photo:
    """Bring any supported PIL mode to a `Photo`; unsupported modes raise `PaletteError`."""
    mode = image.mode
    icc = image.info.get("icc_profile")
    alpha = None
    if mode == "F":
        raise PaletteError(f"{name}: 32-bit floating-point images are not supported; "
                           f"save it as 8- or 16-bit first")
    if mode == "I" or mode.startswith("I;16"):
        rgb = _sixteen_to_8bit(image).convert("RGB")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb, alpha = rgba.convert("RGB"), rgba.getchannel("A")
    elif mode == "RGB":
        rgb = image.copy()
    else:  # L, 1, P, CMYK, YCbCr, LAB, HSV
        try:
            rgb = image.convert("RGB")
        except ValueError as err:
            raise PaletteError(f"{name}: colour mode {mode} is not supported ({err})") from None
    if mode not in ("RGB", "RGBA", "P", "PA", "L", "LA"):
        icc = None  # a CMYK or 16-bit profile does not describe our 8-bit RGB output
    rgb.info = {}
    return Photo(rgb=rgb, alpha=alpha, icc_profile=icc, mode=mode)


def _open(path: Path, limit: int | None) -> Image.Image:
    """Open, check the size against the bomb limit, decode and orient; any failure -> PaletteError."""
    if not path.exists():
        raise PaletteError(f"{path}: no such file")
    if path.is_dir():
        raise PaletteError(f"{path}: is a folder, not an image (use --recursive to read folders)")
    if path.stat().st_size == 0:
        raise PaletteError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            # Sizes between Pillow's warning and error limits are fine; the limit is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                w, h = image.size
                if limit is not None and w * h > limit:
                    raise PaletteError(f"{path}: {w}x{h} pixels ({w * h / 1e6:.0f} MP) is over the limit "
                                       f"of {limit / 1e6:.0f} MP (decompression bomb guard)")
                image.load()
                return ImageOps.exif_transpose(image)
    except PaletteError:
        raise
    except Image.DecompressionBombError as err:
        raise PaletteError(f"{path}: too many pixels ({err}); decompression bomb guard") from None
    except Image.UnidentifiedImageError:
        raise PaletteError(f"{path}: not an image, or a format Pillow cannot read") from None
    except PermissionError:
        raise PaletteError(f"{path}: permission denied") from None
    except Exception as err:  # Pillow raises many types on damaged data; name the file, keep the cause
        raise PaletteError(f"{path}: truncated or corrupt image ({type(err).__name__}: {err})") from None


def load_photo(path: str | os.PathLike, *, limit: int | None = -1) -> Photo:
    """Decode an image file with EXIF orientation applied; `limit` pixels (-1: `max_pixels()`)."""
    path = Path(path)
    image = _open(path, max_pixels() if limit == -1 else limit)
    return photo_from_pil(image, str(path))


def load_mask(path: str | os.PathLike, size: tuple[int, int], image_name: str = "the image") -> torch.Tensor:
    """A (1, H, W) mask from an image file of exactly `size` (W, H): white = generate.

    Transparent pixels count as black (keep), so strokes drawn on a transparent layer work.
    """
    path = Path(path)
    image = _open(path, max_pixels())
    if image.size != tuple(size):
        raise PaletteError(f"{path}: mask is {image.size[0]}x{image.size[1]} but {image_name} is "
                           f"{size[0]}x{size[1]}; a mask must have the image's size")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, 0)
        image.paste(rgba, mask=rgba.getchannel("A"))
    try:
        return tasks.mask_from_image(image, size[1], size[0])
    except PaletteError as err:
        raise PaletteError(f"{path}: {err}") from None


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    arr = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.float32))
    return arr.permute(2, 0, 1) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, rounded to nearest."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(1, 2, 0).numpy()


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB PIL image."""
    return Image.fromarray(to_uint8(x), mode="RGB")


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of (C, H, W) or (B, C, H, W) to size (H, W), clamped to [-1, 1]."""
    batch = x if x.dim() == 4 else x[None]
    if tuple(batch.shape[-2:]) != tuple(size):
        batch = F.interpolate(batch.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    batch = batch.clamp(-1, 1)
    return batch if x.dim() == 4 else batch[0]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) binary mask to size (H, W); a pixel is generated if any masked pixel falls in it."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.clone()
    covered = F.interpolate(mask[None].float(), size=size, mode="area")[0]
    return (covered > 0).float()


# --- colorize: chroma at model resolution, luminance at full resolution ---------------------


def _rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [-1, 1] -> Y, Cb, Cr in [-1, 1] (BT.601 full range)."""
    r, g, b = x
    y = _KR * r + _KG * g + _KB * b
    return torch.stack([y, (b - y) / (2 * (1 - _KB)), (r - y) / (2 * (1 - _KR))])


def _ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `_rgb_to_ycbcr`."""
    y, cb, cr = x
    r = y + 2 * (1 - _KR) * cr
    b = y + 2 * (1 - _KB) * cb
    g = (y - _KR * r - _KB * b) / _KG
    return torch.stack([r, g, b])


def recombine_chroma(original: Image.Image, colour: torch.Tensor) -> Image.Image:
    """The original's full-resolution luminance with the chroma of `colour` (3, h, w) upsampled.

    Colours outside the RGB cube are desaturated towards gray rather than clipped, so the
    luminance stays the original's at every pixel.
    """
    w, h = original.size
    luma = _rgb_to_ycbcr(to_tensor(original))[0]
    chroma = _rgb_to_ycbcr(colour.float().cpu())[1:]
    if tuple(chroma.shape[-2:]) != (h, w):
        chroma = F.interpolate(chroma[None], size=(h, w), mode="bicubic", antialias=True,
                               align_corners=False)[0]
    # RGB = Y + t * offset, linear in the chroma; the largest t <= 1 that stays in [-1, 1].
    offset = _ycbcr_to_rgb(torch.cat([torch.zeros_like(luma)[None], chroma]))
    room = torch.where(offset > 0, 1 - luma, -1 - luma) / offset.where(offset != 0, torch.ones(()))
    t = room.where(offset != 0, torch.ones(())).amin(dim=0).clamp(0, 1)
    return to_pil((luma + t * offset).clamp(-1, 1))


# --- jpeg: overlapping tiles with blended seams -------------------------------------------


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering `length`, evenly spread, neighbours overlapping >= `overlap`."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(tile: int, overlap: int) -> torch.Tensor:
    """1-D blending weight: rises linearly over `overlap` pixels at both ends, never zero."""
    i = torch.arange(tile, dtype=torch.float32)
    edge = torch.minimum(i, tile - 1 - i) + 1
    return (edge / max(overlap, 1)).clamp(max=1.0)


@dataclass(frozen=True)
class Tiling:
    """Where the tiles of an image lie: the padded size and the tile corners."""

    height: int
    width: int
    tile: int
    overlap: int
    corners: tuple[tuple[int, int], ...]  # (top, left) of each tile in the padded image

    @property
    def padded(self) -> tuple[int, int]:
        """(H, W) after padding small images up to one tile."""
        return max(self.height, self.tile), max(self.width, self.tile)


def make_tiling(height: int, width: int, tile: int, overlap: int) -> Tiling:
    """Tiles of side `tile` over an image; images smaller than a tile are padded to one."""
    ph, pw = max(height, tile), max(width, tile)
    corners = tuple((t, l) for t in tile_starts(ph, tile, overlap) for l in tile_starts(pw, tile, overlap))
    return Tiling(height, width, tile, overlap, corners)


def split_tiles(x: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """(3, H, W) -> (N, 3, tile, tile); small images are padded by repeating their edge."""
    ph, pw = tiling.padded
    if (ph, pw) != tuple(x.shape[-2:]):
        x = F.pad(x[None], (0, pw - x.shape[-1], 0, ph - x.shape[-2]), mode="replicate")[0]
    s = tiling.tile
    return torch.stack([x[:, t:t + s, l:l + s] for t, l in tiling.corners])


def merge_tiles(tiles: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """(N, 3, tile, tile) -> (3, H, W): a weighted average where tiles overlap."""
    ph, pw = tiling.padded
    s = tiling.tile
    ramp = _ramp(s, tiling.overlap)
    weight = ramp[:, None] * ramp[None, :]  # (tile, tile)
    total = torch.zeros(3, ph, pw)
    norm = torch.zeros(1, ph, pw)
    for (t, l), x in zip(tiling.corners, tiles.float().cpu()):
        total[:, t:t + s, l:l + s] += x * weight
        norm[:, t:t + s, l:l + s] += weight
    return (total / norm)[:, :tiling.height, :tiling.width]


# --- inpaint: a crop around the mask --------------------------------------------------------


def mask_crop_box(mask: torch.Tensor, min_side: int, context: float = 2.0) -> tuple[int, int, int, int]:
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


def paste_masked(original: Image.Image, generated: torch.Tensor, mask: torch.Tensor,
                 box: tuple[int, int, int, int]) -> Image.Image:
    """The original with only its masked pixels inside `box` replaced by `generated` (3, bh, bw)."""
    x0, y0, x1, y1 = box
    out = np.array(original.convert("RGB"))
    region = out[y0:y1, x0:x1]
    hole = mask[0, y0:y1, x0:x1].numpy() > 0.5
    region[hole] = to_uint8(generated)[hole]
    return Image.fromarray(out, mode="RGB")


# --- uncrop: a larger canvas ----------------------------------------------------------------


def _grown(length: int, kept: Callable[[int], int]) -> int:
    """The smallest canvas length whose kept part, as `kept` computes it, is exactly `length`."""
    for n in range(length + 1, 100 * length + 2):
        if kept(n) == length:
            return n
    raise PaletteError(f"cannot grow a side of {length} pixels with this ratio")


def uncrop_canvas(height: int, width: int, side: str, ratio: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """The mask of the grown canvas and the (top, left) of the original in it.

    The canvas is the smallest one on which `tasks.uncrop_mask(H, W, side, ratio)` (the training
    mask: `ratio` of the output is new) keeps exactly the original's height x width.
    """
    tasks.uncrop_mask(height, width, side, ratio)  # validates side and ratio with the task's messages
    if side == "all":
        scale = math.sqrt(1.0 - ratio)
        kept = lambda n: min(max(round(n * scale), 1), n)  # noqa: E731 (mirrors tasks.uncrop_mask)
        ch, cw = _grown(height, kept), _grown(width, kept)
    elif side in ("left", "right"):
        ch, cw = height, _grown(width, lambda n: n - min(max(round(n * ratio), 1), max(n - 1, 1)))
    else:
        ch, cw = _grown(height, lambda n: n - min(max(round(n * ratio), 1), max(n - 1, 1))), width
    mask = tasks.uncrop_mask(ch, cw, side, ratio)
    keep_rows = torch.nonzero(~mask[0].bool().all(dim=1)).flatten()
    keep_cols = torch.nonzero(~mask[0].bool().all(dim=0)).flatten()
    top, left = int(keep_rows[0]), int(keep_cols[0])
    if (len(keep_rows), len(keep_cols)) != (height, width):  # cannot happen if _grown mirrors tasks
        raise PaletteError(f"uncrop canvas {cw}x{ch} does not keep the {width}x{height} original")
    return mask, (top, left)


def known_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the unmasked rectangle of an uncrop mask."""
    rows = torch.nonzero(~mask[0].bool().all(dim=1)).flatten()
    cols = torch.nonzero(~mask[0].bool().all(dim=0)).flatten()
    return int(rows[0]), int(cols[0]), len(rows), len(cols)


# --- output ---------------------------------------------------------------------------------


def with_alpha(rgb: Image.Image, alpha: Image.Image | None, offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """Re-attach the input's alpha at (left, top) `offset`; pixels outside it are opaque."""
    if alpha is None:
        return rgb
    full = Image.new("L", rgb.size, 255)
    full.paste(alpha, offset)
    out = rgb.copy()
    out.putalpha(full)
    return out


def save_png(image: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None,
             icc_profile: bytes | None = None) -> None:
    """Write a PNG atomically (temporary name, then rename) with text metadata."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", pnginfo=info, icc_profile=icc_profile)
    except PermissionError:
        raise PaletteError(f"{path}: cannot write (permission denied)") from None
    except FileNotFoundError:
        raise PaletteError(f"{path}: cannot write (folder {path.parent} does not exist)") from None
    except OSError as err:
        raise PaletteError(f"{path}: cannot write ({err.strerror or err})") from None
