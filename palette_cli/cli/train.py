"""`palette train` and `palette finetune`: thin wrappers over palette_cli.train."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from . import app
from .common import err, fail, imports_done, out

# Options both commands share, defined once. None means "not given": a resumed run keeps the
# value it was started with unless the option is given again.
DataArg = Annotated[list[Path], typer.Argument(
    help="Image folders (searched recursively), image files, or list files with one path per line.",
    show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Run directory (model/, state.pt, "
                                         "metrics.jsonl, samples/).", show_default=False)]
TaskOpt = Annotated[str | None, typer.Option(
    "--task", "-t", help="colorize, inpaint, uncrop, jpeg, or several joined by commas (one generalist model).")]
ImageSizeOpt = Annotated[int | None, typer.Option(help="Crop size in pixels \\[default: 32 tiny, 64 small, "
                                                  "256 paper256; a finetuned model's own size].")]
BatchOpt = Annotated[int | None, typer.Option(help="Images per optimizer step, over all processes "
                                              "\\[default: 8].")]
AccumOpt = Annotated[int | None, typer.Option(help="Micro-batches per step (saves memory) \\[default: 1].")]
StepsOpt = Annotated[int | None, typer.Option(help="Total optimizer steps of the run \\[default: 10000].")]
EmaOpt = Annotated[float | None, typer.Option(help="EMA decay ceiling; warmed up as min(decay, (1+n)/(10+n)) "
                                              "\\[default: 0.9999].")]
LossOpt = Annotated[str | None, typer.Option(help="l2 or l1 \\[default: l2].")]
PrecisionOpt = Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 \\[default: fp32].")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of the data order, crops, masks and noise "
                                             "\\[default: 0].")]
WorkersOpt = Annotated[int | None, typer.Option(help="Data loader processes \\[default: 0].")]
SaveEveryOpt = Annotated[int | None, typer.Option(help="Steps between checkpoints \\[default: 1000].")]
SampleEveryOpt = Annotated[int | None, typer.Option(help="Steps between sample grids, 0 for none "
                                                    "\\[default: 1000].")]
SampleStepsOpt = Annotated[int | None, typer.Option(help="Sampler steps for the grids \\[default: the "
                                                    "model's].")]
LogEveryOpt = Annotated[int | None, typer.Option(help="Steps per metrics.jsonl line \\[default: 10].")]
CropOpt = Annotated[str | None, typer.Option(help="native: crop at the photo's resolution; fit: shrink the "
                                             "short side to the crop size first \\[default: native].")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in the output directory.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps; under torchrun each process uses its "
                                        "LOCAL_RANK GPU.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="No progress bar; print one JSON object on stdout when the "
                                       "run ends (status, step, total, model, images, skipped).")]


def _rank() -> int:
    """This process's rank under torchrun (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM) asks the loop to save and stop after the current step.

    A second Ctrl-C interrupts at once, except under torchrun, whose agent forwards the user's
    Ctrl-C a second time: there the agent's own timeout is the hard stop.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.requested = False
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT and not self.distributed:
            raise KeyboardInterrupt
        if not self.requested and _rank() == 0 and not self.quiet:
            err.print("stopping after this step and saving a checkpoint (Ctrl-C again to abort at once)")
        self.requested = True

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.requested


def _stop(progress: Any) -> None:
    """Stop the progress display if it was started (stopping an unstarted one prints a blank line)."""
    if progress.live.is_started:
        progress.stop()


def _changes(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None), as TrainConfig fields."""
    return {k: v for k, v in options.items() if v is not None}


def _execute(start: Any, run_dir: Path, quiet: bool = False, as_json: bool = False) -> None:
    """Run a training function with progress on rank 0 and turn its outcomes into exit codes."""
    import json

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from ..errors import PaletteError

    rank0 = _rank() == 0
    chatty = rank0 and not quiet and not as_json  # info lines and the progress bar
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}  {task.fields[rate]} img/s"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        console=err, disable=not chatty, transient=False)
    bar = None
    saved = [0]

    def on_event(event: Any) -> None:
        nonlocal bar
        if event.kind == "warning":
            err.print(f"[yellow]warning:[/] {event.message}", markup=True, highlight=False)
        elif event.kind == "start":
            if chatty:
                err.print(f"training on {event.message}")
            progress.start()  # only now: an early error prints no empty progress line
            bar = progress.add_task("train", total=event.total, completed=event.step, loss="-", rate="-")
        elif event.kind == "step" and bar is not None:
            progress.update(bar, completed=event.step, loss=f"{event.metrics['loss']:.4f}",
                            rate=f"{event.metrics['images_per_s']:.1f}")
        elif event.kind == "save":
            saved[0] = event.step

    with _StopOnSignal(quiet=quiet or as_json) as stop:
        try:
            result = start(callback=on_event, should_stop=stop)
        except PaletteError as exc:
            _stop(progress)
            if rank0:
                raise fail(str(exc)) from None
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _stop(progress)
            if rank0:
                where = f"checkpoint at step {saved[0]} kept" if saved[0] else "no checkpoint written"
                err.print(f"interrupted: {where} in {run_dir}")
            raise typer.Exit(130) from None
        finally:
            _stop(progress)
    if not rank0:
        return
    if as_json:
        out.print(json.dumps({"status": "stopped" if result.stopped else "done", "step": result.step,
                              "total": result.total, "run": str(run_dir), "model": str(result.model_dir),
                              "images": result.images, "skipped": [str(p) for p in result.skipped]}),
                  markup=False)
    if result.skipped and not as_json:
        err.print(f"[yellow]skipped {len(result.skipped)} unreadable image(s)[/]", markup=True)
    if result.stopped:
        if not as_json:
            err.print(f"stopped at step {result.step} of {result.total}; checkpoint saved in {run_dir}; "
                      f"continue with the same command and --resume")
        raise typer.Exit(130)
    if chatty:
        err.print(f"done: {result.step} steps; model in {result.model_dir}")


@app.command("train")
def train_command(
    data: DataArg,
    output: OutputOpt,
    *,
    task: TaskOpt = None,
    preset: Annotated[str | None, typer.Option(help="Network size: tiny, small or paper256 "
                                               "\\[default: small].")] = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchOpt = None,
    grad_accum: AccumOpt = None,
    steps: StepsOpt = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate after warmup \\[default: 1e-4].")] = None,
    warmup: Annotated[int | None, typer.Option(help="Linear warmup steps \\[default: 10000].")] = None,
    ema_decay: EmaOpt = None,
    loss: LossOpt = None,
    objective: Annotated[str | None, typer.Option(help="What the network predicts: x0 (the clean image), v, eps "
                                                  "(Palette's noise) or regression (one-pass baseline) "
                                                  "\\[default: x0, measured best on small budgets].")] = None,
    residual: Annotated[bool | None, typer.Option("--residual/--no-residual", help="Diffuse target minus "
                                                  "source (faster to learn) \\[default: on with x0, off "
                                                  "with another --objective].")] = None,
    precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    save_every: SaveEveryOpt = None,
    sample_every: SampleEveryOpt = None,
    sample_steps: SampleStepsOpt = None,
    log_every: LogEveryOpt = None,
    crop: CropOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a new model on your photos; runs on N GPUs under `torchrun --nproc-per-node N`."""
    from .. import train as training

    imports_done()

    changes = _changes(tasks=task, preset=preset, image_size=image_size, batch_size=batch_size,
                       grad_accum=grad_accum, steps=steps, lr=lr, warmup=warmup, ema_decay=ema_decay, loss=loss,
                       objective=objective, residual=residual, precision=precision, seed=seed,
                       workers=workers, save_every=save_every, sample_every=sample_every,
                       sample_steps=sample_steps, log_every=log_every, crop=crop)
    if resume:
        _execute(lambda **kw: training.resume(data, output, changes, device=device, **kw), output, quiet, as_json)
        return
    if task is None:
        raise fail("pass --task (colorize, inpaint, uncrop, jpeg, or several joined by commas)", 2)
    changes["tasks"] = training.parse_tasks(task)
    config = training.TrainConfig(**changes)
    _execute(lambda **kw: training.train(data, output, config, device=device, **kw), output, quiet, as_json)


@app.command("finetune")
def finetune_command(
    model: Annotated[str, typer.Argument(help="Model to start from: built-in name, model directory "
                                         "(e.g. RUN_DIR/model) or Hub id.", show_default=False)],
    data: DataArg,
    output: OutputOpt,
    *,
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help="Tasks to train, joined by commas \\[default: the model's tasks].")] = None,
    freeze: Annotated[str | None, typer.Option(
        help="Leave a part untrained: encoder (noise embedding, down path, middle), decoder (up path, "
             "output) or none \\[default: none].")] = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchOpt = None,
    grad_accum: AccumOpt = None,
    steps: Annotated[int | None, typer.Option(help="Total optimizer steps of the run \\[default: 2000].")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate after warmup \\[default: 2e-5].")] = None,
    warmup: Annotated[int | None, typer.Option(help="Linear warmup steps \\[default: 500].")] = None,
    ema_decay: EmaOpt = None,
    loss: LossOpt = None,
    precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    save_every: SaveEveryOpt = None,
    sample_every: SampleEveryOpt = None,
    sample_steps: SampleStepsOpt = None,
    log_every: LogEveryOpt = None,
    crop: CropOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue training a saved model on your photos, keeping its network; may change its tasks."""
    from .. import train as training

    imports_done()

    changes = _changes(tasks=task, freeze=freeze, image_size=image_size, batch_size=batch_size,
                       grad_accum=grad_accum, steps=steps, lr=lr, warmup=warmup, ema_decay=ema_decay, loss=loss,
                       precision=precision, seed=seed, workers=workers, save_every=save_every,
                       sample_every=sample_every, sample_steps=sample_steps, log_every=log_every, crop=crop)
    if resume:
        _execute(lambda **kw: training.resume(data, output, changes, device=device, **kw), output, quiet, as_json)
        return
    from ..checkpoint import read_config, resolve

    base = read_config(resolve(model))
    changes["tasks"] = training.parse_tasks(task) if task else base.tasks
    defaults = {"lr": training.FINETUNE_LR, "warmup": training.FINETUNE_WARMUP,
                "steps": training.FINETUNE_STEPS}
    config = training.TrainConfig(**{**defaults, **changes})
    _execute(lambda **kw: training.finetune(model, data, output, config, device=device, **kw), output, quiet,
             as_json)
