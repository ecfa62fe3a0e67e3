"""Masks shared by the masked tasks (inpaint, uncrop): boxes, sides, free-form strokes, noise fill.

Conventions: images are float tensors in [-1, 1] shaped (3, H, W) or (B, 3, H, W);
masks are float32 tensors shaped (1, H, W) with 1 = pixel to generate, 0 = known.
All randomness is drawn from an explicit ``torch.Generator`` so results are
reproducible under a seed; Python's ``random`` and numpy's global RNG are never used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .. import images
from ..diffusion import fill_noise
from ..errors import PaletteError

UNCROP_SIDES = ("left", "right", "top", "bottom", "all")

# Free-form stroke parameters of DeepFill v2 / Palette (Yu et al. 2019, Algorithm 1),
# given for a 256 px image and scaled with min(h, w).
_REF_SIZE = 256
_MIN_STROKES, _MAX_STROKES = 1, 4
_MIN_VERTEX, _MAX_VERTEX = 4, 12
_MEAN_ANGLE = 2 * math.pi / 5
_ANGLE_RANGE = 2 * math.pi / 15
_MIN_WIDTH, _MAX_WIDTH = 12, 40

# Bounds that keep the area-controlled samplers terminating.
_BOX_ATTEMPTS = 50
_STROKE_ATTEMPTS = 30
_TRAIN_MIN_AREA, _TRAIN_MAX_AREA = 0.1, 0.3


# --- random draws (all through the caller's generator) ---------------------------------


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high)."""
    u = torch.rand((), generator=generator, device=generator.device).item()
    return low + (high - low) * u


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer drawn uniformly from [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device).item())


def _normal(generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> float:
    """One float drawn from N(mean, std^2)."""
    return mean + std * torch.randn((), generator=generator, device=generator.device).item()


# --- helpers ------------------------------------------------------------------------------


def _check_size(h: int, w: int) -> None:
    """Reject non-positive mask sizes."""
    if h < 1 or w < 1:
        raise PaletteError(f"mask size must be positive, got h={h}, w={w}")


def _empty_mask(h: int, w: int) -> Tensor:
    """An all-known (zero) float32 mask of shape (1, h, w)."""
    return torch.zeros(1, h, w, dtype=torch.float32)


def _pil_to_mask(image: Image.Image) -> Tensor:
    """Convert an 'L' drawing (non-zero = hole) to a (1, H, W) float32 mask."""
    return torch.from_numpy((np.asarray(image) > 0).astype(np.float32))[None]


def mean_fill(cond: Tensor, mask: Tensor) -> Tensor:
    """The hole filled with the mean colour of the known pixels (mid-gray when nothing is known)."""
    known = 1 - mask
    mean = (cond * known).sum(dim=(-2, -1), keepdim=True) / known.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    return cond * known + mean * mask


def masked_view(region: Tensor, mask: Tensor, size: int) -> Tensor:
    """What a frozen encoder sees of a masked task: `region` at size x size with the hole (the
    model-size `mask` scaled up) filled by the mean colour of the known pixels, as residual
    diffusion's base is; nothing of the hole's content shows."""
    return mean_fill(images.resize(region, (size, size)), images.resize_mask(mask, (size, size)))


def check_mask(mask: Tensor, h: int, w: int) -> None:
    """Reject a mask whose shape is not (1, h, w)."""
    if tuple(mask.shape) != (1, h, w):
        raise PaletteError(f"mask shape {tuple(mask.shape)} does not match the image; expected (1, {h}, {w})")


def degrade_with_mask(target: Tensor, generator: torch.Generator, mask: Tensor | None,
                      draw: Callable[[int, int, torch.Generator], Tensor]) -> tuple[Tensor, Tensor]:
    """The target with a hole of noise: `mask` if given, else `draw(h, w, generator)`."""
    h, w = target.shape[-2:]
    if mask is None:
        mask = draw(h, w, generator)
    else:
        check_mask(mask, h, w)
    mask = mask.to(device=target.device, dtype=target.dtype)
    return fill_noise(target, mask, generator), mask


def _area(mask: Tensor) -> float:
    """Fraction of pixels that are masked."""
    return float(mask.mean())


# --- fixed masks ----------------------------------------------------------------------


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> Tensor:
    """Mask of the rectangle box = (x, y, bw, bh) in pixels, clipped to the image."""
    _check_size(h, w)
    x, y, bw, bh = (int(v) for v in box)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + bw, w), min(y + bh, h)
    if x1 <= x0 or y1 <= y0:
        raise PaletteError(f"box {tuple(box)} (x, y, width, height) is empty inside a {w}x{h} image")
    mask = _empty_mask(h, w)
    mask[:, y0:y1, x0:x1] = 1.0
    return mask


def center_mask(h: int, w: int) -> Tensor:
    """Palette's centre mask: the central rectangle of half the height and half the width."""
    _check_size(h, w)
    bh, bw = max(h // 2, 1), max(w // 2, 1)
    return box_mask(h, w, (w // 4, h // 4, bw, bh))


def uncrop_mask(h: int, w: int, side: str, ratio: float = 0.5) -> Tensor:
    """Mask the `ratio` strip on one side, or a border of area fraction `ratio` for "all"."""
    _check_size(h, w)
    if side not in UNCROP_SIDES:
        raise PaletteError(f"unknown uncrop side {side!r}; choose one of {', '.join(UNCROP_SIDES)}")
    if not 0.0 < ratio < 1.0:
        raise PaletteError(f"uncrop ratio must be strictly between 0 and 1, got {ratio}")
    mask = _empty_mask(h, w)
    if side == "all":
        # The kept centre keeps the aspect ratio and has area (1 - ratio).
        scale = math.sqrt(1.0 - ratio)
        kh = min(max(round(h * scale), 1), h)
        kw = min(max(round(w * scale), 1), w)
        top, left = (h - kh) // 2, (w - kw) // 2
        mask.fill_(1.0)
        mask[:, top : top + kh, left : left + kw] = 0.0
        return mask
    length = w if side in ("left", "right") else h
    # At least one pixel masked, and one kept when the image allows it.
    n = min(max(round(length * ratio), 1), max(length - 1, 1))
    if side == "left":
        mask[:, :, :n] = 1.0
    elif side == "right":
        mask[:, :, length - n :] = 1.0
    elif side == "top":
        mask[:, :n, :] = 1.0
    else:
        mask[:, length - n :, :] = 1.0
    return mask


# --- random masks ---------------------------------------------------------------------------


def _draw_stroke(canvas: Image.Image, generator: torch.Generator) -> None:
    """Draw one free-form brush stroke (Yu et al. 2019, Algorithm 1) onto an 'L' canvas."""
    w, h = canvas.size
    scale = min(h, w) / _REF_SIZE
    # DeepFill's radius is diag/8 on square images; min(h, w) keeps strokes alike across sizes.
    avg_radius = min(h, w) * math.sqrt(2) / 8
    num_vertex = _randint(generator, _MIN_VERTEX, _MAX_VERTEX)
    angle_min = _MEAN_ANGLE - _uniform(generator, 0.0, _ANGLE_RANGE)
    angle_max = _MEAN_ANGLE + _uniform(generator, 0.0, _ANGLE_RANGE)
    vertices = [(_uniform(generator, 0, w), _uniform(generator, 0, h))]
    for i in range(num_vertex):
        angle = _uniform(generator, angle_min, angle_max)
        # Alternate turning direction so the stroke zig-zags instead of circling.
        if i % 2 == 0:
            angle = 2 * math.pi - angle
        r = min(max(_normal(generator, avg_radius, avg_radius / 2), 0.0), 2 * avg_radius)
        px, py = vertices[-1]
        vertices.append(
            (min(max(px + r * math.cos(angle), 0.0), w), min(max(py + r * math.sin(angle), 0.0), h))
        )
    width = max(int(_uniform(generator, _MIN_WIDTH * scale, _MAX_WIDTH * scale)), 1)
    draw = ImageDraw.Draw(canvas)
    draw.line(vertices, fill=255, width=width)
    # Discs at the vertices give the round joints of the paper.
    half = width / 2
    for vx, vy in vertices:
        draw.ellipse((vx - half, vy - half, vx + half, vy + half), fill=255)


def _random_flip(canvas: Image.Image, generator: torch.Generator) -> Image.Image:
    """Randomly mirror the canvas, as DeepFill does, to undo the stroke angle bias."""
    if _uniform(generator, 0.0, 1.0) < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if _uniform(generator, 0.0, 1.0) < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return canvas


def free_form_mask(h: int, w: int, generator: torch.Generator) -> Tensor:
    """Free-form brush-stroke mask of 1-4 strokes (Yu et al. 2019), never empty."""
    _check_size(h, w)
    canvas = Image.new("L", (w, h), 0)
    for _ in range(_randint(generator, _MIN_STROKES, _MAX_STROKES)):
        _draw_stroke(canvas, generator)
    return _pil_to_mask(_random_flip(canvas, generator))


def _check_area_range(min_area: float, max_area: float) -> None:
    """Reject an area range that is not 0 < min_area <= max_area < 1."""
    if not 0.0 < min_area <= max_area < 1.0:
        raise PaletteError(f"mask area range must satisfy 0 < min <= max < 1, got [{min_area}, {max_area}]")


def _closest_single_box(h: int, w: int, generator: torch.Generator, target: float) -> Tensor:
    """One randomly placed box whose area fraction is as close to `target` as pixels allow."""
    best: tuple[float, int, int] | None = None
    for bw in range(1, w + 1):
        bh = min(max(round(target * h * w / bw), 1), h)
        err = abs(bw * bh / (h * w) - target)
        if best is None or err < best[0]:
            best = (err, bw, bh)
    assert best is not None
    _, bw, bh = best
    x, y = _randint(generator, 0, w - bw), _randint(generator, 0, h - bh)
    return box_mask(h, w, (x, y, bw, bh))


def random_box_mask(
    h: int, w: int, generator: torch.Generator, min_area: float = 0.1, max_area: float = 0.3
) -> Tensor:
    """1-5 random rectangles whose union covers between min_area and max_area of the image."""
    _check_size(h, w)
    _check_area_range(min_area, max_area)
    for _ in range(_BOX_ATTEMPTS):
        n = _randint(generator, 1, 5)
        target = _uniform(generator, min_area, max_area)
        mask = _empty_mask(h, w)
        for _ in range(n):
            aspect = math.exp(_uniform(generator, -math.log(3), math.log(3)))
            each = target / n
            bh = min(max(round(min(math.sqrt(each * aspect), 1.0) * h), 1), h)
            bw = min(max(round(min(math.sqrt(each / aspect), 1.0) * w), 1), w)
            y, x = _randint(generator, 0, h - bh), _randint(generator, 0, w - bw)
            mask[:, y : y + bh, x : x + bw] = 1.0
        if min_area <= _area(mask) <= max_area:
            return mask
    # Overlaps kept missing the range: one box sized to the target always terminates,
    # and is in range whenever the pixel grid can express it.
    return _closest_single_box(h, w, generator, _uniform(generator, min_area, max_area))


def _area_bounded_free_form(h: int, w: int, generator: torch.Generator) -> Tensor | None:
    """Add strokes (dropping any that overshoot) until the area is in the training range, or None."""
    canvas = Image.new("L", (w, h), 0)
    for _ in range(_STROKE_ATTEMPTS):
        candidate = canvas.copy()
        _draw_stroke(candidate, generator)
        area = float((np.asarray(candidate) > 0).mean())
        if area > _TRAIN_MAX_AREA:
            continue  # this stroke overshoots: drop it and try another
        canvas = candidate
        if area >= _TRAIN_MIN_AREA:
            return _pil_to_mask(_random_flip(canvas, generator))
    return None


def train_inpaint_mask(h: int, w: int, generator: torch.Generator) -> Tensor:
    """Training inpainting mask: free-form 60%, random boxes 40%, area within 10-30%."""
    _check_size(h, w)
    if _uniform(generator, 0.0, 1.0) < 0.6:
        mask = _area_bounded_free_form(h, w, generator)
        if mask is not None:
            return mask
    return random_box_mask(h, w, generator, _TRAIN_MIN_AREA, _TRAIN_MAX_AREA)


def train_uncrop_mask(h: int, w: int, generator: torch.Generator) -> Tensor:
    """Training uncrop mask: uniform over the four sides and all borders, 50% masked."""
    side = UNCROP_SIDES[_randint(generator, 0, len(UNCROP_SIDES) - 1)]
    return uncrop_mask(h, w, side, 0.5)
