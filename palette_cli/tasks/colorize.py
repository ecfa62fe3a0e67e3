"""Colorize: the gray photo in, colour out; chroma predicted at the model's size, luminance kept at full size."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .. import images, metrics
from ..config import ModelConfig, Recipe
from ..errors import PaletteError
from . import colour_controls as colour_hints
from .base import Prepared

NAME = "colorize"
MASKED = False  # the network generates every pixel
BASELINE = "the gray input"
RECIPE = Recipe("x0", True, "ddim", 4)  # 4 steps: colourfulness >= 20 while still above the gray PSNR
EVAL_OPTIONS: tuple[str, ...] = ()  # EvalSettings fields this task reads
EVAL_POINTS = 10  # colour points scored per image (and given as hints with `palette eval --hints N`)
EVAL_POINT_RADIUS = 0.016  # their disk's radius, as a share of the image's longer side (4 px at 256)

def to_gray(img: Tensor) -> Tensor:
    """BT.601 luminance of a (3,H,W) or (B,3,H,W) image, repeated to 3 channels."""
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise PaletteError(f"expected an image shaped (3,H,W) or (B,3,H,W), got {tuple(img.shape)}")
    weights = torch.tensor((images.KR, images.KG, images.KB), dtype=img.dtype, device=img.device).view(3, 1, 1)
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


def recombine_chroma(original: Image.Image, colour: Tensor) -> Image.Image:
    """The original's full-resolution luminance with the chroma of `colour` (3, h, w) upsampled.

    Colours outside the RGB cube are desaturated towards gray rather than clipped, so the
    luminance stays the original's at every pixel.
    """
    w, h = original.size
    luma = images.rgb_to_ycbcr(images.to_tensor(original))[0]
    chroma = images.rgb_to_ycbcr(colour.float().cpu())[1:]
    if tuple(chroma.shape[-2:]) != (h, w):
        chroma = F.interpolate(chroma[None], size=(h, w), mode="bicubic", antialias=True,
                               align_corners=False)[0]
    # RGB = Y + t * offset, linear in the chroma; the largest t <= 1 that stays in [-1, 1].
    offset = images.ycbcr_to_rgb(torch.cat([torch.zeros_like(luma)[None], chroma]))
    room = torch.where(offset > 0, 1 - luma, -1 - luma) / offset.where(offset != 0, torch.ones(()))
    t = room.where(offset != 0, torch.ones(())).amin(dim=0).clamp(0, 1)
    return images.to_pil((luma + t * offset).clamp(-1, 1))


def prepare(photo: images.Photo, size: int, *, seed: int = 0, hints: list | None = None,
            hints_image: Image.Image | str | None = None, reference: Any = None, **_other: Any) -> Prepared:
    """The whole photo, resized to the model's size and made gray (options of other tasks are ignored).

    Colour controls, for a model trained with them: `hints` (`tasks.colour_controls.Hint`s or `x,y,#rrggbb[,r]`
    strings, in the photo's pixels), `hints_image` (an RGBA image or its path: opaque pixels are
    hints), `reference` (a photo, PIL image or path whose colours to follow)."""
    small = images.resize(images.to_tensor(photo.rgb), (size, size))
    condition, settings, ref = controls(photo, size, hints, hints_image, reference)
    layout = None if ref is None else {"reference_chroma": _reference_chroma(ref, size)}
    return Prepared(NAME, photo, to_gray(small)[None], condition=condition, layout=layout, settings=settings)


def _reference_chroma(image: Tensor, size: int) -> Tensor:
    """(2, size*size) chroma values of a reference (3, H, W) seen at the model's size."""
    return colour_hints.chroma(images.resize(image, (size, size))).flatten(1)


def controls(photo: images.Photo, size: int, hints: list | None, hints_image: Image.Image | str | None,
             reference: Any) -> tuple[dict[str, Tensor], dict[str, Any], Tensor | None]:
    """The network's colour-control inputs for one photo, what its metadata records, and the reference
    image (3, H, W) if one was given (its colours are matched after sampling)."""
    condition: dict[str, Tensor] = {}
    settings: dict[str, Any] = {}
    ref_image = None
    w, h = photo.size
    if hints:
        points = [p if isinstance(p, colour_hints.Hint) else colour_hints.parse_hint(p) for p in hints]
        colour_hints.check_hints(points, w, h)
        condition["hints"] = colour_hints.hint_map(points, w, h, size)[None]
        settings["hints"] = " ".join(map(str, points))
    if hints_image is not None:
        name = "image" if isinstance(hints_image, Image.Image) else Path(hints_image).name
        image = hints_image if isinstance(hints_image, Image.Image) else _read_option_image("--hints", hints_image)
        drawn = colour_hints.hints_from_image(image, w, h, size, name)[None]
        condition["hints"] = _merge_hints(condition.get("hints"), drawn)
        settings["hints_image"] = name
    if reference is not None:
        ref = reference if isinstance(reference, (Image.Image, images.Photo)) else _read_option_image(
            "--reference", reference)
        rgb = ref.rgb if isinstance(ref, images.Photo) else ref.convert("RGB")
        ref_image = images.to_tensor(rgb)
        condition["reference"] = colour_hints.reference_vector(ref_image[None])
        settings["reference"] = "image" if isinstance(reference, (Image.Image, images.Photo)) else Path(reference).name
    return condition, settings, ref_image


def _read_option_image(option: str, path: Any) -> Image.Image:
    """An image file given to an option (RGBA when it has transparency), or one error naming both.

    Decoded once per file version: a folder run reads its --reference or --hints image once, not per photo."""
    try:
        stat = os.stat(path)
    except OSError:
        return _decoded(option, str(path), 0, -1)  # load_photo names the problem
    return _decoded(option, os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _decoded(option: str, path: str, mtime_ns: int, size: int) -> Image.Image:
    """`_read_option_image`'s decoder; the file's time and size are part of the key. Callers never modify it."""
    try:
        photo = images.load_photo(path)
    except PaletteError as e:
        raise PaletteError(f"{option}: {e}") from None
    if photo.alpha is None:
        return photo.rgb
    rgba = photo.rgb.copy()
    rgba.putalpha(photo.alpha)
    return rgba


def _merge_hints(first: Tensor | None, second: Tensor) -> Tensor:
    """Point hints over a hint image's: where both give a colour, the point wins."""
    if first is None:
        return second
    return torch.where(first[:, 2:] > 0, first, second)


def full_size_input(target: Tensor, cond: Tensor, mask: None, **controls: Any) -> tuple[Image.Image, dict]:
    """Evaluation at another size than the model's: the gray photo a user would colorize, with the
    colour controls `palette eval` asked for (hints drawn from the ground truth, the ground truth as reference)."""
    return images.to_pil(cond), controls


def eval_points(target: Tensor, generator: torch.Generator, count: int = EVAL_POINTS) -> list[colour_hints.Hint]:
    """`count` random points of a ground truth (3, H, W) with its mean colour in a small disk around each."""
    _, h, w = target.shape
    radius = max(EVAL_POINT_RADIUS * max(h, w), 1.0)  # a disk holds the nearest pixel centre at least
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    points = []
    for _ in range(count):
        x, y = float(torch.rand((), generator=generator)) * w, float(torch.rand((), generator=generator)) * h
        disk = (xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2
        rgb = images.to_uint8(target[:, disk].mean(dim=1).view(3, 1, 1))[0, 0]
        points.append(colour_hints.Hint(x, y, tuple(int(v) for v in rgb), radius))
    return points


def control_scores(image: Tensor, target: Tensor, points: list[colour_hints.Hint]) -> dict[str, float]:
    """Mean chroma error in the disks of `points` and the chroma-histogram distance to the ground truth."""
    _, h, w = target.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    error = (colour_hints.chroma(image.float()) - colour_hints.chroma(target.float())).abs().sum(dim=0)
    disks = [error[(xs - p.x) ** 2 + (ys - p.y) ** 2 <= p.radius ** 2].mean() for p in points]
    return {"point_chroma_error": float(torch.stack(disks).mean()),
            "chroma_hist_distance": float(colour_hints.histogram_distance(image[None], target[None])[0])}


def view(region: Tensor, cond: Tensor, mask: None, size: int) -> Tensor:
    """What a frozen encoder sees: the gray photo at its own size x size (`region`: the photo)."""
    return to_gray(images.resize(region, (size, size)))


def view_regions(prep: Prepared) -> list[Tensor]:
    """The picture behind each model-size input, at full resolution: the whole photo."""
    return [images.to_tensor(prep.photo.rgb)]


def finish(prep: Prepared, x: Tensor) -> Image.Image:
    """The photo's own luminance under the predicted colour, corrected to the colours asked for."""
    return recombine_chroma(prep.photo.rgb, enforce_controls(prep, x[0]))


def enforce_controls(prep: Prepared, colour: Tensor) -> Tensor:
    """`colour` (3, S, S) with its chroma matched to the reference's distribution, then moved to the
    hint colours along the gray photo's edges (tasks/colour_controls.py); unchanged without either."""
    hint_map = prep.condition.get("hints")
    reference = (prep.layout or {}).get("reference_chroma")
    if hint_map is None and reference is None:
        return colour
    ycc = images.rgb_to_ycbcr(colour.float())
    chroma = ycc[1:]
    if reference is not None:
        chroma = colour_hints.match_chroma(chroma, reference)
    if hint_map is not None:
        chroma = colour_hints.propagate(chroma, prep.cond[0, 0].float(), hint_map[0])
    return images.ycbcr_to_rgb(torch.cat([ycc[:1], chroma]))


# --- the colour head: the colour the model commits to ----------------------------------------------


def head_logits(head: Any, encoder: Any, views: Tensor, size: int) -> Tensor:
    """The colour head's logits (B, Q, 64, 64) for gray views (B, 3, V, V) that the encoder sees at `size`."""
    from .. import colour_head, features

    with torch.no_grad():
        x = features.preprocess(views, size).contiguous(memory_format=torch.channels_last)
        return head_logits_from(head, encoder.feature_maps(x, colour_head.ENCODER_TAPS), views)


def head_logits_from(head: Any, maps: list[Tensor], views: Tensor) -> Tensor:
    """The colour head's logits from the encoder's final map and its colour_head.ENCODER_TAPS outputs
    (`maps`, as feature_maps returns them) of gray views (B, 3, V, V)."""
    from .. import colour_head

    final, s8, s16 = maps
    with torch.no_grad():
        return head(final.float(), s8.float(), s16.float(), colour_head.gray_input(views).to(final.device)).float()


def head_colours(head: Any, spec: Any, logits: Tensor, cond: Tensor, samples: list[int], seed: int
                 ) -> tuple[Tensor, Tensor]:
    """Colour images (len(samples), 3, S, S): the gray cond's (1, 3, S, S) luminance under the head's
    chroma, one per sample index, and where the head is sure (len(samples), 1, S, S): its normalised
    entropy below `spec.confidence`. Sample 0 is the annealed mean itself, the colour the head commits
    to; every other sample adds its own smooth random field (colour_head.decode)."""
    from .. import colour_head, seeds

    sure = _head_sure(spec, logits, cond).expand(len(samples), -1, -1, -1)
    out = []
    for k in samples:
        generator = seeds.generator(seed, k) if k > 0 else None
        chroma = colour_head.decode(head, logits, temperature=spec.temperature, adjust=spec.adjust,
                                    noise_scale=spec.noise, noise_grid=spec.noise_grid, generator=generator)
        out.append(_under_luminance(chroma, cond))
    return torch.cat(out), sure


def _head_sure(spec: Any, logits: Tensor, cond: Tensor) -> Tensor:
    """(B, 1, S, S): 1 where the head's normalised entropy is below `spec.confidence`, at cond's size."""
    from .. import colour_head

    entropy = F.interpolate(colour_head.entropy(logits), size=cond.shape[-2:], mode="bilinear", align_corners=False)
    return (entropy <= spec.confidence).float()


def _under_luminance(chroma: Tensor, cond: Tensor) -> Tensor:
    """The head's chroma (B, 2, 64, 64) upsampled under the gray cond's (B or 1, 3, S, S) luminance: RGB images."""
    chroma = F.interpolate(chroma, size=cond.shape[-2:], mode="bicubic", align_corners=False)
    luma = images.rgb_to_ycbcr(cond.float().to(chroma.device))[:, :1]
    return images.ycbcr_to_rgb(torch.cat([luma.expand(len(chroma), -1, -1, -1), chroma], dim=1)).clamp(-1, 1)


HEAD_HINT_MASK = 0.5  # the hint map's mask channel where the head's colour is the hint; a user's hints are 1
TRAIN_HEAD_MEAN = 0.25  # share of training items shown the head's annealed mean; the rest one of its samples


def head_hints(colours: Tensor, sure: Tensor, given: Tensor | None) -> Tensor:
    """The head's colours (N, 3, S, S) where it is sure (N, 1, S, S) as a colour-hint map for the UNet,
    under the user's own hints. The mask channel is HEAD_HINT_MASK there, so a network trained on both
    (`training_head_hints`) tells the head's colour from a colour the user asked for."""
    dense = torch.cat([colour_hints.HINT_SCALE * colour_hints.chroma(colours) * sure,
                       HEAD_HINT_MASK * sure.to(colours)], dim=1)
    return dense if given is None else _merge_hints(given.to(dense), dense)


def training_head_hints(head: Any, spec: Any, logits: Tensor, cond: Tensor, given: Tensor | None,
                        generator: torch.Generator) -> Tensor:
    """Training's hint map (B, 3, S, S) for a UNet that samples around its colour head: what inference
    gives it (`head_colours`, `head_hints`) for the gray items `cond` (B, 3, S, S) with head `logits`
    (B, Q, 64, 64): the head's annealed mean for a share TRAIN_HEAD_MEAN of items, one of its noisy
    samples for the rest, under the random ground-truth hints `given`."""
    from .. import colour_head

    noisy = (torch.rand(logits.shape[0], generator=generator) >= TRAIN_HEAD_MEAN).float() * spec.noise
    noise = colour_head.smooth_noise(tuple(logits.shape), spec.noise_grid, generator) * noisy.view(-1, 1, 1, 1)
    with torch.no_grad():
        chroma = colour_head.annealed_mean(logits, head.centres, spec.temperature, head.log_prior, spec.adjust,
                                           noise.to(logits.device))
        return head_hints(_under_luminance(chroma, cond), _head_sure(spec, logits, cond), given)


# --- colour controls in training and evaluation --------------------------------------------------


def with_controls(config: ModelConfig) -> ModelConfig:
    """The config with colour hints and a reference vector conditioning its UNet (tasks/colour_controls.py)."""
    if NAME not in config.tasks:
        raise PaletteError("colour controls (controls) need the colorize task")
    unet = dataclasses.replace(config.unet, hint_channels=colour_hints.HINT_CHANNELS,
                               reference_channels=colour_hints.REFERENCE_CHANNELS)
    return dataclasses.replace(config, unet=unet)


def training_condition(config: ModelConfig, target: Tensor, mine: Tensor, generator: torch.Generator
                       ) -> dict[str, Tensor]:
    """Colour hints (a few revealed ground-truth colours) and the target's own chroma histogram,
    dropped for a share of items, for this task's items (`mine`) of a model with colour controls."""
    if not config.unet.hint_channels:
        return {}
    given = colour_hints.random_hints(target, generator) * mine.view(-1, 1, 1, 1)
    shown = torch.rand(target.shape[0], generator=generator) >= colour_hints.TRAIN_REFERENCE_DROPOUT
    reference = colour_hints.reference_vector(target).to(target.device) * (shown.to(target.device) & mine)[:, None]
    return {"hints": given.to(target.dtype), "reference": reference.to(target.dtype)}


def eval_controls(target: Tensor, generator: torch.Generator, *, hints: int = 0, reference: bool = False
                  ) -> tuple[list[colour_hints.Hint], dict[str, Any]]:
    """The scored colour points of a ground truth, and the controls `palette eval` gives the model:
    the first `hints` of those points, and the ground truth itself as the reference."""
    points = eval_points(target, generator, max(hints, EVAL_POINTS))
    given: dict[str, Any] = {"hints": points[:hints]} if hints else {}
    if reference:
        given["reference"] = images.to_pil(target)
    return points[:EVAL_POINTS], given
