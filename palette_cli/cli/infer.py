"""`palette colorize|inpaint|uncrop|jpeg INPUTS...`: restore files, folders, globs or stdin paths.

Each command parses its options and hands them to `_run`, which calls `restore.restore_files` (the
library does the work) and draws its progress. A bad input is one red line on stderr; the others
still run; exit 1 at the end. Settings the model cannot run exit 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import app, err, error_line, fail, imports_done, out
from .options import DeviceOpt, DtypeOpt, SamplerOpt, option_groups


class MaskMode(str, Enum):
    center = "center"
    free_form = "free-form"


class Refine(str, Enum):
    auto = "auto"
    off = "off"


class Side(str, Enum):
    left = "left"
    right = "right"
    top = "top"
    bottom = "bottom"
    all = "all"


# Options shared by every restoring command, declared once as groups (see options.py).
_OUT, _SAMPLING, _RUN = "Output", "Sampling", "Model and device"
InputsArg = Annotated[list[str], typer.Argument(
    help="Image files, folders (with --recursive), globs, or - to read paths from stdin, one per line.",
    show_default=False)]


@dataclass(frozen=True)
class OutputOptions:
    """Where outputs go, what happens to existing ones, what is printed."""

    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Output folder (created if needed). Default: beside each input.",
        show_default=False, rich_help_panel=_OUT)] = None
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Read folders with their subfolders; outputs keep the folder structure.")] = False
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Keep outputs that already exist (resume an interrupted run).",
        rich_help_panel=_OUT)] = False
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace outputs that already exist.", rich_help_panel=_OUT)] = False
    json_lines: Annotated[bool, typer.Option(
        "--json", help="Print one JSON line per written file: input, output, task, seed, steps, seconds.",
        rich_help_panel=_OUT)] = False
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print nothing but errors.", rich_help_panel=_OUT)] = False


@dataclass(frozen=True)
class SamplingOptions:
    """How many samples and how they are drawn; None: the model's default."""

    num_samples: Annotated[int, typer.Option(
        "--num-samples", "-n", min=1, help="Samples per input: NAME.TASK.0.png, NAME.TASK.1.png, ...",
        rich_help_panel=_SAMPLING)] = 1
    steps: Annotated[Optional[int], typer.Option(
        "--steps", min=1, help="Sampling steps. Default: the model's.", show_default=False,
        rich_help_panel=_SAMPLING)] = None
    sampler: SamplerOpt = None
    strength: Annotated[Optional[float], typer.Option(
        "--strength", max=1.0,
        help="Where sampling starts: 1 = pure noise (the paper), lower = from the noised input (keeps more "
        "of it). Default: the model's.", show_default=False, rich_help_panel=_SAMPLING)] = None
    seed: Annotated[int, typer.Option(
        "--seed", help="Random seed; sample i of a photo is the same whatever else is in the run.",
        rich_help_panel=_SAMPLING)] = 0
    guidance: Annotated[Optional[float], typer.Option(
        "--guidance", min=0.0, help="Models with a pretrained encoder or colour controls: classifier-free guidance "
        "weight over what the encoder sees and the colour hints/reference (PITI's normalized form); 0 = off. "
        "Default: the model's.", show_default=False,
        rich_help_panel=_SAMPLING)] = None


@dataclass(frozen=True)
class RunOptions:
    """Which model, where and in which precision."""

    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, help="Samples per network call. Default: from free memory.", show_default=False,
        rich_help_panel=_RUN)] = None
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Built-in model name, local model folder or Hub id (org/name or org/name@revision). "
        "Default: the built-in model named after the command.", show_default=False, rich_help_panel=_RUN)] = None
    device: DeviceOpt = "auto"
    dtype: DtypeOpt = "auto"
    compile: Annotated[bool, typer.Option(
        "--compile", help="Compile the network (torch.compile) for a folder of many photos: each new photo "
        "size first waits for the compiler (seconds with its cache warm, a minute or more cold), then runs "
        "faster where the CPU has native bf16 (no gain in fp32). Outputs may differ from eager by rounding.",
        rich_help_panel=_RUN)] = False


@dataclass(frozen=True)
class Request:
    """One restoring command as given: the task, its inputs, the option groups, the task's own options."""

    task: str
    inputs: list[str]
    outputs: OutputOptions
    sampling: SamplingOptions
    run: RunOptions
    task_options: dict[str, Any] = field(default_factory=dict)
    refine: str = "auto"  # inpaint and uncrop: coarse-to-fine fills ("auto" or "off")


restoring = option_groups(outputs=OutputOptions, sampling=SamplingOptions, run=RunOptions)

# The masked tasks' coarse-to-fine fills, one option for both commands.
RefineOpt = Annotated[Refine, typer.Option(
    "--refine", help="auto: refine the fill at successively doubled sizes up to the photo's own resolution "
    "(models whose config has a refine block); off: the model-size fill scaled up, as before.",
    rich_help_panel=_SAMPLING)]


@app.command("colorize")
@restoring
def colorize_command(
    *, inputs: InputsArg,
    hint: Annotated[Optional[list[str]], typer.Option(
        "--hint", metavar="X,Y,#RRGGBB[,R]", help="A known colour at pixel X,Y of the photo, optionally over a "
        "disk of radius R pixels; repeat for more.", show_default=False, rich_help_panel="Colour")] = None,
    hints: Annotated[Optional[Path], typer.Option(
        "--hints", help="RGBA image the photo's size whose opaque pixels are colour hints.", show_default=False,
        rich_help_panel="Colour")] = None,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="A photo whose colours to follow (its chroma histogram).", show_default=False,
        rich_help_panel="Colour")] = None,
    outputs: OutputOptions, sampling: SamplingOptions, run: RunOptions,
) -> None:
    """Colorize photos: colour is predicted at the model's resolution and put on the full-resolution luminance.

    --hint, --hints and --reference steer the colours (models trained with colour controls, as the
    built-in one is); --guidance pushes them harder. Writes OUTDIR/NAME.colorize.0.png (beside the input without -o).
    """
    _run(Request("colorize", inputs, outputs, sampling, run, _colour_options(hint, hints, reference)))


def _colour_options(hint: list[str] | None, hints: Path | None, reference: Path | None) -> dict[str, Any]:
    """Colour controls, checked before any photo is read: hint syntax, and that the files can be read."""
    from .. import images
    from ..errors import PaletteError
    from ..tasks.hints import parse_hint

    options: dict[str, Any] = {}
    try:
        if hint:
            options["hints"] = [parse_hint(text) for text in hint]
    except PaletteError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--hint "), param_hint="--hint") from None
    for option, path, key in (("--hints", hints, "hints_image"), ("--reference", reference, "reference")):
        if path is None:
            continue
        try:
            images.load_photo(path, draft=64)
        except PaletteError as exc:
            raise fail(f"{option}: {exc}", 2) from None
        options[key] = path
    return options


def _mask_options(mask: Path | None, mask_box: str | None, mask_mode: MaskMode | None) -> dict[str, Any]:
    """The one mask option given, checked and parsed."""
    given = [name for name, value in (("--mask", mask), ("--mask-box", mask_box), ("--mask-mode", mask_mode))
             if value is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --mask, --mask-box, --mask-mode"
                                 + (f" (got {', '.join(given)})" if given else ""))
    if mask is not None:
        if not mask.exists():
            raise typer.BadParameter(f"{mask}: no such file or folder", param_hint="--mask")
        return {"mask": mask}
    if mask_box is not None:
        try:
            box = tuple(int(v) for v in mask_box.split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or box[2] < 1 or box[3] < 1:
            raise typer.BadParameter(f"{mask_box!r}: expected X,Y,W,H in pixels, e.g. 10,20,64,48",
                                     param_hint="--mask-box")
        return {"mask_box": box}
    return {"mask_mode": mask_mode.value}


@app.command("inpaint")
@restoring
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
    refine: RefineOpt = Refine.auto,
    outputs: OutputOptions, sampling: SamplingOptions, run: RunOptions,
) -> None:
    """Fill the masked part of photos; every pixel outside the mask is kept exactly.

    Give exactly one of --mask, --mask-box, --mask-mode. Writes OUTDIR/NAME.inpaint.0.png.
    """
    _run(Request("inpaint", inputs, outputs, sampling, run, _mask_options(mask, mask_box, mask_mode), refine.value))


@app.command("uncrop")
@restoring
def uncrop_command(
    *, inputs: InputsArg,
    side: Annotated[Side, typer.Option(
        "--side", help="Where the canvas grows; all: around the photo.", rich_help_panel="Uncrop")] = Side.right,
    ratio: Annotated[float, typer.Option(
        "--ratio", min=0.01, max=0.99, help="Share of the output that is new, as in training: 0.5 doubles the "
        "width (left/right) or height (top/bottom); with all, the photo keeps half the area.",
        rich_help_panel="Uncrop")] = 0.5,
    refine: RefineOpt = Refine.auto,
    outputs: OutputOptions, sampling: SamplingOptions, run: RunOptions,
) -> None:
    """Extend photos beyond their borders; every original pixel is kept exactly.

    Writes OUTDIR/NAME.uncrop.0.png, larger than the input.
    """
    _run(Request("uncrop", inputs, outputs, sampling, run, {"side": side.value, "ratio": ratio}, refine.value))


@app.command("jpeg")
@restoring
def jpeg_command(
    *, inputs: InputsArg,
    quality: Annotated[Optional[int], typer.Option(
        "--quality", min=1, max=100, help="First recompress each (clean) input as JPEG at this quality: "
        "for demos and evaluation.", show_default=False, rich_help_panel="JPEG")] = None,
    outputs: OutputOptions, sampling: SamplingOptions, run: RunOptions,
) -> None:
    """Remove JPEG artifacts, in overlapping tiles at the model's resolution, so any size works.

    Writes OUTDIR/NAME.jpeg.0.png.
    """
    _run(Request("jpeg", inputs, outputs, sampling, run, {"quality": quality}))


# --- the shared run -------------------------------------------------------------------------


def _read_args(args: list[str]) -> list[str]:
    """Arguments with `-` replaced by the paths read from stdin, one per line."""
    expanded = []
    for arg in args:
        if arg == "-":
            expanded.extend(line.strip() for line in sys.stdin.read().splitlines() if line.strip())
        else:
            expanded.append(arg)
    return expanded


class _Display:
    """Draws the library's progress events: files done/total and sampling steps with ETA on stderr
    (only on a terminal), a red line per failed input, a JSON line per written file with --json."""

    def __init__(self, outputs: OutputOptions) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.json_lines = outputs.json_lines
        self.progress = Progress(TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err,
                                 disable=outputs.quiet or not err.is_terminal)
        self.file_bar = self.progress.add_task("files", total=None)
        self.step_bar = self.progress.add_task("steps", total=None)
        self.last_step = self.written = 0

    def __call__(self, event) -> None:
        if event.kind == "files":
            self.progress.update(self.file_bar, total=event.total)
        elif event.kind == "file":
            self.progress.advance(self.file_bar)
        elif event.kind == "steps":  # a new group of photos, or a refinement, restarts the step bar
            if event.done <= self.last_step:
                self.progress.reset(self.step_bar, total=event.total)
            self.last_step = event.done
            self.progress.update(self.step_bar, completed=event.done, total=event.total)
        elif event.kind == "failed":
            error_line(event.message)
        elif event.kind == "written":
            self.written += 1
            w = event.written
            if self.json_lines:
                out.print(json.dumps({"input": str(w.input), "output": str(w.output), "task": w.task, "seed": w.seed,
                                      "sample": w.sample, "steps": w.steps, "seconds": w.seconds}), markup=False)


def _run(req: Request) -> None:
    """Restore every input with one model; exit 1 at the end if any input failed, 2 for unusable settings."""
    if req.outputs.skip_existing and req.outputs.overwrite:
        raise typer.BadParameter("--skip-existing and --overwrite exclude each other")
    from ..errors import PaletteError
    from ..restore import SettingsError, restore_files

    imports_done()
    o, s, r = req.outputs, req.sampling, req.run
    display = _Display(o)
    try:
        with display.progress:
            report = restore_files(
                req.task, _read_args(req.inputs), model=r.model, output=o.output, recursive=o.recursive,
                num_samples=s.num_samples, seed=s.seed, skip_existing=o.skip_existing, overwrite=o.overwrite,
                on_progress=display, sampler=s.sampler, steps=s.steps, strength=s.strength, guidance=s.guidance,
                refine=req.refine, batch_size=r.batch_size, device=r.device, dtype=r.dtype, compile=r.compile,
                **req.task_options)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    except PaletteError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        error_line(f"interrupted after writing {display.written} file(s); finished outputs are complete, "
                   f"rerun with --skip-existing to resume")
        raise typer.Exit(130) from None
    if not o.quiet and not o.json_lines:
        where = f" in {o.output}" if o.output else ""
        kept = f", {report.skipped} already done" if report.skipped else ""
        err.print(f"{req.task}: wrote {len(report.written)} image(s){where} for {report.succeeded} input(s){kept} "
                  f"in {report.seconds:.1f} s", markup=False)
    if report.failures:
        error_line(f"{len(report.failures)} input(s) failed (see above)")
        raise typer.Exit(1)
