"""`palette colorize|inpaint|uncrop|jpeg INPUTS...`: restore files, folders, globs or stdin paths.

Each command parses its options and hands them to `_run`, which calls `restore.restore_files` (the
library does the work) and draws its progress. A bad input is one red line on stderr; the others
still run; exit 1 at the end. Settings the model cannot run exit 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from .common import app, err, error_line, fail, imports_done, out, share_cores
from .options import InputsArg, OutputOptions, RefineOpt, RunOptions, SamplingOptions, option_groups


MaskMode = Literal["center", "free-form"]
Side = Literal["left", "right", "top", "bottom", "all"]


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

    --hint, --hints and --reference steer the colours (models trained with colour controls, as the built-in one is); --guidance pushes them harder.

    Writes OUTDIR/NAME.colorize.0.png (beside the input without -o).
    """
    _run(Request("colorize", inputs, outputs, sampling, run,
                 {"hints": tuple(hint or ()), "hints_image": hints, "reference": reference}))


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
    refine: RefineOpt = "auto",
    outputs: OutputOptions, sampling: SamplingOptions, run: RunOptions,
) -> None:
    """Fill the masked part of photos; every pixel outside the mask is kept exactly.

    Give exactly one of --mask, --mask-box, --mask-mode. Writes OUTDIR/NAME.inpaint.0.png.
    """
    _run(Request("inpaint", inputs, outputs, sampling, run, {"mask": mask, "mask_box": mask_box,
                                                             "mask_mode": mask_mode}, refine))


@app.command("uncrop")
@restoring
def uncrop_command(
    *, inputs: InputsArg,
    side: Annotated[Side, typer.Option(
        "--side", help="Where the canvas grows; all: around the photo.", rich_help_panel="Uncrop")] = "right",
    ratio: Annotated[float, typer.Option(
        "--ratio", min=0.01, max=0.99, help="Share of the output that is new, as in training: 0.5 doubles the "
        "width (left/right) or height (top/bottom); with all, the photo keeps half the area.",
        rich_help_panel="Uncrop")] = 0.5,
    keep_frame: Annotated[bool, typer.Option(
        "--keep-frame", help="Keep a scan's flat frame on the growing edges (a few lines of one colour); "
        "by default it is filled with the new part, so it does not show as a stripe.",
        rich_help_panel="Uncrop")] = False,
    refine: RefineOpt = "auto",
    outputs: OutputOptions, sampling: SamplingOptions, run: RunOptions,
) -> None:
    """Extend photos beyond their borders; every original pixel is kept exactly, but a scan's frame.

    Writes OUTDIR/NAME.uncrop.0.png, larger than the input.
    """
    _run(Request("uncrop", inputs, outputs, sampling, run, {"side": side, "ratio": ratio,
                                                            "keep_frame": keep_frame}, refine))


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
                # One write of the whole line, not Rich's buffered print: a Ctrl-C inside that print could leave
                # the line in Rich's buffer, to be printed again with the next one.
                line = json.dumps({"input": str(w.input), "output": str(w.output), "task": w.task, "seed": w.seed,
                                   "sample": w.sample, "steps": w.steps, "seconds": w.seconds})
                out.file.write(line + "\n")
                out.file.flush()


def _settings(req: Request):
    """The command's RestoreSettings, checked before any model is loaded (exit 2 if wrong)."""
    from ..settings import RestoreSettings, SettingsError

    s, r = req.sampling, req.run
    try:
        return RestoreSettings(
            req.task, num_samples=s.num_samples, seed=s.seed, sampler=s.sampler, steps=s.steps, strength=s.strength,
            guidance=s.guidance, refine=req.refine, batch_size=r.batch_size, device=r.device, dtype=r.dtype,
            compile=r.compile, **req.task_options)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None


def _run(req: Request) -> None:
    """Restore every input with one model; exit 1 at the end if any input failed, 2 for unusable settings."""
    share_cores()  # first: checking the settings imports torch
    if req.outputs.skip_existing and req.outputs.overwrite:
        raise typer.BadParameter("--skip-existing and --overwrite exclude each other")
    settings = _settings(req)
    from ..errors import PaletteError
    from ..restore import SettingsError, restore_files

    imports_done()
    o = req.outputs
    display = _Display(o)
    try:
        with display.progress:
            report = restore_files(settings, _read_args(req.inputs), model=req.run.model, output=o.output,
                                   recursive=o.recursive, skip_existing=o.skip_existing, overwrite=o.overwrite,
                                   on_progress=display)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    except PaletteError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        error_line(f"interrupted after writing {display.written} file(s); finished outputs are complete, "
                   f"rerun with --skip-existing to resume")
        raise typer.Exit(130) from None
    if not o.quiet and not o.json_lines:
        err.print(summary(req.task, report, o.output), markup=False)
    if report.failures:
        error_line(f"{report.failed} input(s) failed (see above)")
        raise typer.Exit(1)


def summary(task: str, report: Any, output: Path | None) -> str:
    """The closing line: every input tried, as written, failed or already done, and the files written."""
    done = f", {report.skipped} already done" if report.skipped else ""
    where = f" in {output}" if output else ""
    return (f"{task}: {report.succeeded} written, {report.failed} failed{done}; "
            f"{len(report.written)} image(s){where} in {report.seconds:.1f} s")
