"""Colour controls of colorize: hints (UGColor), a reference palette (PalGAN), guidance over them."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import randomize
from palette_cli import config as cfg
from palette_cli import images, pipeline, train
from palette_cli.checkpoint import build_network, load_model, save_model
from palette_cli.cli import _register, app
from palette_cli.errors import PaletteError
from palette_cli.evaluate import EvalSettings, evaluate
from palette_cli.guidance import Guided
from palette_cli.tasks import colour_controls as H

DATA = Path(__file__).parent / "data"
PHOTO = DATA / "kodim05-96.png"  # 96x64
BASE = cfg.ModelConfig(unet=cfg.PRESETS["tiny"], image_size=32, tasks=("colorize",), steps=2, objective="x0",
                       residual=True, sample_schedule=cfg.TRAIN_SCHEDULE)
CONTROLLED = train.with_controls(BASE)

_register()


@pytest.fixture(scope="module")
def controlled_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "controls", CONTROLLED,
                      randomize(build_network(CONTROLLED), 3))


@pytest.fixture(scope="module")
def controlled(controlled_dir):
    return load_model(controlled_dir)


# --- parsing and encoding ------------------------------------------------------------------


def test_parse_hint_reads_point_colour_and_radius():
    assert H.parse_hint("120,80,#3050a0") == H.Hint(120, 80, (0x30, 0x50, 0xA0), 0.0)
    assert H.parse_hint(" 1.5, 2 ,B02020,4") == H.Hint(1.5, 2, (0xB0, 0x20, 0x20), 4.0)
    assert str(H.parse_hint("1,2,#b02020,4")) == "1,2,#b02020,4"


@pytest.mark.parametrize("text, problem", [
    ("1,2", "expected x,y,#rrggbb"), ("1,2,#12345,3", "six hex digits"), ("a,2,#123456", "must be numbers"),
    ("1,2,#123456,-1", "radius must be 0 or more"), ("1,2,#gggggg", "six hex digits"),
])
def test_bad_hints_name_the_option_and_the_problem(text, problem):
    with pytest.raises(PaletteError, match=f"--hint .*{problem}"):
        H.parse_hint(text)


def test_hint_outside_the_photo_is_refused():
    with pytest.raises(PaletteError, match=r"--hint 96,10,#ff0000: point \(96, 10\) is outside the 96x64 photo"):
        H.check_hints([H.parse_hint("96,10,#ff0000")], 96, 64)


def test_hint_map_puts_the_colour_chroma_where_the_hint_is():
    red = H.parse_hint("48,16,#ff0000")  # photo 96x64 squeezed to 32x32: pixel (16, 8)
    m = H.hint_map([red], 96, 64, 32)
    assert m.shape == (3, 32, 32) and m[2].sum() == 1 and m[2, 8, 16] == 1
    expected = 2 * H.chroma(torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)).flatten()
    assert torch.allclose(m[:2, 8, 16], expected)
    assert m[:2].abs().sum() == m[:2, 8, 16].abs().sum()  # nowhere else
    wide = H.hint_map([H.parse_hint("48,32,#ff0000,12")], 96, 64, 32)  # radius 4 x 6 model pixels
    assert 50 < wide[2].sum() < 100


def test_hints_from_an_rgba_image(tmp_path):
    rgba = np.zeros((64, 96, 4), np.uint8)
    rgba[0:16, 0:24] = (0, 0, 255, 255)  # an opaque blue corner: the top-left 8x8 model pixels
    rgba[40:, 60:] = (255, 0, 0, 100)  # translucent: not a hint
    m = H.hints_from_image(Image.fromarray(rgba, "RGBA"), 96, 64, 32, "h.png")
    assert m[2, :8, :8].eq(1).all() and m[2].sum() == 64
    blue = 2 * H.chroma(torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1)).flatten()
    assert torch.allclose(m[:2, 3, 3], blue, atol=1e-5)
    with pytest.raises(PaletteError, match="--hints h.png: is 96x64 but the photo is 90x64"):
        H.hints_from_image(Image.fromarray(rgba, "RGBA"), 90, 64, 32, "h.png")
    with pytest.raises(PaletteError, match="no opaque pixel"):
        H.hints_from_image(Image.new("RGBA", (96, 64)), 96, 64, 32, "h.png")


def test_training_hints_reveal_the_ground_truth_and_sometimes_nothing():
    target = images.to_tensor(Image.open(PHOTO).convert("RGB").resize((32, 32)))[None].repeat(64, 1, 1, 1)
    a = H.random_hints(target, torch.Generator().manual_seed(1))
    assert torch.equal(a, H.random_hints(target, torch.Generator().manual_seed(1)))
    counts = a[:, 2].sum(dim=(1, 2))
    assert (counts == 0).sum() >= 2 and (counts > 0).sum() >= 40
    truth = 2 * H.chroma(target)
    shown = a[:, 2:] > 0
    # A revealed pixel holds the mean of its 1-3 px patch of the truth: close to the truth itself.
    assert (a[:, :2] - truth).abs()[shown.expand(-1, 2, -1, -1)].mean() < 0.1


def test_chroma_histograms():
    photo = images.to_tensor(Image.open(PHOTO).convert("RGB"))[None]
    hist = H.chroma_histogram(photo)
    assert hist.shape == (1, 64) and torch.isclose(hist.sum(), torch.tensor(1.0))
    assert torch.isclose(H.reference_vector(photo).norm(), torch.tensor(1.0))
    gray = photo.mean(dim=1, keepdim=True).expand_as(photo)
    assert H.histogram_distance(photo, photo).item() == 0
    assert H.histogram_distance(photo, gray).item() > 0.3


# --- the network ------------------------------------------------------------------------------


def test_a_grown_network_computes_what_the_trained_one_did():
    weights = randomize(build_network(BASE), 1).state_dict()
    grown = build_network(CONTROLLED, train._grown(CONTROLLED, weights, "test")).eval()
    old = build_network(BASE, weights).eval()
    x, gamma = torch.randn(2, 6, 32, 32), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(old(x, gamma), grown(x, gamma, hints=torch.randn(2, 3, 32, 32),
                                                     reference=torch.rand(2, 64)))


def test_no_hints_is_the_zero_hint_map_and_hints_change_the_output(controlled):
    net, x, gamma = controlled.network, torch.randn(1, 6, 32, 32), torch.rand(1)
    hints = H.hint_map([H.parse_hint("48,32,#ff0000,20")], 96, 64, 32)[None]
    with torch.no_grad():
        assert torch.equal(net(x, gamma), net(x, gamma, hints=torch.zeros_like(hints), reference=torch.zeros(1, 64)))
        assert not torch.equal(net(x, gamma), net(x, gamma, hints=hints))
        assert not torch.equal(net(x, gamma), net(x, gamma, reference=torch.full((1, 64), 0.125)))


def test_guidance_zero_is_one_plain_call_and_guidance_uses_the_null_of_every_condition(controlled):
    net, x, gamma = controlled.network, torch.randn(2, 6, 32, 32), torch.rand(2)
    condition = {"hints": torch.randn(2, 3, 32, 32), "reference": torch.rand(2, 64)}
    with torch.no_grad():
        assert torch.equal(Guided(net, condition, 0.0, "x0")(x, gamma), net(x, gamma, **condition))
        plain = Guided(net, condition, 2.0, "x0", normalized=False)(x, gamma)
        c, null = net(x, gamma, **condition), net(x, gamma)
    assert torch.allclose(plain, 3 * c - 2 * null, atol=1e-4)  # x0 is linear in eps at a fixed x_t


# --- library and CLI --------------------------------------------------------------------------


def test_restore_with_hints_and_reference_records_them(controlled, tmp_path):
    plain = pipeline.restore(controlled, "colorize", PHOTO, seed=1)[0]
    hinted = pipeline.restore(controlled, "colorize", PHOTO, seed=1, hints=["10,10,#ff0000,8"])[0]
    referenced = pipeline.restore(controlled, "colorize", PHOTO, seed=1, reference=DATA / "kodim23-96.png")[0]
    assert plain.size == hinted.size == (96, 64)
    assert not np.array_equal(np.asarray(plain), np.asarray(hinted))
    assert not np.array_equal(np.asarray(plain), np.asarray(referenced))
    prep = pipeline.prepare(controlled, "colorize", PHOTO, hints=["10,10,#ff0000,8"], reference=DATA / "kodim23-96.png")
    settings = pipeline.output_settings(controlled, prep, pipeline.resolve_sampling(controlled, guidance=1.0),
                                        seed=0, sample=0)
    assert settings["hints"] == "10,10,#ff0000,8" and settings["reference"] == "kodim23-96.png"
    assert settings["guidance"] == 1.0


def test_a_reference_file_is_decoded_once_per_version(controlled, tmp_path):
    from palette_cli.tasks import colorize

    ref = tmp_path / "ref.png"
    shutil.copy(DATA / "kodim23-96.png", ref)
    colorize._decoded.cache_clear()
    first = pipeline.prepare(controlled, "colorize", PHOTO, reference=ref)
    again = pipeline.prepare(controlled, "colorize", DATA / "kodim05-96.png", reference=ref)
    assert colorize._decoded.cache_info().misses == 1 and colorize._decoded.cache_info().hits == 1
    assert torch.equal(first.condition["reference"], again.condition["reference"])
    shutil.copy(DATA / "kodim03-96.png", ref)  # a new version of the file is read again
    os.utime(ref, ns=(1, 1))
    changed = pipeline.prepare(controlled, "colorize", PHOTO, reference=ref)
    assert colorize._decoded.cache_info().misses == 2
    assert not torch.equal(first.condition["reference"], changed.condition["reference"])


def test_a_model_without_controls_refuses_hints(tiny_model_dir):
    model = load_model(tiny_model_dir)
    with pytest.raises(PaletteError, match="takes no colour hints; use a model trained with --controls"):
        pipeline.prepare(model, "colorize", PHOTO, hints=["1,1,#ff0000"])


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_hints_reference_and_their_errors(controlled_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "wide.png")
    Image.open(PHOTO).crop((0, 0, 40, 40)).save(folder / "small.png")
    out = tmp_path / "out"
    r = _cli("colorize", folder, "-o", out, "--model", controlled_dir, "--hint", "50,20,#3050a0,3",
             "--reference", DATA / "kodim23-96.png", "--guidance", "1")
    # The hint lies outside the 40x40 photo: that input fails alone, with the option named.
    assert r.exit_code == 1 and "small.png" in r.stderr and "--hint 50,20,#3050a0,3" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["wide.colorize.0.png"]
    meta = json.loads(Image.open(out / "wide.colorize.0.png").text["palette"])
    assert meta["hints"] == "50,20,#3050a0,3" and meta["reference"] == "kodim23-96.png" and meta["guidance"] == 1.0
    r = _cli("colorize", PHOTO, "-o", tmp_path / "o2", "--model", controlled_dir, "--hint", "1,2,#12")
    assert r.exit_code == 2 and "--hint" in r.stderr and not (tmp_path / "o2").exists()
    r = _cli("colorize", PHOTO, "-o", tmp_path / "o3", "--model", controlled_dir, "--reference", tmp_path / "no.jpg")
    assert r.exit_code == 2 and "--reference" in r.stderr and "no.jpg" in r.stderr


# --- training and evaluation ------------------------------------------------------------------


def test_training_with_controls_and_growing_them_by_finetuning(tmp_path, tiny_model_dir):
    data = sorted(DATA.glob("kodim*-96.png"))
    settings = dict(tasks=("colorize",), preset="tiny", steps=2, batch_size=2, warmup=1, save_every=2,
                    sample_every=0, log_every=1)
    result = train.train(data, tmp_path / "new", cfg.TrainConfig(controls=True, **settings))
    config = cfg.from_dict(json.loads((result.run_dir / "model" / "config.json").read_text()))
    assert (config.unet.hint_channels, config.unet.reference_channels) == (3, 64)
    grown = train.finetune(tiny_model_dir, data, tmp_path / "grown", dataclasses.replace(
        cfg.TrainConfig(controls=True, **settings), preset="small"))
    config = cfg.from_dict(json.loads((grown.run_dir / "model" / "config.json").read_text()))
    assert config.unet.hint_channels == 3 and config.tasks == ("colorize",)
    with pytest.raises(PaletteError, match="colour controls .* need the colorize task"):
        train.train(data, tmp_path / "jpeg", cfg.TrainConfig(controls=True, **{**settings, "tasks": ("jpeg",)}))


def test_eval_scores_hints_and_reference(controlled):
    base = EvalSettings(task="colorize", image_size=64, features=False, grid_rows=0, limit=2)
    none = evaluate(controlled, DATA / "labelled", base).report
    hinted = evaluate(controlled, DATA / "labelled", dataclasses.replace(base, hints=10, reference=True)).report
    for report in (none, hinted):
        assert {"point_chroma_error", "chroma_hist_distance"} <= set(report["mean"]["model"])
    # The scored points and the baseline are the same with and without controls given to the model.
    assert none["mean"]["baseline"] == hinted["mean"]["baseline"]
    assert none["mean"]["model"] != hinted["mean"]["model"]
    assert hinted["settings"]["hints"] == 10 and hinted["settings"]["reference"] == "ground truth"


# --- enforcing the colours asked for ----------------------------------------------------------


def test_hint_colours_propagate_along_the_luminance_not_across_edges():
    luma = torch.full((32, 32), -0.5)
    luma[:, 16:] = 0.5  # a strong vertical edge
    chroma = torch.zeros(2, 32, 32)
    hint = H.hint_map([H.parse_hint("4,16,#2050d0")], 32, 32, 32)
    out = H.propagate(chroma, luma, hint)
    wanted = hint[:2, 16, 4] / 2
    assert torch.allclose(out[:, 16, 4], wanted, atol=0.01)  # the hinted pixel takes the hint's colour
    same_side = (out[:, 16, 14] - chroma[:, 16, 14]).abs().sum()
    across = (out[:, 16, 18] - chroma[:, 16, 18]).abs().sum()
    assert same_side > 0.8 * wanted.abs().sum() and across < 0.1 * same_side
    assert H.propagate(chroma, luma, torch.zeros(3, 32, 32)) is chroma  # no hint: untouched


def test_a_reference_distribution_is_matched_channel_by_channel():
    g = torch.Generator().manual_seed(0)
    chroma = torch.randn(2, 16, 16, generator=g) * 0.05
    reference = torch.stack([torch.rand(1000, generator=g) * 0.4 - 0.1, torch.rand(1000, generator=g) * -0.3])
    out = H.match_chroma(chroma, reference)
    for c in range(2):
        assert torch.equal(out[c].flatten().argsort(), chroma[c].flatten().argsort())  # order kept
        assert abs(out[c].min() - reference[c].min()) < 0.01 and abs(out[c].max() - reference[c].max()) < 0.01


def test_hints_and_reference_move_the_colours_of_a_restored_photo(controlled):
    plain = pipeline.restore(controlled, "colorize", PHOTO, seed=1)[0]
    blue = pipeline.restore(controlled, "colorize", PHOTO, seed=1, hints=["48,32,#2050d0,4"])[0]
    chroma = lambda im: H.chroma(images.to_tensor(im))  # noqa: E731
    wanted = H.chroma(torch.tensor([0x20, 0x50, 0xD0]).view(3, 1, 1) / 127.5 - 1).flatten()
    near = lambda im: (chroma(im)[:, 28:36, 44:52].mean(dim=(1, 2)) - wanted).abs().sum()  # noqa: E731
    assert near(blue) < 0.5 * near(plain)
    reference = DATA / "kodim23-96.png"
    matched = pipeline.restore(controlled, "colorize", PHOTO, seed=1, reference=reference)[0]
    truth = images.to_tensor(Image.open(reference).convert("RGB"))[None]
    assert H.histogram_distance(images.to_tensor(matched)[None], truth) < \
        0.6 * H.histogram_distance(images.to_tensor(plain)[None], truth)
