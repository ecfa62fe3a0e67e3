"""Samplers: one pure function each, reading like the paper.

Every sampler takes the network, the source `cond` (B, 3, H, W), the gammas of the schedule it
respaces, a number of steps, one `torch.Generator` per sample and an optional `mask`; it returns
x0 in [-1, 1]. Noise for sample i is drawn from generators[i] only (on the CPU, then moved), so
sample i is the same whatever the batch size, the other samples in the batch, or the device.
For masked tasks the known pixels (taken from `cond`) are kept at every step and pasted at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .diffusion import predict_eps, predict_x0, regression_input
from .errors import PaletteError

Callback = Callable[[int, int], None]  # (steps done, steps total)


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator of sample `index` of a run seeded with `seed`."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFFFFFFFFFFFFFF)


def randn_like_per_sample(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Standard Gaussian noise shaped like x, item i drawn from generators[i]."""
    if len(generators) != x.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
    noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
    return noise.to(device=x.device, dtype=x.dtype)


def respace(gammas: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` noise levels taken evenly from a schedule, the last (noisiest) one always included."""
    n = len(gammas)
    if not 1 <= steps <= n:
        raise PaletteError(f"steps must be between 1 and {n}, got {steps}")
    idx = np.unique(np.round(np.linspace(0, n - 1, steps)).astype(int))
    return gammas[torch.from_numpy(idx)]


def _denoise(network, cond, x_t, gamma, clip):
    """x0 and eps predicted at level gamma (a float), known pixels of x_t already in place."""
    g = torch.full((x_t.shape[0],), float(gamma), device=x_t.device)
    eps = network(torch.cat([cond, x_t], dim=1), g.to(x_t.dtype)).to(x_t.dtype)
    x0 = predict_x0(x_t, g, eps)
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = predict_eps(x_t, g, x0)
    return x0, eps


def _keep_known(x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask + cond * (1 - mask)


@torch.no_grad()
def ddpm(network, cond: torch.Tensor, gammas: torch.Tensor, *, steps: int,
         generators: Sequence[torch.Generator], mask: torch.Tensor | None = None,
         clip: bool = True, callback: Callback | None = None) -> torch.Tensor:
    """Ancestral sampling, Algorithm 2 of Palette, on `steps` levels respaced from `gammas`."""
    g = respace(gammas, steps).double()
    g_prev = torch.cat([g.new_ones(1), g[:-1]])
    x = _keep_known(randn_like_per_sample(cond, generators), cond, mask)
    for i in reversed(range(len(g))):
        alpha = g[i] / g_prev[i]
        x0, _ = _denoise(network, cond, x, g[i], clip)
        # Posterior mean of q(x_{t-1} | x_t, x0); with the unclipped x0 this is exactly
        # Algorithm 2's 1/sqrt(alpha) (x_t - (1 - alpha) / sqrt(1 - gamma) eps).
        c0 = g_prev[i].sqrt() * (1 - alpha) / (1 - g[i])
        ct = alpha.sqrt() * (1 - g_prev[i]) / (1 - g[i])
        x = c0.item() * x0 + ct.item() * x
        if i > 0:  # Add noise of variance 1 - alpha (Algorithm 2's sigma_t^2 = beta_t).
            x = x + (1 - alpha).sqrt().item() * randn_like_per_sample(x, generators)
        x = _keep_known(x, cond, mask)
        if callback:
            callback(len(g) - i, len(g))
    return _keep_known(x.clamp(-1, 1), cond, mask)


@torch.no_grad()
def ddim(network, cond: torch.Tensor, gammas: torch.Tensor, *, steps: int,
         generators: Sequence[torch.Generator], mask: torch.Tensor | None = None, eta: float = 0.0,
         clip: bool = True, callback: Callback | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12); eta = 0 is deterministic given the starting noise."""
    g = respace(gammas, steps).double()
    g_prev = torch.cat([g.new_ones(1), g[:-1]])
    x = _keep_known(randn_like_per_sample(cond, generators), cond, mask)
    for i in reversed(range(len(g))):
        x0, eps = _denoise(network, cond, x, g[i], clip)
        sigma = eta * ((1 - g_prev[i]) / (1 - g[i]) * (1 - g[i] / g_prev[i])).sqrt()
        # Step to level g_prev along the predicted direction, plus fresh noise of size sigma.
        x = g_prev[i].sqrt().item() * x0 + (1 - g_prev[i] - sigma**2).clamp(min=0).sqrt().item() * eps
        if i > 0 and eta > 0:
            x = x + sigma.item() * randn_like_per_sample(x, generators)
        x = _keep_known(x, cond, mask)
        if callback:
            callback(len(g) - i, len(g))
    return _keep_known(x.clamp(-1, 1), cond, mask)


@torch.no_grad()
def regression(network, cond: torch.Tensor, gammas: torch.Tensor | None = None, *, steps: int = 1,
               generators: Sequence[torch.Generator] = (), mask: torch.Tensor | None = None,
               callback: Callback | None = None, **_) -> torch.Tensor:
    """The one-pass regression baseline: a single network call predicts x0."""
    x0 = network(*regression_input(cond)).to(cond.dtype).clamp(-1, 1)
    if callback:
        callback(1, 1)
    return _keep_known(x0, cond, mask)


SAMPLERS = {"ddpm": ddpm, "ddim": ddim}


def sample(network, cond: torch.Tensor, gammas: torch.Tensor, *, sampler: str, steps: int,
           generators: Sequence[torch.Generator], mask: torch.Tensor | None = None,
           objective: str = "eps", callback: Callback | None = None) -> torch.Tensor:
    """Dispatch to a sampler by name; regression models always take their single pass."""
    if objective == "regression":
        return regression(network, cond, mask=mask, callback=callback)
    try:
        fn = SAMPLERS[sampler]
    except KeyError:
        raise PaletteError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}") from None
    return fn(network, cond, gammas, steps=steps, generators=generators, mask=mask, callback=callback)
