"""The frozen encoder's maps of training photos, computed once and read from disk while training.

The encoder (features.py) never learns, so running it on every training step repeats the same work
each epoch. A cache holds, for every (photo, view), the gray view's maps at strides 8, 16 and 32 and
the view's colours at the colour head's grid, as fp16 / uint8 arrays on disk (numpy memmaps), keyed
by the photo's sha1 and the view's number. View 0 is the whole photo, as inference sees it; the
other views are random crops (40-100% of the area) and mirror images, drawn from (seed, sha1, view).

A cache folder holds `cache.json` (what is in it: sizes, photos, views) and one `.npy` file per
array. Building it appends: a folder built for some photos grows with new photos or more views,
and a view that is already there is not computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import features, images
from .errors import PaletteError

VIEW_SIZE = 256  # the encoder's input, as the colorize model's `encoder.size`
TARGET_SIZE = 64  # the colour head's output grid: stride 4 of the view
TAPS = (4, 10, 15)  # blocks whose outputs are kept: strides 8, 16 and 32 (40, 112, 320 channels)
TAP_CHANNELS = (40, 112, 320)
TAP_STRIDES = (8, 16, 32)
MIN_AREA = 0.4  # random views cover at least this share of the photo
FORMAT = 1


@dataclass(frozen=True)
class CacheInfo:
    """What cache.json records."""

    count: int  # views stored
    view_size: int = VIEW_SIZE
    target_size: int = TARGET_SIZE
    taps: tuple[int, ...] = TAPS
    format: int = FORMAT


def photo_key(path: Path) -> str:
    """The sha1 of a photo's bytes: the cache's key, the same wherever the file lies."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def view_box(size: tuple[int, int], key: str, view: int, seed: int = 0) -> tuple[tuple[float, float, float, float], bool]:
    """The crop box (x0, y0, x1, y1) in the photo's pixels and the mirror flag of view `view`."""
    w, h = size
    if view == 0:
        return (0.0, 0.0, float(w), float(h)), False
    g = torch.Generator().manual_seed(int(key[:12], 16) * 1009 + view * 7919 + seed)
    area = MIN_AREA + (1 - MIN_AREA) * float(torch.rand((), generator=g))
    aspect = float(torch.exp((torch.rand((), generator=g) - 0.5) * 0.5))  # 0.78 .. 1.28 of the photo's
    cw = min(w, w * (area * aspect) ** 0.5)
    ch = min(h, h * (area / aspect) ** 0.5)
    x0 = float(torch.rand((), generator=g)) * (w - cw)
    y0 = float(torch.rand((), generator=g)) * (h - ch)
    return (x0, y0, x0 + cw, y0 + ch), bool(torch.rand((), generator=g) < 0.5)


def render_view(img: Image.Image, key: str, view: int, seed: int = 0) -> torch.Tensor:
    """The view as (3, VIEW_SIZE, VIEW_SIZE) uint8: its box squeezed to a square, as inference squeezes a photo."""
    box, flip = view_box(img.size, key, view, seed)
    out = img.resize((VIEW_SIZE, VIEW_SIZE), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)


def encode_views(network: features.EfficientNetLite0, rgb: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, V, V) uint8 views -> the gray views' maps at strides 8, 16, 32 (fp32, no gradient)."""
    from .tasks.colorize import to_gray  # the gray photo exactly as colorize makes it

    gray = to_gray(rgb.float() / 127.5 - 1)
    with torch.no_grad():
        x = features.preprocess(gray, VIEW_SIZE).contiguous(memory_format=torch.channels_last)
        _, *taps = network.feature_maps(x, TAPS)
    return [t.float() for t in taps]


def targets(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, V, V) uint8 views -> (B, 3, T, T) uint8 colours at the head's grid (antialiased)."""
    small = images.resize(rgb.float() / 127.5 - 1, (TARGET_SIZE, TARGET_SIZE))
    return ((small + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class _Views(torch.utils.data.Dataset):
    def __init__(self, todo: Sequence[tuple[str, str, int]], seed: int):
        self.todo, self.seed = todo, seed

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, key, view = self.todo[i]
        try:
            img = images.load_photo(path).rgb
        except PaletteError:
            return torch.zeros(3, VIEW_SIZE, VIEW_SIZE, dtype=torch.uint8), -1
        return render_view(img, key, view, self.seed), i


class FeatureCache:
    """A cache folder: the arrays as read-only memmaps and the (sha1, view) index."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / "cache.json"
        if not meta_path.is_file():
            raise PaletteError(f"{self.folder}: not a feature cache (no cache.json)")
        meta = json.loads(meta_path.read_text())
        self.info = CacheInfo(**{**meta["info"], "taps": tuple(meta["info"]["taps"])})
        self.entries: list[dict] = meta["entries"]  # one per view: key, view, path, group
        n = self.info.count
        self.maps = [self._open(f"s{s}", (n, c, VIEW_SIZE // s, VIEW_SIZE // s), np.float16)
                     for s, c in zip(TAP_STRIDES, TAP_CHANNELS)]
        self.rgb = self._open("rgb", (n, 3, TARGET_SIZE, TARGET_SIZE), np.uint8)

    def _open(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="r", dtype=dtype, shape=shape) \
            if (self.folder / f"{name}.npy").is_file() else np.zeros((0,) + shape[1:], dtype)

    def __len__(self) -> int:
        return self.info.count

    def batch(self, index: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Maps (fp32) and colours (uint8) of the views `index`, in that order."""
        order = np.sort(index)  # memmaps read faster in file order; the caller's order is restored
        back = np.argsort(np.argsort(index))
        maps = [torch.from_numpy(np.ascontiguousarray(m[order][back])).float() for m in self.maps]
        rgb = torch.from_numpy(np.ascontiguousarray(self.rgb[order][back]))
        return maps, rgb


def build(folder: str | os.PathLike, photos: Sequence[tuple[str | os.PathLike, int, str]], *, seed: int = 0,
          batch_size: int = 64, workers: int = 1, progress: Callable[[int, int], None] | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
          checkpoint: int = 1024) -> FeatureCache:
    """Add the views of `photos` ((path, number of views, group name) each) that the cache lacks.

    Photos that do not decode are skipped. cache.json is rewritten every `checkpoint` views, so an
    interrupted build keeps what it computed and a reader sees the views so far. Returns the cache, reopened."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    old = FeatureCache(folder) if (folder / "cache.json").is_file() else None
    entries = list(old.entries) if old else []
    have = {(e["key"], e["view"]) for e in entries}
    todo, groups = [], []
    for path, views, group in photos:
        key = photo_key(Path(path))
        for v in range(views):
            if (key, v) not in have:
                have.add((key, v))
                todo.append((str(path), key, v))
                groups.append(group)
    start, total = len(entries), len(entries) + len(todo)
    arrays = _grow(folder, old, total)
    network = features.folded(features.load(device=device)).to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(_Views(todo, seed), batch_size=batch_size, num_workers=workers)
    done, written, saved = 0, start, start
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    for rgb, idx in loader:
        ok = idx >= 0
        rgb, idx = rgb[ok], idx[ok]
        if len(idx):
            with autocast:
                maps = encode_views(network, rgb.to(device))
            rows = slice(written, written + len(idx))
            for array, m in zip(arrays[:3], maps):
                array[rows] = m.cpu().numpy().astype(np.float16)
            arrays[3][rows] = targets(rgb).numpy()
            for i in idx.tolist():
                path, key, v = todo[i]
                entries.append({"key": key, "view": v, "path": path, "group": groups[i]})
            written += len(idx)
            if written - saved >= checkpoint:  # readable while it grows: a trainer can start on what is there
                for a in arrays:
                    a.flush()
                _write_meta(folder, written, entries)
                saved = written
        done += len(ok)
        if progress:
            progress(done, len(todo))
    for a in arrays:
        a.flush()
    del arrays
    _write_meta(folder, written, entries)  # photos that did not decode leave unused rows at the end
    return FeatureCache(folder)


def _grow(folder: Path, old: FeatureCache | None, total: int) -> list[np.ndarray]:
    """The four arrays with room for `total` views, the old views copied in."""
    shapes = [(c, VIEW_SIZE // s, VIEW_SIZE // s) for s, c in zip(TAP_STRIDES, TAP_CHANNELS)]
    specs = [(f"s{s}", shape, np.float16) for s, shape in zip(TAP_STRIDES, shapes)]
    specs.append(("rgb", (3, TARGET_SIZE, TARGET_SIZE), np.uint8))
    arrays = []
    for i, (name, shape, dtype) in enumerate(specs):
        tmp = folder / f"{name}.new.npy"
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(max(total, 1),) + shape)
        if old is not None and len(old):
            source = old.maps[i] if i < 3 else old.rgb
            for s in range(0, len(old), 4096):
                e = min(s + 4096, len(old))
                array[s:e] = source[s:e]
        arrays.append(array)
    for name, _, _ in specs:
        os.replace(folder / f"{name}.new.npy", folder / f"{name}.npy")
    return arrays


def _write_meta(folder: Path, count: int, entries: list[dict]) -> None:
    meta = {"info": asdict(CacheInfo(count)), "entries": entries}
    tmp = folder / "cache.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "cache.json")
