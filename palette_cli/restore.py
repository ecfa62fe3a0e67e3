"""Files in, files out: restore photos, folders and globs with one model, as `palette <task>` does.

    report = palette_cli.restore_files("jpeg", ["photos/"], output="restored/", quality=10)
    report.failures  # one message per input that could not be restored, naming its file

Each input is decoded, its mask looked up (inpaint with a mask folder), prepared by its task,
sampled with the others in batches (`pipeline.restore_stream`) and written as a PNG that records
how it was made, atomically: a reader never sees a partial file. A bad input is reported and
the others still run. Progress comes through `on_progress(event)`; nothing is printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import files, images, pipeline
from .checkpoint import PaletteModel, load_model
from .devices import pick_device
from .errors import PaletteError
from .files import Job


class SettingsError(PaletteError):
    """A setting the model or this machine cannot run (device, precision, sampler, steps), found
    before any photo is read: the call, not an input, is wrong."""


@dataclass(frozen=True)
class Written:
    """One output file and what made it."""

    input: Path
    output: Path
    task: str
    seed: int
    sample: int
    steps: int
    seconds: float  # the input's time shared among its outputs


@dataclass(frozen=True)
class Event:
    """Progress: `kind` is "files" (total inputs to restore, in `total`), "steps" (`done` of `total`
    sampler steps of the current group or refinement), "written" (`written`), "failed" (`message`)
    or "file" (one input finished, written or failed)."""

    kind: str
    done: int = 0
    total: int = 0
    written: Written | None = None
    message: str = ""


@dataclass
class Report:
    """What a run did: the files written, one message per failed input, inputs already done."""

    written: list[Written] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: int = 0  # inputs whose outputs all existed (skip_existing)
    succeeded: int = 0  # inputs whose outputs were all written
    seconds: float = 0.0


@dataclass(frozen=True)
class Settings:
    """How to sample and where to run; None and "auto": the model's or the machine's choice."""

    sampler: str | None = None
    steps: int | None = None
    strength: float | None = None
    guidance: float | None = None
    refine: str = "auto"
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False


def restore_files(task: str, inputs: Iterable[str | os.PathLike], *, model: str | os.PathLike | PaletteModel |
                  None = None, output: str | os.PathLike | None = None, recursive: bool = False,
                  num_samples: int = 1, seed: int = 0, skip_existing: bool = False, overwrite: bool = False,
                  on_progress: Callable[[Event], None] | None = None, sampler: str | None = None,
                  steps: int | None = None, strength: float | None = None, guidance: float | None = None,
                  refine: str = "auto", batch_size: int | None = None, device: str = "auto", dtype: str = "auto",
                  compile: bool = False, **task_options: Any) -> Report:
    """Restore every input (files, folders, globs) with one model into `output` (default: beside each input).

    Outputs are `OUTDIR/<path below the folder>/NAME.TASK.K.png`. Existing outputs refuse their input
    unless `skip_existing` (keep them) or `overwrite`. `model`: a built-in name, folder, Hub id or a loaded
    model (default: the built-in model named after the task). `task_options` are the task's (`pipeline.prepare`);
    inpaint's `mask` may be a mask file or a folder of masks named like the inputs. Raises PaletteError
    (SettingsError for settings) before any work for what fails every input; returns the per-input failures."""
    report = Report()
    started = time.perf_counter()
    notify = on_progress or (lambda event: None)
    if skip_existing and overwrite:
        raise SettingsError("skip_existing and overwrite exclude each other")
    items, problems = files.find_inputs([os.fspath(p) for p in inputs], recursive=recursive)
    out_dir = None if output is None else Path(output)
    jobs, report.skipped, refused = files.plan(items, task, num_samples, out_dir, skip_existing=skip_existing,
                                               overwrite=overwrite)
    for message in problems + refused:
        _fail(report, notify, message)
    if jobs:
        _make_folder(out_dir)
        settings = Settings(sampler, steps, strength, guidance, refine, batch_size, device, dtype, compile)
        loaded, sampling, precision = _load(task, model, settings)
        notify(Event("files", total=len(jobs)))
        run = _Run(task, loaded, sampling, settings, seed, num_samples, task_options, report, notify)
        with precision:
            run.restore_all(jobs)
    report.seconds = time.perf_counter() - started
    return report


def _fail(report: Report, notify: Callable[[Event], None], message: str) -> None:
    """One failed input: recorded, and told at once."""
    report.failures.append(message)
    notify(Event("failed", message=message))


def _make_folder(folder: Path | None) -> None:
    """The output folder, before any work: an unusable one fails every input."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PaletteError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None


def load_task_model(task: str, model: str | os.PathLike | PaletteModel | None = None,
                    device: str = "auto") -> PaletteModel:
    """The model for `task` (default: the built-in one named after it), refused if not trained for it."""
    if not isinstance(model, PaletteModel):
        try:
            where = pick_device(device)
        except PaletteError as exc:
            raise SettingsError(str(exc)) from None
        try:
            model = load_model(task if model is None else model, device=where)
        except PaletteError as exc:
            raise PaletteError(f"{exc} (the built-in {task} model; choose another model)" if model is None
                               else str(exc)) from None
    if task not in model.config.tasks:
        raise PaletteError(f"{model.source}: this model was trained for {', '.join(model.config.tasks)}, "
                           f"not {task}; use a {task} model")
    return model


def _load(task: str, model: str | os.PathLike | PaletteModel | None, settings: Settings):
    """The model, its resolved sampling and the precision context."""
    loaded = load_task_model(task, model, settings.device)
    try:
        sampling = pipeline.resolve_sampling(loaded, settings.sampler, settings.steps, settings.strength,
                                             settings.guidance, refine=settings.refine)
        precision = pipeline.autocast(loaded, settings.dtype)
        return (pipeline.compiled(loaded) if settings.compile else loaded), sampling, precision
    except (PaletteError, RuntimeError) as exc:
        raise SettingsError(str(exc)) from None


@dataclass
class _Run:
    """One run's model and settings, and where its results go."""

    task: str
    model: PaletteModel
    sampling: pipeline.Sampling
    settings: Settings
    seed: int
    num_samples: int
    task_options: dict[str, Any]
    report: Report
    notify: Callable[[Event], None]

    def restore_all(self, jobs: list[Job]) -> None:
        """Stream every input through the model and write its outputs as they come."""
        results = pipeline.restore_stream(
            self.model, self._prepared(jobs), num_samples=self.num_samples, sampling=self.sampling, seed=self.seed,
            batch_size=self.settings.batch_size, callback=lambda done, total: self.notify(Event("steps", done, total)))
        for job, result in results:
            self.report.succeeded += self._write(job, result)
            self.notify(Event("file"))

    def _prepared(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        """(job, prepared photo) for each input that can be read; the others are reported and skipped."""
        options = dict(self.task_options)
        mask = options.pop("mask", None)
        mask_path = Path(mask) if isinstance(mask, (str, os.PathLike)) else None
        if mask is not None and mask_path is None:
            options["mask"] = mask
        for job in jobs:
            try:
                photo = images.load_photo(job.item.path)
                if mask_path is not None:
                    file = mask_path if mask_path.is_file() else files.find_mask(mask_path, job.item)
                    options["mask"] = images.load_mask(file, photo.size, str(job.item.path))
                yield job, pipeline.prepare(self.model, self.task, photo, seed=self.seed, **options)
            except PaletteError as exc:
                _fail(self.report, self.notify, str(exc) if str(job.item.path) in str(exc)
                      else f"{job.item.path}: {exc}")
                self.notify(Event("file"))

    def _write(self, job: Job, result: pipeline.Result) -> bool:
        """Write the outputs of one input atomically; whether all were written."""
        per_output = result.seconds / len(result.outputs)
        for k, (image, path, wanted) in enumerate(zip(result.outputs, job.outputs, job.write)):
            if not wanted:
                continue
            text = pipeline.png_text(self.model, result.prepared, self.sampling, seed=self.seed, sample=k,
                                     input_name=job.item.path.name)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                images.save_png(image, path, text, result.prepared.photo.icc_profile)
            except PaletteError as exc:
                _fail(self.report, self.notify, str(exc))
                return False
            except OSError as exc:
                _fail(self.report, self.notify, f"{path.parent}: cannot create the output folder "
                      f"({exc.strerror or exc})")
                return False
            written = Written(job.item.path, path, self.task, self.seed, k, self.sampling.steps,
                              round(per_output, 3))
            self.report.written.append(written)
            self.notify(Event("written", written=written))
        return True

