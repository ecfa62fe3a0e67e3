"""Training images: find them (folders, list files), check they decode, crop and flip them.

Every random draw of an item comes from a generator derived from (seed, item index), so item k of
a run is the same image, crop, flip, task and degradation whatever the number of processes, the
number of loader workers or whether the run was resumed: that is what makes resume exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PaletteError
from .images import to_tensor
from .samplers import sample_generator
from .tasks import MASKED_TASKS, TASKS, degrade, encoder_view

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
CROP_MODES = ("native", "fit")

Warn = Callable[[str], None]

# Offsets of the generator streams, so the epoch shuffles never share a stream with an item.
_SHUFFLE_STREAM = 1 << 40
VALIDATION_STREAM = 1 << 41


def _is_image_name(path: Path) -> bool:
    """Whether the file name has an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _read_list_file(path: Path) -> list[Path]:
    """Paths listed in a text file, one per line; relative ones are relative to the list file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PaletteError(f"{path}: neither an image (by its extension) nor a UTF-8 list file") from None
    except OSError as err:
        raise PaletteError(f"{path}: cannot read list file ({err.strerror or err})") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            out.append(entry if entry.is_absolute() else path.parent / entry)
    return out


def find_images(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from folders (recursive, sorted), single images and list files, deduplicated."""
    found: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p))
        elif path.is_file() and _is_image_name(path):
            found.append(path)
        elif path.is_file():
            for entry in _read_list_file(path):
                if entry.is_dir():
                    found += sorted(p for p in entry.rglob("*") if p.is_file() and _is_image_name(p))
                else:
                    found.append(entry)  # a missing entry is reported by check_images
        else:
            raise PaletteError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def load_rgb(path: Path, draft: int | None = None) -> Image.Image:
    """Decode an image upright (EXIF orientation applied) as RGB; PaletteError if it cannot be read."""
    try:
        with Image.open(path) as img:
            if draft:  # JPEG only: decode at a reduced scale, enough to prove the data is whole
                img.draft("RGB", (draft, draft))
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except FileNotFoundError:
        raise PaletteError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise PaletteError(f"{path}: unreadable image ({err})") from None


def check_images(paths: Sequence[Path], warn: Warn | None = None) -> tuple[list[Path], list[Path]]:
    """Split paths into images that decode and ones that do not, warning once per bad file."""
    good, bad = [], []
    for path in paths:
        try:
            load_rgb(path, draft=64)
        except PaletteError as err:
            bad.append(path)
            if warn:
                warn(f"skipping {err}")
        else:
            good.append(path)
    return good, bad


def random_crop(img: Image.Image, size: int, generator: torch.Generator, *, crop: str = "native",
                flip: bool = True) -> torch.Tensor:
    """A random size x size crop (3, size, size) in [-1, 1], randomly mirrored left-right.

    "native" crops at the photo's own resolution; "fit" first shrinks the short side to `size`
    so the crop sees most of the picture. Either way a short side below `size` is upscaled.
    """
    return random_crop_view(img, size, generator, crop=crop, flip=flip)[0]


def random_crop_view(img: Image.Image, size: int, generator: torch.Generator, *, crop: str = "native",
                     flip: bool = True, view_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`random_crop`, and the same region of the photo at view_size x view_size (or None).

    The view is cut from the photo at its own resolution, so an encoder that looks at it sees what
    the crop shows at more pixels than the crop has (the same draws as `random_crop`)."""
    if crop not in CROP_MODES:
        raise PaletteError(f"unknown crop mode {crop!r}; choose one of {', '.join(CROP_MODES)}")
    original = img
    w, h = img.size
    scale = 1.0
    if min(w, h) < size or crop == "fit":
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    x = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    y = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    out = img.crop((x, y, x + size, y + size))
    view = None
    if view_size:
        sx, sy = original.size[0] / w, original.size[1] / h  # crop box back in the photo's pixels
        view = original.resize((view_size, view_size), Image.Resampling.BICUBIC,
                               box=(x * sx, y * sy, (x + size) * sx, (y + size) * sy), reducing_gap=3.0)
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view is not None else None
    return to_tensor(out), (to_tensor(view) if view is not None else None)


@dataclass
class Item:
    """One training example: the target, its degraded source and mask (zeros for unmasked tasks)."""

    target: torch.Tensor  # (3, S, S)
    cond: torch.Tensor  # (3, S, S)
    mask: torch.Tensor  # (1, S, S), all zero when the task has no mask
    task: int  # index into the run's task list
    view: torch.Tensor | None = None  # (3, V, V): what a frozen encoder sees (tasks.encoder_view)


def make_item(img: Image.Image, tasks: Sequence[str], size: int, generator: torch.Generator,
              crop: str = "native", view_size: int | None = None) -> Item:
    """Crop, flip, pick a task and degrade with the same function inference uses."""
    target, region = random_crop_view(img, size, generator, crop=crop, view_size=view_size)
    task = int(torch.randint(0, len(tasks), (1,), generator=generator)) if len(tasks) > 1 else 0
    cond, mask = degrade(tasks[task], target, generator)
    view = encoder_view(tasks[task], region, cond, mask, view_size) if view_size else None
    if mask is None:
        mask = torch.zeros(1, size, size)
    return Item(target, cond, mask, task, view)


class TrainingImages(torch.utils.data.Dataset):
    """Item k of a run: image perm_e[k mod N] of epoch e = k // N, cropped and degraded by seed (seed, k)."""

    def __init__(self, paths: Sequence[Path], tasks: Sequence[str], size: int, seed: int,
                 crop: str = "native", view_size: int | None = None):
        if not paths:
            raise PaletteError("no readable training images")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise PaletteError(f"unknown task(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
        if crop not in CROP_MODES:
            raise PaletteError(f"unknown crop mode {crop!r}; choose one of {', '.join(CROP_MODES)}")
        self.paths, self.tasks, self.size, self.seed, self.crop = list(paths), tuple(tasks), size, seed, crop
        self.view_size = view_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def image_index(self, k: int) -> int:
        """Which image item k uses: each epoch visits every image once, in a seeded order."""
        epoch, pos = divmod(k, len(self.paths))
        if epoch != self._epoch:  # cached: consecutive items almost always share the epoch
            gen = sample_generator(self.seed, _SHUFFLE_STREAM + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.paths), generator=gen)
        return int(self._perm[pos])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        path = self.paths[self.image_index(k)]
        item = make_item(load_rgb(path), self.tasks, self.size, sample_generator(self.seed, k), self.crop,
                         self.view_size)
        out = {"target": item.target, "cond": item.cond, "mask": item.mask, "task": torch.tensor(item.task)}
        if item.view is not None:
            out["view"] = item.view
        return out


def validation_batch(paths: Sequence[Path], tasks: Sequence[str], size: int, seed: int, count: int = 4,
                     crop: str = "native", view_size: int | None = None) -> list[Item]:
    """A fixed batch for sample grids: the first images, tasks in turn, fixed crops and masks."""
    items = []
    for i in range(count):
        img = load_rgb(paths[i % len(paths)])
        gen = sample_generator(seed, VALIDATION_STREAM + i)
        target, region = random_crop_view(img, size, gen, crop=crop, flip=False, view_size=view_size)
        task = tasks[i % len(tasks)]
        cond, mask = degrade(task, target, gen)
        view = encoder_view(task, region, cond, mask, view_size) if view_size else None
        items.append(Item(target, cond, mask if mask is not None else torch.zeros(1, size, size),
                          tasks.index(task), view))
    return items


def is_masked(task: str) -> bool:
    """Whether a task generates only the masked region."""
    return task in MASKED_TASKS
