"""Files in, files out: restore photos, folders and globs with one model, as `palette <task>` does.

    report = palette_cli.restore_files("jpeg", ["photos/"], output="restored/", quality=10)
    report = palette_cli.restore_files(RestoreSettings("inpaint", mask_box=(30, 10, 25, 20), num_samples=8),
                                       ["photo.png"], output="out/")
    report.failures  # one message per input that could not be restored, naming its file

Each input is decoded, its mask looked up (inpaint with a mask folder), prepared by its task,
sampled with the others in batches (`pipeline.restore_stream`) and written as a PNG that records
how it was made, atomically: a reader never sees a partial file. Samples are written as soon as
their batch is done, on a writer thread while the next batch samples; an interrupted run keeps
every file written. A bad input is reported and the others still run. Progress comes through
`on_progress(event)`, always on the calling thread; nothing is printed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import files, images, pipeline
from .checkpoint import PaletteModel, builtin_dir, builtin_for_task, builtin_names, load_model
from .devices import pick_device
from .errors import PaletteError
from .files import Job
from .settings import RestoreSettings, SettingsError

__all__ = ["Event", "Report", "RestoreSettings", "SettingsError", "Written", "load_task_model", "restore_files"]


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
    failures: list[str] = field(default_factory=list)  # one per failed input (or argument matching none)
    skipped: int = 0  # inputs whose outputs all existed (skip_existing)
    succeeded: int = 0  # inputs whose outputs were all written
    seconds: float = 0.0
    writing: float = 0.0  # seconds the run waited for PNG writes (the rest overlapped sampling)

    @property
    def failed(self) -> int:
        """Inputs that failed."""
        return len(self.failures)


def restore_files(settings: RestoreSettings | str, inputs: Iterable[str | os.PathLike], *,
                  model: str | os.PathLike | PaletteModel | None = None, output: str | os.PathLike | None = None,
                  recursive: bool = False, skip_existing: bool = False, overwrite: bool = False,
                  on_progress: Callable[[Event], None] | None = None, **options: Any) -> Report:
    """Restore every input (files, folders, globs) with one model into `output` (default: beside each input).

    `settings`: a `RestoreSettings`, or a task name with its fields as keyword `options`
    (`restore_files("jpeg", paths, quality=10)`; options a task registered outside palette takes go
    to `RestoreSettings.extra`). Outputs are `OUTDIR/<path below the folder>/NAME.TASK.K.png`.
    `output` may instead name the output file, `NAME.png`, for one input and one sample.
    Existing outputs refuse their input unless `skip_existing` (keep them) or `overwrite`. `model`: a
    built-in name, folder, Hub id or a loaded model; by default the built-in model of the task, never
    a folder of that name. inpaint's `mask` may be a mask file or a folder of masks named like the
    inputs. Raises PaletteError (SettingsError for settings) before any work for what fails every
    input; returns the per-input failures."""
    settings = _settings(settings, options)
    report = Report()
    started = time.perf_counter()
    notify = on_progress or (lambda event: None)
    if skip_existing and overwrite:
        raise SettingsError("skip_existing and overwrite exclude each other")
    settings.check_files()
    items, problems = files.find_inputs([os.fspath(p) for p in inputs], recursive=recursive)
    out_dir = None if output is None else Path(output)
    jobs, report.skipped, refused = files.plan(items, settings.task, settings.num_samples, out_dir,
                                               skip_existing=skip_existing, overwrite=overwrite)
    for message in problems + refused:
        _fail(report, notify, message)
    if jobs:
        _make_folder(out_dir if files.output_file(out_dir) is None else out_dir.parent)
        loaded, sampling, precision = _load(model, settings)
        notify(Event("files", total=len(jobs)))
        run = _Run(loaded, sampling, settings, report, notify)
        with precision:
            run.restore_all(jobs)
    report.seconds = time.perf_counter() - started
    return report


def _settings(settings: RestoreSettings | str, options: dict[str, Any]) -> RestoreSettings:
    """The settings given, or made from a task name and keyword options."""
    if isinstance(settings, RestoreSettings):
        if options:
            raise SettingsError(f"settings given twice: put {', '.join(options)} in the RestoreSettings")
        return settings
    names = {f.name for f in dataclasses.fields(RestoreSettings)} - {"task", "extra"}
    extra = {k: v for k, v in options.items() if k not in names}
    return RestoreSettings(settings, **{k: v for k, v in options.items() if k in names}, extra=extra)


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
    """The model for `task` (default: the built-in one, whatever folders the current one holds),
    refused if not trained for it."""
    if not isinstance(model, PaletteModel):
        try:
            where = pick_device(device)
        except PaletteError as exc:
            raise SettingsError(str(exc)) from None
        if model is None:
            model = _builtin(task, where)
        else:
            model = load_model(model, device=where)
    if task not in model.config.tasks:
        raise PaletteError(f"{model.source}: this model was trained for {', '.join(model.config.tasks)}, "
                           f"not {task}; use a {task} model")
    return model


def _builtin(task: str, device: Any) -> PaletteModel:
    """The built-in model of `task`, loaded from the package: never a folder of that name here."""
    directory = builtin_dir() / task if task in builtin_names() else builtin_for_task(task)
    if directory is None:
        raise PaletteError(f"no built-in model for {task} (built-in: {', '.join(builtin_names()) or 'none'}); "
                           f"choose one with --model")
    try:
        return dataclasses.replace(load_model(directory, device=device), source=directory.name)
    except PaletteError as exc:
        raise PaletteError(f"{exc} (the built-in {task} model; choose another model)") from None


def _load(model: str | os.PathLike | PaletteModel | None, settings: RestoreSettings):
    """The model, its resolved sampling and the precision context."""
    loaded = load_task_model(settings.task, model, settings.device)
    try:
        sampling = pipeline.resolve_sampling(loaded, settings.sampler, settings.steps, settings.strength,
                                             settings.guidance, refine=settings.refine)
        precision = pipeline.autocast(loaded, settings.dtype)
        return (pipeline.compiled(loaded) if settings.compile else loaded), sampling, precision
    except (PaletteError, RuntimeError) as exc:
        raise SettingsError(str(exc)) from None


class _Writer:
    """Saves PNGs on one background thread while the next samples are drawn. Outcomes come back in
    order to the calling thread, which alone reports them; at most `depth` saves wait, so memory
    stays bounded. Leaving the block (an interrupt included) first finishes the saves already queued."""

    def __init__(self, depth: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palette-writer")
        self._pending: deque[tuple[Future, Callable[[Any], None]]] = deque()
        self._depth = depth
        self.waited = 0.0  # seconds the calling thread spent waiting for saves

    def submit(self, save: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Queue `save`; `done(its result)` runs on this thread once it is finished."""
        self._pending.append((self._pool.submit(save), done))
        while len(self._pending) > self._depth:
            self._collect()

    def _collect(self) -> None:
        future, done = self._pending.popleft()
        start = time.perf_counter()
        result = future.result()
        self.waited += time.perf_counter() - start
        done(result)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            while self._pending:
                self._collect()
        finally:
            self._pool.shutdown(wait=True)


@dataclass
class _Run:
    """One run's model and settings, and where its results go."""

    model: PaletteModel
    sampling: pipeline.Sampling
    settings: RestoreSettings
    report: Report
    notify: Callable[[Event], None]
    failed: set[int] = field(default_factory=set)  # ids of jobs with a failed write

    def restore_all(self, jobs: list[Job]) -> None:
        """Stream every input through the model; each part's outputs are written while the next samples."""
        s = self.settings
        results = pipeline.restore_stream(
            self.model, self._prepared(jobs), num_samples=s.num_samples, sampling=self.sampling, seed=s.seed,
            batch_size=s.batch_size, callback=lambda done, total: self.notify(Event("steps", done, total)))
        writer = _Writer()
        try:
            with writer:
                for job, result in results:
                    outputs = self._outputs(job, result)
                    writer.submit(lambda outputs=outputs: [_save(*o) for o in outputs],
                                  lambda outcomes, job=job, result=result: self._saved(job, result, outcomes))
        finally:
            self.report.writing = writer.waited

    def _prepared(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        """(job, prepared photo) for each input that can be read; the others are reported and skipped."""
        options = self.settings.task_options()
        mask = options.pop("mask", None)
        mask_path = mask if isinstance(mask, Path) else None
        if mask is not None and mask_path is None:
            options["mask"] = mask
        for job in jobs:
            try:
                photo = images.load_photo(job.item.path)
                if mask_path is not None:
                    file = mask_path if mask_path.is_file() else files.find_mask(mask_path, job.item)
                    options["mask"] = images.load_mask(file, photo.size, str(job.item.path))
                yield job, pipeline.prepare(self.model, self.settings.task, photo, seed=self.settings.seed, **options)
            except PaletteError as exc:
                _fail(self.report, self.notify, str(exc) if str(job.item.path) in str(exc)
                      else f"{job.item.path}: {exc}")
                self.notify(Event("file"))

    def _outputs(self, job: Job, result: pipeline.Result) -> list[tuple[Any, Path, dict[str, str], Any]]:
        """(image, path, PNG text, ICC profile) of each output of `result` to write."""
        todo = []
        for i, image in enumerate(result.outputs):
            k = result.first + i
            if job.write[k]:
                text = pipeline.png_text(self.model, result.prepared, self.sampling, seed=self.settings.seed,
                                         sample=k, input_name=job.item.path.name)
                todo.append((image, job.outputs[k], text, result.prepared.photo.icc_profile))
        return todo

    def _saved(self, job: Job, result: pipeline.Result, outcomes: list[str | None]) -> None:
        """Report one part's saves (on the calling thread): each file written, or the input's first failure."""
        per_output = round(result.seconds / max(len(result.outputs), 1), 3)
        written = [k for k in range(result.first, result.first + len(result.outputs)) if job.write[k]]
        for k, problem in zip(written, outcomes):
            if problem is not None:
                if id(job) not in self.failed:
                    self.failed.add(id(job))
                    _fail(self.report, self.notify, problem)
                continue
            done = Written(job.item.path, job.outputs[k], self.settings.task, self.settings.seed, k,
                           self.sampling.steps, per_output)
            self.report.written.append(done)
            self.notify(Event("written", written=done))
        if result.last:
            self.report.succeeded += id(job) not in self.failed
            self.notify(Event("file"))


def _save(image: Any, path: Path, text: dict[str, str], icc_profile: bytes | None) -> str | None:
    """Write one output atomically (on the writer thread); a message if it could not be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        images.save_png(image, path, text, icc_profile)
    except PaletteError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path.parent}: cannot create the output folder ({exc.strerror or exc})"
    return None
