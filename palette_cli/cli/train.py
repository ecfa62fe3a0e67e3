"""`palette train` and `palette finetune`: thin wrappers over palette_cli.train."""

from __future__ import annotations

import dataclasses
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import (DEFAULT_IMAGE_SIZE, ENCODER_NAMES, FINETUNE_LR, FINETUNE_STEPS, FINETUNE_WARMUP, PRECISIONS,
                      PRESETS, TrainConfig)
from .common import app, err, fail, imports_done, out
from .options import option_groups

# Defaults shown in the help come from the config itself (config.py imports no torch).
_D = TrainConfig()
_SIZES = ", ".join(f"{size} {name}" for name, size in DEFAULT_IMAGE_SIZE.items())

DataArg = Annotated[list[Path], typer.Argument(
    help="Image folders (searched recursively), image files, or list files with one path per line.",
    show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Run directory (model/, state.pt, "
                                         "metrics.jsonl, samples/).", show_default=False)]


# Options both commands share, declared once. None means "not given": a resumed run keeps the
# value it was started with unless the option is given again.
@dataclass(frozen=True)
class TrainingOptions:
    """How a run trains, for train and finetune alike; fields are TrainConfig's."""

    image_size: Annotated[int | None, typer.Option(
        help=f"Crop size in pixels; the model runs at it, except that a finetune at a smaller crop "
             f"keeps the model's run size \\[default: {_SIZES}; a finetuned model's own size].")] = None
    batch_size: Annotated[int | None, typer.Option(
        help=f"Images per optimizer step, over all processes \\[default: {_D.batch_size}].")] = None
    grad_accum: Annotated[int | None, typer.Option(
        help=f"Micro-batches per step (saves memory) \\[default: {_D.grad_accum}].")] = None
    ema_decay: Annotated[float | None, typer.Option(
        help=f"EMA decay ceiling; warmed up as min(decay, (1+n)/(10+n)) \\[default: {_D.ema_decay}].")] = None
    loss: Annotated[str | None, typer.Option(help=f"l2 or l1 \\[default: {_D.loss}].")] = None
    precision: Annotated[str | None, typer.Option(
        help=f"{', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}; auto takes bf16 only where it runs natively "
        f"(CUDA, CPUs with AVX512-BF16 or AMX) \\[default: {_D.precision}].")] = None
    encoder: Annotated[str | None, typer.Option(
        help=f"Condition the network on a frozen pretrained encoder of its input: {', '.join(ENCODER_NAMES)} "
        "(ImageNet-trained, installed with palette) \\[default: none; finetune keeps the model's].")] = None
    perceptual: Annotated[float | None, typer.Option(
        help="Add W x the distance between the predicted and the true clean image in a frozen ImageNet "
        f"classifier's feature space \\[default: {_D.perceptual}, off].")] = None
    controls: Annotated[bool | None, typer.Option(
        "--controls/--no-controls",
        help="Colorize: also learn colour hints (--hint) and a reference photo's colours (--reference) "
        "\\[default: off; finetune keeps the model's].")] = None
    pyramid: Annotated[bool | None, typer.Option(
        "--pyramid/--no-pyramid",
        help="With an encoder: also feed its finer maps (strides 4, 8, 16) to the first levels, for detail "
        "\\[default: off; finetune keeps the model's].")] = None
    seed: Annotated[int | None, typer.Option(
        help=f"Seed of the data order, crops, masks and noise \\[default: {_D.seed}].")] = None
    workers: Annotated[int | None, typer.Option(help=f"Data loader processes \\[default: {_D.workers}].")] = None
    save_every: Annotated[int | None, typer.Option(
        help=f"Steps between checkpoints \\[default: {_D.save_every}].")] = None
    sample_every: Annotated[int | None, typer.Option(
        help=f"Steps between sample grids, 0 for none \\[default: {_D.sample_every}].")] = None
    sample_steps: Annotated[int | None, typer.Option(
        help="Sampler steps for the grids \\[default: the model's].")] = None
    log_every: Annotated[int | None, typer.Option(
        help=f"Steps per metrics.jsonl line \\[default: {_D.log_every}].")] = None
    crop: Annotated[str | None, typer.Option(
        help=f"native: crop at the photo's resolution; fit: shrink the short side to the crop size first "
        f"\\[default: {_D.crop}].")] = None


@dataclass(frozen=True)
class RunControl:
    """Where the run goes on, whether it continues, what it prints."""

    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the output directory.")] = False
    device: Annotated[str, typer.Option(
        help="auto, cpu, cuda or mps; under torchrun each process uses its LOCAL_RANK GPU.")] = "auto"
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors.")] = False
    as_json: Annotated[bool, typer.Option(
        "--json", help="No progress bar; print one JSON object on stdout when the run ends (status, step, "
        "total, model, images, skipped).")] = False


@dataclass(frozen=True)
class FeatureOptions:
    """Colorize from cached encoder maps, and the colour head, for train and finetune alike."""

    feature_cache: Annotated[Path | None, typer.Option(
        help="Colorize with --encoder: compute the encoder's maps of the training photos once into this folder "
        "(added to if it exists; about 190 KB a view) and train from it, without the encoder in the loop. "
        "Crops are the cached views' colours, 64x64 (a smaller --image-size is resized from them); "
        "--crop does not apply; not with --pyramid \\[default: none; with --colour-head, RUN_DIR/features; "
        "a resumed run keeps its own].", show_default=False)] = None
    cache_views: Annotated[int | None, typer.Option(
        help="Views of each photo in the feature cache: the whole photo and random crops and mirror images "
        "\\[default: 4].", show_default=False)] = None
    colour_head: Annotated[bool, typer.Option(
        "--colour-head", help="Colorize: train a colour head (classification over chroma bins, decoded by the "
        "annealed mean) from the feature cache and attach it to a colorize model as RUN_DIR/model: train puts "
        "it on --init (the built-in colorize model by default), finetune continues MODEL's own head (or adds "
        "one). The head's recipe sets the defaults of --steps 20000, --batch-size 32, --lr 1e-3 and "
        "--warmup 300.")] = False
    head_tail: Annotated[bool, typer.Option(
        "--head-tail", help="With --colour-head: the head gets its own trainable copy of the encoder's layers "
        "after stride 16, started from the encoder's weights, so the map it reads is tuned for colour "
        "(2.7 M more parameters, steps about 1.4x slower); a head without one gets one.")] = False


training_command = option_groups(training=TrainingOptions, control=RunControl, cached=FeatureOptions)


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


def _changes(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None), as TrainConfig fields."""
    return {k: v for k, v in options.items() if v is not None}


class _PhaseBar:
    """The bar of one phase before the first step (checking images, computing features): it shows from the
    first event with at least `least` items still to do and goes when they are done."""

    def __init__(self, label: str, chatty: bool, *, least: int = 1, transient: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=err, disable=not chatty,
                                 transient=transient)
        self.least = least
        self.bar: Any = None

    def update(self, done: int, total: int) -> bool:
        """Move the bar to `done` of `total`; True when this event started it."""
        started = self.bar is None and done < total and total >= self.least
        if started:
            self.progress.start()
            self.bar = self.progress.add_task("phase", total=total)
        if self.bar is not None:
            self.progress.update(self.bar, completed=done)
            if done >= total:
                self.progress.stop()
                self.bar = None
        return started


class _Display:
    """Training events on rank 0: warnings, a progress bar from the first step, the last save."""

    def __init__(self, chatty: bool) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.chatty = chatty
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}  {task.fields[rate]} img/s"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=err, disable=not chatty, transient=False)
        self.bar: Any = None
        self.saved = 0
        # Decoding every listed image once before the first step: a bar for long lists (minutes on 100k).
        self.check = _PhaseBar("checking images", chatty, least=2000, transient=True)
        self.cache = _PhaseBar("features", chatty)  # the feature cache: views computed of those it lacked

    def __call__(self, event: Any) -> None:
        if event.kind == "check":
            self.check.update(event.step, event.total)
        elif event.kind == "cache":
            if self.cache.update(event.step, event.total) and self.chatty:
                err.print(f"computing the encoder's maps of {event.total} view(s) into {event.message}")
        elif event.kind == "warning":
            err.print(f"[yellow]warning:[/] {event.message}", markup=True, highlight=False)
        elif event.kind == "start":
            if self.chatty:
                err.print(f"training on {event.message}")
            self.progress.start()  # only now: an early error prints no empty progress line
            self.bar = self.progress.add_task("train", total=event.total, completed=event.step, loss="-", rate="-")
        elif event.kind == "step" and self.bar is not None:
            self.progress.update(self.bar, completed=event.step, loss=f"{event.metrics['loss']:.4f}",
                                 rate=f"{event.metrics['images_per_s']:.1f}")
        elif event.kind == "save":
            self.saved = event.step

    def stop(self) -> None:
        """Stop the progress display if it was started (stopping an unstarted one prints a blank line)."""
        for progress in (self.check.progress, self.cache.progress, self.progress):
            if progress.live.is_started:
                progress.stop()


def _execute(start: Any, run_dir: Path, quiet: bool = False, as_json: bool = False) -> None:
    """Run a training function with progress on rank 0 and turn its outcomes into exit codes."""
    from ..errors import PaletteError

    rank0 = _rank() == 0
    display = _Display(chatty=rank0 and not quiet and not as_json)  # info lines and the progress bar
    with _StopOnSignal(quiet=quiet or as_json) as stop:
        try:
            result = start(callback=display, should_stop=stop)
        except PaletteError as exc:
            display.stop()
            if rank0:
                raise fail(str(exc)) from None
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            display.stop()
            if rank0:
                where = f"checkpoint at step {display.saved} kept" if display.saved else "no checkpoint written"
                err.print(f"interrupted: {where} in {run_dir}")
            raise typer.Exit(130) from None
        finally:
            display.stop()
    if rank0:
        _finished(result, run_dir, display.chatty, as_json)


def _finished(result: Any, run_dir: Path, chatty: bool, as_json: bool) -> None:
    """The closing lines (or JSON object) of a run; exit 130 when it was stopped early."""
    import json

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


def _start(control: RunControl, data: list[Path], output: Path, changes: dict[str, Any], fresh: Any,
           features: Any = None) -> None:
    """Resume the run in `output`, or start one with `fresh(config, callback, should_stop)`."""
    from .. import train as training

    if control.resume:
        start = lambda **kw: training.resume(data, output, changes, device=control.device,  # noqa: E731
                                             features=features, **kw)
    else:
        start = fresh
    _execute(start, output, control.quiet, control.as_json)


def _features(cached: FeatureOptions, default: Path | None = None) -> Any:
    """The feature cache a run names (a FeatureSource), `default` when it names none, or None."""
    from ..train_cache import DEFAULT_VIEWS, FeatureSource

    folder = cached.feature_cache or default
    if cached.head_tail and not cached.colour_head:
        raise fail("--head-tail goes with --colour-head", 2)
    if folder is None:
        if cached.cache_views is not None:
            raise fail("--cache-views goes with --feature-cache (or --colour-head)", 2)
        return None
    return FeatureSource(folder, cached.cache_views or DEFAULT_VIEWS)


# TrainingOptions a colour head run has no use for.
_NOT_FOR_THE_HEAD = ("image_size", "grad_accum", "loss", "encoder", "perceptual", "controls", "pyramid", "workers",
                     "sample_every", "sample_steps", "crop")


def _colour_head(control: RunControl, data: list[Path], output: Path, training: TrainingOptions,
                 base: str | None, cached: FeatureOptions, **head: Any) -> None:
    """Train (or resume) a colour head run: train_colour.train_colour_head with the head's own defaults."""
    from .. import train_colour

    ignored = [f"--{name.replace('_', '-')}" for name in _NOT_FOR_THE_HEAD if getattr(training, name) is not None]
    if ignored:
        raise fail(f"--colour-head trains a colour head, not a UNet: {', '.join(ignored)} do(es) not apply", 2)
    features = _features(cached, None if control.resume else output / "features")

    def start(**kw: Any):
        config = train_colour.head_config(output, control.resume, control.device, batch_size=training.batch_size,
                                          seed=training.seed, ema_decay=training.ema_decay,
                                          precision=training.precision, tail=cached.head_tail or None, **head)
        return train_colour.train_colour_head(data, output, config, base=base, features=features,
                                              resume=control.resume, device=control.device,
                                              log_every=training.log_every or 10,
                                              save_every=training.save_every or 500, **kw)

    _execute(start, output, control.quiet, control.as_json)


def _is_colour_head_run(control: RunControl, cached: FeatureOptions, output: Path) -> bool:
    if cached.colour_head:
        return True
    from ..train_colour import is_colour_head_run

    return control.resume and is_colour_head_run(output)


TaskOpt = Annotated[str | None, typer.Option(
    "--task", "-t", help="colorize, inpaint, uncrop, jpeg, or several joined by commas (one generalist model).")]


@app.command("train")
@training_command
def train_command(
    data: DataArg,
    output: OutputOpt,
    *,
    task: TaskOpt = None,
    preset: Annotated[str | None, typer.Option(
        help=f"Network size: {', '.join(list(PRESETS)[:-1])} or {list(PRESETS)[-1]} "
             f"\\[default: {_D.preset}].")] = None,
    steps: Annotated[int | None, typer.Option(
        help=f"Total optimizer steps of the run \\[default: {_D.steps}].")] = None,
    lr: Annotated[float | None, typer.Option(help=f"Adam learning rate after warmup \\[default: {_D.lr:g}].")] = None,
    warmup: Annotated[int | None, typer.Option(help=f"Linear warmup steps \\[default: {_D.warmup}].")] = None,
    objective: Annotated[str | None, typer.Option(help=f"What the network predicts: x0 (the clean image), v, eps "
                                                  f"(Palette's noise) or regression (one-pass baseline) "
                                                  f"\\[default: the first task's recipe, x0 for every "
                                                  f"built-in task, measured best on small budgets].")] = None,
    residual: Annotated[bool | None, typer.Option("--residual/--no-residual", help="Diffuse target minus "
                                                  "source (faster to learn) \\[default: on with x0, off "
                                                  "with another --objective].")] = None,
    init: Annotated[str | None, typer.Option(
        help="With --colour-head: the colorize model (with an encoder) the head is attached to "
             "\\[default: the built-in colorize model].")] = None,
    training: TrainingOptions,
    control: RunControl,
    cached: FeatureOptions,
) -> None:
    """Train a new model on your photos; runs on N GPUs under `torchrun --nproc-per-node N`."""
    from .. import train as training_lib

    imports_done()
    if _is_colour_head_run(control, cached, output):
        if task not in (None, "colorize"):
            raise fail("--colour-head trains colorize only", 2)
        return _colour_head(control, data, output, training, init, cached, steps=steps, lr=lr, warmup=warmup)
    if init is not None:
        raise fail("--init goes with --colour-head; to train a saved model's network further, use palette finetune", 2)
    changes = _changes(tasks=task, preset=preset, steps=steps, lr=lr, warmup=warmup, objective=objective,
                       residual=residual, **dataclasses.asdict(training))
    if task is None and not control.resume:
        raise fail("pass --task (colorize, inpaint, uncrop, jpeg, or several joined by commas)", 2)
    features = _features(cached)

    def fresh(**kw: Any):
        config = training_lib.TrainConfig(**{**changes, "tasks": training_lib.parse_tasks(task)})
        return training_lib.train(data, output, config, device=control.device, features=features, **kw)

    _start(control, data, output, changes, fresh, features)


@app.command("finetune")
@training_command
def finetune_command(
    model: Annotated[str, typer.Argument(help="Model to start from: built-in name, model directory "
                                         "(e.g. RUN_DIR/model) or Hub id.", show_default=False)],
    data: DataArg,
    output: OutputOpt,
    *,
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help="Tasks to train, joined by commas \\[default: the model's tasks].")] = None,
    freeze: Annotated[str | None, typer.Option(
        help=f"Leave a part untrained: encoder (noise embedding, down path, middle), decoder (up path, "
             f"output) or none \\[default: {_D.freeze}].")] = None,
    steps: Annotated[int | None, typer.Option(
        help=f"Total optimizer steps of the run \\[default: {FINETUNE_STEPS}].")] = None,
    lr: Annotated[float | None, typer.Option(
        help=f"Adam learning rate after warmup \\[default: {FINETUNE_LR:g}].")] = None,
    warmup: Annotated[int | None, typer.Option(help=f"Linear warmup steps \\[default: {FINETUNE_WARMUP}].")] = None,
    training: TrainingOptions,
    control: RunControl,
    cached: FeatureOptions,
) -> None:
    """Continue training a saved model on your photos, keeping its network (and its colour head's weights);
    may change its tasks. With --colour-head, continue (or add) its colour head instead."""
    from .. import train as training_lib
    from ..checkpoint import read_config, resolve

    imports_done()
    if _is_colour_head_run(control, cached, output):
        return _colour_head(control, data, output, training, model, cached, steps=steps, lr=lr, warmup=warmup)
    changes = _changes(tasks=task, freeze=freeze, steps=steps, lr=lr, warmup=warmup, **dataclasses.asdict(training))
    features = _features(cached)

    def fresh(**kw: Any):
        base = read_config(resolve(model))
        tasks = training_lib.parse_tasks(task) if task else base.tasks
        config = training_lib.TrainConfig.finetune(**{**changes, "tasks": tasks})
        return training_lib.finetune(model, data, output, config, device=control.device, features=features, **kw)

    _start(control, data, output, changes, fresh, features)
