"""Classifier-free guidance over a model's condition, in PITI's normalized form (Wang et al. 2022, Eq. 6-8).

A network trained with its condition dropped part of the time (the encoder's features zeroed) predicts
both with the condition (c) and without it (null). Guidance with weight w pushes the prediction away
from the unconditional one, in noise space:

    eps_hat   = eps_c + w (eps_c - eps_null)                       (plain)
    eps_tilde = (sigma / sigma_hat) (eps_hat - mu_hat) + mu         (normalized)

where mu, sigma are the mean and std of eps_c and mu_hat, sigma_hat those of eps_hat, per sample: the
normalized form keeps the noise statistics the sampler expects, so a strong w does not over-saturate.
x0 and v networks are converted to eps and back (`diffusion.split_prediction` /
`diffusion.prediction_target`), so every objective is guided the same way. w = 0 is a single plain call.
"""

from __future__ import annotations

import torch

from .diffusion import prediction_target, split_prediction
from .errors import PaletteError


def guide(eps_c: torch.Tensor, eps_null: torch.Tensor, weight: float, normalized: bool = True) -> torch.Tensor:
    """Combine conditional and unconditional noise predictions (B, C, H, W)."""
    eps = eps_c + weight * (eps_c - eps_null)
    if not normalized:
        return eps
    dims = tuple(range(1, eps.dim()))
    mu, sigma = eps_c.mean(dims, keepdim=True), eps_c.std(dims, keepdim=True)
    mu_hat, sigma_hat = eps.mean(dims, keepdim=True), eps.std(dims, keepdim=True)
    return sigma / sigma_hat.clamp(min=1e-12) * (eps - mu_hat) + mu


class Guided:
    """A network call `(x, gamma) -> prediction` with classifier-free guidance over `condition`, the
    network's keyword inputs (an encoder's `features`, colour `hints`, a `reference`), all of which
    are zeroed together for the unconditional prediction.

    Conditional and unconditional predictions come from one batched call of twice the size."""

    def __init__(self, network, condition: dict[str, torch.Tensor], weight: float, objective: str,
                 normalized: bool = True):
        if objective == "regression" and weight:
            raise PaletteError("guidance needs a diffusion model; a regression model makes one prediction")
        self.network, self.condition, self.weight = network, condition, weight
        self.objective, self.normalized = objective, normalized

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        if self.weight == 0:
            return self.network(x, gamma, **self.condition)
        b = x.shape[0]
        gamma = gamma.reshape(-1).expand(b)
        both = self.network(torch.cat([x, x]), torch.cat([gamma, gamma]),
                            **{k: torch.cat([v, torch.zeros_like(v)]) for k, v in self.condition.items()})
        pred_c, pred_null = both[:b].float(), both[b:].float()
        x_t, g = x[:, -pred_c.shape[1]:].float(), gamma.float()
        eps_c = split_prediction(pred_c, x_t, g, self.objective)[1]
        eps_null = split_prediction(pred_null, x_t, g, self.objective)[1]
        eps = guide(eps_c, eps_null, self.weight, self.normalized)
        x0 = split_prediction(eps, x_t, g, "eps")[0]
        return prediction_target(self.objective, x0, eps, g).to(both.dtype)


def conditioned(network, condition: dict[str, torch.Tensor], weight: float, objective: str, normalized: bool = True):
    """The network call over its `condition` (keyword inputs): plain without any, `Guided` with some;
    one item at a time under CPU autocast (`OneByOne`)."""
    if torch.is_autocast_enabled("cpu") and next(network.parameters()).device.type == "cpu":
        network = OneByOne(network)
    return Guided(network, condition, weight, objective, normalized) if condition else network


class OneByOne:
    """A network called on one item at a time. Half-precision CPU kernels round differently for
    different batch shapes (about 3% of 8-bit values moved by one level between batch 1 and 8), so
    under CPU autocast each item is computed alone: a photo's output then depends on nothing else
    in the run. CPU batches gain little anyway."""

    def __init__(self, network):
        self.network = network

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor, **condition: torch.Tensor) -> torch.Tensor:
        gamma = gamma.reshape(-1).expand(x.shape[0])
        return torch.cat([self.network(x[i:i + 1], gamma[i:i + 1], **{k: v[i:i + 1] for k, v in condition.items()})
                          for i in range(x.shape[0])])

