"""Training a colorize UNet from a feature cache (feature_cache.py): the encoder leaves the loop.

The frozen encoder's maps of each training photo are computed once, for `views` fixed views per
photo (view 0 the whole photo as inference sees it, the others random crops and mirror images), and
kept on disk. A step then reads a view's colours (the target, 64x64), its gray (the source) and its
stride-32 map, and runs only the encoder's last 1x1 layer (`frozen_top`) to get the final map the
UNet is conditioned on. What the cache lacks, the run refuses: other tasks than colorize (the cache
holds gray views), the --pyramid maps (stride 4 is not cached) and crops larger than 64 pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import config as cfg
from . import feature_cache
from .config import TrainConfig
from .data import CachedViews, Item
from .errors import PaletteError

DEFAULT_VIEWS = 4  # views per photo: the whole photo and three crops (about 190 KB of disk each)


@dataclass(frozen=True)
class FeatureSource:
    """Where a run's encoder maps come from: a cache folder and how many views of each photo it holds."""

    folder: Path
    views: int = DEFAULT_VIEWS

    def to_dict(self) -> dict[str, object]:
        return {"folder": str(self.folder), "views": self.views}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSource:
        return cls(Path(str(data["folder"])), int(data["views"]))  # type: ignore[arg-type]


def frozen_top(sha256: str, device: str | torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder's own last layer: block 15's 320 channels (stride 32) -> the 1280-channel final map."""
    from . import features

    net = features.load(sha256, device)
    return lambda x: F.relu6(net._bn1(net._conv_head(x.to(device))))


def check(source: FeatureSource, config: TrainConfig, model_config: cfg.ModelConfig) -> None:
    """Refuse a run the cache cannot feed, naming what is missing."""
    if source.views < 1:
        raise PaletteError(f"cache views: {source.views} must be at least 1 (view 0 is the whole photo)")
    if model_config.encoder is None:
        raise PaletteError("--feature-cache holds an encoder's maps: train with --encoder efficientnet-lite0")
    if model_config.encoder.size != feature_cache.VIEW_SIZE:
        raise PaletteError(f"the feature cache holds {feature_cache.VIEW_SIZE}-pixel views; this model's encoder "
                           f"sees {model_config.encoder.size}")
    if tuple(config.tasks) != ("colorize",):
        raise PaletteError(f"--feature-cache trains colorize only (the cache holds the gray views' maps), "
                           f"not {', '.join(config.tasks)}")
    if model_config.unet.pyramid_channels:
        raise PaletteError("--pyramid needs the encoder's stride-4 map, which the feature cache does not hold "
                           "(it keeps strides 8, 16 and 32); train a --pyramid model without --feature-cache")
    size = config.image_size or 0
    if size > feature_cache.TARGET_SIZE:
        raise PaletteError(f"--image-size {size}: the feature cache holds each view's colours at "
                           f"{feature_cache.TARGET_SIZE}x{feature_cache.TARGET_SIZE}; train at "
                           f"{feature_cache.TARGET_SIZE} or less (smaller crops are resized from them), "
                           f"or without --feature-cache")


def build(source: FeatureSource, photos: Sequence[tuple[Path, str]], seed: int, device: torch.device,
          progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Add the photos' missing views to the cache; the cache rows of their first `views` views, in cache order.

    `photos` are (path, group) pairs; the group (the data argument a photo came from) is what a colour
    head's training weighs groups by."""
    feature_cache.build(source.folder, [(p, source.views, group) for p, group in photos], seed=seed,
                        progress=progress, device=device)
    return rows_of(source, [p for p, _ in photos])


def rows_of(source: FeatureSource, paths: Sequence[Path]) -> np.ndarray:
    """The cache rows holding views 0 .. views-1 of `paths` (by their bytes' sha1)."""
    cache = feature_cache.FeatureCache(source.folder)
    keys = {feature_cache.photo_key(Path(p)) for p in paths}
    return np.array([i for i, e in enumerate(cache.entries[:len(cache)])
                     if e["key"] in keys and e["view"] < source.views], dtype=np.int64)


def dataset(source: FeatureSource, rows: np.ndarray, size: int, seed: int, taps: bool = False) -> CachedViews:
    """The cached views `rows`; with `taps` their stride-8 and -16 maps too (a colour head in the loop)."""
    return CachedViews(source.folder, rows.tolist(), size, seed, taps)


def validation_items(views: CachedViews, count: int) -> list[Item]:
    """The sample grid's fixed rows: view 0 (the whole photo) of the first photos, else the first views."""
    cache = feature_cache.FeatureCache(views.folder)
    whole = [r for r in views.rows if cache.entries[r]["view"] == 0]
    rows = (whole or views.rows)[:count]
    return [views.item(r) for r in rows]


def default_folder(run_dir: str | os.PathLike) -> Path:
    """Where a run keeps its own cache when none is named."""
    return Path(run_dir) / "features"
