"""Coarse-to-fine fills of masked tasks (inpaint, uncrop): the new pixels' texture made at full resolution.

Two ways, both from the model's sample at its own size:
- exemplar completion (`complete_fill`, the default): the photo's own patches copied into the hole
  at every scale up to full size, laid out by the sample (completion.py);
- SDEdit over tiles (`refine_fill`, a model config's `refine` block), described here:

The network samples a fill at its training size (`image_size`); scaling that up to a crop of several
hundred pixels gives a soft blur. Refinement climbs from there in doublings to the crop's own
resolution. At each level the previous fill is upsampled, the known pixels are the photo's own at that
scale, and the network runs SDEdit (Meng et al. 2022) over model-size tiles: each tile starts from the
upsampled fill noised to `strength` and keeps its known pixels at every step, as the samplers do for
masked tasks. Tiles, because the network's self-attention is trained at one size only; they overlap
and are blended as jpeg's are (`images.make_tiling`). The start noise and the noise in the hole of
the conditioning are one field per level, so overlapping tiles start from the same picture; every
draw comes from `seeds.stream(seed, "refine", 0, sample, level[, tile])`, so a sample's refinement does
not depend on the batch size or on the other inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import diffusion, images, samplers, seeds
from .checkpoint import PaletteModel
from .completion import CompletionConfig, complete
from .config import RefineConfig
from .guidance import conditioned
from .images import TILE_OVERLAP, Tiling, make_tiling, merge_tiles, split_tiles


def fill_levels(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(H, W) of the refinement levels of a height x width fill, smallest first: halvings of it down to
    the last whose shorter side is still `size` or more, then the fill itself; none when no side of it
    is larger than `size` (the model's own sample is already at full resolution)."""
    if max(height, width) <= size:
        return []
    k = 0
    while min(height, width) / 2 ** (k + 1) >= size:
        k += 1
    return [(round(height / 2**i), round(width / 2**i)) for i in range(k, -1, -1)]


def complete_fill(region: Tensor, mask: Tensor, coarse: Tensor, *, seed: int, sample: int,
                  config: CompletionConfig = CompletionConfig()) -> Tensor:
    """`coarse` (3, S, S), the model-size fill of `region` (3, H, W) with hole `mask` (1, H, W), made at full size
    from the region's own patches (completion.py): (3, H, W) with the known pixels of `region`. Its draws come
    from `seeds.stream(seed, "refine", 1, sample)`: each sample follows its own model sample and stream."""
    generator = seeds.stream(seed, "refine", 1, sample)
    return complete(region, mask, coarse.to(region.device), generator=generator, config=config).image.cpu()


@dataclass(frozen=True)
class Refinement:
    """What every level of one sample's refinement shares."""

    model: PaletteModel
    settings: RefineConfig
    sampler: str  # a diffusion sampler (samplers.SAMPLERS)
    guidance: float  # classifier-free guidance weight over `maps` (0: a plain call)
    maps: Tensor | None  # (1, C, h, w): the encoder's map of the input's view, shown to every tile; None: no encoder
    seed: int
    sample: int  # which sample of the input: keys its random streams
    batch_size: int  # tiles per network call


def refine_fill(run: Refinement, region: Tensor, mask: Tensor, coarse: Tensor,
                callback: Callable[[int, int], None] | None = None) -> Tensor:
    """`coarse` (3, S, S), the model-size fill of `region` (3, H, W) with hole `mask` (1, H, W), refined
    level by level: (3, H, W) with the known pixels of `region` and the refined hole. `callback(done, total)`
    counts the sampler steps of every tile batch, over all levels."""
    x = coarse.float().cpu()
    height, width = region.shape[-2:]
    levels = fill_levels(height, width, run.model.config.image_size)
    holes = [images.resize_mask(mask, size) for size in levels]
    ticks = _Ticks(sum(_calls(run, part) for hole in holes for part in _halves(hole, run.settings.block))
                   * run.settings.steps, callback)
    for level, (size, hole) in enumerate(zip(levels, holes)):
        known = images.resize(region, size)
        x = known * (1 - hole) + images.resize(x, size) * hole
        for half, part in enumerate(_halves(hole, run.settings.block)):
            x = _pass(run, (level, half), x, part, ticks)
    return x


@dataclass
class _Ticks:
    """Progress over a refinement: steps done of `total`, reported to `callback`."""

    total: int
    callback: Callable[[int, int], None] | None
    done: int = 0

    def advance(self, steps: int) -> None:
        self.done += steps
        if self.callback is not None:
            self.callback(self.done, self.total)


def _active(hole: Tensor, size: int) -> tuple[Tiling, list[int]]:
    """The model-size tiling of a level and the tiles that hold some of `hole` (1, H, W)."""
    tiling = make_tiling(*hole.shape[-2:], size, round(size * TILE_OVERLAP))
    tiles = split_tiles(hole, tiling)
    return tiling, [i for i in range(len(tiling.corners)) if tiles[i].any()]


def _calls(run: Refinement, hole: Tensor) -> int:
    """Network batches one pass over `hole` takes."""
    return math.ceil(len(_active(hole, run.model.config.image_size)[1]) / run.batch_size)


def _halves(hole: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """The hole (1, H, W) split into a checkerboard of block x block squares and its complement.

    Every hole pixel is then within `block` pixels of a known one, as in training: a network that
    never saw a hole wider than half its input leaves the noise in the middle of a larger one."""
    rows, cols = (torch.arange(n) // block for n in hole.shape[-2:])
    board = ((rows[:, None] + cols[None, :]) % 2).to(hole.dtype)
    return hole * board, hole * (1 - board)


def _pass(run: Refinement, key: tuple[int, int], start: Tensor, hole: Tensor, ticks: _Ticks) -> Tensor:
    """SDEdit of the `hole` pixels of `start` (3, H, W) over the model-size tiles that touch it, blended back;
    the other pixels of `start` are its known ones."""
    field = seeds.stream(run.seed, "refine", 0, run.sample, *key)
    cond = diffusion.fill_noise(start, hole, field)  # the hole holds noise, as in training
    noise = torch.randn(start.shape, generator=field)
    tiling, active = _active(hole, run.model.config.image_size)
    tiles = [split_tiles(t, tiling) for t in (cond, hole, start, noise)]
    out = tiles[2].clone()  # tiles without a hole pixel are their known pixels
    for begin in range(0, len(active), run.batch_size):
        chunk = active[begin:begin + run.batch_size]
        out[chunk] = _sample_tiles(run, key, chunk, *(t[chunk] for t in tiles))
        ticks.advance(run.settings.steps)
    return start * (1 - hole) + merge_tiles(out, tiling) * hole


def _sample_tiles(run: Refinement, key: tuple[int, int], chunk: list[int], cond: Tensor, mask: Tensor, init: Tensor,
                  noise: Tensor) -> Tensor:
    """SDEdit of a batch of tiles (B, 3, S, S) from `init` under `noise`, the known pixels kept."""
    model, config, device = run.model, run.model.config, run.model.device
    maps = None if run.maps is None else run.maps.expand(len(chunk), -1, -1, -1).to(device)
    generators = [seeds.stream(run.seed, "refine", 0, run.sample, *key, tile) for tile in chunk]
    network = conditioned(model.network, {} if maps is None else {"features": maps}, run.guidance, config.objective)
    x = samplers.sample(network, cond.to(device),
                        diffusion.gammas(config.sample_schedule), sampler=run.sampler, steps=run.settings.steps,
                        generators=generators, mask=mask.to(device), objective=config.objective,
                        residual=config.residual, strength=run.settings.strength, init=init.to(device),
                        noise=noise.to(device))
    return x.float().cpu()
