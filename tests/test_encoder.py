"""A frozen pretrained encoder conditioning the UNet (PITI's semantic prior): config, network,
training data, training, finetuning from a model without one, and inference on every task."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from palette_cli import config as cfg
from palette_cli import features, pipeline, tasks
from palette_cli.tasks.colorize import to_gray
from palette_cli.tasks.inpaint import center_mask
from palette_cli.checkpoint import build_network, load_model, save_model
from palette_cli.devices import native_bf16, resolve_precision
from palette_cli.data import random_crop, random_crop_view
from palette_cli.errors import PaletteError
from palette_cli.train import TrainConfig, _grown, finetune, train, with_encoder
from palette_cli.unet import UNet

from conftest import DATA, make_tiny_model, randomize

ENCODED = with_encoder(cfg.ModelConfig(unet=cfg.PRESETS["tiny"], image_size=32), features.NAME)


def test_config_names_the_encoder_and_old_configs_are_unchanged():
    data = cfg.to_dict(ENCODED)
    assert data["encoder"] == {"name": "efficientnet-lite0", "sha256": features.SHA256, "size": 256, "dropout": 0.1,
                               "guidance": 0.0}
    assert data["unet"]["encoder_channels"] == features.FEATURES
    assert cfg.from_dict(json.loads(json.dumps(data))) == ENCODED
    plain = cfg.to_dict(cfg.ModelConfig())
    assert "encoder" not in plain and "encoder_channels" not in plain["unet"]  # older readers still load it
    assert cfg.from_dict(plain).encoder is None
    with pytest.raises(PaletteError, match="encoder"):
        cfg.from_dict({**data, "encoder": "efficientnet-lite0"})
    with pytest.raises(PaletteError, match="unknown encoder"):
        with_encoder(cfg.ModelConfig(), "resnet50")


def test_features_enter_through_zero_initialised_projections():
    torch.manual_seed(0)
    network = UNet(ENCODED.unet).eval()
    x, gamma = torch.randn(2, 6, 32, 32), torch.tensor([0.3, 0.9])
    fmap = torch.rand(2, features.FEATURES, 8, 8)
    with torch.no_grad():
        before = network(x, gamma)
        assert torch.equal(network(x, gamma, fmap), before)  # a new encoder changes nothing yet
        randomize(network)
        null, seen = network(x, gamma), network(x, gamma, fmap)
        assert torch.equal(network(x, gamma, torch.zeros_like(fmap)), null)  # zeros are the null condition
        assert (seen - null).abs().max() > 1e-3
        # The spatial map matters, not only its mean: flip it and the output changes.
        assert (network(x, gamma, fmap.flip(-1)) - seen).abs().max() > 1e-4
    # A network without an encoder ignores features.
    plain = UNet(cfg.PRESETS["tiny"]).eval()
    with torch.no_grad():
        assert torch.equal(plain(x, gamma, fmap), plain(x, gamma))


def test_adding_an_encoder_to_trained_weights_keeps_the_network_as_it_was():
    plain_config = cfg.ModelConfig(unet=cfg.PRESETS["tiny"], image_size=32)
    plain = build_network(plain_config)
    randomize(plain)
    grown_config = with_encoder(plain_config, features.NAME)
    grown = build_network(grown_config, _grown(grown_config, plain.state_dict(), "test"))
    x, gamma = torch.randn(1, 6, 32, 32), torch.tensor([0.5])
    with torch.no_grad():
        assert torch.equal(grown(x, gamma, torch.rand(1, features.FEATURES, 8, 8)), plain(x, gamma))


def test_training_view_shows_the_crop_at_more_pixels():
    img = Image.open(DATA / "kodim23-96.png").convert("RGB").resize((384, 256))
    for crop in ("fit", "native"):
        gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        small, view = random_crop_view(img, 32, gen_a, crop=crop, view_size=128)
        assert torch.equal(small, random_crop(img, 32, gen_b, crop=crop))  # same draws as without a view
        assert view.shape == (3, 128, 128)
        shrunk = torch.nn.functional.interpolate(view[None], size=(32, 32), mode="area")[0]
        assert (shrunk - small).abs().mean() < 0.05  # the same region (and flip)


def test_encoder_view_is_the_tasks_base_image():
    g = torch.Generator().manual_seed(0)
    region = torch.rand(3, 128, 128, generator=g) * 2 - 1
    cond = torch.rand(3, 32, 32, generator=g) * 2 - 1
    gray = tasks.encoder_view("colorize", region, cond, None, 64)
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    assert tasks.encoder_view("jpeg", region, cond, None, 64).shape == (3, 64, 64)
    mask = center_mask(32, 32)
    filled = tasks.encoder_view("inpaint", region, cond, mask, 64)
    hole = center_mask(64, 64)[0].bool()
    # The hole holds one colour (the mean of the known pixels): nothing of the hidden content.
    assert filled[:, hole].std(dim=1).max() < 1e-6
    with pytest.raises(PaletteError, match="needs a mask"):
        tasks.encoder_view("inpaint", region, cond, None, 64)


@pytest.fixture(scope="module")
def encoded_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("encoded") / "run"
    config = TrainConfig(tasks=tuple(tasks.TASKS), preset="tiny", image_size=32, batch_size=4, steps=2, warmup=1,
                         lr=1e-3, encoder=features.NAME, sample_every=2, sample_count=4, save_every=2,
                         precision="fp32")
    result = train([DATA], run, config)
    return result


def test_training_with_an_encoder_writes_a_model_that_names_it(encoded_run):
    assert encoded_run.step == 2
    written = json.loads((encoded_run.model_dir / "config.json").read_text())
    assert written["encoder"]["name"] == features.NAME and written["unet"]["encoder_channels"] == 1280
    assert (encoded_run.run_dir / "samples" / "step-000000002.png").is_file()
    # The encoder's weights stay out of model.safetensors.
    from safetensors.torch import load_file

    keys = load_file(encoded_run.model_dir / "model.safetensors")
    assert not any(k.startswith("_blocks") for k in keys) and any(k.startswith("feature_embed") for k in keys)


@pytest.mark.parametrize("task, options", [("colorize", {}), ("jpeg", {"quality": 20}),
                                           ("inpaint", {"mask_box": (20, 10, 60, 40)}),
                                           ("uncrop", {"side": "right", "ratio": 0.5})])
def test_a_model_with_an_encoder_restores_every_task(encoded_run, task, options):
    model = load_model(encoded_run.model_dir, device="cpu")
    photo = DATA / "kodim05-96.png"
    prep = pipeline.prepare(model, task, photo, **options)
    assert prep.view is not None and prep.view.shape == (len(prep.cond), 3, 256, 256)
    outputs = pipeline.restore(model, task, photo, seed=1, **options)
    assert outputs[0].size[1] == 64
    again = pipeline.restore(model, task, photo, seed=1, **options)
    assert outputs[0].tobytes() == again[0].tobytes()
    with pytest.raises(PaletteError, match="sees its input through"):
        pipeline.restore_tensors(model, prep.cond, prep.mask)


def test_the_encoder_changes_what_the_model_makes(encoded_run, tmp_path):
    # Same weights, projections made non-zero: the colorization depends on what the encoder sees.
    model = load_model(encoded_run.model_dir, device="cpu")
    with torch.no_grad():
        model.network.feature_map_in.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    prep = pipeline.prepare(model, "colorize", DATA / "kodim23-96.png")
    a = pipeline.restore_tensors(model, prep.cond, views=prep.view, seed=0)
    b = pipeline.restore_tensors(model, prep.cond, views=prep.view.flip(-1), seed=0)
    assert (a - b).abs().max() > 1e-4


def test_finetune_adds_an_encoder_to_a_model_without_one(tmp_path):
    base = make_tiny_model(tmp_path / "base", tasks=("colorize",))
    config = TrainConfig(tasks=("colorize",), image_size=32, batch_size=2, steps=1, warmup=1, lr=1e-9,
                         encoder=features.NAME, sample_every=0, precision="fp32")
    result = finetune(base, [DATA], tmp_path / "ft", config)
    grown = load_model(result.model_dir, device="cpu")
    assert grown.config.encoder is not None
    state = grown.network.state_dict()
    assert float(state["feature_map_in.weight"].abs().max()) < 1e-6  # starts at zero, barely moved


def test_precision_auto_follows_the_processor():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, training=True) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu, training=True) == "fp32"


def test_saved_configs_round_trip_through_save_model(tmp_path):
    save_model(tmp_path / "m", ENCODED, build_network(ENCODED))
    assert load_model(tmp_path / "m", device="cpu").config == ENCODED


def test_perceptual_loss_adds_a_feature_distance_that_trains_the_network():
    from palette_cli.diffusion import gammas, training_loss

    network = build_network(cfg.ModelConfig(unet=cfg.PRESETS["tiny"], image_size=32)).train()
    randomize(network)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    cond = to_gray(x0)
    classifier = features.load()
    calls = []

    def perceptual(x_hat, x):
        calls.append((x_hat.shape, x.shape))
        return features.perceptual_distance(classifier, x_hat, x, 64)

    kw = dict(train_gammas=gammas(cfg.TRAIN_SCHEDULE), objective="x0", residual=True)
    plain = training_loss(network, x0, cond, generator=torch.Generator().manual_seed(1), **kw)
    total = training_loss(network, x0, cond, generator=torch.Generator().manual_seed(1), perceptual=perceptual, **kw)
    assert calls == [((2, 3, 32, 32), (2, 3, 32, 32))]
    assert total.item() > plain.item() + 1e-4
    total.backward()
    assert network.out[2].weight.grad.abs().max() > 0
    assert all(p.grad is None for p in classifier.parameters())  # the classifier stays frozen
    # Identical images are at distance zero.
    assert float(features.perceptual_distance(classifier, x0, x0, 64)) == 0.0
