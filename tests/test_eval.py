"""Tests for `palette eval` and palette_cli.evaluate: a tiny real model on small real photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from palette_cli import evaluate, metrics, pipeline, tasks
from palette_cli.tasks import colorize, inpaint, jpeg, uncrop
from palette_cli.checkpoint import load_model
from palette_cli.cli import app, _register
from palette_cli.cli import eval as eval_cli
from palette_cli.errors import PaletteError
from palette_cli.evaluate import EvalSettings
from palette_cli.pipeline import autocast, restore_tensors

from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SIZE, K, STEPS = 32, 2, 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Three small Kodak photos in a folder of their own."""
    folder = tmp_path_factory.mktemp("gt")
    for name in ("kodim03-96.png", "kodim05-96.png", "kodim23-96.png"):
        shutil.copy(ROOT / "tests" / "data" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def cli_reports(tiny_model_dir, data_dir, tmp_path_factory) -> dict[str, tuple[dict, Path, str]]:
    """`palette eval` run once per task: (report, report folder, stdout)."""
    _register()
    runner = CliRunner()
    results = {}
    for task in tasks.TASKS:
        out = tmp_path_factory.mktemp(f"report-{task}")
        args = ["eval", str(data_dir), "--task", task, "--model", str(tiny_model_dir), "-o", str(out),
                "--num-samples", str(K), "--steps", str(STEPS), "--seed", "7", "--device", "cpu"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        results[task] = (json.loads((out / "report.json").read_text()), out, result.stdout)
    return results


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m palette_cli ...` as a user runs it: real exit codes and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "palette_cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("task", tasks.TASKS)
def test_report_has_settings_per_image_and_mean_metrics(cli_reports, task):
    report, out, stdout = cli_reports[task]
    s = report["settings"]
    assert (s["task"], s["image_size"], s["num_samples"], s["steps"], s["sampler"], s["seed"]) == \
           (task, SIZE, K, STEPS, "ddim", 7)
    assert report["num_images"] == 3 and report["errors"] == []
    assert [r["file"] for r in report["images"]] == ["kodim03-96.png", "kodim05-96.png", "kodim23-96.png"]
    keys = ({"psnr", "ssim", "colorfulness", "point_chroma_error", "chroma_hist_distance"} if task == "colorize"
            else {"psnr", "ssim"})
    for row in report["images"]:
        assert set(row["model"]) == set(row["baseline"]) == keys
        assert len(row["samples"]) == K
        for key in keys:  # the image's model score is the mean over its samples
            assert row["model"][key] == pytest.approx(np.mean([smp[key] for smp in row["samples"]]))
        assert 0 < row["model"]["psnr"] < metrics.PSNR_CAP_DB
    for side in ("model", "baseline"):
        for key in keys:
            assert report["mean"][side][key] == pytest.approx(np.mean([r[side][key] for r in report["images"]]))
    assert report["wins"]["psnr"] == sum(r["model"]["psnr"] > r["baseline"]["psnr"] for r in report["images"])
    assert report["psnr_cap_db"] == metrics.PSNR_CAP_DB
    assert set(report["skipped"]) == {"fid", "lpips", "chimle_variance"}
    assert report["baseline"] == tasks.get(task).BASELINE

    div = report["diversity"]
    assert div["pairs"] == 3 * K * (K - 1) // 2 and sum(div["histogram"]["counts"]) == div["pairs"]
    assert div["mean"] == pytest.approx(np.mean([r["diversity_ms_ssim"] for r in report["images"]]))
    assert 0 <= div["mean"] <= 1 and div["ms_ssim_scales"] == 2

    # grid.png: 3 rows of input | K samples | ground truth, SIZE px cells with 2 px gaps.
    with Image.open(out / "grid.png") as grid:
        assert grid.size == ((K + 2) * SIZE + (K + 3) * 2, 3 * SIZE + 4 * 2)
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "report.json"]  # no temporary files left
    assert "PSNR" in stdout and "baseline" in stdout and "report.json" in stdout


def test_task_specific_fields(cli_reports):
    colorize = cli_reports["colorize"][0]
    assert colorize["mean"]["baseline"]["colorfulness"] == pytest.approx(0.0, abs=1e-3)  # the gray input
    assert colorize["mean"]["ground_truth"]["colorfulness"] > 10
    assert cli_reports["jpeg"][0]["settings"]["quality"] == jpeg.DEFAULT_QUALITY
    inpaint = cli_reports["inpaint"][0]
    assert inpaint["settings"]["mask_mode"] == "center" and inpaint["scored_region"] == "restored region (mask)"
    assert all(r["mask_fraction"] == 0.25 for r in inpaint["images"])  # half the height, half the width
    uncrop = cli_reports["uncrop"][0]
    assert uncrop["settings"]["side"] == "right"
    assert all(r["mask_fraction"] == 0.5 for r in uncrop["images"])


def test_ground_truth_is_resized_then_centre_cropped():
    path = ROOT / "tests" / "data" / "kodim03-96.png"  # 96x64
    target = evaluate.load_ground_truth(path, SIZE)
    assert target.shape == (3, SIZE, SIZE) and target.min() >= -1 and target.max() <= 1
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB").resize((48, 32), Image.Resampling.BICUBIC).crop((8, 0, 40, 32)))
    got = ((target.permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.array_equal(got, expected.astype(np.float32))


@pytest.mark.parametrize("task", tasks.TASKS)
def test_baseline_and_model_scored_on_the_same_inputs(cli_reports, data_dir, tiny_model_dir, task):
    report = cli_reports[task][0]
    model = load_model(tiny_model_dir, device="cpu")
    for index, row in enumerate(report["images"]):
        target = evaluate.load_ground_truth(data_dir / row["file"], SIZE)
        # The input, built here from the task's definition, not from the report.
        options = {"inpaint": {"mask": inpaint.center_mask(SIZE, SIZE)},
                   "uncrop": {"mask": uncrop.uncrop_mask(SIZE, SIZE, "right")},
                   "jpeg": {"quality": jpeg.DEFAULT_QUALITY}}.get(task, {})
        cond, mask = tasks.degrade(task, target, evaluate.degrade_generator(7, index), **options)
        if task == "colorize":
            expected_baseline = colorize.to_gray(target)
        elif task == "jpeg":
            expected_baseline = jpeg.jpeg_recompress_tensor(target, jpeg.DEFAULT_QUALITY)
        else:
            known = target[:, mask[0] == 0]  # (3, N) known pixels
            expected_baseline = target * (1 - mask) + known.mean(dim=1)[:, None, None] * mask
        base = metrics.quantize(expected_baseline)
        assert row["baseline"]["psnr"] == pytest.approx(float(metrics.psnr(base, target, mask)), abs=1e-4)
        assert row["baseline"]["ssim"] == pytest.approx(float(metrics.ssim(base, target, mask)), abs=1e-5)
        # The model restored exactly this input: same scores when we restore it ourselves.
        with autocast(model, "auto"):  # the precision `palette eval` runs in by default
            samples = metrics.quantize(restore_tensors(model, cond[None], None if mask is None else mask[None],
                                                       num_samples=K, steps=STEPS, seed=7)[0])
        for smp, scored in zip(samples, row["samples"]):
            assert scored["psnr"] == pytest.approx(float(metrics.psnr(smp, target, mask)), abs=1e-4)


def test_identity_scores_the_psnr_cap(data_dir):
    target = evaluate.load_ground_truth(data_dir / "kodim05-96.png", SIZE)
    mask = inpaint.center_mask(SIZE, SIZE)
    scores = evaluate.score("inpaint", target, target, mask)
    assert scores["psnr"] == metrics.PSNR_CAP_DB and scores["ssim"] == pytest.approx(1.0, abs=1e-6)
    scores = evaluate.score("colorize", target, target, None)
    assert scores["psnr"] == metrics.PSNR_CAP_DB
    assert scores["colorfulness"] == pytest.approx(float(metrics.colorfulness(target)))


def _numbers(report: dict) -> dict:
    """The report without its timing."""
    return {k: v for k, v in report.items() if k != "timing"}


def test_same_seed_same_numbers_and_two_models_see_the_same_inputs(tiny_model_dir, data_dir, tmp_path):
    settings = EvalSettings(task="inpaint", mask_mode="free-form", num_samples=K, steps=STEPS, seed=3,
                            limit=2, grid_rows=0)
    model = load_model(tiny_model_dir, device="cpu")
    first = evaluate.evaluate(model, data_dir, settings).report
    again = evaluate.evaluate(model, data_dir, settings).report
    assert _numbers(first) == _numbers(again)
    assert first["num_images"] == 2

    other = load_model(make_tiny_model(tmp_path / "other", seed=1), device="cpu")
    second = evaluate.evaluate(other, data_dir, settings).report
    for a, b in zip(first["images"], second["images"]):
        assert a["mask_fraction"] == b["mask_fraction"]
        assert a["baseline"] == b["baseline"]  # identical inputs
        assert a["model"] != b["model"]  # different models

    reseeded = evaluate.evaluate(model, data_dir, replace(settings, seed=4)).report
    assert [r["mask_fraction"] for r in reseeded["images"]] != [r["mask_fraction"] for r in first["images"]]


def test_progress_callback_counts_images_and_one_sample_skips_diversity(tiny_model_dir, data_dir):
    calls = []
    result = evaluate.evaluate(load_model(tiny_model_dir, device="cpu"), data_dir,
                               EvalSettings(task="colorize", steps=1, limit=2),
                               callback=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    assert result.report["diversity"] == {"skipped": "needs --num-samples 2 or more"}
    assert result.grid.size == (3 * SIZE + 4 * 2, 2 * SIZE + 3 * 2)


def test_bad_image_is_reported_and_the_others_evaluated(tiny_model_dir, data_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(data_dir, folder)
    (folder / "broken.png").write_bytes(b"not an image")
    good = (data_dir / "kodim03-96.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "report"
    proc = run_cli("eval", str(folder), "--task", "jpeg", "-m", str(tiny_model_dir), "-o", str(out),
                   "--steps", "1", "--quality", "20", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 2 and "broken.png" in lines[0] and "truncated.png" in lines[1]
    report = json.loads((out / "report.json").read_text())
    assert json.loads(proc.stdout) == report  # --json prints the report itself
    assert report["num_images"] == 3 and report["settings"]["quality"] == 20
    assert [e["file"] for e in report["errors"]] == ["broken.png", "truncated.png"]


def test_quiet_prints_only_errors_and_still_writes_the_report(tiny_model_dir, data_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(data_dir, folder)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "report"
    proc = run_cli("eval", str(folder), "--task", "colorize", "-m", str(tiny_model_dir), "-o", str(out),
                   "--steps", "1", "--no-features", "--quiet")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.png" in lines[0]
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == len(list(folder.glob("*.png"))) - 1 and len(report["errors"]) == 1


def test_model_without_the_task_is_refused_in_one_line(tmp_path, data_dir):
    model = make_tiny_model(tmp_path / "colorize-only", tasks=("colorize",))
    proc = run_cli("eval", str(data_dir), "--task", "inpaint", "-m", str(model), "-o", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {model}: model was trained for colorize, not inpaint"]
    assert not (tmp_path / "r").exists()


def test_missing_data_and_bad_options(tiny_model_dir, tmp_path):
    proc = run_cli("eval", str(tmp_path / "nowhere"), "--task", "colorize", "-m", str(tiny_model_dir),
                   "-o", str(tmp_path / "r"))
    assert proc.returncode == 1 and "nowhere: no such file or folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(PaletteError, match="multiple of 2"):
        evaluate.evaluate(load_model(tiny_model_dir, device="cpu"), tmp_path,
                          EvalSettings(task="colorize", image_size=31))


def test_cli_choices_match_the_library():
    hints = typing.get_type_hints(eval_cli.eval_command, include_extras=True)
    choices = {name: typing.get_args(typing.get_args(hints[name])[0])
               for name in ("task", "mask_mode", "side", "refine")}
    assert choices == {"task": tasks.TASKS, "mask_mode": inpaint.EVAL_MASK_MODES, "side": uncrop.EVAL_SIDES,
                       "refine": pipeline.REFINE_MODES}
    assert typing.get_type_hints(eval_cli.eval_command)["quality"] is int
    assert eval_cli.eval_command.__kwdefaults__["quality"] == jpeg.DEFAULT_QUALITY


def test_help_lists_eval_without_importing_torch():
    code = ("import sys; from palette_cli.cli import _register; _register(); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
    assert "eval" in run_cli("--help").stdout
