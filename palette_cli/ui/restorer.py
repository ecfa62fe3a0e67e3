"""The models behind the page, each loaded once, and the one restore that runs at a time.

A restore is the command line's: the uploaded photo, saved in the request's folder, goes through
`restore_files` (decode, prepare, sample, PNG with its metadata and colour profile, written atomically),
so a downloaded PNG has the pixels and the metadata `palette <task> --seed S -n N` writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import pipeline
from ..checkpoint import PaletteModel, load_model
from ..devices import pick_device
from ..errors import PaletteError
from ..restore import Event, restore_files
from ..settings import RestoreSettings
from .forms import BadRequest, without_folder


MAX_WAITING = 16  # restores that may wait for the one running; more are answered 503 at once


class ModelError(PaletteError):
    """A model could not be loaded: the server's problem, not the request's."""


class Stopped(PaletteError):
    """The server is stopping: the restore gave up (at its next sampler step) or never started."""


class Busy(PaletteError):
    """Too many restores wait already: the client should retry after `retry_after` seconds."""

    retry_after = 2


@dataclass(frozen=True)
class Sample:
    """One output: the PNG file's bytes and what reproduces it."""

    png: bytes
    name: str  # the command line's output name, NAME.TASK.K.png
    seed: int
    sample: int


class Progress:
    """What the page polls while its request runs: the restore in progress and how many wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"task": None, "done": 0, "total": 0, "waiting": 0}

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._state.update(changes)

    def add_waiting(self, delta: int, most: int | None = None) -> bool:
        """One more (or less) restore waiting; False, and no change, if `most` already wait."""
        with self._lock:
            if most is not None and self._state["waiting"] + delta > most:
                return False
            self._state["waiting"] += delta
            return True

    def step(self, done: int, total: int) -> None:
        """The sampler's callback: steps done of the current total."""
        self.update(done=done, total=total)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self._state, "busy": self._state["task"] is not None}


class Restorer:
    """`model`: a model for the tasks it was trained for (the built-in model of each other task is used
    for the rest); `device`, `dtype`, `batch_size`, `compile` as the restoring commands take them."""

    def __init__(self, model: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int | None = None, compile: bool = False, max_waiting: int = MAX_WAITING) -> None:
        self.device = pick_device(device)
        self.dtype, self.batch_size, self.compile, self.max_waiting = dtype, batch_size, compile, max_waiting
        self.progress = Progress()
        self._lock = threading.Lock()  # one restore at a time: the others wait here
        self._stopping = threading.Event()
        self._models: dict[str, PaletteModel] = {}
        self._given = None if model is None else self._load(model)  # a bad --model fails at start

    def _load(self, spec: str) -> PaletteModel:
        """A model loaded once (by its spec), its dtype checked; compiled if asked."""
        if spec not in self._models:
            model = load_model(spec, device=self.device)
            pipeline.autocast(model, self.dtype)  # refuses an unknown dtype now, not at the first request
            self._models[spec] = pipeline.compiled(model) if self.compile else model
        return self._models[spec]

    def model_for(self, task: str) -> PaletteModel:
        """The model that restores `task`: the one given if it was trained for it, else the built-in one."""
        if self._given is not None and task in self._given.config.tasks:
            return self._given
        try:
            return self._load(task)
        except PaletteError as exc:
            raise ModelError(f"{task}: {exc}") from None

    def stop(self, timeout: float = 60.0) -> bool:
        """Make the restore in progress give up at its next sampler step, and those waiting never start;
        wait up to `timeout` seconds for it to end (no thread may be inside torch when Python exits).
        Whether it ended."""
        self._stopping.set()
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True

    def _event(self, event: Event) -> None:
        """`restore_files`' progress: sampler steps for the page, or the way out when the server stops."""
        if self._stopping.is_set():
            raise Stopped("the server is stopping")
        if event.kind == "steps":
            self.progress.step(event.done, event.total)

    @contextmanager
    def _turn(self, task: str) -> Iterator[None]:
        """Wait for the restore before this one to finish (Busy if `max_waiting` already wait); report
        progress meanwhile."""
        if not self.progress.add_waiting(1, self.max_waiting):
            raise Busy(f"{self.max_waiting} restores are already waiting; try again in a moment")
        with self._lock:
            self.progress.add_waiting(-1)
            if self._stopping.is_set():
                raise Stopped("the server is stopping")
            self.progress.update(task=task, done=0, total=0)
            try:
                yield
            finally:
                self.progress.update(task=None, done=0, total=0)

    def restore(self, settings: RestoreSettings, photo: Path, *, folder: Path) -> tuple[list[Sample], float]:
        """The samples of the photo file `photo`, written by `restore_files` in `folder`, read back, and the
        seconds it took. A failed input is a BadRequest with its message, the folder left out."""
        with self._turn(settings.task):
            start = time.perf_counter()
            model = self.model_for(settings.task)
            try:
                report = restore_files(settings.replace(batch_size=self.batch_size, dtype=self.dtype), [photo],
                                       model=model, output=folder / "out", on_progress=self._event)
            except Stopped:
                raise
            except PaletteError as exc:  # settings the model cannot run
                raise BadRequest(without_folder(str(exc), folder)) from None
            if report.failures:
                raise BadRequest(without_folder(report.failures[0], folder))
            samples = [Sample(w.output.read_bytes(), w.output.name, w.seed, w.sample) for w in report.written]
            return samples, time.perf_counter() - start
