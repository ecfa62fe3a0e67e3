"""Training images: check they decode, crop and flip them, degrade them with their task.

Files are found by `files.training_images` (folders, images, list files) and decoded by
`images.load_photo`, exactly as inference finds and decodes them.

Every random draw of an item comes from a generator derived from (seed, item index), so item k of
a run is the same image, crop, flip, task and degradation whatever the number of processes, the
number of loader workers or whether the run was resumed: that is what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import seeds
from .config import CROP_MODES
from . import tasks as tasks_module  # `tasks` names a run's task list below
from .errors import PaletteError
from .images import load_photo, to_tensor


Warn = Callable[[str], None]


def load_rgb(path: Path, draft: int | None = None) -> Image.Image:
    """Decode an image as inference does (`images.load_photo`) and keep its RGB; PaletteError if unreadable."""
    try:
        return load_photo(path, draft=draft).rgb
    except PaletteError as err:
        detail = str(err).removeprefix(f"{path}: ")
        if detail == "no such file":
            raise
        raise PaletteError(f"{path}: unreadable image ({detail})") from None


Stamp = tuple[int, int]  # a file's size and modification time (ns)


def stamp(path: Path) -> Stamp | None:
    """(size, mtime_ns) of a file, None if it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def check_images(paths: Sequence[Path], warn: Warn | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 checked: dict[str, Stamp] | None = None) -> tuple[list[Path], list[Path]]:
    """Split paths into images that decode and ones that do not, warning once per bad file.

    `progress(done, total)` is called every 500 files and once at the end (a long list takes minutes).
    `checked` maps paths (as given) to the stamp they had when they last decoded: a file with the same
    size and modification time is not decoded again (a run's resume)."""
    checked = checked or {}
    good, bad = [], []
    for i, path in enumerate(paths):
        if progress is not None and i % 500 == 0:
            progress(i, len(paths))
        known = checked.get(str(path))
        if known is not None and stamp(path) == known:
            good.append(path)
            continue
        try:
            load_rgb(path, draft=64)
        except PaletteError as err:
            bad.append(path)
            if warn:
                warn(f"skipping {err}")
        else:
            good.append(path)
    if progress is not None:
        progress(len(paths), len(paths))
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
    original, (w, h) = img, img.size
    if min(w, h) < size or crop == "fit":
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    x = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    y = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    out, view = img.crop((x, y, x + size, y + size)), None
    if view_size:
        sx, sy = original.size[0] / w, original.size[1] / h  # the crop box back in the photo's pixels
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
    encoded: torch.Tensor | None = None  # (320, V/32, V/32): that view's cached stride-32 map (CachedViews)
    taps: tuple[torch.Tensor, torch.Tensor] | None = None  # its cached stride-8 and -16 maps, for a colour head


def make_item(img: Image.Image, tasks: Sequence[str], size: int, generator: torch.Generator,
              crop: str = "native", view_size: int | None = None) -> Item:
    """Crop, flip, pick a task and degrade with the same function inference uses."""
    target, region = random_crop_view(img, size, generator, crop=crop, view_size=view_size)
    task = int(torch.randint(0, len(tasks), (1,), generator=generator)) if len(tasks) > 1 else 0
    cond, mask = tasks_module.degrade(tasks[task], target, generator)
    view = tasks_module.encoder_view(tasks[task], region, cond, mask, view_size) if view_size else None
    if mask is None:
        mask = torch.zeros(1, size, size)
    return Item(target, cond, mask, task, view)


class TrainingImages(torch.utils.data.Dataset):
    """Item k of a run: image perm_e[k mod N] of epoch e = k // N, cropped and degraded by seed (seed, k)."""

    def __init__(self, paths: Sequence[Path], tasks: Sequence[str], size: int, seed: int,
                 crop: str = "native", view_size: int | None = None):
        if not paths:
            raise PaletteError("no readable training images")
        unknown = [t for t in tasks if t not in tasks_module.REGISTRY]
        if unknown or not tasks:
            raise PaletteError(f"unknown task(s) {', '.join(unknown) or '(none)'}; "
                               f"choose from {', '.join(tasks_module.names())}")
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
            gen = seeds.stream(self.seed, "shuffle", epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.paths), generator=gen)
        return int(self._perm[pos])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        path = self.paths[self.image_index(k)]
        item = make_item(load_rgb(path), self.tasks, self.size, seeds.generator(self.seed, k), self.crop,
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
        gen = seeds.stream(seed, "validation", i)
        target, region = random_crop_view(img, size, gen, crop=crop, flip=False, view_size=view_size)
        task = tasks[i % len(tasks)]
        cond, mask = tasks_module.degrade(task, target, gen)
        view = tasks_module.encoder_view(task, region, cond, mask, view_size) if view_size else None
        items.append(Item(target, cond, mask if mask is not None else torch.zeros(1, size, size),
                          tasks.index(task), view))
    return items



class CachedViews(torch.utils.data.Dataset):
    """Item k of a run trained from a feature cache (feature_cache.py): view perm_e[k mod N] of the
    cached views `rows`, its colours the target (at `size`, antialiased down from the cache's grid),
    its gray the source and its stride-32 map what the encoder saw (with `taps`, its stride-8 and -16
    maps too: what a colour head reads). Colorize only: the cache holds the gray views' maps. The
    cache is opened in each process that reads it (loader workers too)."""

    def __init__(self, folder: Path, rows: Sequence[int], size: int, seed: int, taps: bool = False):
        if not len(rows):
            raise PaletteError(f"{folder}: no cached views of the training images")
        self.folder, self.rows, self.size, self.seed, self.taps = Path(folder), list(rows), size, seed, taps
        self._cache = None
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}  # memmaps are reopened, not pickled, in a worker

    def image_index(self, k: int) -> int:
        """Which view item k uses: each epoch visits every view once, in a seeded order (as TrainingImages)."""
        epoch, pos = divmod(k, len(self.rows))
        if epoch != self._epoch:
            gen = seeds.stream(self.seed, "shuffle", epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.rows), generator=gen)
        return int(self._perm[pos])

    def item(self, row: int) -> Item:
        """The cached view `row` as a training item."""
        from .feature_cache import FeatureCache
        from .images import resize

        if self._cache is None:
            self._cache = FeatureCache(self.folder)
        target = torch.from_numpy(self._cache.rgb[row].copy()).float() / 127.5 - 1
        target = resize(target, (self.size, self.size))
        cond, _ = tasks_module.degrade("colorize", target, torch.Generator())
        encoded = torch.from_numpy(self._cache.maps[-1][row].astype("float32"))
        taps = tuple(torch.from_numpy(m[row].astype("float32")) for m in self._cache.maps[:2]) if self.taps else None
        return Item(target, cond, torch.zeros(1, self.size, self.size), 0, encoded=encoded, taps=taps)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        item = self.item(self.rows[self.image_index(k)])
        batch = {"target": item.target, "cond": item.cond, "mask": item.mask, "task": torch.tensor(0),
                 "encoded": item.encoded}
        if item.taps is not None:
            batch["s8"], batch["s16"] = item.taps
        return batch
