"""Guided exemplar completion: a hole filled at full size with the photo's own patches, laid out by a guide.

The model decides what goes where at its own size (colours, layout); this module makes the pixels,
copying patches of the photo's known part, as content-aware fill does:

- Wexler, Shechtman & Irani 2007 ("Space-Time Completion of Video"): coarse to fine, an EM loop
  per scale on E = sum_t min_s d(P_t, Q_s), the patches P_t over the hole against the fully known
  patches Q_s: (match) the nearest Q_s of every P_t, (vote) every hole pixel the weighted mean of
  what the patches over it say, then (upsample) the image and the matches to the next scale.
- Barnes, Shechtman, Finkelstein & Goldman 2009 (PatchMatch): the nearest-neighbour field f(t) = s
  by (initialise) random or upsampled matches, (propagate) a neighbour's match shifted back,
  f(t + d) - d, and (random search) f(t) + w alpha^i R_i. Here every pixel steps at once (tensors,
  no scan), and propagation jumps 8, 4, 2, 1 pixels so that a good match spreads as far in one
  iteration as the paper's scan order takes it.
- The guide (the model's sample, upsampled to each scale) is a channel of every patch, weighted by
  lambda: a source patch is near a hole patch when its texture fits what the hole shows so far and
  its blurred colours fit what the model put there. Layout follows the model, texture is the photo's.
- Repetition: each source patch pays in the distance for every hole pixel already copied from it
  (the occurrence penalty of Kaspar et al. 2015, "Self Tuning Texture Optimization"), so a fill
  does not tile one piece of the photo.

- The border: a copied patch keeps its source's tone, and a few levels off in a smooth sky make a line
  the eye finds at once. Pérez, Gangnet & Blake 2003 (Poisson image editing) fix a pasted region by
  its border; here the mismatch between the photo next to the hole and what the copied patches' own
  surroundings showed there is measured along the border and spread over the hole as a smooth field
  (`harmonise`, a push-pull membrane after Gortler et al. 1996), so the texture stays the copy's.

Votes are weighted by exp(-d / 2 sigma^2), sigma^2 the 75th percentile of the distances (Wexler).
At the finest scale only the patches within `fine_vote` pixels vote: the whole patch's vote blurs
where the matches disagree, a single centre vote bands smooth gradients; a small window keeps the
copied detail and blends the seams between copied pieces over a few pixels.

Notation: t a target pixel (centre of P_t), s a source pixel (centre of Q_s), f the field t -> s,
d the patch distance, X the image being completed, G the guide, M the hole (1 = generate).
Every draw comes from one generator: the same seed, inputs and device give the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import PaletteError


@dataclass(frozen=True)
class CompletionConfig:
    """How the completion runs; the defaults are the measured choice (benchmarks/README.md)."""

    patch: int = 7  # side of a patch, odd
    coarsest: int = 48  # the coarsest scale's shorter side, in pixels (about the model's own size)
    # lambda: the guide's channels against the image's in the patch distance; None: the fill task's own
    # (its module's COMPLETION_GUIDE_WEIGHT: inpaint's hole is surrounded, uncrop's new side is not), else 1
    guide_weight: float | None = None
    row_weight: float = 0.5  # the row (-1 top, 1 bottom) as a channel too: sky is copied from the sky's height
    # EM iterations at the coarsest scale, one fewer per finer scale, at least 1. 6 rather than 3: level FD on the
    # scene sets, uncrop's repetition down a fifth, and on object photos uncrop FD 111.7 -> 106.0, CA 66.7 -> 69.7%
    em_steps: int = 6
    # Scales whose shorter side is above this run one EM iteration: the layout and the reuse are settled below
    # it, and at full size the extra iterations tripled the finest scale's time (kodim08 uncrop 3.0 -> 7.5 s).
    em_full_side: int = 256
    search_steps: int = 2  # PatchMatch iterations (propagate + random search) per EM iteration
    descriptor: int = 24  # patches are compared in their top principal components (PCA of the source's)
    occurrence: float = 0.03  # repetition penalty per copy beyond one, in units of the source patches' variance
    fine_vote: int = 1  # voting radius at the finest scale (a (2r+1)^2 window); coarser scales vote the whole patch
    # Tone steps between the photo and the copies' own surroundings at the hole's border up to about this size (in
    # [-1, 1] units; 0.3 is about 40 levels of 255) are spread away over the hole (`harmonise`); larger are the
    # content's and stay. 0: off. Chosen on the fill benchmarks (0.15, 0.3, 1; benchmarks/README.md).
    harmonise: float = 0.3
    # The fill tasks completed by default (benchmarks/README.md, 256 px): inpaint's FD falls to 0.61x the mean
    # fill's (kodak24); uncrop's, at its guide weight, to 0.80x (sun_hays80) and 0.89x (kodak24), and at full size
    # the model's own fill of a new side is a blur.
    tasks: tuple[str, ...] = ("inpaint", "uncrop")


@dataclass
class Completion:
    """A completed image and where its hole came from."""

    image: Tensor  # (3, H, W): the known pixels exactly, the hole completed
    source: Tensor  # (H, W) long: the flat index of the source pixel each pixel's patch centre copies


# --- scales ------------------------------------------------------------------------------


def scales(height: int, width: int, coarsest: int) -> list[tuple[int, int]]:
    """(H, W) of every scale, coarse to fine: halvings of the image while the shorter side stays >= `coarsest`."""
    k = 0
    while min(height, width) / 2 ** (k + 1) >= coarsest:
        k += 1
    return [(round(height / 2**i), round(width / 2**i)) for i in range(k, -1, -1)]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(C, H, W) to `size`: area average down, bilinear up."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "area" if size[0] < x.shape[-2] else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **extra)[0]


def _hole_at(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) bool: a pixel of the scale is in the hole if any full-size hole pixel falls in it."""
    return F.interpolate(mask[None].float(), size=size, mode="area")[0, 0] > 0


def _dilate(m: Tensor, r: int) -> Tensor:
    """(H, W) bool grown by r pixels (a square: a row's max pool, then a column's)."""
    rows = F.max_pool2d(m[None, None].float(), (1, 2 * r + 1), stride=1, padding=(0, r))
    return F.max_pool2d(rows, (2 * r + 1, 1), stride=1, padding=(r, 0))[0, 0] > 0


# --- patch distance ------------------------------------------------------------------------


def pca_basis(features: Tensor, valid: Tensor, patch: int, dims: int, generator: torch.Generator) -> Tensor:
    """(dims, C, p, p): the top principal axes of the source patches (at most 4096 drawn from `valid`).

    d(P_t, Q_s) is then ||phi(P_t) - phi(Q_s)||^2 over `dims` numbers instead of C p^2."""
    c, _, w = features.shape
    padded = F.pad(features[None], [patch // 2] * 4, mode="replicate")[0]
    where = torch.nonzero(valid.flatten()).flatten()
    pick = where[torch.randperm(len(where), generator=generator)[:4096].to(where.device)]
    o = torch.arange(patch, device=features.device)
    ys = (pick // w)[:, None, None] + o[None, :, None]  # (n, p, 1): rows of each patch in the padded image
    xs = (pick % w)[:, None, None] + o[None, None, :]
    sample = padded[:, ys, xs].permute(1, 0, 2, 3).reshape(len(pick), -1)  # (n, C p^2), as conv2d's weights
    sample = sample - sample.mean(0)
    _, vectors = torch.linalg.eigh(sample.T @ sample)
    dims = min(dims, vectors.shape[1])
    return vectors[:, -dims:].flip(1).T.reshape(dims, c, patch, patch).contiguous()


def descriptors(features: Tensor, basis: Tensor) -> Tensor:
    """(H W, D): phi(P) of the patch around every pixel (edges replicated)."""
    r = basis.shape[-1] // 2
    out = F.conv2d(F.pad(features[None], [r] * 4, mode="replicate"), basis)[0]  # (D, H, W)
    return out.flatten(1).T.contiguous()


def distance(phi_t: Tensor, phi: Tensor, s: Tensor, penalty: Tensor) -> Tensor:
    """d(P_t, Q_s) + the occurrence penalty of s: `phi_t` (N, D) the targets' descriptors, s (N,) flat indices."""
    diff = phi.index_select(0, s).sub_(phi_t)
    return diff.square_().sum(1).add_(penalty.index_select(0, s))


# --- PatchMatch (Barnes et al. 2009) -----------------------------------------------------------


@dataclass
class Field:
    """A nearest-neighbour field over the target pixels of one scale."""

    t: Tensor  # (N,) flat indices of the target pixels (patches that touch the hole)
    s: Tensor  # (N,) flat index of each one's source pixel f(t)
    phi_t: Tensor  # (N, D) the target patches' descriptors
    d: Tensor  # (N,) d(P_t, Q_f(t)) with the penalty
    refresh: Callable[[], None] | None = None  # called after every round of candidates (the occurrence penalty)
    accept: Tensor | None = None  # (N,) bool: who may move this round (a random half while the penalty counts)


def initialise(t: Tensor, sources: Tensor, generator: torch.Generator) -> Tensor:
    """f(t) drawn uniformly from the valid source pixels."""
    draw = torch.randint(len(sources), (len(t),), generator=generator).to(sources.device)
    return sources[draw]


def _improve(field: Field, candidate: Tensor, ok: Tensor, phi: Tensor, penalty: Tensor) -> None:
    """Keep each candidate that is a valid source and nearer than the current match."""
    d = torch.where(ok, distance(field.phi_t, phi, candidate.clamp(0, len(phi) - 1), penalty), math.inf)
    better = d < field.d
    if field.accept is not None:
        better &= field.accept
    field.s = torch.where(better, candidate, field.s)
    field.d = torch.where(better, d, field.d)
    if field.refresh is not None:
        field.refresh()


def propagate(field: Field, full: Tensor, phi: Tensor, valid: Tensor, size: tuple[int, int], penalty: Tensor,
              jumps: tuple[int, ...]) -> None:
    """f(t) <- f(t + d) - d where that is nearer, for d of every jump in four directions (all t at once).

    `full` (H W,) is the field over the whole scale (a known pixel maps to itself)."""
    h, w = size
    ty, tx = field.t // w, field.t % w
    for step in jumps:
        for dy, dx in ((0, step), (step, 0), (0, -step), (-step, 0)):
            ny, nx = ty + dy, tx + dx
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            n = (ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1))
            sy, sx = full[n] // w - dy, full[n] % w - dx
            ok = inside & (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
            candidate = sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)
            _improve(field, candidate, ok & valid[candidate], phi, penalty)
            full[field.t] = field.s


def random_search(field: Field, full: Tensor, phi: Tensor, valid: Tensor, size: tuple[int, int], penalty: Tensor,
                  generator: torch.Generator, radius: float, alpha: float = 0.5) -> None:
    """f(t) <- f(t) + w alpha^i R_i, R_i uniform in [-1, 1]^2, for radii w alpha^i from w = `radius` down to one pixel."""
    h, w = size
    while radius >= 1:
        r = torch.rand(2, len(field.t), generator=generator).to(field.t.device) * 2 - 1
        sy = (field.s // w + (r[0] * radius).round().long()).clamp(0, h - 1)
        sx = (field.s % w + (r[1] * radius).round().long()).clamp(0, w - 1)
        candidate = sy * w + sx
        _improve(field, candidate, valid[candidate], phi, penalty)
        radius *= alpha
    full[field.t] = field.s


# --- EM (Wexler et al. 2007) -----------------------------------------------------------------


def copies(source: Tensor, centres: Tensor, size: tuple[int, int]) -> Tensor:
    """(H W,): how many hole pixels copy each source pixel as their patch centre (1 for a coherent copy)."""
    h, w = size
    return torch.zeros(h * w, device=source.device).index_add_(0, source[centres],
                                                              torch.ones(int(centres.sum()), device=source.device))


def occurrence_penalty(field: Field, hole: Tensor, size: tuple[int, int], scale: float) -> Tensor:
    """(H W,): `scale` x the copies beyond one of each source pixel, counted over the hole's patch centres
    (Kaspar et al. 2015's occurrence map)."""
    return scale * (copies(field.s, hole.flatten()[field.t], size) - 1).clamp(min=0)


def vote(x: Tensor, full: Tensor, weight: Tensor, hole: Tensor, radius: int) -> Tensor:
    """Every hole pixel q <- sum_o w(q - o) X[f(q - o) + o] / sum_o w(q - o), o over a (2 radius + 1)^2 window.

    `full` (H W,) is the field of every pixel, `weight` (H W,) each patch's vote weight (0: no vote)."""
    c, h, w = x.shape
    q = torch.nonzero(hole.flatten()).flatten()
    qy, qx = q // w, q % w
    flat = x.flatten(1)
    total = torch.zeros(c, len(q), device=x.device)
    norm = torch.zeros(len(q), device=x.device)
    for oy in range(-radius, radius + 1):
        for ox in range(-radius, radius + 1):
            cy, cx = (qy - oy).clamp(0, h - 1), (qx - ox).clamp(0, w - 1)
            centre = cy * w + cx
            s = full[centre]
            sy, sx = (s // w + (qy - cy)).clamp(0, h - 1), (s % w + (qx - cx)).clamp(0, w - 1)
            wt = weight[centre]
            total += flat[:, sy * w + sx] * wt
            norm += wt
    out = flat.clone()
    out[:, q] = total / norm.clamp(min=1e-12)
    return out.view(c, h, w)


def vote_weights(field: Field, size: tuple[int, int]) -> Tensor:
    """(H W,): exp(-d / 2 sigma^2) of every target patch, sigma^2 the 75th percentile of d (Wexler); 0 elsewhere."""
    d = field.d
    sigma2 = torch.quantile(d[:65536], 0.75).clamp(min=1e-6) if len(d) else torch.tensor(1.0)
    weight = torch.zeros(size[0] * size[1], device=d.device)
    weight[field.t] = torch.exp(-(d - d.min()) / (2 * sigma2)).clamp(min=1e-6)
    return weight


def upsample_field(full: Tensor, coarse: tuple[int, int], fine: tuple[int, int]) -> Tensor:
    """(H W,) field of the finer scale: f'(t) = 2 f(t // 2) + t mod 2, each source kept inside the image."""
    (ch, cw), (h, w) = coarse, fine
    y, x = torch.arange(h, device=full.device), torch.arange(w, device=full.device)
    cy, cx = (y * ch // h).clamp(max=ch - 1), (x * cw // w).clamp(max=cw - 1)
    s = full.view(ch, cw)[cy[:, None], cx[None, :]]
    sy = (s // cw * h // ch + (y - cy * h // ch)[:, None]).clamp(0, h - 1)
    sx = (s % cw * w // cw + (x - cx * w // cw)[None, :]).clamp(0, w - 1)
    return (sy * w + sx).flatten()


def complete(region: Tensor, mask: Tensor, guide: Tensor, *, generator: torch.Generator,
             config: CompletionConfig = CompletionConfig()) -> Completion:
    """The hole `mask` (1, H, W) of `region` (3, H, W) in [-1, 1] filled with the region's own patches under
    `guide` (3, h, w): any size, upsampled to every scale; where it covers known pixels it should show them
    (a model's sample does). Known pixels are returned exactly."""
    with torch.autocast(region.device.type, enabled=False):  # distances in float32 whatever the caller runs in
        return _complete(region.float(), mask, guide.float(), generator, config)


def _complete(region: Tensor, mask: Tensor, guide: Tensor, generator: torch.Generator,
              config: CompletionConfig) -> Completion:
    """`complete` in float32."""
    if config.patch < 3 or config.patch % 2 == 0:
        raise PaletteError(f"patch side must be odd and at least 3, got {config.patch}")
    device = region.device
    hole_full = mask[0] > 0.5
    if not bool((~hole_full).any()):
        raise PaletteError("nothing is known: exemplar completion needs some of the photo to copy from")
    r = config.patch // 2
    guide_weight = 1.0 if config.guide_weight is None else config.guide_weight
    levels = scales(*region.shape[-2:], config.coarsest)
    x = full = None
    for level, size in enumerate(levels):
        h, w = size
        hole = _hole_at(mask, size) if level < len(levels) - 1 else hole_full
        known = _resize(region.float(), size)
        rows = torch.linspace(-1, 1, h, device=device)[None, :, None].expand(1, h, w) * config.row_weight
        g = torch.cat([_resize(guide.float().to(device), size) * guide_weight, rows])
        if x is None:  # the coarsest scale starts from the guide
            x = torch.where(hole, _resize(guide.float().to(device), size), known)
        else:
            x = torch.where(hole, _resize(x, size), known)
        valid = (~_dilate(hole, r)).flatten()
        if not bool(valid.any()):
            valid = (~hole).flatten()  # a hole wider than the image at this scale: known centres still copy
        sources = torch.nonzero(valid).flatten()
        t = torch.nonzero(_dilate(hole, r).flatten() & ~valid).flatten()
        identity = torch.arange(h * w, device=device)
        if full is None:
            full = identity.clone()
            full[t] = initialise(t, sources, generator)
        else:
            full = upsample_field(full, levels[level - 1], size)
            full = torch.where(valid, identity, full)
            bad = t[~valid[full[t]]]
            full[bad] = initialise(bad, sources, generator)
            uniform = torch.zeros(h * w, device=device).index_fill_(0, t, 1.0)
            x = vote(x, full, uniform, hole, r)  # the finer scale's pixels copied through the upsampled field
        x = _em_at_scale(x, g, known, hole, full, t, sources, valid, level, level == len(levels) - 1, config,
                         generator)
    image = torch.where(hole_full, x, region.float())
    if config.harmonise > 0:
        image = harmonise(image, hole_full, full.view(*region.shape[-2:]), config.patch // 2, config.harmonise)
    return Completion(image=image, source=full.view(*region.shape[-2:]))


def _em_at_scale(x: Tensor, g: Tensor, known: Tensor, hole: Tensor, full: Tensor, t: Tensor, sources: Tensor,
                 valid: Tensor, level: int, finest: bool, config: CompletionConfig,
                 generator: torch.Generator) -> Tensor:
    """Wexler et al.'s EM at one scale: match every hole patch (PatchMatch, `full` updated in place), vote."""
    device, (h, w) = x.device, x.shape[-2:]
    size, r = (h, w), config.patch // 2
    basis = pca_basis(torch.cat([known, g]), valid.view(h, w), config.patch, config.descriptor, generator)
    penalty = torch.zeros(h * w, device=device)
    # The coarsest scale searches the whole image; finer ones refine the upsampled matches nearby.
    radius = float(max(h, w)) if level == 0 else 4.0 * config.patch
    searches = config.search_steps if level == 0 else 1
    jumps = tuple(j for j in ((8, 4, 2, 1) if level == 0 else (4, 2, 1)) if j < max(h, w))
    iterations = 1 if min(h, w) > config.em_full_side else max(config.em_steps - level, 1)
    for _ in range(iterations):
        phi = descriptors(torch.cat([x, g]), basis)
        spread = float(phi.index_select(0, sources).var(0).sum())  # the source patches' total variance
        field = Field(t, full[t], phi.index_select(0, t), torch.zeros(0))
        field.d = distance(field.phi_t, phi, field.s, penalty)
        if config.occurrence > 0:
            # The penalty follows every round of candidates, and a random half of the targets may move per
            # round: all at once, every target of a crowded source would jump to the same next-best one.
            def refresh(field=field, phi=phi, penalty=penalty, spread=spread):
                penalty.copy_(occurrence_penalty(field, hole, size, config.occurrence * spread))
                field.d = distance(field.phi_t, phi, field.s, penalty)
                field.accept = torch.rand(len(field.t), generator=generator).to(device) < 0.5
            field.refresh = refresh
            refresh()
        for _ in range(searches):
            propagate(field, full, phi, valid, size, penalty, jumps)
            random_search(field, full, phi, valid, size, penalty, generator, radius)
        if config.occurrence > 0:
            field.refresh = field.accept = None
            field.d = distance(field.phi_t, phi, field.s, torch.zeros_like(penalty))  # votes weigh the match alone
        x = vote(x, full, vote_weights(field, size), hole, config.fine_vote if finest else r)
        x = torch.where(hole, x, known)
    return x


# --- seamless border (Perez, Gangnet & Blake 2003) ---------------------------------------------


def _blur(x: Tensor, sigma: float) -> Tensor:
    """(C, H, W) Gaussian blur, separable, the border replicated."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, device=x.device, dtype=x.dtype).square() / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[0]
    y = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def membrane(values: Tensor, weight: Tensor) -> Tensor:
    """(C, H, W): `values` where `weight` (H, W, in [0, 1]) is 1, a smooth interpolation elsewhere (push-pull,
    Gortler et al. 1996): pushed down a pyramid of 2x2 weighted means (a cell's weight: its children's sum,
    at most 1), pulled back up, each level's values over the bilinear upsampling of the coarser one."""
    w = weight[None].to(values.dtype)
    pyramid = [(values * w, w)]  # (weighted mean x weight, weight) per level, the weight at most 1
    while max(pyramid[-1][1].shape[-2:]) > 1:
        vw, w = pyramid[-1]
        total = F.avg_pool2d(vw[None], 2, ceil_mode=True)[0]
        count = F.avg_pool2d(w[None], 2, ceil_mode=True)[0]
        mean = total / count.clamp(min=1e-12)
        w = (4 * count).clamp(max=1)
        pyramid.append((mean * w, w))
    vw, w = pyramid[-1]
    out = vw / w.clamp(min=1e-12)
    for vw, w in reversed(pyramid[:-1]):
        up = F.interpolate(out[None], size=w.shape[-2:], mode="bilinear", align_corners=False)[0]
        out = vw + up * (1 - w)
    return out


def border_mismatch(image: Tensor, hole: Tensor, source: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """What the photo shows next to the fill minus what the copied patches' own surroundings showed there.

    For every hole pixel t within `radius` of a known pixel, copied from the patch centred on s =
    source[t], the mean over the known pixels t + o of its (2 radius + 1)^2 window of X[t + o] - X[s + o]
    (Perez et al.'s boundary condition with the source's own gradients: zero for a seamless copy).
    Returns the mismatch (3, H, W) and where it is defined (H, W) bool."""
    c, (h, w) = image.shape[0], hole.shape
    t = torch.nonzero((hole & _dilate(~hole, radius)).flatten()).flatten()
    ty, tx = t // w, t % w
    s = source.flatten()[t]
    sy, sx = s // w, s % w
    flat, known = image.flatten(1), ~hole.flatten()
    total = torch.zeros(c, len(t), device=image.device, dtype=image.dtype)
    count = torch.zeros(len(t), device=image.device, dtype=image.dtype)
    for oy in range(-radius, radius + 1):
        for ox in range(-radius, radius + 1):
            ky, kx, qy, qx = ty + oy, tx + ox, sy + oy, sx + ox
            ok = (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w) & (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
            k, q = (ky.clamp(0, h - 1) * w + kx.clamp(0, w - 1)), (qy.clamp(0, h - 1) * w + qx.clamp(0, w - 1))
            ok &= known[k] & known[q]
            total += (flat[:, k] - flat[:, q]) * ok
            count += ok
    mismatch = torch.zeros(c, h * w, device=image.device, dtype=image.dtype)
    mismatch[:, t] = total / count.clamp(min=1)
    defined = torch.zeros(h * w, dtype=torch.bool, device=image.device)
    defined[t] = count > 0
    return mismatch.view(c, h, w), defined.view(h, w)


def harmonise(image: Tensor, hole: Tensor, source: Tensor, radius: int, largest: float, factor: int = 4) -> Tensor:
    """The hole's pixels shifted by a smooth field that closes the tone step at its border.

    Copied patches carry their own source's tone: a sky copied from higher up meets the photo's sky a
    few levels off, a line the eye finds at once. As Poisson image editing fixes a pasted region by its
    border, the step between the photo and the copies' own surroundings (`border_mismatch`) is smoothed
    along the border and interpolated over the hole (`membrane`). Steps beyond `largest` are the
    content's and shrink away. The field is smooth, so it is made at 1 / `factor` of the size, then
    scaled up."""
    mismatch, defined = border_mismatch(image, hole, source, radius)
    if not bool(defined.any()):
        return image
    # A copy's tone step is a few levels; a larger mismatch is the content's (a copy next to another object than
    # its source's): it shrinks to nothing (x exp(-(m / largest)^2) peaks at 0.43 largest) instead of bleeding in.
    mismatch = mismatch * torch.exp(-(mismatch.abs().amax(0) / largest).square())
    weight = defined[None].to(image.dtype)
    h, w = hole.shape
    size = (max(1, round(h / factor)), max(1, round(w / factor)))
    sigma = max(2.0 * radius * size[0] / h, 0.5)
    band = _resize(weight, size)
    step = _blur(_resize(mismatch * weight, size), sigma) / _blur(band, sigma).clamp(min=1e-6)
    band = band[0]
    offset = membrane(step, band)
    offset = F.interpolate(offset[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return torch.where(hole, image + offset, image).clamp(-1, 1)
