"""Guided exemplar completion (completion.py) and its use as a fill (refine.complete_fill), on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA
from PIL import Image
from typer.testing import CliRunner

import palette_cli
from palette_cli import completion, images, metrics, tasks
from palette_cli.cli import _register, app
from palette_cli.completion import CompletionConfig, Field, complete, descriptors, pca_basis, propagate, random_search
from palette_cli.pipeline import finish, prepare, resolve_sampling, restore, restore_tensors
from palette_cli.refine import complete_fill

PHOTO = DATA / "kodim23-96.png"  # 96x64: one scale at the default coarsest side


def photo() -> torch.Tensor:
    return images.to_tensor(images.load_photo(PHOTO).rgb)


def hole(top: int, left: int, height: int, width: int, size=(64, 96)) -> torch.Tensor:
    mask = torch.zeros(1, *size)
    mask[:, top:top + height, left:left + width] = 1
    return mask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_scales_halve_down_to_the_coarsest_side():
    assert completion.scales(512, 768, 48) == [(64, 96), (128, 192), (256, 384), (512, 768)]
    assert completion.scales(64, 96, 48) == [(64, 96)]
    assert completion.scales(40, 40, 48) == [(40, 40)]


def test_patchmatch_finds_an_exact_copy_of_a_patch_in_the_source():
    x = photo()
    x[:, 20:44, 60:84] = x[:, 20:44, 8:32]  # a 24x24 piece of the photo copied 52 px to the right
    size = (64, 96)
    h, w = size
    valid = torch.ones(h * w, dtype=torch.bool)
    valid.view(h, w)[14:50, 54:90] = False  # sources: every patch that does not overlap the copy
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[23:41, 63:81] = True  # targets whose 7x7 patch lies inside the copy
    t = torch.nonzero(inner.flatten()).flatten()
    basis = pca_basis(x, valid.view(h, w), 7, 24, gen())
    phi = descriptors(x, basis)
    sources = torch.nonzero(valid).flatten()
    full = torch.arange(h * w)
    full[t] = completion.initialise(t, sources, gen(1))
    penalty = torch.zeros(h * w)
    field = Field(t, full[t], phi[t], torch.zeros(0))
    field.d = completion.distance(field.phi_t, phi, field.s, penalty)
    generator = gen(2)
    for _ in range(6):
        propagate(field, full, phi, valid, size, penalty, (8, 4, 2, 1))
        random_search(field, full, phi, valid, size, penalty, generator, radius=96)
    exact = t - 52  # the same row, 52 px to the left
    assert (field.s == exact).float().mean() > 0.95
    assert field.d[field.s == exact].max() < 1e-6


def test_completion_rebuilds_a_copied_piece_from_its_original():
    x = photo()
    x[:, 20:44, 60:84] = x[:, 20:44, 8:32]
    mask = hole(20, 60, 24, 24)
    region = x * (1 - mask)  # the copy is gone; the guide (what a model would have drawn) still shows it
    # The matching and voting alone: the pasted piece does not fit its new surroundings, which is what
    # harmonise (tested below) would then correct. Three EM iterations: with the default six the field is as
    # exact, but the later rounds' occurrence penalty moves a few targets beside the inner square, and their
    # votes put a few pixels 3 levels off (99.2% within rounding, largest error 0.026).
    out = complete(region, mask, x, generator=gen(), config=CompletionConfig(harmonise=0, em_steps=3))
    inner = (slice(24, 40), slice(64, 80))
    error = (out.image[:, inner[0], inner[1]] - x[:, inner[0], inner[1]]).abs()
    assert (error < 1 / 255).float().mean() > 0.95 and error.max() < 0.02  # the copy, to within rounding
    cols = out.source[inner] % 96
    assert (cols == torch.arange(64, 80) - 52).float().mean() > 0.9


def test_known_pixels_are_kept_exactly_and_the_hole_is_filled_from_the_photo():
    x = photo()
    mask = hole(16, 30, 30, 40)
    guide = images.resize(images.resize(x, (16, 24)), (64, 96))  # a blurred layout, as a model's sample
    out = complete(x * (1 - mask), mask, guide, generator=gen())
    known = mask.expand(3, -1, -1) == 0
    assert torch.equal(out.image[known], x[known])
    filled = out.image[:, 16:46, 30:70]
    assert filled.isfinite().all() and filled.std() > 0.05  # texture, not a flat colour
    # every hole pixel's patch centre is copied from a known pixel outside the hole
    assert (mask[0].flatten()[out.source[16:46, 30:70].flatten()] == 0).all()


def brighter_twin(step: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The photo beside itself brightened by `step`, a hole in the bright twin filled by copying the dark
    original (as a completion copies a patch of another tone): (truth, filled, hole, source field)."""
    x = photo() * 0.45  # room above it for the brighter twin
    truth = torch.cat([x, x + step], -1)  # 64 x 192
    hole = torch.zeros(64, 192, dtype=torch.bool)
    hole[12:52, 120:160] = True
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(192), indexing="ij")
    source = torch.where(hole, ys * 192 + xs - 96, ys * 192 + xs)
    filled = torch.where(hole, truth.flatten(1)[:, source.flatten()].view(3, 64, 192), truth)
    return truth, filled, hole, source


def test_harmonise_closes_a_copys_tone_step_and_keeps_its_texture():
    truth, filled, hole, source = brighter_twin(0.05)
    out = completion.harmonise(filled, hole, source, 3, CompletionConfig().harmonise)
    before = (filled - truth)[:, hole].abs().mean()
    after = (out - truth)[:, hole].abs().mean()
    assert before > 0.045 and after < 0.01, (before, after)  # the copy takes its new surroundings' tone
    assert torch.equal(out[:, ~hole], filled[:, ~hole])  # the photo is not touched
    shift = (out - filled)[:, hole]
    assert shift.std() < 0.01  # a smooth shift: the copied texture is kept
    mismatch, defined = completion.border_mismatch(filled, hole, source, 3)
    assert defined.sum() > 0 and (mismatch[:, defined] - 0.05).abs().max() < 1e-5


def test_harmonise_leaves_a_step_that_is_the_contents():
    truth, filled, hole, source = brighter_twin(0.5)  # a copy next to other content, not another tone
    out = completion.harmonise(filled, hole, source, 3, CompletionConfig().harmonise)
    assert (out - filled)[:, hole].abs().max() < 0.05  # under a tenth of the step bleeds in (0.3 would take it)


def test_same_seed_same_pixels_and_other_seeds_other_pixels():
    x = photo()
    mask = hole(10, 20, 40, 50)
    guide = images.resize(images.resize(x, (16, 24)), (64, 96))
    a, b, c = (complete(x * (1 - mask), mask, guide, generator=gen(s)).image for s in (3, 3, 4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_different_guides_give_different_fills():
    x = photo()
    mask = hole(10, 20, 40, 50)
    guides = [x, torch.flip(x, dims=[-1])]
    outs = [complete(x * (1 - mask), mask, g, generator=gen()).image for g in guides]
    assert (outs[0] - outs[1])[:, 10:50, 20:70].abs().mean() > 0.05


def test_bad_inputs_are_refused():
    x = photo()
    with pytest.raises(palette_cli.PaletteError, match="nothing is known"):
        complete(x, torch.ones(1, 64, 96), x, generator=gen())
    with pytest.raises(palette_cli.PaletteError, match="patch side must be odd"):
        complete(x, hole(10, 10, 5, 5), x, generator=gen(), config=CompletionConfig(patch=6))


def test_repetition_counts_pieces_copied_more_than_k_times():
    h, w = 32, 64
    mask = torch.zeros(1, h, w)
    mask[..., 32:] = 1
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    once = ys * w + (xs % 32)  # the right half copies the left half once: a coherent copy
    assert metrics.repetition(once, mask) == 0.0
    tiled = ys * w + (xs % 8)  # the hole copies one 8 px strip four times
    assert metrics.repetition(tiled, mask) == 1.0
    one = torch.zeros(h, w, dtype=torch.long)  # every hole pixel from a single source pixel
    assert metrics.repetition(one, mask) == 1.0


def test_the_occurrence_penalty_lowers_repetition():
    x = photo()
    mask = hole(8, 24, 48, 48)
    guide = images.resize(images.resize(x, (16, 24)), (64, 96))
    out = complete(x * (1 - mask), mask, guide, generator=gen())
    loose = complete(x * (1 - mask), mask, guide, generator=gen(), config=CompletionConfig(occurrence=0.0))
    assert metrics.repetition(out.source, mask) < metrics.repetition(loose.source, mask)
    visible = metrics.repetition(out.source, mask, image=x)
    assert visible <= metrics.repetition(out.source, mask)


@pytest.mark.parametrize("task, options", [("inpaint", {"mask_box": (30, 16, 40, 30)}), ("uncrop", {"side": "right"})])
def test_built_in_model_fill_completed_at_full_size(task, options):
    """The real path on a real photo: the built-in model samples at its size, the fill is completed at the
    photo's from its own patches, `finish` pastes it; known pixels kept, -n samples differ, seeds repeat."""
    model = palette_cli.load_model(task, device="cpu")
    prep = prepare(model, task, PHOTO, seed=1, **options)
    samples = restore_tensors(model, prep.cond, prep.mask, num_samples=2, sampling=resolve_sampling(model, refine="off"),
                              seed=1, views=prep.view)
    region, mask = tasks.get(task).fill_region(prep)
    assert max(region.shape[-2:]) > model.config.image_size  # the fill is larger than the model's sample
    done = [complete_fill(region, mask, samples[0, j], seed=1, sample=j) for j in range(2)]
    again = complete_fill(region, mask, samples[0, 0], seed=1, sample=0)
    assert torch.equal(done[0], again)
    outputs = finish(prep, torch.stack(done)[None])
    original = np.asarray(images.load_photo(PHOTO).rgb, dtype=np.int16)
    first, second = (np.asarray(o.convert("RGB"), dtype=np.int16) for o in outputs)
    if task == "inpaint":
        x, y, w, h = options["mask_box"]
        inside = np.zeros(original.shape[:2], dtype=bool)
        inside[y:y + h, x:x + w] = True
        assert np.array_equal(first[~inside], original[~inside])
        assert np.abs(first[inside] - second[inside]).mean() > 1
    else:
        assert first.shape == (64, 192, 3) and np.array_equal(first[:, :96], original)
        assert np.abs(first[:, 96:] - second[:, 96:]).mean() > 1


@pytest.mark.parametrize("task, options, weight", [("inpaint", {"mask_box": (30, 16, 40, 30)}, 1.0),
                                                   ("uncrop", {"side": "right"}, 0.2)])
def test_the_default_completes_each_fill_task_at_its_own_guide_weight(task, options, weight, tmp_path):
    """`palette inpaint/uncrop` (`--refine auto`) completes the fill with its task module's guide weight and
    says so in the output's metadata."""
    _register()
    flags = ["--mask-box", ",".join(map(str, options["mask_box"]))] if task == "inpaint" else ["--side", "right"]
    result = CliRunner().invoke(app, [task, str(PHOTO), "-o", str(tmp_path), "--seed", "2", "-q", *flags])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / f"{PHOTO.stem}.{task}.0.png") as image:
        assert json.loads(image.text["palette"])["refine"]["guide_weight"] == weight
    assert tasks.get(task).COMPLETION_GUIDE_WEIGHT == weight
    model = palette_cli.load_model(task, device="cpu")
    run = lambda refine: np.asarray(restore(model, task, PHOTO, seed=2, refine=refine, **options)[0])  # noqa: E731
    auto = run("auto")
    assert np.array_equal(auto, run(CompletionConfig(guide_weight=weight)))
    assert not np.array_equal(auto, run(CompletionConfig(guide_weight=0.6)))
    assert not np.array_equal(auto, run("off"))


@pytest.mark.cuda
def test_completion_runs_on_the_gpu_and_keeps_known_pixels():
    x = photo().cuda()
    mask = hole(10, 20, 40, 50).cuda()
    out = complete(x * (1 - mask), mask, x, generator=gen())
    known = mask.expand(3, -1, -1) == 0
    assert out.image.device.type == "cuda" and torch.equal(out.image[known], x[known])
    assert out.image.isfinite().all()
