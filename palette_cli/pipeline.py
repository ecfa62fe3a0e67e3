"""The inference path from images to images: task preprocessing, batched sampling, seeds.

    model = load_model("colorize")
    outputs = restore(model, "colorize", "photo.jpg", num_samples=2, seed=7)  # list of PIL images

Three levels, each usable alone:
- `restore_tensors`: tensors at the model's resolution in, samples out; all samples of all
  inputs batched together, sample k of every input drawn from `sample_generator(seed, k)`.
- `prepare` / `finish`: one photo -> conditioning tensors (one per tile or crop) -> full-resolution
  outputs. `restore_stream` runs many prepared photos through `restore_tensors` together.
- `restore`: one photo (path or PIL image) -> list of PIL images.
"""

from __future__ import annotations

import glob
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from . import diffusion, images, samplers, tasks
from .checkpoint import DTYPES, PaletteModel
from .errors import PaletteError

Callback = Callable[[int, int], None]
K = TypeVar("K")

# Independent random streams derived from the run's seed (sample indices stay far below these).
_MASK_STREAM = 1 << 40  # free-form masks
_FILL_STREAM = (1 << 40) + 1  # noise in the hole of inpaint/uncrop conditioning

# jpeg tiles overlap by this fraction of their side; seams are blended over the overlap.
TILE_OVERLAP = 0.25



# --- batched sampling at the model's resolution ---------------------------------------------


def sampling_steps(model: PaletteModel, sampler: str | None = None, steps: int | None = None,
                   strength: float | None = None) -> int:
    """Network evaluations per sample: the respaced step count, 1 for regression models."""
    if model.config.objective == "regression":
        return 1
    sampler = sampler or model.config.sampler
    if sampler not in samplers.SAMPLERS:
        raise PaletteError(f"unknown sampler {sampler!r}; choose one of {', '.join(samplers.SAMPLERS)}")
    gammas = diffusion.gammas(model.config.sample_schedule)
    strength = model.config.strength if strength is None else strength
    return len(samplers.respace(gammas, steps or model.config.steps, strength))


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
    unet, size = model.config.unet, model.config.image_size
    floats = 0
    for level, mult in enumerate(unet.channel_mults):
        side = size // 2**level
        # Skip connections held until the way up, plus the blocks working on them.
        floats += (2 * unet.num_res_blocks + 3) * unet.base_channels * mult * side * side
        if 2**level in unet.attn_factors or level == len(unet.channel_mults) - 1:
            heads = max(unet.base_channels * mult // max(unet.num_head_channels, 1), unet.num_heads)
            floats += heads * (side * side) ** 2  # attention weights, if the kernel materialises them
    return 4 * floats * 2  # float32, and twice for temporaries


def auto_batch_size(model: PaletteModel) -> int:
    """Samples per network call that fit in half the free memory; capped where more is no faster."""
    cap = 8 if model.device.type == "cpu" else 256  # a CPU gains nothing from bigger batches
    fit = _free_memory(model.device) // 2 // max(activation_bytes(model), 1)
    return int(min(max(fit, 1), cap))


def restore_tensors(model: PaletteModel, cond: torch.Tensor, mask: torch.Tensor | None = None, *,
                    num_samples: int = 1, sampler: str | None = None, steps: int | None = None,
                    seed: int = 0, batch_size: int | None = None,
                    callback: Callable[[int, int], None] | None = None,
                    strength: float | None = None) -> torch.Tensor:
    """cond (B,3,H,W) in [-1,1] at the model's resolution, mask (B,1,H,W) (1 = generate) or None.
    Returns (B, num_samples, 3, H, W) in [-1,1]. Sample k of every input uses
    samplers.sample_generator(seed, k), so a photo's sample k does not depend on what else is
    in the run or on the batch size. All B*num_samples samples are batched together up to
    batch_size per network batch. callback(done, total) counts sampling steps over all batches."""
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
    config = model.config
    sampler = sampler or config.sampler
    steps = steps or config.steps
    strength = config.strength if strength is None else strength
    per_batch = sampling_steps(model, sampler, steps, strength)
    batch_size = batch_size or auto_batch_size(model)
    if batch_size < 1:
        raise PaletteError(f"batch size must be at least 1, got {batch_size}")
    gammas = diffusion.gammas(config.sample_schedule)

    # Input-major order: item i is sample i % num_samples of input i // num_samples.
    n = b * num_samples
    flat_cond = cond.float().repeat_interleave(num_samples, dim=0)
    flat_mask = None if mask is None else mask.float().repeat_interleave(num_samples, dim=0)
    sample_index = [i % num_samples for i in range(n)]
    num_batches = math.ceil(n / batch_size)
    total = num_batches * per_batch
    out = []
    for j, start in enumerate(range(0, n, batch_size)):
        end = min(start + batch_size, n)
        step_callback = None
        if callback is not None:
            step_callback = lambda done, _, j=j: callback(j * per_batch + done, total)  # noqa: E731
        x = samplers.sample(
            model.network, flat_cond[start:end].to(model.device), gammas, sampler=sampler, steps=steps,
            generators=[samplers.sample_generator(seed, k) for k in sample_index[start:end]],
            mask=None if flat_mask is None else flat_mask[start:end].to(model.device),
            objective=config.objective, residual=config.residual, strength=strength,
            callback=step_callback)
        out.append(x.float().to(cond.device))
    return torch.cat(out).reshape(b, num_samples, 3, h, w)


# --- one photo: prepare, then finish --------------------------------------------------------


@dataclass
class Prepared:
    """A photo turned into conditioning tensors, with what `finish` needs to rebuild it."""

    task: str
    photo: images.Photo
    cond: torch.Tensor  # (N, 3, S, S): one per tile (jpeg) or a single crop/canvas
    mask: torch.Tensor | None = None  # (N, 1, S, S) at the model's resolution
    full_mask: torch.Tensor | None = None  # (1, H, W): inpaint's hole, uncrop's canvas mask
    box: tuple[int, int, int, int] | None = None  # inpaint crop (left, top, right, bottom)
    offset: tuple[int, int] = (0, 0)  # uncrop: (top, left) of the original on the canvas
    tiling: images.Tiling | None = None  # jpeg
    seconds: float = 0.0  # time spent preparing
    settings: dict[str, Any] = field(default_factory=dict)  # task options, for metadata


def _as_photo(image: images.Photo | Image.Image | str | os.PathLike) -> images.Photo:
    """Accept a `Photo`, a PIL image or a path."""
    if isinstance(image, images.Photo):
        return image
    if isinstance(image, Image.Image):
        return images.photo_from_pil(image)
    return images.load_photo(image)


def inpaint_mask(photo: images.Photo, *, mask: Image.Image | torch.Tensor | None = None,
                 mask_box: tuple[int, int, int, int] | None = None, mask_mode: str | None = None,
                 seed: int = 0) -> torch.Tensor:
    """The full-resolution (1, H, W) hole: from a mask image or tensor, a box, or a mode."""
    w, h = photo.size
    given = [m for m in (mask, mask_box, mask_mode) if m is not None]
    if len(given) != 1:
        raise PaletteError("inpaint needs exactly one of a mask image, a mask box or a mask mode")
    if isinstance(mask, Image.Image):
        if mask.size != (w, h):
            raise PaletteError(f"mask is {mask.size[0]}x{mask.size[1]} but the image is {w}x{h}")
        return tasks.mask_from_image(mask, h, w)
    if isinstance(mask, torch.Tensor):
        if tuple(mask.shape) != (1, h, w):
            raise PaletteError(f"mask shape {tuple(mask.shape)} does not match the image; expected (1, {h}, {w})")
        return (mask > 0.5).float()
    if mask_box is not None:
        return tasks.box_mask(h, w, mask_box)
    if mask_mode == "center":
        return tasks.center_mask(h, w)
    if mask_mode == "free-form":
        return tasks.free_form_mask(h, w, samplers.sample_generator(seed, _MASK_STREAM))
    raise PaletteError(f"unknown mask mode {mask_mode!r}; use 'center' or 'free-form'")


def prepare(model: PaletteModel, task: str, image: images.Photo | Image.Image | str | os.PathLike, *,
            mask: Image.Image | torch.Tensor | None = None, mask_box: tuple[int, int, int, int] | None = None,
            mask_mode: str | None = None, side: str = "right", ratio: float = 0.5,
            quality: int | None = None, seed: int = 0) -> Prepared:
    """Degrade a photo for `task` with the training degradations, at the model's resolution."""
    start = time.perf_counter()
    if task not in tasks.TASKS:
        raise PaletteError(f"unknown task {task!r}; choose one of {', '.join(tasks.TASKS)}")
    photo = _as_photo(image)
    s = model.config.image_size
    w, h = photo.size
    fill = samplers.sample_generator(seed, _FILL_STREAM)
    if task == "colorize":
        small = images.resize(images.to_tensor(photo.rgb), (s, s))
        prep = Prepared(task, photo, tasks.to_gray(small)[None])
    elif task == "jpeg":
        settings = {}
        if quality is not None:  # recompress a clean photo first: demos and evaluation
            photo = images.Photo(tasks.jpeg_recompress(photo.rgb, quality), photo.alpha, photo.icc_profile,
                                 photo.mode)
            settings["quality"] = quality
        tiling = images.make_tiling(h, w, s, round(s * TILE_OVERLAP))
        prep = Prepared(task, photo, images.split_tiles(images.to_tensor(photo.rgb), tiling), tiling=tiling,
                        settings=settings)
    elif task == "inpaint":
        hole = inpaint_mask(photo, mask=mask, mask_box=mask_box, mask_mode=mask_mode, seed=seed)
        box = images.mask_crop_box(hole, min_side=s)
        x0, y0, x1, y1 = box
        crop = images.resize(images.to_tensor(photo.rgb)[:, y0:y1, x0:x1], (s, s))
        small_mask = images.resize_mask(hole[:, y0:y1, x0:x1], (s, s))
        cond = tasks.fill_noise(crop, small_mask, fill)
        settings = {"mask": "image" if mask is not None else
                    (",".join(map(str, mask_box)) if mask_box is not None else mask_mode)}
        prep = Prepared(task, photo, cond[None], small_mask[None], full_mask=hole, box=box, settings=settings)
    else:  # uncrop
        canvas_mask, offset = images.uncrop_canvas(h, w, side, ratio)
        small_mask = tasks.uncrop_mask(s, s, side, ratio)
        top, left, kh, kw = images.known_box(small_mask)
        canvas = torch.zeros(3, s, s)
        canvas[:, top:top + kh, left:left + kw] = images.resize(images.to_tensor(photo.rgb), (kh, kw))
        cond = tasks.fill_noise(canvas, small_mask, fill)
        prep = Prepared(task, photo, cond[None], small_mask[None], full_mask=canvas_mask, offset=offset,
                        settings={"side": side, "ratio": ratio})
    prep.seconds = time.perf_counter() - start
    return prep


def finish(prep: Prepared, samples: torch.Tensor) -> list[Image.Image]:
    """Full-resolution outputs, one per sample, from samples (N, num_samples, 3, S, S)."""
    photo = prep.photo
    outputs = []
    for k in range(samples.shape[1]):
        x = samples[:, k].float().cpu()
        if prep.task == "colorize":
            rgb = images.recombine_chroma(photo.rgb, x[0])
        elif prep.task == "jpeg":
            rgb = images.to_pil(images.merge_tiles(x, prep.tiling))
        elif prep.task == "inpaint":
            x0, y0, x1, y1 = prep.box
            crop = images.resize(x[0], (y1 - y0, x1 - x0))
            rgb = images.paste_masked(photo.rgb, crop, prep.full_mask, prep.box)
        else:  # uncrop: the generated canvas, with every original pixel put back
            rgb = images.to_pil(images.resize(x[0], tuple(prep.full_mask.shape[-2:])))
            rgb.paste(photo.rgb, prep.offset[::-1])
        outputs.append(images.with_alpha(rgb, photo.alpha, prep.offset[::-1]))
    return outputs


# --- many photos ----------------------------------------------------------------------------


@dataclass
class Result:
    """The outputs of one prepared photo, and the time attributed to it."""

    prepared: Prepared
    outputs: list[Image.Image]
    seconds: float


def restore_stream(model: PaletteModel, items: Iterable[tuple[K, Prepared]], *, num_samples: int = 1,
                   sampler: str | None = None, steps: int | None = None, seed: int = 0,
                   batch_size: int | None = None, callback: Callback | None = None,
                   strength: float | None = None) -> Iterator[tuple[K, Result]]:
    """Restore prepared photos lazily, several per network batch; yields as each group finishes.

    Photos are grouped until their samples fill a batch, so outputs appear early and memory stays
    bounded. `callback(done, total)` counts the sampling steps of the current group.
    """
    batch_size = batch_size or auto_batch_size(model)
    group: list[tuple[K, Prepared]] = []
    count = 0
    iterator = iter(items)
    while True:
        item = next(iterator, None)
        if item is not None:
            group.append(item)
            count += len(item[1].cond) * num_samples
            if count < batch_size:
                continue
        if not group:
            return
        yield from _run_group(model, group, num_samples=num_samples, sampler=sampler, steps=steps, seed=seed,
                              batch_size=batch_size, callback=callback, strength=strength)
        group, count = [], 0
        if item is None:
            return


def _run_group(model: PaletteModel, group: list[tuple[K, Prepared]], *, num_samples: int,
               callback: Callback | None, **options: Any) -> Iterator[tuple[K, Result]]:
    """Sample one group of photos together, then finish each."""
    cond = torch.cat([p.cond for _, p in group])
    masked = [p.mask is not None for _, p in group]
    if any(masked) and not all(masked):
        raise PaletteError("cannot batch masked and unmasked tasks together")
    mask = torch.cat([p.mask for _, p in group]) if all(masked) else None
    start = time.perf_counter()
    samples = restore_tensors(model, cond, mask, num_samples=num_samples, callback=callback, **options)
    share = (time.perf_counter() - start) / len(cond)
    at = 0
    for key, prep in group:
        n = len(prep.cond)
        begin = time.perf_counter()
        outputs = finish(prep, samples[at:at + n])
        seconds = prep.seconds + share * n + time.perf_counter() - begin
        at += n
        yield key, Result(prep, outputs, seconds)


def restore(model: PaletteModel, task: str, image: images.Photo | Image.Image | str | os.PathLike, *,
            num_samples: int = 1, sampler: str | None = None, steps: int | None = None, seed: int = 0,
            batch_size: int | None = None, callback: Callback | None = None,
            strength: float | None = None, **task_options: Any) -> list[Image.Image]:
    """Restore one photo at full resolution: `num_samples` PIL images (RGBA if it had alpha).

    `task_options` go to `prepare`: mask / mask_box / mask_mode (inpaint), side / ratio (uncrop),
    quality (jpeg).
    """
    prep = prepare(model, task, image, seed=seed, **task_options)
    samples = restore_tensors(model, prep.cond, prep.mask, num_samples=num_samples, sampler=sampler,
                              steps=steps, seed=seed, batch_size=batch_size, callback=callback,
                              strength=strength)
    return finish(prep, samples)


def autocast(model: PaletteModel, dtype: str = "auto"):
    """A context running the network in `dtype` ("auto": fp32 on CPU, bf16/fp16 on GPUs)."""
    device = model.device.type
    if dtype == "auto":
        if device == "cuda":
            dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            dtype = "fp16" if device == "mps" else "fp32"
    if dtype not in DTYPES:
        raise PaletteError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}")
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[dtype])


def output_settings(model: PaletteModel, prep: Prepared, *, sampler: str | None, steps: int | None,
                    seed: int, sample: int, strength: float | None = None) -> dict[str, Any]:
    """What produced an output, for its PNG metadata: reproducible with the same model."""
    regression = model.config.objective == "regression"
    # A local folder is recorded by name only: metadata travels with the photo, paths are private.
    name = Path(model.source).name if Path(model.source).expanduser().is_dir() else model.source
    return {"task": prep.task, "model": name, "seed": seed, "sample": sample,
            "sampler": "regression" if regression else (sampler or model.config.sampler),
            "steps": sampling_steps(model, sampler, steps, strength),
            "strength": model.config.strength if strength is None else strength, **prep.settings}


# --- files: inputs and output names ---------------------------------------------------------

# Outputs look like `photo.colorize.0.png`; folders and globs skip them so reruns do not
# restore their own outputs.
OUTPUT_NAME = re.compile(r"\.(?:" + "|".join(tasks.TASKS) + r")\.\d+\.png$", re.IGNORECASE)
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputFile:
    """An input image and where its outputs go, relative to the output folder."""

    path: Path
    relative: Path  # e.g. `trip/photo.jpg` for `photos/trip/photo.jpg` read from `photos` with --recursive


def image_suffixes() -> set[str]:
    """File extensions Pillow can open."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _wanted(path: Path, suffixes: set[str]) -> bool:
    """An image file, not hidden, not one of our outputs."""
    return (path.suffix.lower() in suffixes and not path.name.startswith(".")
            and not OUTPUT_NAME.search(path.name) and path.is_file())


def _folder(folder: Path, recursive: bool, suffixes: set[str]) -> list[InputFile]:
    """The images in a folder (and its subfolders with `recursive`), sorted, hidden ones skipped."""
    paths = folder.rglob("*") if recursive else folder.iterdir()
    found = [p for p in paths if _wanted(p, suffixes)
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return [InputFile(p, p.relative_to(folder)) for p in sorted(found)]


def _glob(pattern: str, suffixes: set[str]) -> list[InputFile]:
    """Files matching a glob; outputs keep the path below the pattern's first wildcard part."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    return [InputFile(p, p.relative_to(base)) for p in matches if _wanted(p, suffixes)]


def find_inputs(args: Iterable[str], *, recursive: bool = False) -> tuple[list[InputFile], list[str]]:
    """Expand files, folders and globs into input files, each once; and one message per bad arg."""
    suffixes = image_suffixes()
    found: list[InputFile] = []
    problems: list[str] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            items = _folder(path, recursive, suffixes)
            if not items:
                hint = "" if recursive else " (add --recursive to look in subfolders)"
                problems.append(f"{arg}: no images in this folder{hint}")
        elif path.exists() or not any(c in arg for c in _GLOB_CHARS):
            items = [InputFile(path, Path(path.name))]  # a missing file is reported when it is read
        else:
            items = _glob(arg, suffixes)
            if not items:
                problems.append(f"{arg}: no image matches this pattern")
        found.extend(items)
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique, problems


def output_paths(item: InputFile, task: str, num_samples: int, output_dir: Path | None) -> list[Path]:
    """`OUTDIR/<relative dir>/<stem>.<task>.<i>.png`, or beside the input without an output folder."""
    folder = item.path.parent if output_dir is None else output_dir / item.relative.parent
    return [folder / f"{item.path.stem}.{task}.{i}.png" for i in range(num_samples)]


def find_mask(mask_dir: Path, item: InputFile) -> Path:
    """The mask of an input in a mask folder: same relative path and stem, PNG preferred."""
    folder = mask_dir / item.relative.parent
    stem = item.path.stem
    candidates = [folder / f"{stem}.png"] + sorted(p for p in folder.glob(f"{glob.escape(stem)}.*")
                                                    if p.suffix.lower() in image_suffixes())
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PaletteError(f"{item.path}: no mask for it in {mask_dir} (expected {folder / stem}.png)")
