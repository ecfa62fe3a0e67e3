"""Training the colour head (colour_head.py) from a feature cache (feature_cache.py).

The encoder never runs here: a step reads cached maps of a batch of views, mirrors half of them,
runs the encoder's frozen 1x1 head on the stride-32 map, and trains the colour head with Zhang et
al.'s loss. Views are drawn with a weight per group (a folder of object photos next to a larger
one of scenes), so the bigger set does not decide every colour.

A run folder holds `head_state.pt` (head, EMA, optimiser, step, random state, the bins) and
`head.safetensors` (the EMA weights, what inference loads); `--resume` continues it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from . import colour_head as H
from . import features, images
from .atomic import atomic_path
from .errors import PaletteError
from .feature_cache import FeatureCache


@dataclass(frozen=True)
class HeadTrainConfig:
    """One head training run."""

    steps: int = 20000
    batch_size: int = 32
    lr: float = 1e-3  # AdamW, cosine decay to 10% after the warmup
    warmup: int = 300
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    rebalance: float = 0.0  # Zhang et al.'s lambda for the loss weights; 0: plain cross-entropy
    channels: int = 128
    fine_channels: int = 48
    tail: bool = False  # the head's own copy of the encoder's last stages, trained (colour_head.EncoderTail)
    tail_lr: float = 0.1  # the tail's learning rate as a share of `lr` (it starts from pretrained weights)
    group_weights: dict[str, float] = field(default_factory=dict)  # share of draws per group; missing: by size
    seed: int = 0
    precision: str = "bf16"  # "bf16" or "fp32" autocast
    held_out: float = 0.01  # share of photos (by key) kept out of training for the validation loss


@dataclass
class HeadEvent:
    step: int
    loss: float
    val_loss: float | None
    views_per_second: float


def _frozen_top(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder's own last layer: block 15's 320 channels -> the 1280-channel final map."""
    net = features.load(device=device)
    return lambda x: F.relu6(net._bn1(net._conv_head(x)))


def _split(cache: FeatureCache, held_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation view indices: a photo's views all on one side."""
    val = np.array([int(e["key"][:8], 16) / 0xFFFFFFFF < held_out for e in cache.entries[:len(cache)]])
    return np.flatnonzero(~val), np.flatnonzero(val)


def _draw_weights(cache: FeatureCache, index: np.ndarray, group_weights: dict[str, float]) -> np.ndarray:
    groups = np.array([cache.entries[i]["group"] for i in index])
    p = np.ones(len(index))
    if group_weights:
        names, counts = np.unique(groups, return_counts=True)
        for name, count in zip(names, counts):
            share = group_weights.get(str(name), count / len(index))
            p[groups == name] = share / count
    return p / p.sum()


def fit_bins(cache: FeatureCache, index: np.ndarray, sample: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The chroma bins and prior from (up to) `sample` training views' colours."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(index, size=min(sample, len(index)), replace=False))
    rgb = torch.from_numpy(np.ascontiguousarray(cache.rgb[pick])).float() / 127.5 - 1
    return H.fit_bins(images.rgb_to_ycbcr(rgb)[:, 1:])


def _batch(cache: FeatureCache, index: np.ndarray, top, device, generator: np.random.Generator | None):
    """(final, s8, s16, gray, chroma) of views `index`, mirrored at random when a generator is given."""
    (s8, s16, s32), rgb = cache.batch(index)
    if generator is not None:
        flip = torch.from_numpy(generator.random(len(index)) < 0.5)
        s8, s16, s32, rgb = (torch.where(flip.view(-1, 1, 1, 1), t.flip(-1), t) for t in (s8, s16, s32, rgb))
    x = rgb.float() / 127.5 - 1
    ycc = images.rgb_to_ycbcr(x)
    with torch.no_grad():  # a head with its own tail makes its final map from s16
        final = top(s32.to(device)) if top is not None else None
    return final, s8.to(device), s16.to(device), ycc[:, :1].to(device), ycc[:, 1:].to(device)


def train_head(cache_dir: str | os.PathLike, run_dir: str | os.PathLike, config: HeadTrainConfig, *,
               resume: bool = False, minutes: float | None = None, until: int | None = None, device: str = "cpu",
               on_event: Callable[[HeadEvent], None] | None = None, log_every: int = 100,
               save_every: int = 500, should_stop: Callable[[], bool] | None = None,
               init: dict[str, torch.Tensor] | None = None) -> Path:
    """Train (or continue) a colour head; returns the run folder. Stops after `config.steps` steps, at
    step `until`, or after `minutes` of wall time, whichever comes first, saving the state and the EMA
    weights (the learning-rate schedule always spans `config.steps`, so a stopped run resumes exactly).
    `should_stop` is asked before every step. A new run may start from `init`, a trained head's weights
    (a model's `colour_head.` keys): its bins, prior, shape and weights, not fitted afresh."""
    run = _HeadRun(cache_dir, run_dir, config, resume, torch.device(device), init)
    started, window, last = time.perf_counter(), [], time.perf_counter()
    while run.step < min(run.config.steps, until or run.config.steps):
        if (minutes is not None and time.perf_counter() - started > minutes * 60) or (should_stop and should_stop()):
            break
        window.append(run.train_step())
        if run.step % log_every == 0 or run.step == run.config.steps:
            now = time.perf_counter()
            event = HeadEvent(run.step, float(np.mean(window)), run.validation(),
                              len(window) * run.config.batch_size / (now - last))
            window, last = [], time.perf_counter()
            if on_event:
                on_event(event)
        if run.step % save_every == 0:
            run.save()
            run.reload_cache()
    run.save()
    return run.folder


class _HeadRun:
    """A head run's state: the cache and its split, the head, its EMA, the optimiser, the random draws."""

    def __init__(self, cache_dir: str | os.PathLike, run_dir: str | os.PathLike, config: HeadTrainConfig,
                 resume: bool, dev: torch.device, init: dict[str, torch.Tensor] | None = None):
        self.cache_dir, self.folder, self.dev = cache_dir, Path(run_dir), dev
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cache = FeatureCache(cache_dir)
        self.train_idx, self.val_idx = _split(self.cache, config.held_out)
        if not len(self.train_idx):
            raise PaletteError(f"{cache_dir}: no training views in the cache")
        state = torch.load(self.folder / "head_state.pt", weights_only=False) if resume else None
        if state is not None:  # the network's shape and seed are the run's; the rest may change
            kept = {k: v for k, v in state["config"].items() if k in ("channels", "fine_channels", "tail", "seed")}
            config = HeadTrainConfig(**{**asdict(config), **kept})
            self.centres, self.prior = state["centres"], state["prior"]
        elif init is not None:  # a trained head's bins and shape (a tail is added when asked for)
            config = dataclasses.replace(config, channels=init["lateral32.weight"].shape[0],
                                         fine_channels=init["stem.weight"].shape[0],
                                         tail=config.tail or any(k.startswith("tail.") for k in init))
            self.centres, self.prior = init["centres"].float(), init["log_prior"].float().exp()
        else:
            self.centres, self.prior = fit_bins(self.cache, self.train_idx, seed=config.seed)
        self.config = config
        self.shape = H.HeadShape(len(self.centres), config.channels, config.fine_channels, config.tail)
        self._build(dev)
        self.step, self.seconds, self.began = 0, 0.0, time.perf_counter()
        self.rng = np.random.default_rng(config.seed)
        if state is not None:
            self.head.load_state_dict(state["head"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
            self.step, self.seconds = state["step"], state.get("seconds", 0.0)
            self.rng.bit_generator.state = state["rng"]
        elif init is not None:  # a head without a tail keeps the pretrained one just made
            missing, unexpected = self.head.load_state_dict({k: v.float() for k, v in init.items()}, strict=False)
            if unexpected or any(not k.startswith("tail.") for k in missing):
                raise PaletteError(f"init: not a colour head's weights ({', '.join((unexpected + missing)[:3])})")
            self.ema.load_state_dict(self.head.state_dict())
        self.pixel_weights = (H.rebalancing_weights(self.centres, self.prior, config.rebalance).to(dev)
                              if config.rebalance else None)
        self.draw = _draw_weights(self.cache, self.train_idx, config.group_weights)
        self.table = H.soft_table(self.centres)
        self.top = None if self.shape.tail else _frozen_top(dev)
        self.autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
        self.head.train()

    def _build(self, dev: torch.device) -> None:
        """The head (seeded initial weights, the bins; a tail starts as the encoder's own layers), its EMA and
        the optimiser (the tail at `tail_lr` of the learning rate)."""
        torch.manual_seed(self.config.seed)
        self.head = H.ColourHead(self.shape).to(dev)
        if self.head.tail is not None:
            self.head.tail = H.EncoderTail(pretrained=True).to(dev)
        self.head.centres.copy_(self.centres)
        self.head.log_prior.copy_(self.prior.clamp_min(1e-12).log())
        self.ema = H.ColourHead(self.shape).to(dev)
        self.ema.load_state_dict(self.head.state_dict())
        tail = [p for n, p in self.head.named_parameters() if n.startswith("tail.")]
        rest = [p for n, p in self.head.named_parameters() if not n.startswith("tail.")]
        groups = [{"params": rest, "scale": 1.0}] + ([{"params": tail, "scale": self.config.tail_lr}] if tail else [])
        self.opt = torch.optim.AdamW(groups, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def lr(self) -> float:
        """Linear warmup, then cosine decay to 10% at `config.steps`."""
        c = self.config
        progress = max(0.0, (self.step - c.warmup) / max(c.steps - c.warmup, 1))
        return c.lr * min(1.0, (self.step + 1) / max(c.warmup, 1)) * \
            (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def train_step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self.lr() * group.get("scale", 1.0)
        idx = self.rng.choice(self.train_idx, size=self.config.batch_size, p=self.draw)
        final, s8, s16, gray, chroma = _batch(self.cache, idx, self.top, self.dev, self.rng)
        with self.autocast:
            logits = self.head(final, s8, s16, gray)
        loss = H.loss(logits, chroma, self.head.centres, self.pixel_weights, self.table)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.head.parameters()):
                e.lerp_(p, 1 - decay)
        return float(loss.detach())

    def validation(self) -> float | None:
        if not len(self.val_idx):
            return None
        return validation_loss(self.ema, self.cache, self.val_idx, self.top, self.dev, self.autocast)

    def save(self) -> None:
        payload = {"head": self.head.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
                   "step": self.step, "rng": self.rng.bit_generator.state, "centres": self.centres,
                   "prior": self.prior, "config": asdict(self.config),
                   "seconds": self.seconds + time.perf_counter() - self.began}
        with atomic_path(self.folder / "head_state.pt") as tmp:
            torch.save(payload, tmp)
        with atomic_path(self.folder / "head.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.ema.state_dict().items()}, str(tmp),
                      metadata={"shape": json.dumps(asdict(self.shape)), "step": str(self.step)})

    def reload_cache(self) -> None:
        """A cache still being built: train on its new views too."""
        grown = FeatureCache(self.cache_dir)
        if len(grown) > len(self.cache):
            self.cache = grown
            self.train_idx, self.val_idx = _split(grown, self.config.held_out)
            self.draw = _draw_weights(grown, self.train_idx, self.config.group_weights)


def validation_loss(head: H.ColourHead, cache: FeatureCache, val_idx: np.ndarray, top, dev, autocast,
                    limit: int = 256) -> float:
    """Plain cross-entropy of `head` on (up to `limit`) held-out views."""
    head.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, min(len(val_idx), limit), 64):
            idx = val_idx[s:min(s + 64, limit)]
            final, s8, s16, gray, chroma = _batch(cache, idx, top, dev, None)
            with autocast:
                logits = head(final, s8, s16, gray)
            total += float(H.loss(logits, chroma, head.centres)) * len(idx)
            n += len(idx)
    head.train()
    return total / max(n, 1)


def write_model(base: str | os.PathLike, run_dir: str | os.PathLike, out: str | os.PathLike, *,
                temperature: float = 0.38, adjust: float = 0.0, noise: float = 1.0, noise_grid: int = 2,
                use: str = "colour", confidence: float = 1.0, card: str | None = None) -> Path:
    """A model directory: `base` (a colorize model with an encoder) with the run's EMA head attached
    and the decoding settings in config.json's `colour_head` block."""
    from safetensors.torch import load_file

    from . import config as cfg
    from .checkpoint import HEAD_PREFIX, read_config, read_weights, resolve, save_model, split_head

    directory = resolve(base)
    base_config = read_config(directory)
    if base_config.encoder is None or "colorize" not in base_config.tasks:
        raise PaletteError(f"{base}: a colour head needs a colorize model with an encoder")
    head_file = Path(run_dir) / "head.safetensors"
    if not head_file.is_file():
        raise PaletteError(f"{run_dir}: no head.safetensors (not a colour head run, or it never saved)")
    head_state = load_file(head_file)
    shape = H.HeadShape(**json.loads(_metadata(head_file)["shape"]))
    spec = cfg.ColourHeadConfig(bins=shape.bins, channels=shape.channels, fine_channels=shape.fine_channels, tail=shape.tail,
                                temperature=temperature, adjust=adjust, noise=noise, noise_grid=noise_grid, use=use,
                                confidence=confidence)
    config = cfg.validate(dataclasses.replace(base_config, colour_head=spec))
    unet_state, _ = split_head(read_weights(directory))
    state = {**unet_state, **{HEAD_PREFIX + k: v for k, v in head_state.items()}}
    return save_model(out, config, state, dtype=torch.float16, card=card)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}
