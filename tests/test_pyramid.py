"""The encoder's finer maps (strides 4, 8, 16) entering the first UNet levels: packing, config,
growth onto a trained model, training and inference."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from palette_cli import config as cfg
from palette_cli import features, pipeline
from palette_cli.checkpoint import build_network, load_model, save_model
from palette_cli.errors import PaletteError
from palette_cli.train import TrainConfig, _grown, finetune, with_encoder, with_pyramid
from palette_cli.unet import UNet

from conftest import DATA, randomize

ENCODED = with_encoder(cfg.ModelConfig(unet=cfg.PRESETS["tiny"], image_size=32), features.NAME)
PYRAMID = with_pyramid(ENCODED)


def _views(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_packed_pyramid_holds_the_final_map_and_the_finer_maps_losslessly():
    network = features.load()
    views = _views()
    packed = features.encode(network, views, 256, pyramid=True)
    final = features.encode(network, views, 256)
    assert packed.shape == (2, 1280 + 24 * 64 + 40 * 16 + 112 * 4, 8, 8)
    assert torch.equal(packed[:, :1280], final)
    with torch.no_grad():
        _, *taps = network.feature_maps(features.preprocess(views, 256), features.PYRAMID_BLOCKS)
    unpacked = features.unpack_pyramid(packed, 1280, features.PYRAMID_CHANNELS)
    for tap, back, stride in zip(taps, unpacked, features.PYRAMID_STRIDES):
        assert back.shape == (2, tap.shape[1], 256 // stride, 256 // stride)
        assert torch.allclose(back, tap.float(), atol=1e-5)


def test_config_declares_the_pyramid_and_refuses_one_without_an_encoder():
    data = json.loads(json.dumps(cfg.to_dict(PYRAMID)))
    levels = len(PYRAMID.unet.channel_mults)  # the tiny preset has fewer levels than finer maps
    assert data["unet"]["pyramid_channels"] == [24, 40, 112][:levels]
    assert cfg.from_dict(json.loads(json.dumps(data))) == PYRAMID
    assert "pyramid_channels" not in cfg.to_dict(ENCODED)["unet"]  # older configs are written as before
    plain = cfg.to_dict(cfg.ModelConfig(unet=cfg.PRESETS["tiny"]))
    with pytest.raises(PaletteError, match="pyramid_channels"):
        cfg.from_dict({**plain, "unet": {**plain["unet"], "pyramid_channels": [24]}})
    with pytest.raises(PaletteError, match="need an encoder"):
        with_pyramid(cfg.ModelConfig(unet=cfg.PRESETS["tiny"]))


def test_finer_maps_enter_through_zero_initialised_projections_and_then_matter():
    torch.manual_seed(0)
    plain = randomize(build_network(ENCODED))
    grown = build_network(PYRAMID, _grown(PYRAMID, plain.state_dict(), "test")).eval()
    plain.eval()
    packed = features.encode(features.load(), _views(), 256, pyramid=True)
    x, gamma = torch.randn(2, 6, 32, 32), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        assert torch.equal(grown(x, gamma, packed), plain(x, gamma, packed[:, :1280]))  # starts as it was
        randomize(grown, seed=3)
        seen = grown(x, gamma, packed)
        # The finer maps now change the output, beyond what the final map alone does.
        alone = grown(x, gamma, torch.cat([packed[:, :1280], torch.zeros_like(packed[:, 1280:])], 1))
        assert (seen - alone).abs().max() > 1e-3
        # The null condition: zeros of the packed size and the final map's size agree.
        assert torch.allclose(grown(x, gamma, torch.zeros_like(packed)), grown(x, gamma), atol=1e-6)
        # At twice the training size the maps are resized onto the larger levels.
        assert grown(torch.randn(2, 6, 64, 64), gamma, packed).shape == (2, 3, 64, 64)


def test_finetune_grows_a_pyramid_that_restores_photos(tmp_path):
    base = save_model(tmp_path / "base", dataclasses.replace(ENCODED, tasks=("colorize",), steps=2),
                      randomize(build_network(ENCODED)))
    config = TrainConfig(tasks=("colorize",), image_size=32, batch_size=2, steps=2, warmup=1, lr=1e-3,
                         pyramid=True, sample_every=0, precision="fp32")
    result = finetune(base, [DATA], tmp_path / "ft", config)
    model = load_model(result.model_dir, device="cpu")
    assert model.config.unet.pyramid_channels == (24, 40, 112)[:len(ENCODED.unet.channel_mults)]
    assert float(model.network.pyramid_in[0].weight.detach().abs().max()) > 0  # trained, no longer zero
    outputs = pipeline.restore(model, "colorize", DATA / "kodim05-96.png", seed=1)
    again = pipeline.restore(model, "colorize", DATA / "kodim05-96.png", seed=1)
    assert outputs[0].size == (96, 64) and outputs[0].tobytes() == again[0].tobytes()


def test_unet_without_pyramid_ignores_extra_channels():
    network = UNet(ENCODED.unet).eval()
    randomize(network)
    packed = features.encode(features.load(), _views(1), 256, pyramid=True)
    x, gamma = torch.randn(2, 6, 32, 32), torch.tensor([0.5, 0.5])
    with torch.no_grad():
        assert torch.equal(network(x, gamma, packed), network(x, gamma, packed[:, :1280]))
