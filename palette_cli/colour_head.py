"""The colour head: a colour the model commits to, in one pass over the frozen encoder's maps.

Zhang et al. (2016), "Colorful Image Colorization", with the encoder frozen and its maps cached:
- chroma (Cb, Cr of BT.601, images.rgb_to_ycbcr) is quantised into Q bins, the cells of a grid
  over the chroma plane that the training photos occupy (`fit_bins`);
- the head predicts, at every location of a 64x64 grid (stride 4 of the 256 px view), a distribution
  Z over the Q bins from the encoder's maps at strides 8, 16 and 32 and the gray view itself
  (an FPN: 1x1 laterals, top-down sums, one 3x3 conv + GroupNorm + SiLU per level, a global vector
  from the pooled final map added at the coarsest level); optionally the head has its own trainable
  copy of the encoder's last stages (`EncoderTail`), so the semantic map it reads is tuned for colour;
- the loss is the cross-entropy against the soft-encoded ground truth (its 5 nearest bins,
  Gaussian-weighted, Eq. 2 of Zhang et al.), each pixel weighted by w(q*) (Eq. 3-4: the smoothed
  prior mixed with the uniform distribution by lambda, inverted, with E_p[w] = 1);
- the colour is decoded by the annealed mean (Eq. 5), H(Z) = E[f_T(Z)], f_T(z) = exp(log z / T) / sum,
  optionally with the prior divided out to the power `adjust` (post-hoc rebalancing).

Sampling (`-n`): the logits get a smooth random field added, Gaussian noise on a coarse
`noise_grid` x `noise_grid` grid per bin, bilinearly upsampled: where the head is sure (sky, grass)
the colour stays, where it is torn between bins (a car, a shirt) a whole region moves together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import features, images

GRID_STEP = 0.08  # the chroma grid's cell side (Cb, Cr in [-1, 1])
GRID = 25  # cells per axis: centres from -0.96 to 0.96
SOFT_NEIGHBOURS = 5  # Zhang et al.'s soft encoding: the 5 nearest bins
SOFT_SIGMA = 0.05  # their Gaussian's width, in chroma units (5 of ab's 110 ~ 0.05 of our 1)
OUT_SIZE = 64  # the head's grid
ENCODER_TAPS = (4, 10)  # encoder blocks whose outputs it reads besides the final map: strides 8 and 16


def grid_centres() -> Tensor:
    """(GRID * GRID, 2) centres (Cb, Cr) of the full chroma grid, Cr-major."""
    axis = (torch.arange(GRID) - (GRID - 1) / 2) * GRID_STEP
    cr, cb = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([cb.flatten(), cr.flatten()], dim=1)


def grid_cell(chroma: Tensor) -> Tensor:
    """(..., 2, H, W) chroma -> (..., H, W) index of its cell in the full grid."""
    idx = ((chroma / GRID_STEP) + GRID / 2).floor().long().clamp(0, GRID - 1)
    return idx[..., 1, :, :] * GRID + idx[..., 0, :, :]


def fit_bins(chroma: Tensor, min_share: float = 2e-5) -> tuple[Tensor, Tensor]:
    """The bins: grid cells holding at least `min_share` of the training pixels (chroma (N, 2, H, W)).

    Returns their centres (Q, 2) and the empirical prior p (Q,) over them (every pixel counted)."""
    counts = torch.bincount(grid_cell(chroma).flatten(), minlength=GRID * GRID).double()
    keep = counts / counts.sum() >= min_share
    centres = grid_centres()[keep]
    # Pixels in dropped cells count for their nearest kept bin.
    dropped = grid_centres()[~keep]
    prior = counts[keep].clone()
    if len(dropped):
        nearest = torch.cdist(dropped.double(), centres.double()).argmin(dim=1)
        prior.index_add_(0, nearest, counts[~keep])
    return centres.float(), (prior / prior.sum()).float()


def rebalancing_weights(centres: Tensor, prior: Tensor, lam: float = 0.5, sigma: float = SOFT_SIGMA) -> Tensor:
    """Zhang et al. Eq. 4: w proportional to ((1 - lambda) p~ + lambda / Q)^-1 with E_p[w] = 1,
    p~ the prior smoothed by a Gaussian of width `sigma` over the bins' centres."""
    kernel = torch.exp(-torch.cdist(centres, centres).square() / (2 * sigma ** 2))
    smooth = kernel @ prior
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1 - lam) * smooth + lam / len(prior))
    return (w / (prior * w).sum()).float()


def soft_encode(chroma: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Zhang et al. Eq. 2's soft encoding of chroma (B, 2, H, W): the indices (B, H, W, k) of the k
    nearest bins and their Gaussian weights (B, H, W, k), summing to 1."""
    b, _, h, w = chroma.shape
    flat = chroma.permute(0, 2, 3, 1).reshape(-1, 2)
    dist = torch.cdist(flat, centres)  # (BHW, Q)
    d, idx = dist.topk(SOFT_NEIGHBOURS, dim=1, largest=False)
    weights = torch.softmax(-d.square() / (2 * SOFT_SIGMA ** 2), dim=1)
    return idx.view(b, h, w, -1), weights.view(b, h, w, -1)


TABLE_STEP = 0.005  # the soft-encoding table's chroma resolution: a tenth of the Gaussian's width


def soft_table(centres: Tensor) -> tuple[Tensor, Tensor]:
    """`soft_encode` of every point of a TABLE_STEP lattice over [-1, 1]^2: (N, k) indices and weights,
    so training looks its targets up instead of measuring 230 distances per pixel."""
    n = int(round(2 / TABLE_STEP)) + 1
    axis = torch.linspace(-1, 1, n)
    cr, cb = torch.meshgrid(axis, axis, indexing="ij")
    idx, weights = soft_encode(torch.stack([cb, cr])[None], centres)
    return idx.reshape(n * n, -1), weights.reshape(n * n, -1)


def soft_lookup(chroma: Tensor, table: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """`soft_encode` of chroma (B, 2, H, W) by the nearest lattice point of `soft_table`."""
    n = int(round(2 / TABLE_STEP)) + 1
    ij = ((chroma.clamp(-1, 1) + 1) / TABLE_STEP).round().long()
    flat = ij[:, 1] * n + ij[:, 0]  # (B, H, W), Cr-major as the table
    idx, weights = table
    return idx.to(chroma.device)[flat], weights.to(chroma.device)[flat]


def loss(logits: Tensor, chroma: Tensor, centres: Tensor, pixel_weights: Tensor | None = None,
         table: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Zhang et al. Eq. 2: cross-entropy of the head's logits (B, Q, H, W) against the soft-encoded
    ground truth chroma (B, 2, H, W), each pixel weighted by w of its nearest bin (`pixel_weights` (Q,)).
    `table` (`soft_table(centres)`): look the soft encoding up rather than compute it."""
    idx, weights = soft_encode(chroma.float(), centres) if table is None else soft_lookup(chroma.float(), table)
    logp = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1)  # (B, H, W, Q)
    per_pixel = -(logp.gather(-1, idx) * weights).sum(-1)
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights[idx[..., 0]]
    return per_pixel.mean()


def annealed_mean(logits: Tensor, centres: Tensor, temperature: float, log_prior: Tensor | None = None,
                  adjust: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """Zhang et al. Eq. 5: chroma (B, 2, H, W) = sum_q f_T(Z)_q centre_q, f_T(z) = softmax(log z / T),
    with `adjust` x log prior subtracted first (post-hoc rebalancing) and `noise` (B, Q, H, W) added."""
    z = F.log_softmax(logits.float(), dim=1)
    if adjust and log_prior is not None:
        z = z - adjust * log_prior.view(1, -1, 1, 1)
    if noise is not None:
        z = z + noise
    q = torch.softmax(z / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", q, centres.to(q))


def smooth_noise(shape: tuple[int, int, int, int], grid: int, generator: torch.Generator) -> Tensor:
    """A random field (B, Q, H, W): standard normal values on a grid x grid lattice per bin, bilinearly
    upsampled, so neighbouring pixels move together."""
    b, q, h, w = shape
    coarse = torch.randn(b, q, grid, grid, generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True) if grid > 1 else \
        coarse.expand(b, q, h, w)


class EncoderTail(nn.Module):
    """The encoder's layers after the stride-16 tap (blocks 11-15 and the 1x1 head, batch norms folded):
    (B, 112, 16, 16) -> (B, 1280, 8, 8). The frozen encoder's maps are tuned for ImageNet's classes; a
    head with its own tail, started from the encoder's weights and trained, tunes the semantic map it
    reads for colour, as Zhang et al. train their whole network (the UNet keeps the frozen map)."""

    def __init__(self, pretrained: bool = False):
        super().__init__()
        net = features.folded(features.load() if pretrained else features.EfficientNetLite0())
        first = ENCODER_TAPS[-1] + 1
        self.blocks = nn.Sequential(*net._blocks[first:])
        self.head = net._conv_head
        self.requires_grad_(True)

    def forward(self, s16: Tensor) -> Tensor:
        return F.relu6(self.head(self.blocks(s16)))


def _block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv, GroupNorm, SiLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(32, cout // 4), cout), nn.SiLU())


@dataclass(frozen=True)
class HeadShape:
    """What builds the network (config.ColourHeadConfig carries these fields too)."""

    bins: int
    channels: int = 128  # FPN width at strides 8, 16, 32
    fine_channels: int = 48  # width at stride 4 (the 64x64 output grid)
    tail: bool = False  # its own trainable copy of the encoder's last stages (stride 16 -> the final map)


class ColourHead(nn.Module):
    """(final (B, 1280, 8, 8), s8 (B, 40, 32, 32), s16 (B, 112, 16, 16), gray (B, 1, 64, 64)) -> logits (B, Q, 64, 64).

    Buffers `centres` (Q, 2) and `log_prior` (Q,) travel with the weights. A head with a tail
    (HeadShape.tail) computes its own final map from s16 and ignores `final`."""

    def __init__(self, shape: HeadShape):
        super().__init__()
        c, f = shape.channels, shape.fine_channels
        self.global_vector = nn.Linear(1280, c)
        self.lateral32 = nn.Conv2d(1280, c, 1)
        self.lateral16 = nn.Conv2d(112, c, 1)
        self.lateral8 = nn.Conv2d(40, c, 1)
        self.top32, self.top16, self.top8 = _block(c, c), _block(c, c), _block(c, c)
        self.to_fine = nn.Conv2d(c, f, 1)
        self.stem = nn.Conv2d(1, f, 3, padding=1)
        self.fine = _block(f, f)
        self.out = nn.Conv2d(f, shape.bins, 1)
        self.tail = EncoderTail() if shape.tail else None
        self.register_buffer("centres", torch.zeros(shape.bins, 2))
        self.register_buffer("log_prior", torch.zeros(shape.bins))

    def forward(self, final: Tensor, s8: Tensor, s16: Tensor, gray: Tensor) -> Tensor:
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        if self.tail is not None:  # the head's own final map, from the stride-16 map
            final = self.tail(s16)
        p32 = self.top32(self.lateral32(final) + self.global_vector(final.mean((2, 3)))[:, :, None, None])
        p16 = self.top16(self.lateral16(s16) + up(p32, s16))
        p8 = self.top8(self.lateral8(s8) + up(p16, s8))
        p4 = self.fine(self.stem(gray) + up(self.to_fine(p8), gray))
        return self.out(p4)


def gray_input(gray_view: Tensor) -> Tensor:
    """(B, 3 or 1, V, V) gray view in [-1, 1] -> its luminance (B, 1, 64, 64), the head's fine input."""
    return images.resize(gray_view[:, :1].float(), (OUT_SIZE, OUT_SIZE))


def decode(head: ColourHead, logits: Tensor, *, temperature: float, adjust: float, noise_scale: float = 0.0,
           noise_grid: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Chroma (B, 2, 64, 64) from logits; with a generator and noise_scale > 0, one sample of the smooth field."""
    noise = None
    if generator is not None and noise_scale > 0:
        noise = noise_scale * smooth_noise(tuple(logits.shape), noise_grid, generator).to(logits.device)
    return annealed_mean(logits, head.centres, temperature, head.log_prior, adjust, noise)


def entropy(logits: Tensor) -> Tensor:
    """H(Z) per pixel in nats, (B, 1, H, W), normalised by log Q to [0, 1]."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1, keepdim=True) / math.log(logits.shape[1])
