"""Coarse-to-fine fills (refine.py): off is the old path, on changes only the hole, reproducibly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA, make_tiny_model
from PIL import Image

import palette_cli
from palette_cli.checkpoint import read_config
from palette_cli import PaletteError
from palette_cli.config import RefineConfig, from_dict, to_dict
from palette_cli.pipeline import output_settings, prepare, resolve_sampling, restore, restore_stream
from palette_cli.refine import fill_levels

PHOTO = DATA / "kodim23-96.png"  # 96x64
BOX = (30, 20, 30, 20)  # a 30x20 hole: a 60x60 crop around it, above the tiny model's 32 px
REFINE = RefineConfig(strength=0.3, steps=1, block=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same tiny weights without a refine block (as before) and with one."""
    root = tmp_path_factory.mktemp("refine")
    plain = make_tiny_model(root / "plain", tasks=("inpaint", "uncrop"))
    refined = make_tiny_model(root / "refined", tasks=("inpaint", "uncrop"), refine=REFINE)
    return palette_cli.load_model(plain, device="cpu"), palette_cli.load_model(refined, device="cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_levels_double_up_to_the_fill_from_the_model_size():
    assert fill_levels(400, 400, 64) == [(100, 100), (200, 200), (400, 400)]
    assert fill_levels(512, 1536, 64) == [(64, 192), (128, 384), (256, 768), (512, 1536)]
    assert fill_levels(60, 60, 32) == [(60, 60)]
    assert fill_levels(40, 600, 64) == [(40, 600)]
    assert fill_levels(64, 64, 64) == [] and fill_levels(30, 20, 32) == []


def test_off_is_the_model_without_a_refine_block(models):
    plain, refined = models
    for task, options in (("inpaint", {"mask_box": BOX}), ("uncrop", {"side": "right"})):
        (before,) = restore(plain, task, PHOTO, seed=3, refine="off", **options)
        (off,) = restore(refined, task, PHOTO, seed=3, refine="off", **options)
        (auto,) = restore(plain, task, PHOTO, seed=3, refine="sdedit", **options)
        assert np.array_equal(pixels(before), pixels(off)) and np.array_equal(pixels(before), pixels(auto))


def test_inpaint_refinement_changes_only_the_hole(models):
    _, refined = models
    original = pixels(Image.open(PHOTO))
    (off,) = restore(refined, "inpaint", PHOTO, seed=3, refine="off", mask_box=BOX)
    (on,) = restore(refined, "inpaint", PHOTO, seed=3, mask_box=BOX)
    x, y, w, h = BOX
    hole = np.zeros(original.shape[:2], dtype=bool)
    hole[y:y + h, x:x + w] = True
    assert on.size == off.size == (96, 64)
    assert np.array_equal(pixels(on)[~hole], original[~hole])
    assert np.abs(pixels(on)[hole] - pixels(off)[hole]).mean() > 1


def test_uncrop_refinement_keeps_the_photo_and_changes_the_new_part(models):
    _, refined = models
    original = pixels(Image.open(PHOTO))
    (off,) = restore(refined, "uncrop", PHOTO, seed=3, refine="off", side="right")
    (on,) = restore(refined, "uncrop", PHOTO, seed=3, refine="sdedit", side="right")
    assert on.size == off.size == (192, 64)
    assert np.array_equal(pixels(on)[:, :96], original)
    assert np.abs(pixels(on)[:, 96:] - pixels(off)[:, 96:]).mean() > 1


def test_refinement_is_seeded_and_independent_of_the_batch(models):
    _, refined = models
    runs = [restore(refined, "inpaint", PHOTO, seed=5, num_samples=2, batch_size=b, mask_box=BOX) for b in (1, 3, 3)]
    first = [pixels(o) for o in runs[0]]
    for outputs in runs[1:]:
        assert all(np.array_equal(a, pixels(b)) for a, b in zip(first, outputs))
    assert not np.array_equal(first[0], first[1])  # sample 1 has its own streams
    (other_seed,) = restore(refined, "inpaint", PHOTO, seed=6, mask_box=BOX)
    assert not np.array_equal(first[0], pixels(other_seed))


def test_progress_counts_the_refinement_steps_too(models):
    plain, refined = models
    calls: dict[str, list] = {"plain": [], "refined": []}
    for name, model in (("plain", plain), ("refined", refined)):
        restore(model, "uncrop", PHOTO, seed=3, num_samples=2, batch_size=2, side="right", refine="sdedit",
                callback=lambda done, total, name=name: calls[name].append((done, total)))
    sampling = len(calls["plain"])  # the sampler's steps, then nothing
    assert calls["plain"][-1][0] == calls["plain"][-1][1]
    refinement = calls["refined"][sampling:]
    assert calls["refined"][:sampling] == calls["plain"] and refinement
    dones, totals = zip(*refinement)
    assert list(dones) == sorted(dones) and len(set(totals)) == 1 and dones[-1] == totals[0]
    assert totals[0] % 2 == 0  # both samples are counted in one total


def test_a_photo_refines_the_same_alone_or_with_others(models):
    _, refined = models
    sampling = resolve_sampling(refined)
    photos = [DATA / "kodim05-96.png", PHOTO]
    items = [(p, prepare(refined, "inpaint", p, seed=2, mask_box=BOX)) for p in photos]
    together = {key: result.outputs[0] for key, result in restore_stream(refined, items, sampling=sampling, seed=2)}
    alone = {key: result.outputs[0] for key, result in restore_stream(refined, items[1:], sampling=sampling, seed=2)}
    assert np.array_equal(pixels(together[PHOTO]), pixels(alone[PHOTO]))


def test_metadata_records_the_refinement(models):
    plain, refined = models
    prep = prepare(refined, "inpaint", PHOTO, mask_box=BOX)
    on = output_settings(refined, prep, resolve_sampling(refined, refine="sdedit"), seed=0, sample=0)
    off = output_settings(refined, prep, resolve_sampling(refined, refine="off"), seed=0, sample=0)
    assert on["refine"] == {"strength": 0.3, "steps": 1, "block": 4} and off["refine"] == "off"
    assert "refine" not in output_settings(plain, prep, resolve_sampling(plain, refine="sdedit"), seed=0, sample=0)
    auto = output_settings(plain, prep, resolve_sampling(plain), seed=0, sample=0)  # inpaint: exemplar completion
    assert auto["refine"]["method"] == "exemplar"


def test_refine_modes_and_settings_are_checked(models):
    plain, _ = models
    with pytest.raises(PaletteError, match="unknown refine mode 'on'"):
        resolve_sampling(plain, refine="on")
    with pytest.raises(PaletteError, match="steps must be between 1 and"):
        resolve_sampling(plain, refine=RefineConfig(strength=0.001, steps=50))
    assert resolve_sampling(plain, refine=REFINE).refine == REFINE


def test_the_config_block_is_optional_and_checked(tmp_path):
    plain = to_dict(palette_cli.config.ModelConfig())
    assert "refine" not in plain and from_dict(plain).refine is None
    data = {**plain, "refine": {"strength": 0.25}}
    assert from_dict(data).refine == RefineConfig(strength=0.25)
    assert json.loads(json.dumps(to_dict(from_dict(data))))["refine"] == {"strength": 0.25, "steps": 1, "block": 8,
                                                                   "tasks": ["inpaint", "uncrop"]}
    for block, message in (({"strength": 0}, "refine.strength: must be in"), ({"steps": 0}, "refine.steps: must be"),
                           ({"block": "x"}, "refine.block: must be an integer"),
                           ({"tasks": [3]}, "refine.tasks\\[0\\]: must be a non-empty string"),
                           ({"tiles": 2}, "refine: unknown field"),
                           ({"strength": 0.001, "steps": 9}, "refine.steps: 9 is more than")):
        with pytest.raises(PaletteError, match=message):
            from_dict({**plain, "refine": block})
    # Task names are checked where a model is loaded (config.py knows no tasks).
    (tmp_path / "config.json").write_text(json.dumps({**plain, "refine": {"tasks": ["blur"]}}))
    with pytest.raises(PaletteError, match="config.json: refine.tasks: unknown task\\(s\\) 'blur'"):
        read_config(tmp_path)


def test_the_cli_takes_refine(models, tmp_path):
    from typer.testing import CliRunner

    from palette_cli.cli import _register, app

    _register()
    _, refined = models
    outputs = {}
    for mode in ("sdedit", "off"):
        result = CliRunner().invoke(app, ["uncrop", str(PHOTO), "-o", str(tmp_path / mode), "--model",
                                          str(refined.source), "--refine", mode, "-q"])
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / mode / "kodim23-96.uncrop.0.png") as image:
            outputs[mode] = pixels(image)
            assert json.loads(image.text["palette"])["refine"] == (mode if mode == "off" else
                                                                    {"strength": 0.3, "steps": 1, "block": 4})
    assert not np.array_equal(outputs["sdedit"], outputs["off"])
    bad = CliRunner().invoke(app, ["inpaint", str(PHOTO), "--mask-box", "1,1,9,9", "--refine", "on"])
    assert bad.exit_code == 2


def test_a_refine_block_names_the_tasks_it_refines(models):
    plain, _ = models
    inpaint_only = RefineConfig(strength=0.3, steps=1, block=4, tasks=("inpaint",))
    (before,) = restore(plain, "uncrop", PHOTO, seed=3, side="right", refine="off")
    (uncrop,) = restore(plain, "uncrop", PHOTO, seed=3, side="right", refine=inpaint_only)
    assert np.array_equal(pixels(before), pixels(uncrop))
    (inpaint,) = restore(plain, "inpaint", PHOTO, seed=3, mask_box=BOX, refine=inpaint_only)
    (off,) = restore(plain, "inpaint", PHOTO, seed=3, mask_box=BOX, refine="off")
    assert not np.array_equal(pixels(inpaint), pixels(off))
