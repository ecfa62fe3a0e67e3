"""Colour controls for colorize: user colour hints (UGColor) and a reference photo's palette (PalGAN).

- Hints are a (3, S, S) map at the model's size: chroma Cb and Cr (BT.601, scaled to about [-1, 1])
  where a hint is, and a mask channel (1 at hinted pixels). The photo's own luminance is kept, so a
  hint says only which colour, not how bright. Training reveals the ground truth's colour at a
  random number of small random patches (zero for some items).
- A reference is a coarse chroma histogram (BINS x BINS over Cb, Cr), fed as its square root (a unit
  vector) into the network's embedding. Training uses the target's own histogram, dropped part of the time.
- An all-zero hint map or reference vector is the null condition ("no hints", "no reference").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .. import images
from ..errors import PaletteError

HINT_CHANNELS = 3  # Cb, Cr, mask
BINS = 8  # reference histogram bins per chroma axis
REFERENCE_CHANNELS = BINS * BINS
CHROMA_RANGE = 0.5  # histogram bins span [-CHROMA_RANGE, CHROMA_RANGE] of Cb and Cr; beyond is clamped
HINT_SCALE = 2.0  # hint chroma x this: natural chroma rarely leaves [-0.5, 0.5]
TRAIN_HINT_P = 0.125  # hints per training item ~ Geometric(p) - 1: none for 1 in 8, mean 7
TRAIN_MAX_HINTS = 24
TRAIN_REFERENCE_DROPOUT = 0.5  # share of training items shown no reference


def chroma(img: Tensor) -> Tensor:
    """Cb, Cr of (..., 3, H, W) RGB in [-1, 1] -> (..., 2, H, W)."""
    return images.rgb_to_ycbcr(img)[..., 1:, :, :]


# --- hints ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    """A colour at a pixel of the photo, spread over a disk of `radius` pixels."""

    x: float
    y: float
    rgb: tuple[int, int, int]
    radius: float = 0.0

    def __str__(self) -> str:
        text = f"{self.x:g},{self.y:g},#{self.rgb[0]:02x}{self.rgb[1]:02x}{self.rgb[2]:02x}"
        return text + (f",{self.radius:g}" if self.radius else "")


_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")


def parse_hint(text: str) -> Hint:
    """`x,y,#rrggbb[,radius]` (pixels of the photo) -> Hint; PaletteError naming the problem."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 4):
        raise PaletteError(f"--hint {text!r}: expected x,y,#rrggbb or x,y,#rrggbb,radius")
    try:
        x, y = float(parts[0]), float(parts[1])
        radius = float(parts[3]) if len(parts) == 4 else 0.0
    except ValueError:
        raise PaletteError(f"--hint {text!r}: x, y and radius must be numbers") from None
    match = _COLOUR.fullmatch(parts[2])
    if not match:
        raise PaletteError(f"--hint {text!r}: colour must be #rrggbb (six hex digits), got {parts[2]!r}")
    if radius < 0 or not all(np.isfinite((x, y, radius))):
        raise PaletteError(f"--hint {text!r}: radius must be 0 or more")
    value = int(match.group(1), 16)
    return Hint(x, y, (value >> 16, (value >> 8) & 255, value & 255), radius)


def check_hints(hints: list[Hint], width: int, height: int) -> None:
    """Refuse a hint outside the photo."""
    for h in hints:
        if not (0 <= h.x < width and 0 <= h.y < height):
            raise PaletteError(f"--hint {h}: point ({h.x:g}, {h.y:g}) is outside the {width}x{height} photo")


def hint_map(hints: list[Hint], width: int, height: int, size: int) -> Tensor:
    """(3, size, size) hint channels of point hints on a width x height photo squeezed to size x size.
    Each hint covers its disk, and at least the model pixel it falls in."""
    out = torch.zeros(HINT_CHANNELS, size, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for h in hints:
        cx, cy = h.x * size / width, h.y * size / height
        rx, ry = h.radius * size / width, h.radius * size / height
        disk = ((xs - cx) / max(rx, 1e-6)) ** 2 + ((ys - cy) / max(ry, 1e-6)) ** 2 <= 1
        disk[min(int(cy), size - 1), min(int(cx), size - 1)] = True
        rgb = torch.tensor(h.rgb, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1
        out[:2][:, disk] = (HINT_SCALE * chroma(rgb)).view(2, 1).expand(2, int(disk.sum()))
        out[2][disk] = 1
    return out


def hints_from_image(image: Image.Image, width: int, height: int, size: int, name: str) -> Tensor:
    """(3, size, size) hint channels of an RGBA image the photo's size whose opaque pixels are hints."""
    if image.size != (width, height):
        raise PaletteError(f"--hints {name}: is {image.size[0]}x{image.size[1]} but the photo is {width}x{height}")
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    opaque = torch.from_numpy((rgba[..., 3] >= 128).astype(np.float32))[None]
    if not opaque.any():
        raise PaletteError(f"--hints {name}: has no opaque pixel (hints are the opaque pixels of an RGBA image)")
    rgb = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1) / 127.5 - 1
    weighted = F.adaptive_avg_pool2d(torch.cat([chroma(rgb) * opaque, opaque])[None], size)[0]
    cover = weighted[2:]
    mask = (cover > 0).float()
    return torch.cat([HINT_SCALE * weighted[:2] / cover.clamp(min=1e-6) * mask, mask])


def random_hints(target: Tensor, generator: torch.Generator) -> Tensor:
    """(B, 3, S, S) training hints: the ground truth's mean colour over a few random 1-3 px square patches.
    The count is Geometric: none for a share TRAIN_HINT_P of items, TRAIN_MAX_HINTS at most."""
    b, _, s, _ = target.shape
    out = torch.zeros(b, HINT_CHANNELS, s, s)
    truth = HINT_SCALE * chroma(target.detach().float().cpu())
    u = torch.rand(b, generator=generator).clamp(min=1e-12)
    counts = (torch.log(u) / np.log1p(-TRAIN_HINT_P)).floor().clamp(max=TRAIN_MAX_HINTS).int().tolist()
    for i, n in enumerate(counts):
        for _ in range(n):
            side = int(torch.randint(1, 4, (), generator=generator))
            top, left = (int(v) for v in torch.randint(0, s - side + 1, (2,), generator=generator))
            patch = (slice(top, top + side), slice(left, left + side))
            out[i, :2, patch[0], patch[1]] = truth[i, :, patch[0], patch[1]].mean(dim=(1, 2), keepdim=True)
            out[i, 2, patch[0], patch[1]] = 1
    return out.to(target.device)


# --- reference --------------------------------------------------------------------------------


def chroma_histogram(img: Tensor, bins: int = BINS) -> Tensor:
    """(B, bins*bins) normalised histogram of the Cb, Cr of (B, 3, H, W) images over [-0.5, 0.5]^2."""
    c = chroma(img.detach().float().cpu())
    index = ((c / CHROMA_RANGE + 1) / 2 * bins).floor().clamp(0, bins - 1).long()
    flat = (index[:, 0] * bins + index[:, 1]).flatten(1)
    hist = torch.zeros(img.shape[0], bins * bins).scatter_add_(1, flat, torch.ones(flat.shape))
    return hist / hist.sum(dim=1, keepdim=True)


def reference_vector(img: Tensor) -> Tensor:
    """(B, REFERENCE_CHANNELS): the network's view of a reference's colours, sqrt of its histogram."""
    return chroma_histogram(img).sqrt()


def histogram_distance(a: Tensor, b: Tensor, bins: int = 16) -> Tensor:
    """(B,) half the L1 distance between the chroma histograms of two image batches (0 same, 1 disjoint)."""
    return (chroma_histogram(a, bins) - chroma_histogram(b, bins)).abs().sum(dim=1) / 2


# --- after sampling: the colours asked for, enforced at the model's size -----------------------
#
# The network takes the hints and the reference as conditions, but a small model trained briefly
# follows them only weakly. After sampling, the chroma at the model's size is therefore corrected:
# hint colours are propagated along the luminance (Levin et al. 2004, "Colorization using
# optimization": neighbours with similar gray levels get similar corrections), and a reference's
# colour distribution is matched channel by channel (quantile mapping of Cb and Cr).

EDGE_SIGMA = 0.1  # luminance difference (in [-1, 1] units) at which neighbours decouple
HINT_WEIGHT = 100.0  # how hard a hinted pixel holds its colour against its neighbours
_CG_ITERATIONS = 400


def _edge_weights(luma: Tensor) -> tuple[Tensor, Tensor]:
    """Affinities between horizontal and vertical neighbours of a (H, W) luminance."""
    wx = torch.exp(-(luma[:, 1:] - luma[:, :-1]) ** 2 / (2 * EDGE_SIGMA ** 2))
    wy = torch.exp(-(luma[1:] - luma[:-1]) ** 2 / (2 * EDGE_SIGMA ** 2))
    return wx, wy


def _laplacian(d: Tensor, wx: Tensor, wy: Tensor) -> Tensor:
    """The weighted graph Laplacian of the 4-neighbour grid applied to d (C, H, W)."""
    out = torch.zeros_like(d)
    fx, fy = wx * (d[:, :, 1:] - d[:, :, :-1]), wy * (d[:, 1:] - d[:, :-1])
    out[:, :, 1:] += fx
    out[:, :, :-1] -= fx
    out[:, 1:] += fy
    out[:, :-1] -= fy
    return out


def propagate(chroma: Tensor, luma: Tensor, hints: Tensor) -> Tensor:
    """`chroma` (2, H, W) corrected to the hint colours of `hints` (3, H, W) at the hinted pixels and,
    spreading along similar luminance `luma` (H, W), everywhere else: (L + wM) d = wM (hint - chroma),
    w = HINT_WEIGHT, solved by conjugate gradients. Without a hinted pixel `chroma` is returned as it is."""
    mask = HINT_WEIGHT * hints[2:].double()
    if not mask.any():
        return chroma
    wx, wy = (w.double() for w in _edge_weights(luma.double()))
    target = mask * (hints[:2].double() / HINT_SCALE - chroma.double())
    apply = lambda v: _laplacian(v, wx, wy) + mask * v  # noqa: E731
    d = torch.zeros_like(target)
    r = target.clone()
    p, rr = r.clone(), (r * r).sum()
    for _ in range(_CG_ITERATIONS):
        ap = apply(p)
        alpha = rr / (p * ap).sum().clamp(min=1e-30)
        d, r = d + alpha * p, r - alpha * ap
        new = (r * r).sum()
        if new < 1e-16:
            break
        p, rr = r + new / rr * p, new
    return (chroma.double() + d).to(chroma.dtype)


def match_chroma(chroma: Tensor, reference: Tensor) -> Tensor:
    """`chroma` (2, H, W) with each channel's distribution mapped onto the reference's (2, K) values,
    keeping the order of the pixels (quantile matching)."""
    out = torch.empty_like(chroma)
    for c in range(2):
        flat = chroma[c].flatten()
        order = flat.argsort()
        quantiles = torch.linspace(0, 1, len(flat), dtype=torch.float64)
        values = torch.quantile(reference[c].double(), quantiles).to(chroma.dtype)
        mapped = torch.empty_like(flat)
        mapped[order] = values
        out[c] = mapped.view_as(chroma[c])
    return out
