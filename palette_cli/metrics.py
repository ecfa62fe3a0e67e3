"""Image quality metrics: PSNR, SSIM, MS-SSIM, colourfulness, and statistics of feature sets.

The feature-set statistics (top-1 accuracy, Fréchet distance, kernel distance, perceptual
distance) take logits or features from any network; `features.py` supplies palette's, which ship
inside an installed wheel, so nothing here downloads anything.

Images are float tensors in [-1, 1] shaped (3, H, W) or (..., 3, H, W), as everywhere in palette;
each metric maps them to [0, 1] (data range 1) and returns one value per image, shaped like the
leading dimensions. Masks are (1, H, W) or (..., 1, H, W) with 1 = restored pixel: the masked
variants score only the region a model generated (inpaint, uncrop). Work is done in float64 so
that numbers do not depend on the device or dtype the images came from.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import PaletteError

# PSNR of identical images is infinite; it is capped here so that reports stay valid JSON.
PSNR_CAP_DB = 100.0

# SSIM of Wang et al. 2004: 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1 = 0.01**2
_C2 = 0.03**2

# MS-SSIM of Wang et al. 2003: weights of the 5 scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] values to the 256 levels of an 8-bit image, as a saved PNG would hold them."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _flatten(x: torch.Tensor, name: str = "image") -> tuple[torch.Tensor, torch.Size]:
    """(..., 3, H, W) in [-1, 1] -> ((N, 3, H, W) in [0, 1] float64, leading shape)."""
    if x.dim() < 3 or x.shape[-3] != 3:
        raise PaletteError(f"expected an {name} shaped (..., 3, H, W), got {tuple(x.shape)}")
    lead = x.shape[:-3]
    return ((x.detach().double() + 1) / 2).reshape(-1, *x.shape[-3:]), lead


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
    """Flatten two images of the same shape."""
    if x.shape != y.shape:
        raise PaletteError(f"images differ in shape: {tuple(x.shape)} and {tuple(y.shape)}")
    a, lead = _flatten(x)
    b, _ = _flatten(y)
    return a, b.to(a.device), lead


def _flat_mask(mask: torch.Tensor | None, x: torch.Tensor, n: int) -> torch.Tensor | None:
    """A (N, 1, H, W) float64 mask broadcast to N images, or None; refuses an empty mask."""
    if mask is None:
        return None
    h, w = x.shape[-2:]
    if mask.dim() < 3 or tuple(mask.shape[-3:]) != (1, h, w):
        raise PaletteError(f"mask shape {tuple(mask.shape)} does not match images of {h}x{w}")
    m = mask.detach().double().to(x.device)
    m = m.expand(*x.shape[:-3], 1, h, w).reshape(n, 1, h, w)
    if bool((m.flatten(1).sum(1) == 0).any()):
        raise PaletteError("mask is empty: there is no restored region to score")
    return m


def psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (data range 1), over the mask if given, capped at PSNR_CAP_DB."""
    a, b, lead = _pair(x, y)
    err = (a - b) ** 2
    m = _flat_mask(mask, x, a.shape[0])
    if m is None:
        mse = err.flatten(1).mean(1)
    else:
        m = m.expand_as(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    floor = 10 ** (-PSNR_CAP_DB / 10)  # the MSE at which PSNR reaches the cap
    return (10 * torch.log10(1 / mse.clamp(min=floor))).float().reshape(lead)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian of SSIM, float64; the 2-D window is its outer product."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of each channel: (N, C, H, W) -> (N, C, H-10, W-10)."""
    c = x.shape[1]
    x = F.conv2d(x, win.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, win.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _ssim_maps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps of [0, 1] images, one value per window position."""
    h, w = a.shape[-2:]
    if min(h, w) < SSIM_WINDOW:
        raise PaletteError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {w}x{h}")
    win = gaussian_window().to(a.device)
    mu_a, mu_b = _blur(a, win), _blur(b, win)
    var_a = _blur(a * a, win) - mu_a**2
    var_b = _blur(b * b, win) - mu_b**2
    cov = _blur(a * b, win) - mu_a * mu_b
    cs = (2 * cov + _C2) / (var_a + var_b + _C2)
    luminance = (2 * mu_a * mu_b + _C1) / (mu_a**2 + mu_b**2 + _C1)
    return luminance * cs, cs


def ssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window), mean over channels.

    Without a mask: the mean of the SSIM map over every window lying inside the image. With a mask,
    each window is weighted by the share of its Gaussian weight on restored pixels, so windows
    wholly in the known region do not count and a mask of ones gives the unmasked value.
    """
    a, b, lead = _pair(x, y)
    smap, _ = _ssim_maps(a, b)
    m = _flat_mask(mask, x, a.shape[0])
    if m is None:
        value = smap.mean(dim=(1, 2, 3))
    else:
        weight = _blur(m, gaussian_window().to(m.device)).expand_as(smap)
        value = ((smap * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp(min=1e-12)).mean(1)
    return value.float().reshape(lead)


def ms_ssim_scales(h: int, w: int) -> int:
    """How many of the 5 MS-SSIM scales fit an h x w image (the coarsest must hold one window)."""
    n = 0
    while n < len(MS_SSIM_WEIGHTS) and min(h, w) // 2**n >= SSIM_WINDOW:
        n += 1
    if n == 0:
        raise PaletteError(f"MS-SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {w}x{h}")
    return n


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), mean over channels.

    Images too small for 5 scales use the first ms_ssim_scales(h, w) with their weights
    renormalised to sum to 1; negative contrast terms are clipped at 0, as is usual.
    """
    a, b, lead = _pair(x, y)
    n = ms_ssim_scales(*a.shape[-2:])
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=torch.float64, device=a.device)
    weights = weights / weights.sum()
    value = torch.ones(a.shape[:2], dtype=torch.float64, device=a.device)  # (N, C)
    for j in range(n):
        smap, cs = _ssim_maps(a, b)
        term = smap if j == n - 1 else cs  # luminance enters at the coarsest scale only
        value = value * term.mean(dim=(2, 3)).clamp(min=0) ** weights[j]
        if j < n - 1:
            h, w = a.shape[-2:]
            a = F.avg_pool2d(a[..., : h // 2 * 2, : w // 2 * 2], 2)
            b = F.avg_pool2d(b[..., : h // 2 * 2, : w // 2 * 2], 2)
    return value.mean(1).float().reshape(lead)


def colorfulness(x: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness on the 0..255 scale: 0 for a gray image.

    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G,
    yb = (R + G) / 2 - B, with population statistics over the pixels.
    """
    a, lead = _flatten(x)
    r, g, b = (a * 255).unbind(1)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return (std + 0.3 * mean).float().reshape(lead)


def pairwise_ms_ssim(samples: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of every pair i < j of K samples (K, 3, H, W): the diversity measure of Palette 5.6."""
    k = samples.shape[0]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    if not pairs:
        return torch.zeros(0)
    first = torch.stack([samples[i] for i, _ in pairs])
    second = torch.stack([samples[j] for _, j in pairs])
    return ms_ssim(first, second)


def pairwise_abs_diff(samples: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, on the 0..255 scale, of every pair i < j of K samples (K, 3, H, W) in [-1, 1]."""
    k = samples.shape[0]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    if not pairs:
        return torch.zeros(0)
    return torch.stack([(samples[i].float() - samples[j].float()).abs().mean() * 127.5 for i, j in pairs])


def histogram(values: list[float], bins: int = 10, low: float = 0.0, high: float = 1.0) -> dict:
    """Counts of values in `bins` equal bins over [low, high] (the last bin includes `high`)."""
    edges = [low + (high - low) * i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        i = min(max(math.floor((v - low) / (high - low) * bins), 0), bins - 1)
        counts[i] += 1
    return {"edges": [round(e, 6) for e in edges], "counts": counts}


# --- feature-space metrics (Palette §5: classification accuracy, FID-style, perceptual distance) ---


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Share of rows whose highest logit is the label (labels < 0 are not counted; None if none is)."""
    known = labels >= 0
    if not bool(known.any()):
        return None
    return float((logits[known].argmax(dim=1) == labels[known]).double().mean())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D).

    ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^1/2). With centred data A and B,
    S_a S_b has the eigenvalues of C C^T for C = A B^T / sqrt((N-1)(M-1)), so the trace of its
    square root is the nuclear norm of C: exact, and cheap when N, M are smaller than D.
    """
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples per set")
    a, b = a.double(), b.double()
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    cross = torch.linalg.matrix_norm(ca @ cb.T, ord="nuc") / math.sqrt(na * nb)
    value = (a.mean(0) - b.mean(0)).square().sum() + ca.square().sum() / na + cb.square().sum() / nb - 2 * cross
    return float(value.clamp(min=0))


def kernel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 (KID)."""
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the kernel distance needs at least 2 samples per set")
    a, b = a.double(), b.double()
    d = a.shape[1]
    kaa, kbb, kab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    n, m = a.shape[0], b.shape[0]
    value = ((kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
             - 2 * kab.mean())
    return float(value)


def perceptual_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Euclidean distance between paired feature rows (Palette's PD)."""
    return float((a.double() - b.double()).norm(dim=1).mean())


def repetition(source: torch.Tensor, mask: torch.Tensor, k: int = 2, image: torch.Tensor | None = None,
               flat: float = 4.0) -> float:
    """The share of hole pixels copied from a source patch that the hole copies more than `k` times.

    `source` (H, W) holds, for every pixel, the flat index of the pixel its patch was copied from (an
    exemplar fill's field, completion.Completion.source); `mask` (1, H, W) the hole. A source pixel's copies
    are the hole pixels whose source lies in its 3 x 3 neighbourhood, over 9: 1 where a piece of the photo is
    copied once, n where it is tiled n times. With `image` (3, H, W), the source, only copies of textured
    patches count: a 7 x 7 patch whose luminance varies by less than `flat` of 255 (std) looks the same
    wherever it goes (sky, a wall), and reusing it repeats nothing a person can see. 0: no repetition."""
    hole = mask.reshape(-1) > 0.5
    if source.numel() != hole.numel():
        raise PaletteError(f"source {tuple(source.shape)} and mask {tuple(mask.shape)} differ in size")
    if not bool(hole.any()):
        return 0.0
    h, w = source.shape[-2:]
    used = source.reshape(-1)[hole].long().cpu()
    counts = torch.zeros(h * w, dtype=torch.float64).index_add_(0, used, torch.ones(len(used), dtype=torch.float64))
    copies = F.avg_pool2d(counts.view(1, 1, h, w), 3, stride=1, padding=1, count_include_pad=False).flatten()
    repeated = copies[used] > k
    if image is not None:
        luma = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).double().cpu()[None, None] * 127.5
        mean = F.avg_pool2d(luma, 7, stride=1, padding=3, count_include_pad=False)
        std = (F.avg_pool2d(luma**2, 7, stride=1, padding=3, count_include_pad=False) - mean**2).clamp(min=0).sqrt()
        repeated &= std.flatten()[used] >= flat
    return float(repeated.double().mean())
