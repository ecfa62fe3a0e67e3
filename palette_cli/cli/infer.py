"""`palette colorize|inpaint|uncrop|jpeg INPUTS...`: restore files, folders, globs or stdin paths.

Each command parses its options and hands them to `_run`, which expands the inputs, loads the
model once, streams the photos through `pipeline.restore_stream` and writes each output
atomically. A bad input is one red line on stderr; the others still run; exit 1 at the end.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import app
from .common import err, error_line, fail, out


class Sampler(str, Enum):
    ddpm = "ddpm"
    ddim = "ddim"
    dpmpp = "dpmpp"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Dtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class MaskMode(str, Enum):
    center = "center"
    free_form = "free-form"


class Side(str, Enum):
    left = "left"
    right = "right"
    top = "top"
    bottom = "bottom"
    all = "all"


# Options shared by every restoring command, defined once.
_OUT, _SAMPLING, _RUN = "Output", "Sampling", "Model and device"
InputsArg = Annotated[list[str], typer.Argument(
    help="Image files, folders (with --recursive), globs, or - to read paths from stdin, one per line.",
    show_default=False)]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Output folder (created if needed). Default: beside each input.",
    show_default=False, rich_help_panel=_OUT)]
RecursiveOpt = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Read folders with their subfolders; outputs keep the folder structure.")]
NumSamplesOpt = Annotated[int, typer.Option(
    "--num-samples", "-n", min=1, help="Samples per input: NAME.TASK.0.png, NAME.TASK.1.png, ...",
    rich_help_panel=_SAMPLING)]
StepsOpt = Annotated[Optional[int], typer.Option(
    "--steps", min=1, help="Sampling steps. Default: the model's.", show_default=False,
    rich_help_panel=_SAMPLING)]
SamplerOpt = Annotated[Optional[Sampler], typer.Option(
    "--sampler", help="ddim (deterministic given the seed), dpmpp (DPM-Solver++ 2M, deterministic, "
    "good at few steps) or ddpm (ancestral). Default: the model's.",
    show_default=False, rich_help_panel=_SAMPLING)]
StrengthOpt = Annotated[Optional[float], typer.Option(
    "--strength", max=1.0,
    help="Where sampling starts: 1 = pure noise (the paper), lower = from the noised input (keeps more "
    "of it). Default: the model's.", show_default=False, rich_help_panel=_SAMPLING)]
SeedOpt = Annotated[int, typer.Option(
    "--seed", help="Random seed; sample i of a photo is the same whatever else is in the run.",
    rich_help_panel=_SAMPLING)]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", min=1, help="Samples per network call. Default: from free memory.", show_default=False,
    rich_help_panel=_RUN)]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Built-in model name, local model folder or Hub id (org/name or org/name@revision). "
    "Default: the built-in model named after the command.", show_default=False, rich_help_panel=_RUN)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run.", rich_help_panel=_RUN)]
DtypeOpt = Annotated[Dtype, typer.Option(
    "--dtype", help="Network precision: auto is fp32 on CPU, bf16 or fp16 on GPUs (autocast).",
    rich_help_panel=_RUN)]
SkipOpt = Annotated[bool, typer.Option(
    "--skip-existing", help="Keep outputs that already exist (resume an interrupted run).", rich_help_panel=_OUT)]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace outputs that already exist.", rich_help_panel=_OUT)]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON line per written file: input, output, task, seed, steps, seconds.",
    rich_help_panel=_OUT)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.", rich_help_panel=_OUT)]


@dataclass
class Options:
    """What the shared options say."""

    output: Path | None = None
    recursive: bool = False
    num_samples: int = 1
    steps: int | None = None
    sampler: Sampler | None = None
    seed: int = 0
    batch_size: int | None = None
    model: str | None = None
    device: Device = Device.auto
    dtype: Dtype = Dtype.auto
    skip_existing: bool = False
    overwrite: bool = False
    json_lines: bool = False
    quiet: bool = False
    task_options: dict[str, Any] = field(default_factory=dict)
    strength: float | None = None


@app.command("colorize")
def colorize_command(
    *, inputs: InputsArg, output: OutputOpt = None, recursive: RecursiveOpt = False, num_samples: NumSamplesOpt = 1,
    steps: StepsOpt = None, sampler: SamplerOpt = None, strength: StrengthOpt = None, seed: SeedOpt = 0, batch_size: BatchSizeOpt = None,
    model: ModelOpt = None, device: DeviceOpt = Device.auto, dtype: DtypeOpt = Dtype.auto,
    skip_existing: SkipOpt = False, overwrite: OverwriteOpt = False, json_lines: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Colorize photos: colour is predicted at the model's resolution and put on the full-resolution luminance.

    Writes OUTDIR/NAME.colorize.0.png (beside the input without -o).
    """
    _run("colorize", inputs, Options(output, recursive, num_samples, steps, sampler, seed, batch_size, model,
                                     device, dtype, skip_existing, overwrite, json_lines, quiet,
                                     strength=strength))


@app.command("inpaint")
def inpaint_command(
    *, inputs: InputsArg,
    mask: Annotated[Optional[Path], typer.Option(
        "--mask", help="Mask image (white = fill, same size as the photo) or a folder of masks named like "
        "the inputs (photo.jpg -> MASKS/photo.png).", show_default=False, rich_help_panel="Mask")] = None,
    mask_box: Annotated[Optional[str], typer.Option(
        "--mask-box", metavar="X,Y,W,H", help="Fill this rectangle (pixels).", show_default=False,
        rich_help_panel="Mask")] = None,
    mask_mode: Annotated[Optional[MaskMode], typer.Option(
        "--mask-mode", help="center: the central half; free-form: random brush strokes from the seed.",
        show_default=False, rich_help_panel="Mask")] = None,
    output: OutputOpt = None, recursive: RecursiveOpt = False, num_samples: NumSamplesOpt = 1,
    steps: StepsOpt = None, sampler: SamplerOpt = None, strength: StrengthOpt = None, seed: SeedOpt = 0, batch_size: BatchSizeOpt = None,
    model: ModelOpt = None, device: DeviceOpt = Device.auto, dtype: DtypeOpt = Dtype.auto,
    skip_existing: SkipOpt = False, overwrite: OverwriteOpt = False, json_lines: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fill the masked part of photos; every pixel outside the mask is kept exactly.

    Give exactly one of --mask, --mask-box, --mask-mode. Writes OUTDIR/NAME.inpaint.0.png.
    """
    given = [name for name, value in (("--mask", mask), ("--mask-box", mask_box), ("--mask-mode", mask_mode))
             if value is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --mask, --mask-box, --mask-mode"
                                 + (f" (got {', '.join(given)})" if given else ""))
    task_options: dict[str, Any] = {}
    if mask is not None:
        if not mask.exists():
            raise typer.BadParameter(f"{mask}: no such file or folder", param_hint="--mask")
        task_options["mask_path"] = mask
    elif mask_box is not None:
        try:
            box = tuple(int(v) for v in mask_box.split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or box[2] < 1 or box[3] < 1:
            raise typer.BadParameter(f"{mask_box!r}: expected X,Y,W,H in pixels, e.g. 10,20,64,48",
                                     param_hint="--mask-box")
        task_options["mask_box"] = box
    else:
        task_options["mask_mode"] = mask_mode.value
    _run("inpaint", inputs, Options(output, recursive, num_samples, steps, sampler, seed, batch_size, model,
                                    device, dtype, skip_existing, overwrite, json_lines, quiet, task_options,
                                    strength=strength))


@app.command("uncrop")
def uncrop_command(
    *, inputs: InputsArg,
    side: Annotated[Side, typer.Option(
        "--side", help="Where the canvas grows; all: around the photo.", rich_help_panel="Uncrop")] = Side.right,
    ratio: Annotated[float, typer.Option(
        "--ratio", min=0.01, max=0.99, help="Share of the output that is new, as in training: 0.5 doubles the "
        "width (left/right) or height (top/bottom); with all, the photo keeps half the area.",
        rich_help_panel="Uncrop")] = 0.5,
    output: OutputOpt = None, recursive: RecursiveOpt = False, num_samples: NumSamplesOpt = 1,
    steps: StepsOpt = None, sampler: SamplerOpt = None, strength: StrengthOpt = None, seed: SeedOpt = 0, batch_size: BatchSizeOpt = None,
    model: ModelOpt = None, device: DeviceOpt = Device.auto, dtype: DtypeOpt = Dtype.auto,
    skip_existing: SkipOpt = False, overwrite: OverwriteOpt = False, json_lines: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Extend photos beyond their borders; every original pixel is kept exactly.

    Writes OUTDIR/NAME.uncrop.0.png, larger than the input.
    """
    _run("uncrop", inputs, Options(output, recursive, num_samples, steps, sampler, seed, batch_size, model,
                                   device, dtype, skip_existing, overwrite, json_lines, quiet,
                                   {"side": side.value, "ratio": ratio}, strength=strength))


@app.command("jpeg")
def jpeg_command(
    *, inputs: InputsArg,
    quality: Annotated[Optional[int], typer.Option(
        "--quality", min=1, max=100, help="First recompress each (clean) input as JPEG at this quality: "
        "for demos and evaluation.", show_default=False, rich_help_panel="JPEG")] = None,
    output: OutputOpt = None, recursive: RecursiveOpt = False, num_samples: NumSamplesOpt = 1,
    steps: StepsOpt = None, sampler: SamplerOpt = None, strength: StrengthOpt = None, seed: SeedOpt = 0, batch_size: BatchSizeOpt = None,
    model: ModelOpt = None, device: DeviceOpt = Device.auto, dtype: DtypeOpt = Dtype.auto,
    skip_existing: SkipOpt = False, overwrite: OverwriteOpt = False, json_lines: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove JPEG artifacts, in overlapping tiles at the model's resolution, so any size works.

    Writes OUTDIR/NAME.jpeg.0.png.
    """
    _run("jpeg", inputs, Options(output, recursive, num_samples, steps, sampler, seed, batch_size, model,
                                 device, dtype, skip_existing, overwrite, json_lines, quiet, {"quality": quality},
                                 strength=strength))


# --- the shared run -------------------------------------------------------------------------


@dataclass
class _Job:
    """One input: its file, its output paths, which of them to write."""

    item: Any  # files.InputFile
    outputs: list[Path]
    write: list[bool]


def _read_args(args: list[str]) -> list[str]:
    """Arguments with `-` replaced by the paths read from stdin, one per line."""
    expanded = []
    for arg in args:
        if arg == "-":
            expanded.extend(line.strip() for line in sys.stdin.read().splitlines() if line.strip())
        else:
            expanded.append(arg)
    return expanded


def _plan(task: str, inputs: list[str], opts: Options, report) -> tuple[list[_Job], int]:
    """Expand the inputs into jobs; report bad ones; return the jobs and how many were skipped."""
    from .. import files

    items, problems = files.find_inputs(_read_args(inputs), recursive=opts.recursive)
    for problem in problems:
        report(problem)
    input_keys = {item.path.resolve() for item in items}
    claimed: dict[Path, Path] = {}
    jobs, skipped = [], 0
    for item in items:
        outputs = files.output_paths(item, task, opts.num_samples, opts.output)
        keys = [p.resolve() for p in outputs]
        clash = next((claimed[k] for k in keys if k in claimed), None)
        if clash is not None:
            report(f"{item.path}: its output {outputs[0].name} would also be written for {clash}; "
                   f"rename one of them or restore them into different folders")
            continue
        if any(k in input_keys for k in keys):
            report(f"{item.path}: an output would overwrite another input ({outputs[0]}); use -o")
            continue
        exists = [p.exists() for p in outputs]
        if any(exists) and not (opts.skip_existing or opts.overwrite):
            first = outputs[exists.index(True)]
            report(f"{first}: already exists; use --skip-existing to keep it or --overwrite to replace it")
            continue
        claimed.update(dict.fromkeys(keys, item.path))
        write = [not (e and opts.skip_existing) for e in exists]
        if not any(write):
            skipped += 1
            continue
        jobs.append(_Job(item, outputs, write))
    return jobs, skipped


def _progress(quiet: bool):
    """Files done/total and sampling steps, with ETA, on stderr (only on a terminal)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal)


def _run(task: str, inputs: list[str], opts: Options) -> None:
    """Restore every input with one model; exit 1 at the end if any input failed."""
    if opts.skip_existing and opts.overwrite:
        raise typer.BadParameter("--skip-existing and --overwrite exclude each other")
    started = time.perf_counter()
    failures: list[str] = []

    def report(message: str) -> None:
        failures.append(message)
        error_line(message)

    jobs, skipped = _plan(task, inputs, opts, report)
    if jobs and opts.output is not None:
        try:  # before any work: an unusable output folder fails every input
            opts.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(f"{opts.output}: cannot create the output folder ({exc.strerror or exc})") from None
    if not jobs:
        _summary(task, opts, 0, 0, skipped, failures, started)
        return

    import torch

    from .. import __version__, files, images, pipeline
    from ..checkpoint import load_model, pick_device
    from ..errors import PaletteError

    if opts.device == Device.mps and not torch.backends.mps.is_available():
        raise fail("--device mps was asked for but MPS is not available", 2)
    try:
        device = pick_device(opts.device.value)
    except PaletteError as exc:
        raise fail(str(exc), 2) from None
    try:
        model = load_model(opts.model or task, device=device)
    except PaletteError as exc:
        hint = "" if opts.model else f" (the built-in {task} model; pass another with --model)"
        raise fail(f"{exc}{hint}") from None
    if task not in model.config.tasks:
        raise fail(f"{model.source}: this model was trained for {', '.join(model.config.tasks)}, not {task}; "
                   f"pass a {task} model with --model")
    sampler = opts.sampler.value if opts.sampler else None
    try:
        sampling = pipeline.resolve_sampling(model, sampler, opts.steps, opts.strength)
        context = pipeline.autocast(model, opts.dtype.value)
    except (PaletteError, RuntimeError) as exc:
        raise fail(str(exc), 2) from None

    task_options = dict(opts.task_options)
    mask_path: Path | None = task_options.pop("mask_path", None)
    written = succeeded = 0
    progress = _progress(opts.quiet)
    file_bar = progress.add_task("files", total=len(jobs))
    steps = progress.add_task("steps", total=None)
    last = [0]

    def on_step(done: int, total: int) -> None:
        if done <= last[0]:  # a new group of photos: restart the step bar and its ETA
            progress.reset(steps, total=total)
        last[0] = done
        progress.update(steps, completed=done, total=total)

    def prepared():
        for job in jobs:
            try:
                photo = images.load_photo(job.item.path)
                options = dict(task_options)
                if mask_path is not None:
                    file = mask_path if mask_path.is_file() else files.find_mask(mask_path, job.item)
                    options["mask"] = images.load_mask(file, photo.size, str(job.item.path))
                yield job, pipeline.prepare(model, task, photo, seed=opts.seed, **options)
            except PaletteError as exc:
                report(str(exc) if str(job.item.path) in str(exc) else f"{job.item.path}: {exc}")
                progress.advance(file_bar)

    try:
        with progress, context:
            results = pipeline.restore_stream(model, prepared(), num_samples=opts.num_samples, sampling=sampling,
                                              seed=opts.seed, batch_size=opts.batch_size, callback=on_step)
            for job, result in results:
                count, ok = _write(model, job, result, opts, sampling, report, __version__)
                written += count
                succeeded += ok
                progress.advance(file_bar)
    except KeyboardInterrupt:
        error_line(f"interrupted after writing {written} file(s); finished outputs are complete, "
                   f"rerun with --skip-existing to resume")
        raise typer.Exit(130) from None
    _summary(task, opts, written, succeeded, skipped, failures, started)


def _write(model, job: _Job, result, opts: Options, sampling, report, version: str) -> tuple[int, bool]:
    """Write the outputs of one input atomically; return how many were written and if all were."""
    from .. import images, pipeline
    from ..errors import PaletteError

    written = 0
    per_output = result.seconds / len(result.outputs)
    for k, (image, path, wanted) in enumerate(zip(result.outputs, job.outputs, job.write)):
        if not wanted:
            continue
        settings = pipeline.output_settings(model, result.prepared, sampling, seed=opts.seed, sample=k)
        text = {"palette": json.dumps({"input": job.item.path.name, **settings, "version": version}),
                "Software": f"palette {version}"}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            images.save_png(image, path, text, result.prepared.photo.icc_profile)
        except PaletteError as exc:
            report(str(exc))
            return written, False
        except OSError as exc:
            report(f"{path.parent}: cannot create the output folder ({exc.strerror or exc})")
            return written, False
        written += 1
        if opts.json_lines:
            out.print(json.dumps({"input": str(job.item.path), "output": str(path), "task": settings["task"],
                                  "seed": opts.seed, "sample": k, "steps": settings["steps"],
                                  "seconds": round(per_output, 3)}), markup=False)
    return written, True


def _summary(task: str, opts: Options, written: int, succeeded: int, skipped: int, failures: list[str],
             started: float) -> None:
    """One closing line; exit 1 if anything failed."""
    seconds = time.perf_counter() - started
    if not opts.quiet and not opts.json_lines:
        where = f" in {opts.output}" if opts.output else ""
        kept = f", {skipped} already done" if skipped else ""
        err.print(f"{task}: wrote {written} image(s){where} for {succeeded} input(s){kept} "
                  f"in {seconds:.1f} s", markup=False)
    if failures:
        error_line(f"{len(failures)} input(s) failed (see above)")
        raise typer.Exit(1)
