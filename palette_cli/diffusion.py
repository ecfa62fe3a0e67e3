"""Noise schedules, the forward process and the training loss of Palette (Saharia et al. 2022).

Notation (Palette, Appendix A):
    x0      clean target image, (B, 3, H, W) in [-1, 1]
    cond    source image (gray, masked+noise, JPEG...), same shape as x0
    beta_t  per-step noise variance of the schedule; alpha_t = 1 - beta_t
    gamma_t cumulative product of alpha up to t: the noise level, 1 = clean, ~0 = pure noise
    x_t     noisy target, sqrt(gamma) * x0 + sqrt(1 - gamma) * eps        (Eq. 4)
    eps     standard Gaussian noise
    v       sqrt(gamma) * eps - sqrt(1 - gamma) * x0 (Salimans & Ho 2022)
    mask    (B, 1, H, W), 1 where pixels are generated (inpaint, uncrop), 0 where known
    base    with residual diffusion, the model diffuses x0 - base(cond) instead of x0

The network f(cond, x_t, gamma) predicts the `objective`: eps (Palette), x0 or v; "regression"
is the paper's one-pass baseline, which predicts x0 from the source alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import OBJECTIVES, ScheduleConfig
from .errors import PaletteError


def betas(schedule: ScheduleConfig) -> torch.Tensor:
    """The beta_t of a schedule, float64, shape (num_steps,)."""
    n = schedule.num_steps
    if schedule.kind == "linear":
        return torch.linspace(schedule.beta_start, schedule.beta_end, n, dtype=torch.float64)
    if schedule.kind == "cosine":
        # Nichol & Dhariwal 2021, Eq. 17: gamma(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), normalised.
        t = torch.arange(n + 1, dtype=torch.float64) / n
        g = torch.cos((t + schedule.cosine_s) / (1 + schedule.cosine_s) * math.pi / 2) ** 2
        g = g / g[0]
        return (1 - g[1:] / g[:-1]).clamp(max=0.999)
    raise PaletteError(f"unknown schedule kind {schedule.kind!r}; use 'linear' or 'cosine'")


def gammas(schedule: ScheduleConfig) -> torch.Tensor:
    """gamma_t = prod_{s<=t} alpha_s, float64, decreasing from ~1 to ~0."""
    return torch.cumprod(1 - betas(schedule), dim=0)


def _bcast(gamma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in the dtype of `like`."""
    return gamma.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def q_sample(x0: torch.Tensor, gamma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noise x0 to level gamma (Eq. 4): sqrt(gamma) x0 + sqrt(1 - gamma) eps."""
    g = _bcast(gamma, x0)
    return g.sqrt() * x0 + (1 - g).sqrt() * noise


def predict_x0(x_t: torch.Tensor, gamma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Invert Eq. 4 given predicted noise (Palette, App. A, Eq. 8)."""
    g = _bcast(gamma, x_t)
    return (x_t - (1 - g).sqrt() * eps) / g.sqrt()


def predict_eps(x_t: torch.Tensor, gamma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Noise implied by x_t and an estimate of x0."""
    g = _bcast(gamma, x_t)
    return (x_t - g.sqrt() * x0) / (1 - g).sqrt()


def split_prediction(pred: torch.Tensor, x_t: torch.Tensor, gamma: torch.Tensor, objective: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) implied by the network output for each objective."""
    g = _bcast(gamma, x_t)
    if objective == "eps":
        return predict_x0(x_t, gamma, pred), pred
    if objective == "x0":
        return pred, predict_eps(x_t, gamma, pred)
    if objective == "v":  # x0 = sqrt(g) x_t - sqrt(1-g) v,  eps = sqrt(1-g) x_t + sqrt(g) v
        return g.sqrt() * x_t - (1 - g).sqrt() * pred, (1 - g).sqrt() * x_t + g.sqrt() * pred
    raise PaletteError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


def prediction_target(objective: str, x0: torch.Tensor, eps: torch.Tensor, gamma: torch.Tensor
                      ) -> torch.Tensor:
    """What the network is trained to output at level gamma."""
    if objective == "eps":
        return eps
    if objective == "x0":
        return x0
    if objective == "v":
        g = _bcast(gamma, x0)
        return g.sqrt() * eps - (1 - g).sqrt() * x0
    raise PaletteError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


def fill_noise(img: Tensor, mask: Tensor, generator: torch.Generator) -> Tensor:
    """Replace the hole with standard Gaussian noise: img * (1 - mask) + mask * noise."""
    noise = torch.randn(img.shape, generator=generator, device=generator.device, dtype=img.dtype)
    noise = noise.to(img.device)
    mask = mask.to(device=img.device, dtype=img.dtype)
    return img * (1 - mask) + mask * noise


def residual_base(cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """What residual diffusion adds its output to: the source itself (gray for colorize, the JPEG for
    jpeg), with the hole of inpaint/uncrop filled by the mean colour of the known pixels."""
    if mask is None:
        return cond
    known = 1 - mask
    mean = (cond * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
    return cond * known + mean * mask


def sample_train_gamma(train_gammas: torch.Tensor, batch: int, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
    """Continuous noise levels for training: t ~ U{1..T}, gamma ~ U(gamma_t, gamma_{t-1}) (WaveGrad)."""
    upper = torch.cat([train_gammas.new_ones(1), train_gammas[:-1]])
    t = torch.randint(0, len(train_gammas), (batch,), generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return (train_gammas[t] + u * (upper[t] - train_gammas[t])).float()


def regression_input(cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input of the one-pass regression baseline: the source in both halves, gamma = 1."""
    return torch.cat([cond, cond], dim=1), cond.new_ones(cond.shape[0])


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of err over the generated region only (all pixels when mask is None)."""
    if mask is None:
        return err.mean()
    mask = mask.expand_as(err)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def training_loss(network: torch.nn.Module, x0: torch.Tensor, cond: torch.Tensor, *,
                  train_gammas: torch.Tensor, mask: torch.Tensor | None = None, loss: str = "l2",
                  objective: str = "eps", residual: bool = False,
                  generator: torch.Generator | None = None,
                  condition: dict[str, torch.Tensor] | None = None,
                  perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Palette's training loss (Eq. 7): || f(cond, x_t, gamma) - target ||, on the mask if given.

    The target is eps for Palette's objective, x0 or v otherwise; with `residual` the diffused
    image is x0 - residual_base(cond, mask). `condition` (keyword arguments of the network: a frozen
    encoder's map of the base image, colour hints, a reference vector) goes to every network call.
    `perceptual(x0_hat, x0)`, when given, is
    added to the loss: a distance between the predicted and the true clean image (ResShift-style)."""
    if condition:
        network = functools.partial(network, **condition)
    base = residual_base(cond, mask) if residual else None
    if base is not None:
        x0 = x0 - base
    if objective == "regression":
        pred = network(*regression_input(cond))
        target = x0
        x0_hat = pred
    elif objective in OBJECTIVES:
        gamma = sample_train_gamma(train_gammas, x0.shape[0], generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        x_t = q_sample(x0, gamma, noise)
        if mask is not None:  # known pixels stay clean, as at sampling time
            x_t = x_t * mask + x0 * (1 - mask)
        pred = network(torch.cat([cond, x_t], dim=1), gamma)
        target = prediction_target(objective, x0, noise, gamma)
        x0_hat = split_prediction(pred.float(), x_t.float(), gamma, objective)[0] if perceptual else None
    else:
        raise PaletteError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    pred = pred.float()
    if loss == "l2":
        err = F.mse_loss(pred, target.float(), reduction="none")
    elif loss == "l1":
        err = F.l1_loss(pred, target.float(), reduction="none")
    else:
        raise PaletteError(f"unknown loss {loss!r}; use 'l2' or 'l1'")
    value = masked_mean(err, mask)
    if perceptual is not None:
        shift = 0 if base is None else base
        value = value + perceptual(x0_hat.float() + shift, x0.float() + shift)
    return value
