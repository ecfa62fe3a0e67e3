"""Classifier-free guidance over the encoder's features, plain and normalized (PITI, Eq. 6-8)."""

from __future__ import annotations

import pytest
import torch

from palette_cli import config as cfg
from palette_cli import features
from palette_cli.checkpoint import build_network
from palette_cli.errors import PaletteError
from palette_cli.guidance import Guided, guide
from palette_cli.train import with_encoder

from conftest import randomize

CONFIG = with_encoder(cfg.ModelConfig(unet=cfg.PRESETS["tiny"], image_size=32), features.NAME)


@pytest.fixture(scope="module")
def network():
    return randomize(build_network(CONFIG))


def test_guide_plain_and_normalized():
    g = torch.Generator().manual_seed(0)
    eps_c, eps_null = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    assert torch.equal(guide(eps_c, eps_null, 0.0, normalized=False), eps_c)
    assert torch.allclose(guide(eps_c, eps_null, 2.0, normalized=False), 3 * eps_c - 2 * eps_null)
    out = guide(eps_c, eps_null, 4.0)
    # The normalized form keeps each sample's mean and std of the conditional prediction ...
    assert torch.allclose(out.mean(dim=(1, 2, 3)), eps_c.mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(out.std(dim=(1, 2, 3)), eps_c.std(dim=(1, 2, 3)), atol=1e-5)
    # ... while its direction is the plain guided one.
    plain = guide(eps_c, eps_null, 4.0, normalized=False)
    assert torch.nn.functional.cosine_similarity((out - out.mean()).flatten(), (plain - plain.mean()).flatten(),
                                                 dim=0) > 0.99


def test_weight_zero_is_the_plain_conditional_call(network):
    x, gamma = torch.randn(2, 6, 32, 32), torch.tensor([0.2, 0.7])
    fmap = torch.rand(2, features.FEATURES, 8, 8)
    with torch.no_grad():
        assert torch.equal(Guided(network, {"features": fmap}, 0.0, "x0")(x, gamma), network(x, gamma, fmap))


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_plain_guidance_is_the_same_in_every_parameterisation(network, objective):
    # Guiding eps and converting back equals guiding the network's own output: the conversions are
    # linear in the prediction at fixed x_t and gamma.
    x, gamma = torch.randn(2, 6, 32, 32), torch.tensor([0.3, 0.8])
    fmap = torch.rand(2, features.FEATURES, 8, 8)
    with torch.no_grad():
        c, null = network(x, gamma, fmap), network(x, gamma, torch.zeros_like(fmap))
        guided = Guided(network, {"features": fmap}, 1.5, objective, normalized=False)(x, gamma)
    assert torch.allclose(guided, c + 1.5 * (c - null), atol=2e-4)


def test_guidance_needs_a_diffusion_model(network):
    with pytest.raises(PaletteError, match="regression"):
        Guided(network, {"features": torch.zeros(1, 1280, 8, 8)}, 1.0, "regression")
