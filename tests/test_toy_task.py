"""A new task is one module: a toy deblurring task joins through the registry, trains and restores."""

from __future__ import annotations

import json
from pathlib import Path

import blur_task
import numpy as np
import pytest

from palette_cli import evaluate, pipeline, tasks
from palette_cli import train as training
from palette_cli.checkpoint import load_model
from palette_cli.errors import PaletteError

DATA = Path(__file__).parent / "data"


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(tasks.REGISTRY, blur_task.NAME, blur_task)


def test_unregistered_task_is_refused():
    with pytest.raises(PaletteError, match="unknown task 'blur'"):
        tasks.get("blur")


def test_a_registered_toy_task_trains_restores_and_evaluates(registered, tmp_path):
    config = training.TrainConfig(tasks=("blur",), preset="tiny", image_size=32, steps=2, batch_size=2,
                                  warmup=1, save_every=2, sample_every=2, sample_count=2, log_every=1)
    result = training.train([DATA], tmp_path / "run", config, device="cpu")
    assert result.step == 2 and (tmp_path / "run" / "samples" / "step-000000002.png").is_file()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and set(lines[-1]["task_loss"]) == {"blur"}

    model = load_model(result.model_dir, device="cpu")
    assert model.config.tasks == ("blur",)
    photo = DATA / "kodim05-96.png"
    outputs = pipeline.restore(model, "blur", photo, num_samples=2, seed=1)
    again = pipeline.restore(model, "blur", photo, num_samples=2, seed=1)
    assert [o.size for o in outputs] == [(96, 64)] * 2
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(outputs, again))
    assert not np.array_equal(np.asarray(outputs[0]), np.asarray(outputs[1]))

    report = evaluate.evaluate(model, DATA, evaluate.EvalSettings(task="blur", limit=2)).report
    assert report["baseline"] == "the blurred input" and report["num_images"] == 2
    assert report["scored_region"] == "whole image"


def test_the_toy_task_needs_no_other_module():
    """Nothing in the package names the toy task: registering it is all it takes."""
    package = Path(tasks.__file__).parent.parent
    named = [p for p in package.rglob("*.py")
             if any(word in p.read_text(encoding="utf-8") for word in ('"blur"', "'blur'", "blur_task"))]
    assert not named
