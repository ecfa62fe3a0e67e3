"""The inference path from images to images: task preprocessing, batched sampling, seeds.

    model = load_model("colorize")
    outputs = restore(model, "colorize", "photo.jpg", num_samples=2, seed=7)  # list of PIL images

Three levels, each usable alone:
- `restore_tensors`: tensors at the model's resolution in, samples out; all samples of all
  inputs batched together, sample k of every input drawn from `seeds.generator(seed, k)`.
- `prepare` / `finish`: one photo -> conditioning tensors (one per tile or crop) -> full-resolution
  outputs, as the task's module (`tasks/<task>.py`) does it. `restore_stream` runs many prepared
  photos through `restore_tensors` together.
- `restore`: one photo (path or PIL image) -> list of PIL images.

Sampler, steps, strength and guidance are resolved against the model once (`resolve_sampling`)
into a `Sampling` that the sampling loop and the PNG metadata both read. A model whose config names
a frozen encoder also gets, per input, the encoder's view of it (`Prepared.view`, made by `prepare`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from . import devices, diffusion, images, samplers, seeds, tasks
from .checkpoint import PaletteModel
from .config import ModelConfig, RefineConfig
from .errors import PaletteError
from .guidance import conditioned
from .completion import CompletionConfig
from .refine import Refinement, complete_fill, fill_levels, refine_fill
from .tasks.base import Prepared

Callback = Callable[[int, int], None]
K = TypeVar("K")


# --- batched sampling at the model's resolution ---------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How samples are drawn, resolved against a model: what runs and what the metadata records."""

    sampler: str  # "ddpm", "ddim", "dpmpp", or "regression" for one-pass models
    steps: int  # network calls per sample
    strength: float  # start level: 1 = pure noise, < 1 = the noised source
    guidance: float | None = None  # classifier-free guidance over the conditions; None: a model without any
    normalized: bool = True  # PITI's normalized guidance; False: plain
    refine: RefineConfig | CompletionConfig | None = None  # full-size fills of masked tasks (refine.py); None: off


# auto: exemplar completion where it measured better (CompletionConfig.tasks: inpaint and uncrop); exemplar: of
# inpaint and uncrop fills (completion.py); sdedit: the model config's refine block, if it has one; off: the
# model-size fill.
REFINE_MODES = ("auto", "exemplar", "sdedit", "off")


def takes_conditions(config: ModelConfig) -> bool:
    """Whether the network takes conditions that classifier-free guidance can push: an encoder's
    features, colour hints or a reference."""
    return config.encoder is not None or bool(config.unet.hint_channels or config.unet.reference_channels)


def resolve_sampling(model: PaletteModel | ModelConfig, sampler: str | None = None, steps: int | None = None,
                     strength: float | None = None, guidance: float | None = None,
                     normalized: bool = True, refine: str | RefineConfig | CompletionConfig = "auto") -> Sampling:
    """The model's defaults (a model or its config) for what is None, checked against its schedule.

    `normalized`: PITI's normalized guidance, else plain. `refine`: one of REFINE_MODES, or a `RefineConfig` or
    `CompletionConfig` to use instead."""
    config = model if isinstance(model, ModelConfig) else model.config
    refine = _resolve_refine(config, refine)
    strength = config.strength if strength is None else strength
    if guidance is not None and (guidance < 0 or not takes_conditions(config)):
        raise PaletteError("guidance needs a model with an encoder or colour controls and a weight of 0 or more"
                           if guidance >= 0 else f"guidance must be 0 or more, got {guidance}")
    if takes_conditions(config) and guidance is None:
        guidance = config.encoder.guidance if config.encoder is not None else 0.0
    if config.objective == "regression":
        return Sampling("regression", 1, strength)
    if config.colour_head is not None and config.colour_head.use == "colour":
        return Sampling("colour_head", 1, 1.0)  # one pass of the head; no sampler runs
    sampler = sampler or config.sampler
    if sampler not in samplers.SAMPLERS:
        raise PaletteError(f"unknown sampler {sampler!r}; choose one of {', '.join(samplers.SAMPLERS)}")
    steps = steps or config.steps
    samplers.respace(diffusion.gammas(config.sample_schedule), steps, strength)  # checks steps and strength
    return Sampling(sampler, steps, strength, guidance, normalized, refine)


def _resolve_refine(config: ModelConfig, refine: str | RefineConfig | CompletionConfig
                    ) -> RefineConfig | CompletionConfig | None:
    """The refinement a model runs: none for one-pass models, "off", or sdedit with a model without a block."""
    if isinstance(refine, RefineConfig):
        samplers.respace(diffusion.gammas(config.sample_schedule), refine.steps, refine.strength)
    elif isinstance(refine, CompletionConfig):
        return None if config.objective == "regression" else refine
    elif refine not in REFINE_MODES:
        raise PaletteError(f"unknown refine mode {refine!r}; choose one of {', '.join(REFINE_MODES)}")
    else:
        refine = {"auto": CompletionConfig(), "exemplar": CompletionConfig(tasks=("inpaint", "uncrop")),
                  "sdedit": config.refine}.get(refine)
    return None if config.objective == "regression" else refine


def _free_memory(device: torch.device) -> int:
    """Bytes free for activations on `device` (a conservative guess where it cannot be asked)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return max(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory(), 0)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def activation_bytes(model: PaletteModel) -> int:
    """Rough peak memory of one sample in one network call at the model's resolution."""
    unet, size = model.config.unet, model.config.tile_size or model.config.image_size
    floats = 0
    for level, mult in enumerate(unet.channel_mults):
        side = size // 2**level
        # Skip connections held until the way up, plus the blocks working on them.
        floats += (2 * unet.num_res_blocks + 3) * unet.base_channels * mult * side * side
        if 2**level in unet.attn_factors or level == len(unet.channel_mults) - 1:
            heads = max(unet.base_channels * mult // max(unet.num_head_channels, 1), unet.num_heads)
            floats += heads * (side * side) ** 2  # attention weights, if the kernel materialises them
    return 4 * floats * 2  # float32, and twice for temporaries


CPU_BATCH_PIXELS = 16 * 64 * 64  # a CPU gains nothing beyond this many pixels per call (worse: caches)


def auto_batch_size(model: PaletteModel) -> int:
    """Samples per network call that fit in half the free memory; capped where more is no faster."""
    side = model.config.tile_size or model.config.image_size
    cap = min(8, max(1, CPU_BATCH_PIXELS // side ** 2)) if model.device.type == "cpu" else 256
    fit = _free_memory(model.device) // 2 // max(activation_bytes(model), 1)
    return int(min(max(fit, 1), cap))


def _check_batch(model: PaletteModel, cond: torch.Tensor, mask: torch.Tensor | None, num_samples: int) -> None:
    """Refuse conditioning the network cannot take."""
    if cond.dim() != 4 or cond.shape[1] != 3:
        raise PaletteError(f"cond must be shaped (B, 3, H, W), got {tuple(cond.shape)}")
    b, _, h, w = cond.shape
    factor = model.network.downsample_factor
    if h % factor or w % factor:
        raise PaletteError(f"image sides must be multiples of {factor} for this network, got {h}x{w}")
    if mask is not None and tuple(mask.shape) != (b, 1, h, w):
        raise PaletteError(f"mask must be shaped {(b, 1, h, w)}, got {tuple(mask.shape)}")
    if model.dtype != torch.float32:  # GroupNorm32 needs float32 weights; autocast gives the speed
        raise PaletteError(f"load the model in float32 (got {model.dtype}) and run under "
                           f"pipeline.autocast(model, 'bf16') or 'fp16' for half precision")
    if num_samples < 1:
        raise PaletteError(f"num_samples must be at least 1, got {num_samples}")


def restore_tensors(model: PaletteModel, cond: torch.Tensor, mask: torch.Tensor | None = None, *,
                    num_samples: int = 1, sampling: Sampling | None = None, sampler: str | None = None,
                    steps: int | None = None, strength: float | None = None, seed: int = 0,
                    batch_size: int | None = None, callback: Callback | None = None,
                    views: torch.Tensor | None = None, condition: dict[str, torch.Tensor] | None = None,
                    first_sample: int = 0, init: torch.Tensor | None = None) -> torch.Tensor:
    """cond (B,3,H,W) in [-1,1] at the model's resolution, mask (B,1,H,W) (1 = generate) or None.
    Returns (B, num_samples, 3, H, W) in [-1,1]: samples first_sample .. first_sample + num_samples - 1.
    Sample k of every input uses seeds.generator(seed, k), so a photo's sample k does not depend on
    what else is in the run, on the batch size, or on which samples are drawn with it. All B*num_samples samples are batched together up to batch_size per network
    batch. callback(done, total) counts sampling steps over all batches. `sampling` (or, when it is
    None, sampler/steps/strength resolved by `resolve_sampling`) says how to sample. `views`
    (B, 3, V, V) are what the model's frozen encoder sees, one per input (required when it has one);
    `condition` holds other network inputs, B first: colour `hints` and a `reference` (tasks/colour_controls.py).
    `init` (B,3,H,W), with a strength below 1, is the image the sampler starts from noised instead of `cond`."""
    _check_batch(model, cond, mask, num_samples)
    sampling = sampling or resolve_sampling(model, sampler, steps, strength)
    batch_size = batch_size or auto_batch_size(model)
    if batch_size < 1:
        raise PaletteError(f"batch size must be at least 1, got {batch_size}")
    config, (b, _, h, w) = model.config, cond.shape
    gammas = diffusion.gammas(config.sample_schedule)
    condition = check_condition(model, condition or {}, b)
    maps, logits = encoder_passes(model, views, b)
    if maps is not None:
        condition["features"] = maps
    flat = {k: v.to(model.device).repeat_interleave(num_samples, dim=0) for k, v in condition.items()}
    if logits is not None:  # colorize's colour head: the colour itself, or what the UNet samples around
        colours, sure = head_colours(model, cond, logits, num_samples, first_sample, seed)
        if model.config.colour_head.use == "colour":
            if callback is not None:
                callback(1, 1)
            return colours.float().to(cond.device).reshape(b, num_samples, 3, h, w)
        flat["hints"] = tasks.get("colorize").head_hints(colours, sure, flat.get("hints"))

    # Input-major order: item i is sample i % num_samples of input i // num_samples.
    n = b * num_samples
    flat_cond = cond.float().repeat_interleave(num_samples, dim=0)
    flat_mask = None if mask is None else mask.float().repeat_interleave(num_samples, dim=0)
    flat_init = None if init is None else init.float().repeat_interleave(num_samples, dim=0)
    sample_index = [first_sample + i % num_samples for i in range(n)]
    total = math.ceil(n / batch_size) * sampling.steps
    out = []
    for j, start in enumerate(range(0, n, batch_size)):
        end = min(start + batch_size, n)
        step_callback = None
        if callback is not None:
            step_callback = lambda done, _, j=j: callback(j * sampling.steps + done, total)  # noqa: E731
        x = samplers.sample(
            _network(model, flat, start, end, sampling), flat_cond[start:end].to(model.device), gammas,
            sampler=sampling.sampler,
            steps=sampling.steps, generators=[seeds.generator(seed, k) for k in sample_index[start:end]],
            mask=None if flat_mask is None else flat_mask[start:end].to(model.device),
            objective=config.objective, residual=config.residual, strength=sampling.strength,
            callback=step_callback, init=None if flat_init is None else flat_init[start:end].to(model.device))
        out.append(x.float().to(cond.device))
    return torch.cat(out).reshape(b, num_samples, 3, h, w)


def encoder_maps(model: PaletteModel, views: torch.Tensor | None, count: int) -> torch.Tensor | None:
    """The frozen encoder's feature maps of `views`, or None for a model without an encoder."""
    return encoder_passes(model, views, count)[0]


def encoder_passes(model: PaletteModel, views: torch.Tensor | None, count: int
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One pass of the frozen encoder over each of `views`: its maps for the UNet (None for a model without
    an encoder) and, for a model with a colour head, the head's logits (B, Q, 64, 64) from the same pass."""
    encoder = model.config.encoder
    if encoder is None:
        return None, None
    if views is None or views.dim() != 4 or views.shape[0] != count:
        raise PaletteError(f"{model.source}: this model sees its input through {encoder.name}; pass one view "
                           f"per input (pipeline.prepare makes them)")
    from . import colour_head, features

    network = features.load(encoder.sha256, model.device).to(memory_format=torch.channels_last)
    pyramid = bool(model.config.unet.pyramid_channels)
    head = model.colour_head
    maps, logits = [], []
    # One view at a time: under CPU autocast a batch's shape changes the rounding (see guidance.OneByOne).
    for view in views:
        view = view[None].to(model.device)
        if head is None:
            maps.append(features.encode(network, view, encoder.size, pyramid))
            continue
        unet_maps, taps = features.encode_with_taps(network, view, encoder.size, pyramid, colour_head.ENCODER_TAPS)
        maps.append(unet_maps)
        logits.append(tasks.get("colorize").head_logits_from(head, taps, view))
    return torch.cat(maps), torch.cat(logits) if logits else None


def head_colours(model: PaletteModel, cond: torch.Tensor, logits: torch.Tensor, num_samples: int,
                 first_sample: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour head's colour images (B * num_samples, 3, H, W), input-major: sample k of input i from
    seeds.generator(seed, k), sample 0 the head's own annealed mean; and where it is sure
    (B * num_samples, 1, H, W) (tasks/colorize.py). `logits` (B, Q, 64, 64): the head's, per input."""
    colorize = tasks.get("colorize")
    samples = list(range(first_sample, first_sample + num_samples))
    colours, sure = [], []
    for lg, c in zip(logits, cond):
        image, mask = colorize.head_colours(model.colour_head, model.config.colour_head, lg[None], c[None], samples, seed)
        colours.append(image)
        sure.append(mask)
    return torch.cat(colours), torch.cat(sure)


def check_condition(model: PaletteModel, condition: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """A copy of `condition` after refusing inputs the model was not trained to take."""
    unet = model.config.unet
    takes = {"hints": unet.hint_channels, "reference": unet.reference_channels}
    for key, value in condition.items():
        if key not in takes:
            raise PaletteError(f"unknown network condition {key!r}")
        if not takes[key]:
            raise PaletteError(f"{model.source}: this model takes no colour {'hints' if key == 'hints' else key}; "
                               f"use a model trained with --controls (the built-in colorize model is)")
        if value.shape[0] != count or value.shape[1] != takes[key]:
            raise PaletteError(f"{key} must have {count} items of {takes[key]} channels, got {tuple(value.shape)}")
    return dict(condition)


def _network(model: PaletteModel, flat: dict[str, torch.Tensor], start: int, end: int, sampling: Sampling):
    """The network call for items start..end: guided over their conditions, if the model takes any."""
    return conditioned(model.network, {k: v[start:end] for k, v in flat.items()}, sampling.guidance or 0.0,
                       model.config.objective, sampling.normalized)


# --- one photo: prepare, then finish --------------------------------------------------------


def _as_photo(image: images.Photo | Image.Image | str | os.PathLike) -> images.Photo:
    """Accept a `Photo`, a PIL image or a path."""
    if isinstance(image, images.Photo):
        return image
    if isinstance(image, Image.Image):
        return images.photo_from_pil(image)
    return images.load_photo(image)


def prepare(model: PaletteModel, task: str, image: images.Photo | Image.Image | str | os.PathLike, *,
            seed: int = 0, **options: Any) -> Prepared:
    """Degrade a photo for `task` with the training degradations, at the model's resolution.

    `options` are the task's: mask / mask_box / mask_mode (inpaint), side / ratio (uncrop), quality (jpeg)."""
    start = time.perf_counter()
    module = tasks.get(task)
    config = model.config
    prep = module.prepare(_as_photo(image), config.image_size, seed=seed, tile=config.tile_size or config.image_size,
                          **options)
    check_condition(model, prep.condition, len(prep.cond))
    encoder = model.config.encoder
    if encoder is not None:
        masks = prep.mask if prep.mask is not None else [None] * len(prep.cond)
        prep.view = torch.stack([tasks.encoder_view(task, region, cond, m, encoder.size)
                                 for region, cond, m in zip(module.view_regions(prep), prep.cond, masks)])
    prep.seconds = time.perf_counter() - start
    return prep


def finish(prep: Prepared, samples: torch.Tensor) -> list[Image.Image]:
    """Full-resolution outputs, one per sample, from samples (N, num_samples, 3, S, S)."""
    module = tasks.get(prep.task)
    outputs = []
    for k in range(samples.shape[1]):
        rgb = module.finish(prep, samples[:, k].float().cpu())
        outputs.append(images.with_alpha(rgb, prep.photo.alpha, prep.offset[::-1]))
    return outputs


def completion_for(task: str, config: CompletionConfig) -> CompletionConfig:
    """`config` with the fill task's own guide weight where it names none."""
    if config.guide_weight is not None:
        return config
    return dataclasses.replace(config, guide_weight=getattr(tasks.get(task), "COMPLETION_GUIDE_WEIGHT", 1.0))


def refine_samples(model: PaletteModel, prep: Prepared, samples: torch.Tensor, sampling: Sampling, *,
                   seed: int = 0, batch_size: int | None = None, callback: Callback | None = None,
                   first_sample: int = 0) -> torch.Tensor:
    """Samples (1, K, 3, S, S) of a prepared photo refined up to the resolution of its fill (1, K, 3, H, W)
    where `sampling.refine` and the task call for it (see refine.py); otherwise `samples` as they are.
    They are samples first_sample .. first_sample + K - 1 (their index keys the refinement's noise).
    `callback(done, total)` counts the refinement's sampler steps over all K samples."""
    region_of = getattr(tasks.get(prep.task), "fill_region", None)
    if sampling.refine is None or region_of is None or prep.task not in sampling.refine.tasks:
        return samples
    region, mask = region_of(prep)
    if not fill_levels(*region.shape[-2:], model.config.image_size):
        return samples
    if isinstance(sampling.refine, CompletionConfig):  # each sample follows its own model sample and stream
        config = completion_for(prep.task, sampling.refine)
        return torch.stack([complete_fill(region.to(model.device), mask.to(model.device), samples[0, j], seed=seed,
                                          sample=j, config=config) for j in range(samples.shape[1])])[None]
    maps = encoder_maps(model, prep.view, len(prep.cond))
    k = samples.shape[1]
    runs = [Refinement(model, sampling.refine, sampling.sampler, sampling.guidance or 0.0, maps, seed,
                       first_sample + j, batch_size or auto_batch_size(model)) for j in range(k)]
    ticks = [None if callback is None else
             (lambda done, total, j=j: callback(j * total + done, k * total)) for j in range(k)]
    return torch.stack([refine_fill(run, region, mask, samples[0, j], tick)
                        for j, (run, tick) in enumerate(zip(runs, ticks))])[None]


# --- many photos ----------------------------------------------------------------------------


@dataclass
class Result:
    """Outputs of one prepared photo, samples `first` .. `first + len(outputs) - 1`, and their time."""

    prepared: Prepared
    outputs: list[Image.Image]
    seconds: float
    first: int = 0  # the sample index of outputs[0]
    last: bool = True  # whether these are the photo's last samples


@dataclass(frozen=True)
class _Part:
    """Samples first .. first + count - 1 of one prepared photo."""

    key: Any
    prep: Prepared
    first: int
    count: int
    last: bool


def _groups(items: Iterable[tuple[K, Prepared]], num_samples: int, batch_size: int) -> Iterator[list[_Part]]:
    """What is sampled together: whole photos until their samples fill a batch; a photo whose samples
    are more than a batch alone, a batch of samples at a time. Reads `items` only as far as needed."""
    group: list[_Part] = []
    count = 0
    for key, prep in items:
        tiles = len(prep.cond)
        if tiles * num_samples > batch_size:
            if group:
                yield group
                group, count = [], 0
            step = max(1, batch_size // tiles)
            for first in range(0, num_samples, step):
                last = first + step >= num_samples
                yield [_Part(key, prep, first, min(step, num_samples - first), last)]
            continue
        group.append(_Part(key, prep, 0, num_samples, True))
        count += tiles * num_samples
        if count >= batch_size:
            yield group
            group, count = [], 0
    if group:
        yield group


def restore_stream(model: PaletteModel, items: Iterable[tuple[K, Prepared]], *, num_samples: int = 1,
                   sampling: Sampling | None = None, sampler: str | None = None, steps: int | None = None,
                   strength: float | None = None, seed: int = 0, batch_size: int | None = None,
                   callback: Callback | None = None) -> Iterator[tuple[K, Result]]:
    """Restore prepared photos lazily, several per network batch; yields as each group finishes.

    Photos are grouped until their samples fill a batch, and a photo's samples beyond a batch come a
    batch at a time (a `Result` per part, `last` on its final one), so outputs appear early and memory
    stays bounded whatever `num_samples`. `callback(done, total)` counts the sampling steps of the
    current group, then those of each photo's refinement (inpaint, uncrop above the model's size).
    """
    sampling = sampling or resolve_sampling(model, sampler, steps, strength)
    batch_size = batch_size or auto_batch_size(model)
    for group in _groups(items, num_samples, batch_size):
        yield from _run_group(model, group, sampling=sampling, seed=seed, batch_size=batch_size, callback=callback)


def _run_group(model: PaletteModel, group: list[_Part], *, callback: Callback | None,
               **options: Any) -> Iterator[tuple[Any, Result]]:
    """Sample one group together (one network batch per input shape and sample range), then finish each."""
    masked = [part.prep.mask is not None for part in group]
    if any(masked) and not all(masked):
        raise PaletteError("cannot batch masked and unmasked tasks together")
    start = time.perf_counter()
    samples: dict[int, torch.Tensor] = {}
    for shape in dict.fromkeys((tuple(p.prep.cond.shape[1:]), p.first, p.count) for p in group):
        members = [i for i, p in enumerate(group) if (tuple(p.prep.cond.shape[1:]), p.first, p.count) == shape]
        preps = [group[i].prep for i in members]
        out = restore_tensors(
            model, torch.cat([p.cond for p in preps]), torch.cat([p.mask for p in preps]) if all(masked) else None,
            num_samples=shape[2], first_sample=shape[1], callback=callback, condition=_stacked_conditions(preps),
            views=torch.cat([p.view for p in preps]) if model.config.encoder is not None else None, **options)
        samples.update(zip(members, out.split([len(p.cond) for p in preps])))
    share = (time.perf_counter() - start) / sum(len(p.prep.cond) * p.count for p in group)
    for i, part in enumerate(group):
        begin = time.perf_counter()
        refined = refine_samples(model, part.prep, samples[i], options["sampling"], seed=options["seed"],
                                 batch_size=options["batch_size"], callback=callback, first_sample=part.first)
        outputs = finish(part.prep, refined)
        prepared = part.prep.seconds if part.first == 0 else 0.0
        seconds = prepared + share * len(part.prep.cond) * part.count + time.perf_counter() - begin
        yield part.key, Result(part.prep, outputs, seconds, part.first, part.last)


def _stacked_conditions(preps: list[Prepared]) -> dict[str, torch.Tensor]:
    """The conditions of several prepared photos, one after the other; zeros (the null) where one has none."""
    shapes = {k: v.shape[1:] for p in preps for k, v in p.condition.items()}
    return {k: torch.cat([p.condition.get(k, torch.zeros(len(p.cond), *shape)) for p in preps])
            for k, shape in shapes.items()}


def restore(model: PaletteModel, task: str, image: images.Photo | Image.Image | str | os.PathLike, *,
            num_samples: int = 1, sampler: str | None = None, steps: int | None = None, seed: int = 0,
            batch_size: int | None = None, callback: Callback | None = None,
            strength: float | None = None, guidance: float | None = None, refine: str | RefineConfig | CompletionConfig = "auto",
            **task_options: Any) -> list[Image.Image]:
    """Restore one photo at full resolution: `num_samples` PIL images (RGBA if it had alpha).

    `refine` (inpaint, uncrop): one of REFINE_MODES, a `RefineConfig` or a `CompletionConfig` (see
    `resolve_sampling`). `task_options`
    go to `prepare`: mask / mask_box / mask_mode (inpaint), side / ratio (uncrop), quality (jpeg),
    hints / hints_image / reference (colorize with colour controls).
    """
    sampling = resolve_sampling(model, sampler, steps, strength, guidance, refine=refine)
    prep = prepare(model, task, image, seed=seed, **task_options)
    samples = restore_tensors(model, prep.cond, prep.mask, num_samples=num_samples, sampling=sampling, seed=seed,
                              batch_size=batch_size, callback=callback, views=prep.view, condition=prep.condition)
    return finish(prep, refine_samples(model, prep, samples, sampling, seed=seed, batch_size=batch_size,
                                       callback=callback))


def compiled(model: PaletteModel) -> PaletteModel:
    """The model with its network under `torch.compile` (same weights, same outputs up to rounding).

    Each new input shape compiles on its first call: seconds with torch's kernel cache warm, a minute
    or more cold; afterwards a forward runs faster where the compiler can fuse what eager mode cannot
    (bf16 on a CPU with AMX: 1.7x on the jpeg model's 512 px tile; fp32: no gain). Worth it for a
    folder of many photos of one size, not for one photo."""
    return dataclasses.replace(model, network=torch.compile(model.network))


def autocast(model: PaletteModel, dtype: str = "auto"):
    """A context running the model's network in `dtype` ("auto": `devices.resolve_precision`'s choice)."""
    return devices.autocast(model.device, dtype)


def output_settings(model: PaletteModel, prep: Prepared, sampling: Sampling, *, seed: int,
                    sample: int) -> dict[str, Any]:
    """What produced an output, for its PNG metadata: reproducible with the same model."""
    # A local folder is recorded by name only: metadata travels with the photo, paths are private.
    name = Path(model.source).name if Path(model.source).expanduser().is_dir() else model.source
    guided = {} if sampling.guidance is None else {"guidance": sampling.guidance}
    if sampling.guidance and not sampling.normalized:
        guided["guidance_form"] = "plain"
    return {"task": prep.task, "model": name, "seed": seed, "sample": sample, "sampler": sampling.sampler,
            "steps": sampling.steps, "strength": sampling.strength, **guided,
            **_refine_setting(model, prep.task, sampling), **prep.settings}


def png_text(model: PaletteModel, prep: Prepared, sampling: Sampling, *, seed: int, sample: int,
             input_name: str) -> dict[str, str]:
    """The text chunks of an output PNG: what produced it (`output_settings`) under "palette", and the software."""
    from . import __version__

    settings = output_settings(model, prep, sampling, seed=seed, sample=sample)
    return {"palette": json.dumps({"input": input_name, **settings, "version": __version__}),
            "Software": f"palette {__version__}"}


def _refine_setting(model: PaletteModel, task: str, sampling: Sampling) -> dict[str, Any]:
    """The refinement of a task that has one: its levels' strength and steps, or "off" where the model would
    refine; nothing for a model without a refine block run as before (its metadata is unchanged)."""
    if not hasattr(tasks.get(task), "fill_region"):
        return {}
    if isinstance(sampling.refine, CompletionConfig):
        return {"refine": {"method": "exemplar", **dataclasses.asdict(completion_for(task, sampling.refine))}}
    if sampling.refine is not None and task in sampling.refine.tasks:
        return {"refine": {k: v for k, v in dataclasses.asdict(sampling.refine).items() if k != "tasks"}}
    return {"refine": "off"} if model.config.refine is not None else {}
