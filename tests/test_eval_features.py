"""`palette eval` in the Palette paper's terms: CA, FD, KID and PD beside PSNR, and the
full-resolution path at sizes other than the model's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from palette_cli import evaluate, images, metrics, pipeline, tasks
from palette_cli.tasks.colorize import to_gray
from palette_cli.checkpoint import load_model
from palette_cli.cli import _register, app
from palette_cli.evaluate import EvalSettings

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "labelled"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """The five labelled Kodak crops, and a labels file that lacks one of them."""
    folder = tmp_path_factory.mktemp("labelled")
    for png in sorted(LABELLED.glob("*.png")):
        shutil.copy(png, folder / png.name)
    lines = (LABELLED / "LABELS.tsv").read_text().splitlines()
    (folder.parent / "partial.tsv").write_text("\n".join(ln for ln in lines if "kodim13" not in ln) + "\n")
    return folder


def test_eval_reports_ca_fd_kid_pd_for_model_baseline_and_ground_truth(labelled, tiny_model_dir, tmp_path):
    _register()
    result = CliRunner().invoke(app, ["eval", str(labelled), "--task", "colorize", "--model", str(tiny_model_dir),
                                      "-o", str(tmp_path / "r"), "--steps", "2", "--device", "cpu",
                                      "--image-size", "128",
                                      "--labels", str(labelled.parent / "partial.tsv")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "r" / "report.json").read_text())["features"]
    assert (scores["images"], scores["labelled"], scores["unlabelled"]) == (5, 4, 1)
    # At 128 px the classifier names all four labelled ground truths (the fifth has no label).
    assert scores["ground_truth"] == {"ca": 1.0, "fd": 0.0, "kid": 0.0, "pd": 0.0}
    for name in ("model", "baseline"):
        assert set(scores[name]) == {"ca", "fd", "kid", "pd"}
        assert 0 <= scores[name]["ca"] <= 1 and scores[name]["fd"] > 0 and scores[name]["pd"] > 0
    assert "CA (top-1 %)" in result.stdout and "FD" in result.stdout and "Not comparable" in result.stdout


def test_feature_scores_follow_the_images(labelled):
    truth = [images.to_tensor(images.load_photo(p).rgb) for p in sorted(labelled.glob("*.png"))]
    names = [p.name for p in sorted(labelled.glob("*.png"))]
    labels = LABELLED / "LABELS.tsv"
    same = evaluate.feature_scores({"model": truth, "baseline": [to_gray(x) for x in truth],
                                    "ground_truth": truth}, names, labels, torch.device("cpu"))
    assert same["model"]["ca"] == 1.0 and same["model"]["pd"] == pytest.approx(0, abs=1e-4)
    assert same["model"]["fd"] == pytest.approx(0, abs=1e-3)
    # Gray photos are further from the colour originals in feature space than the originals are.
    assert same["baseline"]["fd"] > 1 and same["baseline"]["pd"] > 1
    no_labels = evaluate.feature_scores({"model": truth, "baseline": truth, "ground_truth": truth}, names, None,
                                        torch.device("cpu"))
    assert no_labels["unlabelled"] == 5 and no_labels["model"]["ca"] is None


@pytest.mark.parametrize("task", tasks.TASKS)
def test_eval_at_another_size_goes_through_the_full_resolution_path(tiny_model_dir, labelled, task):
    model = load_model(tiny_model_dir, device="cpu")  # a 32 px model evaluated at 64 px
    settings = EvalSettings(task=task, image_size=64, steps=2, limit=1, features=False, grid_rows=1)
    target = evaluate.load_ground_truth(sorted(labelled.glob("*.png"))[0], 64)
    cond, mask = tasks.get(task).degrade(target, evaluate.degrade_generator(0, 0), **evaluate.task_options(settings))
    sampling = pipeline.resolve_sampling(model, "ddim", 2)
    out = metrics.quantize(evaluate._restore(model, target, cond, mask, settings, sampling))[0]
    assert out.shape == (3, 64, 64)
    if task == "colorize":  # the chroma is the model's, the luminance the input's
        luma = lambda x: (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])  # noqa: E731
        assert (luma(out) - luma(cond)).abs().max() < 4 / 127.5
    elif task in ("inpaint", "uncrop"):  # every known pixel is the photo's own
        known = mask[0] == 0
        assert (out[:, known] - metrics.quantize(target)[:, known]).abs().max() < 1.5 / 127.5
    report = evaluate.evaluate(model, labelled, settings).report
    assert report["settings"]["image_size"] == 64 and report["num_images"] == 1


@pytest.mark.slow
def test_missing_classifier_weights_stop_eval_before_any_work(labelled, tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PALETTE_EFFICIENTNET_WEIGHTS": str(tmp_path / "gone.pth")}
    args = [sys.executable, "-m", "palette_cli", "eval", str(labelled), "--task", "colorize", "--model",
            str(tiny_model_dir), "-o", str(tmp_path / "r"), "--steps", "1", "--device", "cpu"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'gone.pth'}: efficientnet-lite0 weights file "
                                                f"not found"]
    assert not (tmp_path / "r").exists()
    # --no-features needs no weights.
    done = subprocess.run([*args, "--no-features"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
