"""The pixel layer: the one decoder, masks from files, tensors <-> images, grids, PNG output, tiles.

Inference, training and evaluation all decode through `load_photo`, so they see the same pixels:
EXIF orientation applied, 16-bit scaled to 8 bits, CMYK/palette/gray converted to RGB, alpha kept
aside (outputs re-attach it unchanged). Nothing here knows about tasks.

Tensors are float32 in [-1, 1], shaped (3, H, W); masks are (1, H, W) with 1 = generate.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin

from .atomic import atomic_path
from .errors import PaletteError


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


def _open(path: Path, limit: int | None, draft: int | None = None) -> Image.Image:
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
                if draft:  # JPEG only: decode at a reduced scale, enough to prove the data is whole
                    image.draft("RGB", (draft, draft))
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


def load_photo(path: str | os.PathLike, *, limit: int | None = -1, draft: int | None = None) -> Photo:
    """Decode an image file with EXIF orientation applied; `limit` pixels (-1: `max_pixels()`).

    `draft` lets JPEG decode at a reduced scale near that size (a quick check that a file is whole)."""
    path = Path(path)
    image = _open(path, max_pixels() if limit == -1 else limit, draft)
    return photo_from_pil(image, str(path))


def _gray_uint8(image: Image.Image) -> np.ndarray:
    """8-bit gray of any PIL mode; RGBA/LA use the colour's luminance, not the alpha."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        arr = np.asarray(image).astype(np.float64)
        # Pillow clips these modes to 255 on convert("L"); rescale to 8 bits instead.
        if image.mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        elif arr.size and arr.max() > 255:
            arr = arr / 257.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def mask_from_image(image: Image.Image, h: int, w: int) -> torch.Tensor:
    """(1,h,w) mask from a PIL image of any size/mode: gray > 127 is a hole (white = fill).

    RGBA images use the luminance of their RGB, not the alpha channel; 16-bit images
    are rescaled to 8 bits before thresholding.
    """
    if h < 1 or w < 1:
        raise PaletteError(f"mask size must be positive, got h={h}, w={w}")
    gray = Image.fromarray(_gray_uint8(image), mode="L").resize((w, h), Image.Resampling.NEAREST)
    mask = torch.from_numpy((np.asarray(gray) > 127).astype(np.float32))[None]
    if not bool(mask.any()):
        raise PaletteError("mask is empty (no white pixels)")
    return mask


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
        return mask_from_image(image, size[1], size[0])
    except PaletteError as err:
        raise PaletteError(f"{path}: {err}") from None


# --- masks shared by the masked tasks (inpaint, uncrop) ---------------------------------------


def check_mask_size(h: int, w: int) -> None:
    """Reject non-positive mask sizes."""
    if h < 1 or w < 1:
        raise PaletteError(f"mask size must be positive, got h={h}, w={w}")


def empty_mask(h: int, w: int) -> torch.Tensor:
    """An all-known (zero) float32 mask of shape (1, h, w)."""
    return torch.zeros(1, h, w, dtype=torch.float32)


def check_mask(mask: torch.Tensor, h: int, w: int) -> None:
    """Reject a mask whose shape is not (1, h, w)."""
    if tuple(mask.shape) != (1, h, w):
        raise PaletteError(f"mask shape {tuple(mask.shape)} does not match the image; expected (1, {h}, {w})")


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Mask of the rectangle box = (x, y, width, height) in pixels, which must lie inside the h x w image."""
    check_mask_size(h, w)
    x, y, bw, bh = (int(v) for v in box)
    if bw < 1 or bh < 1:
        raise PaletteError(f"mask box {x},{y},{bw},{bh} (x, y, width, height) is empty")
    if x < 0 or y < 0 or x + bw > w or y + bh > h:
        raise PaletteError(f"mask box {x},{y},{bw},{bh} (x, y, width, height) reaches outside the {w}x{h} image "
                           f"(it spans x {x}..{x + bw}, y {y}..{y + bh}); give a box inside the image")
    mask = empty_mask(h, w)
    mask[:, y:y + bh, x:x + bw] = 1.0
    return mask


def mean_fill(cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hole filled with the mean colour of the known pixels (mid-gray when nothing is known)."""
    known = 1 - mask
    mean = (cond * known).sum(dim=(-2, -1), keepdim=True) / known.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    return cond * known + mean * mask


def masked_view(region: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """`region` at size x size with the hole (`mask` scaled up) filled by the mean colour of the known pixels:
    what a frozen encoder sees of a masked task, nothing of the hole's content showing."""
    return mean_fill(resize(region, (size, size)), resize_mask(mask, (size, size)))


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


# ITU-R BT.601 luma weights (JPEG's full-range YCbCr); luma is linear, so they apply to [-1, 1] values.
KR, KG, KB = 0.299, 0.587, 0.114


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [-1, 1] -> Y, Cb, Cr in [-1, 1] (BT.601 full range)."""
    r, g, b = x.unbind(-3)
    y = KR * r + KG * g + KB * b
    return torch.stack([y, (b - y) / (2 * (1 - KB)), (r - y) / (2 * (1 - KR))], dim=-3)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_ycbcr`."""
    y, cb, cr = x.unbind(-3)
    r = y + 2 * (1 - KR) * cr
    b = y + 2 * (1 - KB) * cb
    g = (y - KR * r - KB * b) / KG
    return torch.stack([r, g, b], dim=-3)


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


def grid(rows: Sequence[Sequence[torch.Tensor]], gap: int = 2, margin: int = 0) -> Image.Image:
    """Rows of equally sized (3, H, W) images in [-1, 1] on white, `gap` pixels apart, `margin` around."""
    h, w = rows[0][0].shape[-2:]
    cols = max(len(r) for r in rows)
    canvas = torch.ones(3, len(rows) * (h + gap) - gap + 2 * margin, cols * (w + gap) - gap + 2 * margin)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = margin + i * (h + gap), margin + j * (w + gap)
            canvas[:, y : y + h, x : x + w] = cell.detach().float().cpu()
    return to_pil(canvas.clamp(-1, 1))


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


# zlib level of written PNGs. Re-encoding 12 colorize outputs (four 1024 px photos and two Kodak, -n 2):
# level 1 took 1.02 s for 11.56 MB, Pillow's default 6 took 3.84 s for 11.93 MB, 9 took 9.40 s for 11.69 MB
# (benchmarks/folder_speed.py --levels).
PNG_COMPRESS_LEVEL = 1


def save_png(image: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None,
             icc_profile: bytes | None = None) -> None:
    """Write a PNG atomically (temporary name, then rename) with text metadata."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", pnginfo=info, icc_profile=icc_profile, compress_level=PNG_COMPRESS_LEVEL)
    except PermissionError:
        raise PaletteError(f"{path}: cannot write (permission denied)") from None
    except FileNotFoundError:
        raise PaletteError(f"{path}: cannot write (folder {path.parent} does not exist)") from None
    except OSError as err:
        raise PaletteError(f"{path}: cannot write ({err.strerror or err})") from None


# --- tiles: any size through a network of one size, overlapping, seams blended ---------------

# Tiles overlap by this fraction of their side; seams are blended over the overlap.
TILE_OVERLAP = 0.25


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
