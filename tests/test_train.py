"""Tests for palette_cli.train and `palette train/finetune`: real tiny runs on real photos."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from palette_cli import train as T
from palette_cli.checkpoint import build_network, load_model
from palette_cli.cli import _register, app
from palette_cli.config import TRAIN_SCHEDULE
from palette_cli.data import load_rgb, make_item
from palette_cli.diffusion import gammas, training_loss
from palette_cli.errors import PaletteError
from palette_cli.samplers import sample
from palette_cli.seeds import generator as sample_generator

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
KODAK = sorted(DATA.glob("kodim*-96.png"))
TINY = ["--preset", "tiny", "--batch-size", "2", "--warmup", "0", "--lr", "1e-3", "--sample-steps", "2"]

_register()
runner = CliRunner()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of three small Kodak photos."""
    root = tmp_path / "photos"
    root.mkdir()
    for p in KODAK[:3]:
        shutil.copy(p, root / p.name)
    return root


def tiny(**kw) -> T.TrainConfig:
    """A tiny-preset config: 32x32, batch 2, no warmup, grids off unless asked."""
    # fp32: the same numbers on every CPU (precision "auto" picks bf16 only on some; tested in test_encoder)
    base = dict(preset="tiny", batch_size=2, lr=1e-3, warmup=0, sample_every=0, sample_steps=2, save_every=100,
                precision="fp32")
    return T.TrainConfig(**{**base, **kw})


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def state_of(run: Path) -> dict:
    return torch.load(run / "state.pt", weights_only=True)


def test_cli_run_writes_model_metrics_and_grids(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "colorize,inpaint,uncrop,jpeg",
                                 *TINY, "--steps", "4", "--log-every", "2", "--save-every", "2",
                                 "--sample-every", "2"])
    assert result.exit_code == 0, result.output
    assert f"model in {run / 'model'}" in result.output

    # The model directory loads at once and restores images with the shared sampler.
    model = load_model(run / "model")
    assert model.config.tasks == ("colorize", "inpaint", "uncrop", "jpeg")
    assert model.config.image_size == 32 and model.config.unet == T.cfg.PRESETS["tiny"]
    # No --objective: the first task's measured recipe (colorize: x0, residual, 4 DDIM steps).
    assert (model.config.objective, model.config.residual, model.config.sampler, model.config.steps) == \
        ("x0", True, "ddim", 4)
    assert torch.equal(model.network.state_dict()["out.2.weight"], state_of(run)["ema"]["out.2.weight"])
    img = make_item(load_rgb(KODAK[0]), ("colorize",), 32, torch.Generator().manual_seed(0))
    out = sample(model.network, img.cond[None], gammas(model.config.sample_schedule), sampler="ddim", steps=2,
                 generators=[sample_generator(0, 0)], objective=model.config.objective,
                 residual=model.config.residual)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()

    lines = read_metrics(run)
    assert [m["step"] for m in lines] == [2, 4]
    for m in lines:
        assert m["loss"] > 0 and m["images_per_s"] > 0 and m["lr"] == pytest.approx(1e-3)
        assert set(m["task_loss"]) <= {"colorize", "inpaint", "uncrop", "jpeg"}
    seen = set().union(*(m["task_loss"] for m in lines))
    assert len(seen) >= 3  # tasks are mixed within batches

    # Grids: 4 rows of source | sample | target, 32 px each with 2 px gaps.
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["step-000000002.png", "step-000000004.png"]
    with Image.open(run / "samples" / grids[-1]) as grid:
        assert grid.size == (3 * 32 + 2 * 2, 4 * 32 + 3 * 2)
    state = state_of(run)
    assert state["step"] == 4 and set(state) >= {"model", "ema", "optimizer", "rng", "train_config"}
    assert not [p for p in run.rglob("*.tmp")]


def test_cli_json_and_quiet(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "jpeg", *TINY, "--steps", "2",
                                 "--sample-every", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout is the one JSON object, nothing else
    assert report == {"status": "done", "step": 2, "total": 2, "run": str(run), "model": str(run / "model"),
                      "images": 3, "skipped": []}
    assert "train" not in result.stderr and load_model(run / "model").config.tasks == ("jpeg",)

    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--resume", "--steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == "" and state_of(run)["step"] == 3


def test_new_runs_follow_their_tasks_recipe_and_eps_keeps_the_papers_steps() -> None:
    for task, steps in (("colorize", 4), ("jpeg", 2), ("inpaint", 1), ("uncrop", 1)):
        config = T.with_recipe(T.TrainConfig(tasks=(task,)))
        model = T.new_model_config(config)
        assert (config.objective, config.residual) == ("x0", True)
        assert (model.objective, model.residual, model.sampler, model.steps, model.strength) == \
            ("x0", True, "ddim", steps, 1.0)
        assert model.sample_schedule == model.train_schedule
    # A generalist follows its first task.
    assert T.new_model_config(T.TrainConfig(tasks=("jpeg", "colorize"))).steps == 2
    # Naming another objective drops residual unless asked; eps keeps the paper's 50 DDIM steps.
    # Every new model respaces its own training schedule (the paper's inference schedule stays the
    # ModelConfig default, for converted checkpoints and old directories).
    paper = T.with_recipe(T.TrainConfig(tasks=("jpeg",), objective="eps"))
    assert paper.residual is False
    model = T.new_model_config(paper)
    assert model.sample_schedule == model.train_schedule == T.cfg.TRAIN_SCHEDULE
    assert T.cfg.ModelConfig().sample_schedule == T.cfg.PAPER_SAMPLE_SCHEDULE != model.sample_schedule
    assert (model.sampler, model.steps) == ("ddim", 50)
    assert T.with_recipe(T.TrainConfig(tasks=("jpeg",), objective="v")).residual is False
    assert T.with_recipe(T.TrainConfig(tasks=("jpeg",), objective="eps", residual=True)).residual is True
    assert T.new_model_config(T.TrainConfig(objective="regression")).steps == 1


def test_resume_continues_exactly(photos: Path, tmp_path: Path) -> None:
    config = tiny(tasks=("colorize", "inpaint"), steps=4, batch_size=4, grad_accum=2, save_every=2, log_every=1)
    T.train([photos], tmp_path / "straight", config)

    halves = tmp_path / "halves"
    T.train([photos], halves, dataclasses.replace(config, steps=2))
    assert state_of(halves)["step"] == 2
    result = T.resume([photos], halves, {"steps": 4, "workers": 2})  # loader processes change nothing
    assert result.step == 4

    a, b = state_of(tmp_path / "straight"), state_of(halves)
    for part in ("model", "ema"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=1e-6)
    exp_a = a["optimizer"]["state"][0]["exp_avg_sq"]
    torch.testing.assert_close(exp_a, b["optimizer"]["state"][0]["exp_avg_sq"], rtol=0, atol=1e-9)
    # The metrics of the resumed run continue where the first half left off, with the same losses.
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(halves)
    assert [m["step"] for m in resumed] == [m["step"] for m in straight] == [1, 2, 3, 4]
    assert [m["loss"] for m in resumed] == pytest.approx([m["loss"] for m in straight], abs=1e-6)


@pytest.mark.parametrize("objective", [None, "eps"])  # the task's recipe (x0, residual) and Palette's eps
def test_loss_falls_by_half_when_overfitting_one_image(tmp_path: Path, objective: str | None) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(KODAK[3], one)
    items = [make_item(load_rgb(KODAK[3]), ("colorize",), 32, torch.Generator().manual_seed(100 + i))
             for i in range(4)]
    x0, cond = torch.stack([i.target for i in items]), torch.stack([i.cond for i in items])

    T.train([one], tmp_path / "run", tiny(steps=20, lr=2e-3, objective=objective))
    model = load_model(tmp_path / "run" / "model")
    assert model.config.objective == (objective or "x0")

    def fixed_batch_loss(network: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(training_loss(network, x0, cond, train_gammas=gammas(TRAIN_SCHEDULE),
                                       objective=model.config.objective, residual=model.config.residual,
                                       generator=torch.Generator().manual_seed(0)))

    torch.manual_seed(0)
    before = fixed_batch_loss(build_network(model.config))
    after = fixed_batch_loss(model.network)
    assert after < 0.5 * before, (before, after)


def test_unreadable_images_are_skipped_and_counted(photos: Path, tmp_path: Path) -> None:
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    full = (DATA / "parrots-gray.jpg").read_bytes()
    (photos / "cut.jpg").write_bytes(full[: len(full) // 4])
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "colorize", *TINY,
                                 "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: skipping") == 2
    assert "broken.png: unreadable image" in result.output and "cut.jpg: unreadable image" in result.output
    assert "skipped 2 unreadable image(s)" in result.output
    assert "3 images, 2 skipped" in result.output
    load_model(run / "model")

    events: list[T.TrainEvent] = []
    res = T.train([photos], tmp_path / "run2", tiny(steps=1), callback=events.append)
    assert sorted(p.name for p in res.skipped) == ["broken.png", "cut.jpg"] and res.images == 3
    assert sum(e.kind == "warning" for e in events) == 2
    kinds = [e.kind for e in events]
    checks = [(e.step, e.total) for e in events if e.kind == "check"]
    assert checks[0] == (0, 5) and checks[-1] == (5, 5)  # every listed file decoded once, before the first step
    assert max(i for i, k in enumerate(kinds) if k == "check") < kinds.index("start")


def test_a_phase_bar_shows_for_long_phases_only_and_goes_when_they_are_done() -> None:
    from palette_cli.cli.train import _PhaseBar

    bar = _PhaseBar("checking images", chatty=True, least=2000, transient=True)
    assert not bar.update(0, 1999) and not bar.progress.live.is_started  # a short list: no bar
    assert bar.update(0, 5000) and bar.progress.live.is_started
    assert not bar.update(2500, 5000) and bar.progress.tasks[0].completed == 2500
    bar.update(5000, 5000)
    assert not bar.progress.live.is_started and bar.bar is None
    assert not bar.update(5000, 5000)  # an event after the end starts nothing


def test_a_resume_decodes_only_the_photos_that_changed(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    T.train([photos], run, tiny(steps=1))
    record = T.read_checked(run / T.CHECKED_FILE)
    assert sorted(record) == sorted(str(p) for p in photos.iterdir())
    changed = sorted(photos.iterdir())[0]
    assert record[str(changed)] == (changed.stat().st_size, changed.stat().st_mtime_ns)
    changed.write_bytes(changed.read_bytes()[:200])  # cut short: its stamp changed, so it is decoded again
    events: list[T.TrainEvent] = []
    result = T.resume([photos], run, {"steps": 2}, callback=events.append)
    assert [p.name for p in result.skipped] == [changed.name] and result.images == 2 and result.step == 2
    assert sum(e.kind == "warning" and changed.name in e.message for e in events) == 1
    assert sorted(T.read_checked(run / T.CHECKED_FILE)) == sorted(str(p) for p in photos.iterdir() if p != changed)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "colorize", *TINY,
                                 "--lr", "1e12", "--steps", "20", "--save-every", "1"])
    assert result.exit_code == 1
    assert "not finite" in result.output and "Traceback" not in result.output
    state = state_of(run)
    last = state["step"]
    assert 1 <= last < 20
    assert f"last checkpoint (step {last})" in result.output
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    load_model(run / "model")


def test_finetune_keeps_the_config_and_freeze_freezes(tiny_model_dir: Path, photos: Path, tmp_path: Path) -> None:
    base = load_model(tiny_model_dir)
    original = base.network.state_dict()
    run = tmp_path / "ft"
    result = runner.invoke(app, ["finetune", str(tiny_model_dir), str(photos), "-o", str(run), "--task", "inpaint",
                                 "--freeze", "decoder", "--steps", "2", "--batch-size", "2", "--lr", "1e-3",
                                 "--sample-every", "0"])
    assert result.exit_code == 0, result.output
    tuned = load_model(run / "model")
    assert tuned.config.unet == base.config.unet
    assert tuned.config.train_schedule == base.config.train_schedule
    assert tuned.config.sample_schedule == base.config.sample_schedule
    assert tuned.config.tasks == ("inpaint",)  # the task set may change
    weights = tuned.network.state_dict()
    decoder = [k for k in weights if k.startswith(("output_blocks.", "out."))]
    encoder = [k for k in weights if k.startswith(("input_blocks.", "middle_block.")) and k.endswith("weight")]
    assert decoder and all(torch.equal(weights[k], original[k]) for k in decoder)
    assert sum(not torch.equal(weights[k], original[k]) for k in encoder) > len(encoder) // 2
    train_config = json.loads(state_of(run)["train_config"])
    assert train_config["lr"] == 1e-3 and train_config["warmup"] == T.cfg.FINETUNE_WARMUP
    assert train_config["freeze"] == "decoder"

    # The second stage of a two-stage schedule: everything trains, from the first stage's model.
    T.finetune(run / "model", [photos], tmp_path / "ft2", tiny(steps=1, tasks=("inpaint",)))
    again = load_model(tmp_path / "ft2" / "model").network.state_dict()
    assert any(not torch.equal(again[k], weights[k]) for k in decoder)


def test_a_finetune_at_a_smaller_crop_keeps_the_models_run_size(tiny_model_dir: Path, photos: Path,
                                                                 tmp_path: Path) -> None:
    assert load_model(tiny_model_dir).config.image_size == 32
    T.finetune(tiny_model_dir, [photos], tmp_path / "small", tiny(steps=1, image_size=16))
    smaller = load_model(tmp_path / "small" / "model")
    assert smaller.config.image_size == 32  # trained on 16 px crops, still runs at 32
    assert "images at 16x16 (it runs at 32x32)" in (tmp_path / "small" / "model" / "README.md").read_text()
    assert json.loads(state_of(tmp_path / "small")["train_config"])["image_size"] == 16
    # resumed, it still runs at 32; a finetune at a larger crop runs at that crop
    T.resume([photos], tmp_path / "small", {"steps": 2})
    assert load_model(tmp_path / "small" / "model").config.image_size == 32
    T.finetune(tiny_model_dir, [photos], tmp_path / "large", tiny(steps=1, image_size=48))
    assert load_model(tmp_path / "large" / "model").config.image_size == 48


def test_regression_objective_samples_in_one_network_call(photos: Path, tmp_path: Path) -> None:
    T.train([photos], tmp_path / "run", tiny(steps=2, objective="regression"))
    model = load_model(tmp_path / "run" / "model")
    assert model.config.objective == "regression"
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(1))
    cond = torch.stack([make_item(load_rgb(p), ("colorize",), 32, torch.Generator().manual_seed(0)).cond
                        for p in KODAK[:2]])
    out = sample(model.network, cond, gammas(model.config.sample_schedule), sampler=model.config.sampler,
                 steps=model.config.steps, generators=[sample_generator(0, i) for i in range(2)],
                 objective=model.config.objective)
    assert len(calls) == 1 and out.shape == (2, 3, 32, 32)


def test_x0_residual_run_records_its_objective_and_restores_through_the_cli(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "colorize,inpaint", *TINY,
                                 "--steps", "2", "--objective", "x0", "--residual", "--sample-every", "2"])
    assert result.exit_code == 0, result.output
    model = load_model(run / "model")
    assert (model.config.objective, model.config.residual, model.config.sampler) == ("x0", True, "ddim")
    assert model.config.sample_schedule == TRAIN_SCHEDULE
    assert (run / "samples" / "step-000000002.png").is_file()
    out = tmp_path / "out"
    for task in ("colorize", "inpaint"):
        result = runner.invoke(app, [task, str(KODAK[0]), "-o", str(out), "--model", str(run / "model"),
                                     "--steps", "3"] + (["--mask-mode", "center"] if task == "inpaint" else []))
        assert result.exit_code == 0, result.output
        assert (out / f"{KODAK[0].stem}.{task}.0.png").is_file()
    bad = runner.invoke(app, ["train", str(photos), "-o", str(tmp_path / "bad"), "--task", "jpeg", "--objective", "y"])
    assert bad.exit_code != 0 and "objective" in bad.output


def test_stop_request_saves_and_resume_finishes(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    steps_seen: list[int] = []

    def on_event(event: T.TrainEvent) -> None:
        if event.kind == "step":
            steps_seen.append(event.step)

    result = T.train([photos], run, tiny(steps=50, sample_every=0), callback=on_event,
                     should_stop=lambda: len(steps_seen) >= 2)
    assert result.stopped and result.step == 3  # asked during step 3, which completes first
    assert state_of(run)["step"] == 3
    load_model(run / "model")
    assert T.resume([photos], run, {"steps": 4}).step == 4


def test_run_directory_guards(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    T.train([photos], run, tiny(steps=1))
    with pytest.raises(PaletteError, match="already holds a training run"):
        T.train([photos], run, tiny(steps=2))
    with pytest.raises(PaletteError, match="already did 1 of 1 steps"):
        T.resume([photos], run)
    with pytest.raises(PaletteError, match="--preset cannot change"):
        T.resume([photos], run, {"preset": "small", "steps": 2})
    with pytest.raises(PaletteError, match="no state.pt to resume from"):
        T.resume([photos], tmp_path / "empty")
    with pytest.raises(PaletteError, match="image_size: 33 must be a multiple of 2"):
        T.train([photos], tmp_path / "a", tiny(image_size=33, steps=1))
    with pytest.raises(PaletteError, match="batch_size: 3 must be a multiple"):
        T.train([photos], tmp_path / "b", tiny(batch_size=3, grad_accum=2, steps=1))
    with pytest.raises(PaletteError, match='precision: must be one of auto, fp32, bf16, fp16, got "fp8"'):
        T.train([photos], tmp_path / "c", tiny(precision="fp8", steps=1))


def test_schedules_warm_up() -> None:
    config = T.TrainConfig(lr=1e-4, warmup=100, ema_decay=0.9999)
    assert T.lr_at(config, 0) == pytest.approx(1e-6) and T.lr_at(config, 99) == pytest.approx(1e-4)
    assert T.lr_at(config, 5000) == pytest.approx(1e-4)
    assert T.ema_decay_at(config, 0) == pytest.approx(0.1)
    assert T.ema_decay_at(config, 90) == pytest.approx(0.91)
    assert T.ema_decay_at(config, 10**7) == pytest.approx(0.9999)


def test_bf16_run_trains(photos: Path, tmp_path: Path) -> None:
    T.train([photos], tmp_path / "run", tiny(steps=2, precision="bf16"))
    state = state_of(tmp_path / "run")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state["model"].values())


def _env() -> dict[str, str]:
    """Subprocess environment: this checkout on the path, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_torchrun_two_processes_on_cpu(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "palette_cli", "train", str(photos),
           "-o", str(run), "--task", "colorize,jpeg", *TINY, "--steps", "2", "--batch-size", "4",
           "--sample-every", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = state_of(run)
    assert state["step"] == 2 and state["world_size"] == 2
    assert len(read_metrics(run)) == 1  # rank 0 alone writes
    load_model(run / "model")
    # Resume with a different number of processes: one.
    assert T.resume([photos], run, {"steps": 3}).step == 3


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "palette_cli", "train", str(photos), "-o", str(run), "--task", "colorize", *TINY,
           "--steps", "100000", "--log-every", "1", "--sample-every", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "stopped at step" in stderr and "Traceback" not in stderr
    step = state_of(run)["step"]
    assert step >= 1 and f"stopped at step {step} of 100000" in stderr
    load_model(run / "model")
