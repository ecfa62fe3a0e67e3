"""Inpaint: fill a hole; the network sees a crop around it, and only masked pixels are pasted back."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .. import images, seeds
from ..diffusion import fill_noise
from ..config import Recipe
from ..errors import PaletteError
from ..images import box_mask, check_mask, check_mask_size, empty_mask, masked_view, mean_fill
from .base import Prepared, no_extra_scores

NAME = "inpaint"
MASKED = True  # the network generates the hole only; the loss and the scores look at the hole
# Exemplar completion's guide weight (completion.CompletionConfig.guide_weight): the model's layout of a
# surrounded hole is good, so it counts as much as the pixels (measured: benchmarks/README.md).
COMPLETION_GUIDE_WEIGHT = 1.0
BASELINE = "mean-colour fill (mean of the known pixels)"
RECIPE = Recipe("x0", True, "ddim", 1)  # measured with the built-in inpaint model (its card)
EVAL_OPTIONS = ("mask_mode",)

# --- masks: the centre box, free-form strokes, random boxes (all draws from the caller's generator) ---

# Free-form stroke parameters of DeepFill v2 / Palette (Yu et al. 2019, Algorithm 1),
# given for a 256 px image and scaled with min(h, w).
_REF_SIZE = 256
_MIN_STROKES, _MAX_STROKES = 1, 4
_MIN_VERTEX, _MAX_VERTEX = 4, 12
_MEAN_ANGLE = 2 * math.pi / 5
_ANGLE_RANGE = 2 * math.pi / 15
_MIN_WIDTH, _MAX_WIDTH = 12, 40
# LaMa's wide masks (Suvorov et al. 2022): strokes up to 100 px wide at 256 px, holes up to 40%.
_WIDE_MIN_WIDTH, _WIDE_MAX_WIDTH = 40, 100
_WIDE_MIN_AREA, _WIDE_MAX_AREA = 0.15, 0.4

# Bounds that keep the area-controlled samplers terminating.
_BOX_ATTEMPTS = 50
_STROKE_ATTEMPTS = 30
_TRAIN_MIN_AREA, _TRAIN_MAX_AREA = 0.1, 0.3  # narrow strokes and boxes



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


def _area(mask: Tensor) -> float:
    """Fraction of pixels that are masked."""
    return float(mask.mean())


def center_mask(h: int, w: int) -> Tensor:
    """Palette's centre mask: the central rectangle of half the height and half the width."""
    check_mask_size(h, w)
    bh, bw = max(h // 2, 1), max(w // 2, 1)
    return box_mask(h, w, (w // 4, h // 4, bw, bh))


def _pil_to_mask(image: Image.Image) -> Tensor:
    """Convert an 'L' drawing (non-zero = hole) to a (1, H, W) float32 mask."""
    return torch.from_numpy((np.asarray(image) > 0).astype(np.float32))[None]


def _draw_stroke(canvas: Image.Image, generator: torch.Generator,
                 widths: tuple[float, float] = (_MIN_WIDTH, _MAX_WIDTH)) -> None:
    """Draw one free-form brush stroke (Yu et al. 2019, Algorithm 1) onto an 'L' canvas, its width
    drawn from `widths` (px at 256 px, scaled with min(h, w))."""
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
    width = max(int(_uniform(generator, widths[0] * scale, widths[1] * scale)), 1)
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
    check_mask_size(h, w)
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
    check_mask_size(h, w)
    _check_area_range(min_area, max_area)
    for _ in range(_BOX_ATTEMPTS):
        n = _randint(generator, 1, 5)
        target = _uniform(generator, min_area, max_area)
        mask = empty_mask(h, w)
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


def _area_bounded_free_form(h: int, w: int, generator: torch.Generator,
                            widths: tuple[float, float] = (_MIN_WIDTH, _MAX_WIDTH),
                            area_range: tuple[float, float] = (_TRAIN_MIN_AREA, _TRAIN_MAX_AREA)) -> Tensor | None:
    """Add strokes (dropping any that overshoot) until the area is in `area_range`, or None."""
    canvas = Image.new("L", (w, h), 0)
    for _ in range(_STROKE_ATTEMPTS):
        candidate = canvas.copy()
        _draw_stroke(candidate, generator, widths)
        area = float((np.asarray(candidate) > 0).mean())
        if area > area_range[1]:
            continue  # this stroke overshoots: drop it and try another
        canvas = candidate
        if area >= area_range[0]:
            return _pil_to_mask(_random_flip(canvas, generator))
    return None


def wide_mask(h: int, w: int, generator: torch.Generator) -> Tensor:
    """LaMa's wide mask: strokes 40-100 px wide (at 256 px) covering 15-40% of the image; a box of
    that area where the strokes cannot reach it."""
    check_mask_size(h, w)
    mask = _area_bounded_free_form(h, w, generator, (_WIDE_MIN_WIDTH, _WIDE_MAX_WIDTH),
                                   (_WIDE_MIN_AREA, _WIDE_MAX_AREA))
    return mask if mask is not None else random_box_mask(h, w, generator, _WIDE_MIN_AREA, _WIDE_MAX_AREA)


def train_inpaint_mask(h: int, w: int, generator: torch.Generator) -> Tensor:
    """Training inpainting mask: narrow free-form strokes 40% (area 10-30%), LaMa's wide strokes 30%
    (15-40%), random boxes 30% (10-30%)."""
    check_mask_size(h, w)
    u = _uniform(generator, 0.0, 1.0)
    if u < 0.4:
        mask = _area_bounded_free_form(h, w, generator)
        if mask is not None:
            return mask
    elif u < 0.7:
        return wide_mask(h, w, generator)
    return random_box_mask(h, w, generator, _TRAIN_MIN_AREA, _TRAIN_MAX_AREA)



# Evaluation masks, drawn at the evaluation size from the image's degradation generator.
EVAL_MASKS = {
    "center": lambda h, w, g: center_mask(h, w),
    "free-form": free_form_mask,
    "box": random_box_mask,
    "wide": wide_mask,
    "train": train_inpaint_mask,
}
EVAL_MASK_MODES = tuple(EVAL_MASKS)
USER_MASK_MODES = ("center", "free-form")  # --mask-mode of `palette inpaint`


def degrade(target: Tensor, generator: torch.Generator, *, mask_mode: str = "train",
            mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The target with a hole of noise: `mask` if given, else one drawn as `mask_mode` says."""
    h, w = target.shape[-2:]
    if mask is None:
        mask = EVAL_MASKS[mask_mode](h, w, generator)
    check_mask(mask, h, w)
    mask = mask.to(device=target.device, dtype=target.dtype)
    return fill_noise(target, mask, generator), mask


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
