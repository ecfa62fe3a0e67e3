"""The built-in models: each loads by name and restores a small real photo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import palette_cli
from palette_cli.checkpoint import builtin_dir, builtin_names, resolve
from palette_cli.cli import _register, app
from palette_cli.pipeline import restore

PHOTO = Path(__file__).parent / "data" / "kodim23-96.png"
TASK_OPTIONS = {"colorize": {}, "jpeg": {"quality": 10}, "inpaint": {"mask_mode": "center"},
                "uncrop": {"side": "right"}}


def test_every_task_has_a_built_in_model():
    for task in TASK_OPTIONS:
        directory = resolve(task)
        assert directory.parent == builtin_dir()
        assert task in json.loads((directory / "config.json").read_text())["tasks"]


@pytest.mark.parametrize("name", builtin_names())
def test_built_in_model_card_and_size(name):
    directory = builtin_dir() / name
    card = (directory / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: palette") and "palette train" in card and "palette eval" in card
    assert (directory / "model.safetensors").stat().st_size < 20e6


@pytest.mark.parametrize("task", list(TASK_OPTIONS))
def test_built_in_model_restores_a_photo(task):
    model = palette_cli.load_model(task)
    assert task in model.config.tasks
    original = Image.open(PHOTO).convert("RGB")
    (out,) = restore(model, task, PHOTO, steps=2, seed=0, **TASK_OPTIONS[task])
    expected = (original.width * 2, original.height) if task == "uncrop" else original.size
    assert out.size == expected
    pixels = np.asarray(out.convert("RGB"), dtype=np.int16)
    if task == "colorize":  # colour came back: the channels of a gray input now differ
        assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 1
    if task == "uncrop":  # the original is kept bit for bit, the new half is filled
        assert np.array_equal(pixels[:, : original.width], np.asarray(original))
        assert pixels[:, original.width:].std() > 1


def test_the_readme_command_colorizes_the_sample_photo(tmp_path):
    _register()
    photo = Path(__file__).parent / "data" / "parrots-gray.jpg"
    result = CliRunner().invoke(app, ["colorize", str(photo), "-o", str(tmp_path), "--steps", "2"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "parrots-gray.colorize.0.png") as out, Image.open(photo) as source:
        assert out.size == source.size and out.mode == "RGB"
