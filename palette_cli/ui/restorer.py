"""The models behind the page, each loaded once, and the one restore that runs at a time.

A restore goes the command line's way: `pipeline.resolve_sampling`, `pipeline.prepare`,
`pipeline.restore_stream`, and each sample is written by `images.save_png` with `pipeline.png_text`,
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

from .. import images, pipeline
from ..checkpoint import PaletteModel, load_model
from ..devices import pick_device
from ..errors import PaletteError
from .forms import BadRequest, SamplingFields


class ModelError(PaletteError):
    """A model could not be loaded: the server's problem, not the request's."""


class Stopped(PaletteError):
    """The server is stopping: the restore gave up (at its next sampler step) or never started."""


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

    def add_waiting(self, delta: int) -> None:
        with self._lock:
            self._state["waiting"] += delta

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
                 batch_size: int | None = None, compile: bool = False) -> None:
        self.device = pick_device(device)
        self.dtype, self.batch_size, self.compile = dtype, batch_size, compile
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

    def _step(self, done: int, total: int) -> None:
        """The sampler's callback: progress, or the way out when the server stops."""
        if self._stopping.is_set():
            raise Stopped("the server is stopping")
        self.progress.step(done, total)

    @contextmanager
    def _turn(self, task: str) -> Iterator[None]:
        """Wait for the restore before this one to finish; report progress meanwhile."""
        self.progress.add_waiting(1)
        with self._lock:
            self.progress.add_waiting(-1)
            if self._stopping.is_set():
                raise Stopped("the server is stopping")
            self.progress.update(task=task, done=0, total=0)
            try:
                yield
            finally:
                self.progress.update(task=None, done=0, total=0)

    def restore(self, task: str, photo: images.Photo, options: dict[str, Any], sampling: SamplingFields, *,
                name: str, folder: Path) -> tuple[list[Sample], float]:
        """The samples of one photo, written as PNGs in `folder` and read back, and the seconds it took."""
        with self._turn(task):
            start = time.perf_counter()
            model = self.model_for(task)
            try:
                resolved = pipeline.resolve_sampling(model, steps=sampling.steps)
                with pipeline.autocast(model, self.dtype):
                    prep = pipeline.prepare(model, task, photo, seed=sampling.seed, **options)
                    [(_, result)] = pipeline.restore_stream(
                        model, [(name, prep)], num_samples=sampling.num_samples, sampling=resolved,
                        seed=sampling.seed, batch_size=self.batch_size, callback=self._step)
            except Stopped:
                raise
            except PaletteError as exc:
                raise BadRequest(str(exc)) from None
            samples = [self._png(model, result, resolved, sampling.seed, k, name, folder)
                       for k in range(len(result.outputs))]
            return samples, time.perf_counter() - start

    @staticmethod
    def _png(model: PaletteModel, result: pipeline.Result, resolved: pipeline.Sampling, seed: int, k: int,
             name: str, folder: Path) -> Sample:
        """Sample k written as the command line writes it (pixels, text chunks, colour profile)."""
        prep = result.prepared
        text = pipeline.png_text(model, prep, resolved, seed=seed, sample=k, input_name=name)
        path = folder / f"{Path(name).stem}.{prep.task}.{k}.png"
        images.save_png(result.outputs[k], path, text, prep.photo.icc_profile)
        return Sample(path.read_bytes(), path.name, seed, k)
