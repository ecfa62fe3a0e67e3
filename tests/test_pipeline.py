"""Tests for palette_cli.pipeline on a tiny real model: batching, seeds, tasks at full resolution."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model
from palette_cli import images, pipeline
from palette_cli.tasks import inpaint
from palette_cli.tasks.jpeg import jpeg_recompress
from palette_cli.checkpoint import load_model
from palette_cli.errors import PaletteError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def cond() -> torch.Tensor:
    photos = sorted(DATA.glob("kodim*-96.png"))[:3]
    return torch.stack([images.resize(images.to_tensor(Image.open(p)), (32, 32)) for p in photos])


def photo(name: str = "kodim23-96.png") -> Image.Image:
    with Image.open(DATA / name) as im:
        return im.convert("RGB")


def to8(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).round()


# --- restore_tensors ------------------------------------------------------------------------


def test_restore_tensors_shape_and_range(model, cond):
    out = pipeline.restore_tensors(model, cond, num_samples=2)
    assert out.shape == (3, 2, 3, 32, 32) and out.dtype == torch.float32
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    assert not torch.equal(out[:, 0], out[:, 1])  # two samples of one photo differ
    assert not torch.equal(out[0], out[1])  # and photos differ


def test_sample_k_depends_on_neither_batch_size_nor_neighbours(model, cond):
    full = pipeline.restore_tensors(model, cond, num_samples=2, seed=5, batch_size=1)
    batched = pipeline.restore_tensors(model, cond, num_samples=2, seed=5, batch_size=4)
    alone = pipeline.restore_tensors(model, cond[2:], num_samples=2, seed=5, batch_size=2)
    # The network itself differs by ~1e-7 between batch sizes (oneDNN); the noise is identical.
    assert torch.allclose(full, batched, atol=1e-5) and torch.allclose(full[2:], alone, atol=1e-5)
    assert torch.equal(to8(full), to8(batched)) and torch.equal(to8(full[2:]), to8(alone))


def test_seed_decides_the_samples(model, cond):
    a = pipeline.restore_tensors(model, cond[:1], seed=1)
    b = pipeline.restore_tensors(model, cond[:1], seed=1)
    c = pipeline.restore_tensors(model, cond[:1], seed=2)
    assert torch.equal(a, b) and (a - c).abs().mean() > 0.01


def test_known_pixels_are_kept_with_a_mask(model, cond):
    mask = inpaint.center_mask(32, 32).expand(3, 1, 32, 32).contiguous()
    out = pipeline.restore_tensors(model, cond, mask, num_samples=2)
    known = mask.expand(3, 3, 32, 32) == 0
    for k in range(2):
        assert torch.equal(out[:, k][known], cond[known])
        assert not torch.equal(out[:, k][~known], cond[~known])


def test_init_is_where_a_partial_strength_starts(model, cond):
    """`init` replaces the source as the noised start (SDEdit), for every one of a photo's samples."""
    mask = inpaint.center_mask(32, 32).expand(2, 1, 32, 32).contiguous()
    hole = mask.expand(2, 3, 32, 32) == 1
    init = cond[:2].flip(-1)  # something other than the source inside the hole
    plain = pipeline.restore_tensors(model, cond[:2], mask, num_samples=2, strength=0.05, steps=1, seed=3)
    started = pipeline.restore_tensors(model, cond[:2], mask, num_samples=2, strength=0.05, steps=1, seed=3,
                                       init=init)
    assert (started[:, 0] - init)[hole].abs().mean() < (plain[:, 0] - init)[hole].abs().mean() - 0.05
    assert (started[:, 1] - init)[hole].abs().mean() < (plain[:, 1] - init)[hole].abs().mean() - 0.05
    assert torch.equal(started[:, 0][~hole], cond[:2][~hole])  # known pixels stay the source's
    assert torch.equal(pipeline.restore_tensors(model, cond[:2], mask, seed=3, init=init),
                       pipeline.restore_tensors(model, cond[:2], mask, seed=3))  # pure noise: init unused


def test_callback_counts_steps_over_all_batches(model, cond):
    calls = []
    pipeline.restore_tensors(model, cond, num_samples=3, batch_size=4, steps=2,
                             callback=lambda d, t: calls.append((d, t)))
    total = math.ceil(3 * 3 / 4) * 2
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_sampler_and_steps_override_the_model_defaults(model, cond):
    ddim = pipeline.restore_tensors(model, cond[:1], steps=3)
    ddpm = pipeline.restore_tensors(model, cond[:1], steps=3, sampler="ddpm")
    assert (ddim - ddpm).abs().mean() > 1e-3
    with pytest.raises(PaletteError, match="unknown sampler 'euler'"):
        pipeline.restore_tensors(model, cond[:1], sampler="euler")
    with pytest.raises(PaletteError, match="steps must be between 1 and 1000"):
        pipeline.restore_tensors(model, cond[:1], steps=5000)


@pytest.mark.parametrize("shape, message", [((3, 32, 32), "cond must be shaped"),
                                            ((1, 1, 32, 32), "cond must be shaped"),
                                            ((1, 3, 31, 32), "multiples of 2")])
def test_bad_shapes_are_refused(model, shape, message):
    with pytest.raises(PaletteError, match=message):
        pipeline.restore_tensors(model, torch.zeros(shape))


def test_regression_models_take_one_pass(tmp_path, cond):
    model = load_model(make_tiny_model(tmp_path / "reg", objective="regression"))
    calls = []
    out = pipeline.restore_tensors(model, cond, num_samples=2, batch_size=4, callback=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    assert torch.equal(out[:, 0], out[:, 1])  # no noise: every sample is the same


def test_half_precision_weights_are_refused_clearly(tiny_model_dir, cond):
    model = load_model(tiny_model_dir, dtype=torch.bfloat16)
    with pytest.raises(PaletteError, match="load the model in float32"):
        pipeline.restore_tensors(model, cond[:1])


def test_autocast_bf16_on_cpu(model, cond):
    with pipeline.autocast(model, "bf16"):
        out = pipeline.restore_tensors(model, cond[:1])
    ref = pipeline.restore_tensors(model, cond[:1])
    assert torch.isfinite(out).all() and 0 < (out - ref).abs().mean() < 0.1
    with pytest.raises(PaletteError, match="unknown dtype"):
        pipeline.autocast(model, "fp8")


def test_auto_batch_size_is_sane(model):
    assert 1 <= pipeline.auto_batch_size(model) <= 8
    assert pipeline.activation_bytes(model) > 0


# --- one photo at full resolution -----------------------------------------------------------


def test_colorize_keeps_size_and_luminance(model):
    img = photo().convert("L")
    outs = pipeline.restore(model, "colorize", img, num_samples=2)
    assert [o.size for o in outs] == [img.size] * 2 and all(o.mode == "RGB" for o in outs)
    for out in outs:
        assert np.abs(np.asarray(out.convert("L"), float) - np.asarray(img, float)).mean() < 1.5
    assert not np.array_equal(np.asarray(outs[0]), np.asarray(outs[1]))


def test_jpeg_tiles_any_size(model):
    img = photo().crop((0, 0, 75, 41))  # not a multiple of anything
    prep = pipeline.prepare(model, "jpeg", img, quality=10)
    assert prep.cond.shape[1:] == (3, 32, 32) and len(prep.cond) > 1
    assert np.array_equal(np.asarray(prep.photo.rgb), np.asarray(jpeg_recompress(img, 10)))
    (out,) = pipeline.restore(model, "jpeg", img, quality=10)
    assert out.size == (75, 41)


def test_inpaint_changes_only_the_hole(model):
    img = photo()
    hole = images.box_mask(64, 96, (60, 20, 20, 30)).numpy()[0] > 0
    for out in pipeline.restore(model, "inpaint", img, mask_box=(60, 20, 20, 30), num_samples=2):
        got, orig = np.asarray(out), np.asarray(img)
        assert out.size == img.size
        assert np.array_equal(got[~hole], orig[~hole])
        assert not np.array_equal(got[hole], orig[hole])


def test_inpaint_mask_sources_agree(model):
    img = photo()
    drawn = Image.new("L", img.size, 0)
    drawn.paste(255, (60, 20, 80, 50))
    by_image = inpaint.inpaint_mask(images.photo_from_pil(img), mask=drawn)
    by_box = inpaint.inpaint_mask(images.photo_from_pil(img), mask_box=(60, 20, 20, 30))
    assert torch.equal(by_image, by_box)
    free = inpaint.inpaint_mask(images.photo_from_pil(img), mask_mode="free-form", seed=4)
    assert torch.equal(free, inpaint.inpaint_mask(images.photo_from_pil(img), mask_mode="free-form", seed=4))
    with pytest.raises(PaletteError, match="exactly one"):
        inpaint.inpaint_mask(images.photo_from_pil(img), mask=drawn, mask_mode="center")
    with pytest.raises(PaletteError, match="mask is 10x10 but the image is 96x64"):
        inpaint.inpaint_mask(images.photo_from_pil(img), mask=Image.new("L", (10, 10), 255))


@pytest.mark.parametrize("side, size, at", [("right", (192, 64), (0, 0)), ("top", (96, 128), (0, 64)),
                                            ("all", (136, 90), (20, 13))])
def test_uncrop_grows_the_canvas_and_keeps_every_pixel(model, side, size, at):
    img = photo()
    (out,) = pipeline.restore(model, "uncrop", img, side=side, ratio=0.5)
    assert out.size == size
    left, top = at
    assert np.array_equal(np.asarray(out)[top:top + 64, left:left + 96], np.asarray(img))


def test_uncrop_fills_a_scans_frame_on_the_growing_edge(model):
    """Kept, a scan's flat gray frame would run down the middle of the grown photo: it joins the new part (and
    only on the edge that grows), unless keep_frame."""
    img = photo("kodim05-96.png")
    framed = np.asarray(img).copy()
    framed[:, -2:] = framed[:, :2] = 99  # two flat gray lines on both sides
    framed = Image.fromarray(framed)
    (grown,) = pipeline.restore(model, "uncrop", framed, side="right")
    out = np.asarray(grown)
    assert grown.size == (192, 64)
    assert np.array_equal(out[:, :94], np.asarray(framed)[:, :94])  # the rest, the left frame too, bit for bit
    assert not (out[:, 94:96] == 99).all(axis=(0, 2)).any()  # no line of the right frame is left
    (kept,) = pipeline.restore(model, "uncrop", framed, side="right", keep_frame=True)
    assert np.array_equal(np.asarray(kept)[:, :96], np.asarray(framed))


def test_alpha_is_reattached(model):
    img = photo().convert("RGBA")
    img.putalpha(Image.fromarray(np.tile(np.arange(96, dtype=np.uint8), (64, 1))))
    (out,) = pipeline.restore(model, "colorize", img)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], np.asarray(img)[..., 3])
    (grown,) = pipeline.restore(model, "uncrop", img, side="left")
    alpha = np.asarray(grown)[..., 3]
    assert (alpha[:, :96] == 255).all() and np.array_equal(alpha[:, 96:], np.asarray(img)[..., 3])


def test_stream_batches_photos_without_changing_them(model):
    photos = [photo(p.name) for p in sorted(DATA.glob("kodim*-96.png"))]
    one_by_one = [pipeline.restore(model, "colorize", p, num_samples=2, seed=3) for p in photos]
    prepared = ((i, pipeline.prepare(model, "colorize", p, seed=3)) for i, p in enumerate(photos))
    steps = []
    streamed = list(pipeline.restore_stream(model, prepared, num_samples=2, seed=3, batch_size=4,
                                            callback=lambda d, t: steps.append(t)))
    assert [key for key, _ in streamed] == list(range(len(photos)))
    for (_, result), expected in zip(streamed, one_by_one):
        assert [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(result.outputs, expected)] == [True] * 2
        assert result.seconds > 0
    assert set(steps) == {4}  # two photos (four samples) per group: one batch of 4 steps
