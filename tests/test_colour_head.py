"""The colour head: chroma bins, Zhang et al.'s loss and annealed mean, the feature cache, training
from it, and a model directory that carries a head through load, restore and finetune."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from palette_cli import colour_head as H
from palette_cli import config as cfg
from palette_cli import feature_cache, features, images, train_head
from palette_cli.checkpoint import load_model, read_weights
from palette_cli.errors import PaletteError
from palette_cli.pipeline import resolve_sampling, restore

from conftest import DATA


def test_bins_are_the_occupied_cells_and_the_prior_counts_every_pixel():
    chroma = torch.zeros(1, 2, 10, 10)
    chroma[0, 0, :5] = 0.4  # half the pixels blue-ish, half gray
    centres, prior = H.fit_bins(chroma, min_share=0.01)
    assert len(centres) == 2
    assert prior.sum() == pytest.approx(1.0)
    assert sorted(prior.tolist()) == pytest.approx([0.5, 0.5])
    # the bin of (0.4, 0) holds (0.4, 0) within half a cell
    assert (centres - torch.tensor([0.4, 0.0])).norm(dim=1).min() <= H.GRID_STEP / 2 * math.sqrt(2)


def test_soft_encoding_puts_most_weight_on_the_nearest_bin():
    centres = H.grid_centres()
    chroma = torch.tensor([0.17, -0.33]).view(1, 2, 1, 1)
    idx, weights = H.soft_encode(chroma, centres)
    assert weights.sum().item() == pytest.approx(1.0)
    assert int(idx[0, 0, 0, 0]) == int(H.grid_cell(chroma)[0, 0, 0])
    assert weights[0, 0, 0, 0] == weights.max()


def test_annealed_mean_goes_from_the_mean_to_the_mode_as_t_falls():
    centres = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]])
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3])).view(1, 3, 1, 1)
    mean = H.annealed_mean(logits, centres, 1.0)[0, :, 0, 0]
    assert mean.tolist() == pytest.approx([0.25, 0.15], abs=1e-6)
    mode = H.annealed_mean(logits, centres, 0.01)[0, :, 0, 0]
    assert mode.tolist() == pytest.approx([0.5, 0.0], abs=1e-4)
    # dividing out a prior that favours bin 1 moves the colour towards bin 2
    prior = torch.log(torch.tensor([0.2, 0.6, 0.2]))
    adjusted = H.annealed_mean(logits, centres, 1.0, prior, adjust=1.0)[0, :, 0, 0]
    assert adjusted[1] > mean[1] and adjusted[0] < mean[0]


def test_rebalancing_weights_favour_rare_bins_with_unit_expectation():
    centres = torch.tensor([[0.0, 0.0], [0.8, 0.0], [0.0, 0.8]])
    prior = torch.tensor([0.9, 0.08, 0.02])
    w = H.rebalancing_weights(centres, prior, lam=0.5, sigma=0.01)
    assert float((prior * w).sum()) == pytest.approx(1.0, abs=1e-5)
    assert w[2] > w[1] > w[0]


def test_smooth_noise_moves_neighbours_together():
    field = H.smooth_noise((1, 4, 64, 64), 2, torch.Generator().manual_seed(0))
    near = (field[..., 1:] - field[..., :-1]).abs().mean()
    assert near < 0.1 * field.std()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A real cache of three Kodak crops, two views each (view 0: the whole photo)."""
    folder = tmp_path_factory.mktemp("cache")
    photos = [(DATA / name, 2, "kodak") for name in ("kodim03-96.png", "kodim05-96.png", "kodim23-96.png")]
    return feature_cache.build(folder, photos, batch_size=4, workers=0)


def test_cache_holds_the_encoder_maps_of_each_view(cache):
    assert len(cache) == 6
    entry = next(e for e in cache.entries if e["view"] == 0 and e["path"].endswith("kodim05-96.png"))
    i = cache.entries.index(entry)
    img = images.load_photo(entry["path"]).rgb
    view = feature_cache.render_view(img, entry["key"], 0)
    # view 0 is the whole photo squeezed to the encoder's size
    whole = np.asarray(img.resize((feature_cache.VIEW_SIZE,) * 2, Image.Resampling.BICUBIC, reducing_gap=3.0))
    assert np.array_equal(view.permute(1, 2, 0).numpy(), whole)
    network = features.folded(features.load())
    maps = feature_cache.encode_views(network, view[None])
    (s8, s16, s32), rgb = cache.batch(np.array([i]))
    for stored, fresh in zip((s8, s16, s32), maps):
        assert torch.allclose(stored, fresh.half().float(), atol=1e-3)
    assert tuple(rgb.shape) == (1, 3, 64, 64) and rgb.dtype == torch.uint8


def test_views_differ_and_are_the_same_every_time(cache):
    key = cache.entries[0]["key"]
    img = images.load_photo(cache.entries[0]["path"]).rgb
    assert torch.equal(feature_cache.render_view(img, key, 1), feature_cache.render_view(img, key, 1))
    assert not torch.equal(feature_cache.render_view(img, key, 0), feature_cache.render_view(img, key, 1))


def test_building_again_adds_only_missing_views(cache):
    photos = [(DATA / "kodim03-96.png", 3, "kodak")]
    grown = feature_cache.build(cache.folder, photos, batch_size=4, workers=0)
    assert len(grown) == 7
    assert sorted(e["view"] for e in grown.entries if e["path"].endswith("kodim03-96.png")) == [0, 1, 2]
    (before, *_), _ = cache.batch(np.arange(6))
    (after, *_), _ = grown.batch(np.arange(6))
    assert torch.equal(before, after)


def test_a_folder_without_cache_json_is_refused(tmp_path):
    with pytest.raises(PaletteError, match="not a feature cache"):
        feature_cache.FeatureCache(tmp_path)


@pytest.fixture(scope="module")
def head_run(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("head")
    config = train_head.HeadTrainConfig(steps=6, batch_size=4, warmup=1, channels=16, fine_channels=8,
                                        held_out=0.0, precision="fp32")
    events = []
    train_head.train_head(cache.folder, run, config, on_event=events.append, log_every=3, save_every=3)
    return run, events


def test_training_from_the_cache_lowers_the_loss_and_resumes_exactly(cache, head_run, tmp_path):
    run, events = head_run
    assert [e.step for e in events] == [3, 6]
    assert all(math.isfinite(e.loss) for e in events)
    state = torch.load(run / "head_state.pt", weights_only=False)
    assert state["step"] == 6
    # a run stopped at 3 steps and resumed to 6 ends where the straight run ended
    config = train_head.HeadTrainConfig(steps=6, batch_size=4, warmup=1, channels=16, fine_channels=8,
                                        held_out=0.0, precision="fp32")
    train_head.train_head(cache.folder, tmp_path, config, until=3, log_every=3, save_every=3)
    assert torch.load(tmp_path / "head_state.pt", weights_only=False)["step"] == 3
    train_head.train_head(cache.folder, tmp_path, config, resume=True, log_every=3, save_every=3)
    resumed = torch.load(tmp_path / "head_state.pt", weights_only=False)
    for k, v in state["head"].items():
        assert torch.allclose(v, resumed["head"][k], atol=1e-6), k


def test_a_head_with_its_own_encoder_tail_starts_as_the_head_it_grows_from_and_trains_it(cache, head_run, tmp_path):
    """A tail started from the encoder's weights makes the frozen encoder's final map from the stride-16 map:
    a tailed head made from a trained head gives that head's logits; training moves the tail too, and the
    model directory carries it."""
    from safetensors.torch import load_file

    run, _ = head_run
    init = load_file(run / "head.safetensors")
    config = train_head.HeadTrainConfig(steps=2, batch_size=4, warmup=1, held_out=0.0, precision="fp32",
                                        tail=True, tail_lr=0.5)
    tailed = train_head._HeadRun(cache.folder, tmp_path / "tailed", config, False, torch.device("cpu"), init)
    plain = H.ColourHead(H.HeadShape(len(init["centres"]), 16, 8))
    plain.load_state_dict(init)
    top = train_head._frozen_top(torch.device("cpu"))
    final, s8, s16, gray, _ = train_head._batch(tailed.cache, np.arange(4), top, torch.device("cpu"), None)
    with torch.no_grad():
        torch.testing.assert_close(tailed.head(None, s8, s16, gray), plain(final, s8, s16, gray), atol=2e-3, rtol=1e-3)
    before = {k: v.clone() for k, v in tailed.head.tail.state_dict().items()}
    tailed.train_step()
    tailed.train_step()
    tailed.save()
    assert any(not torch.equal(v, tailed.head.tail.state_dict()[k]) for k, v in before.items())
    out = train_head.write_model("colorize", tmp_path / "tailed", tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["colour_head"]["tail"] is True
    model = load_model(tmp_path / "model")
    assert isinstance(model.colour_head.tail, H.EncoderTail)
    (image,) = restore(model, "colorize", DATA / "kodim23-96.png", seed=0)
    assert image.size == (96, 64)
    assert out == tmp_path / "model"


def test_a_fixed_batch_is_learned():
    """Real forward and backward: the head fits one batch of cached-like maps."""
    torch.manual_seed(0)
    centres = H.grid_centres()[::7]
    head = H.ColourHead(H.HeadShape(len(centres), 16, 8))
    head.centres.copy_(centres)
    final, s8, s16 = torch.rand(2, 1280, 8, 8), torch.rand(2, 40, 32, 32), torch.rand(2, 112, 16, 16)
    gray = torch.rand(2, 1, 64, 64)
    chroma = torch.zeros(2, 2, 64, 64)
    chroma[:, 0] = 0.3
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    _, weights = H.soft_encode(chroma[:1, :, :1, :1], head.centres)
    floor = float(-(weights * weights.log()).sum())  # the soft target's own entropy: the least the loss can be
    losses = []
    for _ in range(80):
        loss = H.loss(head(final, s8, s16, gray), chroma, head.centres)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > floor + 2 and losses[-1] < floor + 0.3
    colour = H.annealed_mean(head(final, s8, s16, gray), head.centres, 0.38)
    nearest = centres[(centres - torch.tensor([0.3, 0.0])).norm(dim=1).argmin()]  # the bins are coarse here
    assert float(colour[:, 0].mean()) == pytest.approx(float(nearest[0]), abs=0.03)
    assert float(colour[:, 1].abs().mean()) < 0.03


@pytest.fixture(scope="module")
def head_model(head_run, tmp_path_factory):
    run, _ = head_run
    out = tmp_path_factory.mktemp("models") / "with-head"
    return train_head.write_model("colorize", run, out, temperature=0.3, noise=2.0)


def test_a_model_directory_carries_its_head(head_model):
    data = json.loads((head_model / "config.json").read_text())
    assert data["colour_head"]["temperature"] == 0.3 and data["colour_head"]["use"] == "colour"
    assert any(k.startswith("colour_head.") for k in read_weights(head_model))
    model = load_model(head_model)
    assert model.colour_head is not None and not model.colour_head.training
    sampling = resolve_sampling(model)  # what the PNG metadata records: one pass of the head, no sampler
    assert (sampling.sampler, sampling.steps) == ("colour_head", 1)


def test_restoring_with_a_head_keeps_the_luminance_and_samples_differ(head_model):
    model = load_model(head_model)
    photo = DATA / "kodim23-96.png"
    gray = Image.open(photo).convert("L").convert("RGB")
    first, second = restore(model, "colorize", gray, num_samples=2, seed=3)
    again = restore(model, "colorize", gray, num_samples=1, seed=3)[0]
    assert first.size == gray.size
    assert np.array_equal(np.asarray(first), np.asarray(again))  # sample 0 does not depend on -n
    assert np.abs(np.asarray(first, np.int16) - np.asarray(second, np.int16)).mean() > 0.1
    y_in = images.rgb_to_ycbcr(images.to_tensor(gray))[0]
    y_out = images.rgb_to_ycbcr(images.to_tensor(first))[0]
    assert (y_in - y_out).abs().max() < 2 / 255 * 2  # 8-bit rounding of each channel


def test_hints_still_steer_a_model_with_a_head(head_model):
    model = load_model(head_model)
    gray = Image.open(DATA / "kodim23-96.png").convert("L").convert("RGB")
    red = restore(model, "colorize", gray, hints=["48,32,#d02020,12"])[0]
    r, g, b = np.asarray(red, np.float64)[28:36, 44:52].reshape(-1, 3).mean(0)
    assert r > g + 20 and r > b + 20


def test_config_refuses_a_head_without_an_encoder_and_weights_without_a_block(head_model, tmp_path):
    with pytest.raises(PaletteError, match="names no encoder"):
        cfg.validate(cfg.ModelConfig(colour_head=cfg.ColourHeadConfig()))
    data = json.loads((head_model / "config.json").read_text())
    del data["colour_head"]
    for f in ("model.safetensors", "README.md"):
        (tmp_path / f).write_bytes((head_model / f).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(PaletteError, match="no colour_head block"):
        load_model(tmp_path)


def test_models_without_a_head_write_no_block():
    data = cfg.to_dict(load_model("colorize").config)
    assert "colour_head" not in data


def test_the_soft_encoding_table_gives_the_direct_encoding():
    centres = H.grid_centres()[::3]
    chroma = (torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.8
    dense = []
    for idx, weights in (H.soft_encode(chroma, centres), H.soft_lookup(chroma, H.soft_table(centres))):
        dense.append(torch.zeros(*idx.shape[:-1], len(centres)).scatter_add_(-1, idx, weights))
    assert (dense[0] - dense[1]).abs().sum(-1).mean() < 0.05


def test_the_unet_samples_around_the_head_where_it_is_sure(head_run, tmp_path):
    """use "hints": the head's colour enters the UNet as hints where its entropy is below `confidence`;
    where it is sure of nothing, the model samples exactly as the base model does."""
    run, _ = head_run
    gray = Image.open(DATA / "kodim05-96.png").convert("L").convert("RGB")
    base = np.asarray(restore(load_model("colorize"), "colorize", gray, seed=1)[0], np.int16)
    outputs = {}
    for confidence in (1e-6, 1.0):
        directory = train_head.write_model("colorize", run, tmp_path / str(confidence), use="hints",
                                           confidence=confidence)
        model = load_model(directory)
        assert resolve_sampling(model).sampler == "ddim"  # the UNet's own sampler runs
        outputs[confidence] = np.asarray(restore(model, "colorize", gray, seed=1)[0], np.int16)
    assert np.array_equal(outputs[1e-6], base)
    assert np.abs(outputs[1.0] - base).mean() > 0.5
