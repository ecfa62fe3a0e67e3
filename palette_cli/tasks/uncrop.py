"""Uncrop: extend a photo beyond its borders; the canvas grows and every original pixel is kept."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from .. import images, seeds
from ..diffusion import fill_noise
from ..config import Recipe
from ..errors import PaletteError
from ..images import check_mask, check_mask_size, empty_mask, masked_view, mean_fill
from .base import Prepared, no_extra_scores

UNCROP_SIDES = ("left", "right", "top", "bottom", "all")


# --- masks: one side's strip or a border ------------------------------------------------------


def uncrop_mask(h: int, w: int, side: str, ratio: float = 0.5) -> Tensor:
    """Mask the `ratio` strip on one side, or a border of area fraction `ratio` for "all"."""
    check_mask_size(h, w)
    if side not in UNCROP_SIDES:
        raise PaletteError(f"unknown uncrop side {side!r}; choose one of {', '.join(UNCROP_SIDES)}")
    if not 0.0 < ratio < 1.0:
        raise PaletteError(f"uncrop ratio must be strictly between 0 and 1, got {ratio}")
    mask = empty_mask(h, w)
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


def train_uncrop_mask(h: int, w: int, generator: torch.Generator) -> Tensor:
    """Training uncrop mask: uniform over the four sides and all borders, 50% masked."""
    side = UNCROP_SIDES[int(torch.randint(0, len(UNCROP_SIDES), (1,), generator=generator, device=generator.device))]
    return uncrop_mask(h, w, side, 0.5)


NAME = "uncrop"
MASKED = True
# Exemplar completion's guide weight (completion.CompletionConfig.guide_weight): the new side has known pixels
# on one edge only, so the patches' own fit to their neighbours must count more against the model's layout
# than in a hole (measured: benchmarks/README.md, uncrop FD at weights 0.1-1.0).
COMPLETION_GUIDE_WEIGHT = 0.2
BASELINE = "mean-colour fill (mean of the known pixels)"
RECIPE = Recipe("x0", True, "ddim", 1)  # training objective and sampling of a new model (config.Recipe)
EVAL_OPTIONS = ("side",)
EVAL_SIDES = (*UNCROP_SIDES, "random")  # "random": the training mix of sides


def degrade(target: Tensor, generator: torch.Generator, *, side: str = "random",
            mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The target with half of it (one side, or a border) replaced by noise."""
    h, w = target.shape[-2:]
    if mask is None:
        mask = train_uncrop_mask(h, w, generator) if side == "random" else uncrop_mask(h, w, side)
    check_mask(mask, h, w)
    mask = mask.to(device=target.device, dtype=target.dtype)
    return fill_noise(target, mask, generator), mask


def check(*, side: str = "right", **_other: Any) -> None:
    """Refuse an unknown evaluation side before any image is read."""
    if side not in EVAL_SIDES:
        raise PaletteError(f"unknown uncrop side {side!r}; choose one of {', '.join(EVAL_SIDES)}")


baseline = mean_fill  # the diffusion-free answer: the new area filled with the mean colour of the known pixels
extra_scores = no_extra_scores


# --- a scan's frame on the edge that grows ----------------------------------------------------

FRAME_FLAT = 6.0  # a line whose colour varies along it by less than this standard deviation (of 255) is flat
FRAME_MOST = 0.02  # flat lines beyond this share of the side are the photo's own (a backdrop), not a frame
GROWING = {"left": ("left",), "right": ("right",), "top": ("top",), "bottom": ("bottom",),
           "all": ("left", "right", "top", "bottom")}


def frame_width(rgb: Tensor, edge: str) -> int:
    """How many lines along `edge` of a photo (3, H, W) in [-1, 1] are a scan's frame rather than the picture.

    Scans (the Kodak set among them) carry a line or a few of flat gray or black at their edges, then a line
    or two that ring from the scanner's sharpening. Kept where the photo grows, the frame becomes a stripe
    down the middle of the result. Counted from the edge: the flat lines (one colour all along), then at most
    three lines that vary along them by less than half as much as the photo just inside. 0 when no line at the
    edge is flat, when more than FRAME_MOST of the side is (flat lines that wide are the picture's), or when
    the photo just inside varies less than three times as much as the flat lines (a clear sky goes on flat)."""
    lines = {"left": rgb, "right": rgb.flip(-1), "top": rgb.transpose(-1, -2),
             "bottom": rgb.transpose(-1, -2).flip(-1)}[edge]  # (3, along, across): line i is column i
    spread = lines.float().std(dim=-2).amax(0) * 127.5  # (across,) each line's variation along it, of 255
    flat = 0
    while flat < len(spread) and spread[flat] < FRAME_FLAT:
        flat += 1
    if flat == 0 or flat > max(2, round(FRAME_MOST * len(spread))) or len(spread) < flat + 19:
        return 0
    inside = float(spread[flat + 3:flat + 19].median())
    if float(spread[:flat].max()) * 3 > inside:  # flat next to flat (a clear sky at the top): the picture's
        return 0
    width, ringing = flat, 0.5 * inside
    while width < min(flat + 3, len(spread)) and spread[width] < ringing:
        width += 1
    return width


def without_frame(layout: Tensor, offset: tuple[int, int], size: tuple[int, int], frame: dict[str, int]) -> Tensor:
    """The canvas mask with the photo's frame lines (`frame`: pixels per edge) added to the new part."""
    (top, left), (h, w) = offset, size
    layout = layout.clone()
    box = layout[:, top:top + h, left:left + w]  # a view: the photo's place on the canvas
    for edge, n in frame.items():
        if n:
            {"left": box[:, :, :n], "right": box[:, :, w - n:], "top": box[:, :n, :], "bottom": box[:, h - n:, :]
             }[edge].fill_(1.0)
    return layout


# --- full resolution: a larger canvas -------------------------------------------------------


def _grown(length: int, kept: Callable[[int], int], ideal: float) -> int:
    """The smallest canvas length from floor(`ideal`) up whose kept part, as `kept` computes it, is `length`.

    Starting at the ideal (length / kept fraction) makes ratio 0.5 double a side of any length;
    rounding can leave two lengths keeping the same pixels, and the smaller one below the ideal
    would make a 7-pixel side grow to 13."""
    start = max(math.floor(ideal), length + 1)
    for n in [*range(start, 100 * length + 2), *range(start - 1, length, -1)]:
        if kept(n) == length:
            return n
    raise PaletteError(f"cannot grow a side of {length} pixels with this ratio")


def _kept_side(ratio: float) -> Callable[[int], int]:
    """Pixels `uncrop_mask` keeps along a grown side of n pixels (mirrors its rounding)."""
    return lambda n: n - min(max(round(n * ratio), 1), max(n - 1, 1))


def uncrop_canvas(height: int, width: int, side: str, ratio: float) -> tuple[Tensor, tuple[int, int]]:
    """The mask of the grown canvas and the (top, left) of the original in it.

    The canvas is the one nearest to the photo / (1 - ratio) on which `uncrop_mask(H, W, side, ratio)`
    (the training mask: `ratio` of the output is new) keeps exactly the original's height x width.
    """
    uncrop_mask(height, width, side, ratio)  # validates side and ratio with the mask's messages
    if side == "all":
        scale = math.sqrt(1.0 - ratio)
        kept = lambda n: min(max(round(n * scale), 1), n)  # noqa: E731 (mirrors uncrop_mask)
        ch, cw = _grown(height, kept, height / scale), _grown(width, kept, width / scale)
    elif side in ("left", "right"):
        ch, cw = height, _grown(width, _kept_side(ratio), width / (1 - ratio))
    else:
        ch, cw = _grown(height, _kept_side(ratio), height / (1 - ratio)), width
    mask = uncrop_mask(ch, cw, side, ratio)
    top, left, kh, kw = known_box(mask)
    if (kh, kw) != (height, width):  # cannot happen if _grown mirrors uncrop_mask
        raise PaletteError(f"uncrop canvas {cw}x{ch} does not keep the {width}x{height} original")
    return mask, (top, left)


def known_box(mask: Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the unmasked rectangle of an uncrop mask."""
    rows = torch.nonzero(~mask[0].bool().all(dim=1)).flatten()
    cols = torch.nonzero(~mask[0].bool().all(dim=0)).flatten()
    return int(rows[0]), int(cols[0]), len(rows), len(cols)


def prepare(photo: images.Photo, size: int, *, seed: int = 0, side: str = "right", ratio: float = 0.5,
            keep_frame: bool = False, **_other: Any) -> Prepared:
    """The photo shrunk into the known part of a model-size canvas; the new part is seeded noise.

    At full size a scan's frame on the growing edges (`frame_width`) joins the new part, unless `keep_frame`."""
    w, h = photo.size
    canvas_mask, offset = uncrop_canvas(h, w, side, ratio)
    rgb = None if keep_frame else images.to_tensor(photo.rgb)
    frame = {} if rgb is None else {e: n for e in GROWING[side] if (n := frame_width(rgb, e))}
    canvas_mask = without_frame(canvas_mask, offset, (h, w), frame)
    small_mask = uncrop_mask(size, size, side, ratio)
    top, left, kh, kw = known_box(small_mask)
    canvas = torch.zeros(3, size, size)
    canvas[:, top:top + kh, left:left + kw] = images.resize(images.to_tensor(photo.rgb), (kh, kw))
    cond = fill_noise(canvas, small_mask, seeds.stream(seed, "fill"))
    return Prepared(NAME, photo, cond[None], small_mask[None], layout=canvas_mask, offset=offset,
                    settings={"side": side, "ratio": ratio, **({"frame": frame} if frame else {})})


def full_size_input(target: Tensor, cond: Tensor, mask: Tensor, *, side: str = "right"
                    ) -> tuple[Image.Image, dict]:
    """Evaluation at another size than the model's: the known part, which `prepare` grows back."""
    if side not in UNCROP_SIDES:
        raise PaletteError(f"uncrop side {side!r} cannot be evaluated at a size other than the model's; "
                           f"use {', '.join(UNCROP_SIDES)}")
    top, left, kh, kw = known_box(mask)
    return images.to_pil(target[:, top:top + kh, left:left + kw]), {"side": side, "ratio": 0.5}


def view(region: Tensor, cond: Tensor, mask: Tensor, size: int) -> Tensor:
    """What a frozen encoder sees: the canvas with its new part mean-filled."""
    return masked_view(region, mask, size)


def view_regions(prep: Prepared) -> list[Tensor]:
    """The model's canvas redrawn at the photo's resolution: the photo where the known part sits."""
    size = prep.cond.shape[-1]
    top, left, kh, kw = known_box(prep.mask[0])
    scale = max(prep.photo.size[1] / kh, prep.photo.size[0] / kw, 1.0)
    side = round(size * scale)
    t, l, b, r = (round(v * scale) for v in (top, left, top + kh, left + kw))
    canvas = torch.zeros(3, side, side)
    canvas[:, t:b, l:r] = images.resize(images.to_tensor(prep.photo.rgb), (b - t, r - l))
    return [canvas]


def fill_region(prep: Prepared) -> tuple[Tensor, Tensor]:
    """The grown canvas at the photo's resolution (the photo at its offset) and its new part: what a fill is
    refined up to."""
    (top, left), (w, h) = prep.offset, prep.photo.size
    canvas = torch.zeros(3, *prep.layout.shape[-2:])
    canvas[:, top:top + h, left:left + w] = images.to_tensor(prep.photo.rgb)
    return canvas, prep.layout


def finish(prep: Prepared, x: Tensor) -> Image.Image:
    """The generated canvas (model-size or refined) at full size, with every original pixel put back (but a
    replaced frame's)."""
    rgb = images.to_pil(images.resize(x[0], tuple(prep.layout.shape[-2:])))
    (top, left), (kt, kl, kh, kw) = prep.offset, known_box(prep.layout)
    rgb.paste(prep.photo.rgb.crop((kl - left, kt - top, kl - left + kw, kt - top + kh)), (kl, kt))
    return rgb
