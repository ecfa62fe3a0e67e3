"""Training and finetuning: the loop, exact resume, DDP.

A run directory holds (train_writer.py):
    model/            the latest model directory (EMA weights), loadable by every inference command
    state.pt          the full training state (model, EMA, optimizer, step, RNG), for exact resume
    metrics.jsonl     one JSON line per logging interval
    samples/step-XXXXXXXXX.png   source | sample | target on a fixed validation batch

A run is planned once (train_plan.py: new, finetuned or resumed, and the weights it starts from),
keeps its trained state in train_state.py, gets its extra conditions from train_condition.py
(the frozen encoder's maps, live or from a feature cache, train_cache.py; colour controls) and
writes through train_writer.py; this module is the loop.

Determinism: item k of the run (k = step * batch_size + position) is drawn from its own seeded
generator (see data.py), and the diffusion noise of each micro-batch from a generator seeded by
(seed, step, rank, micro-batch). Nothing depends on a stateful data iterator, so resuming at step
N reproduces an uninterrupted run exactly (same number of processes), and the images a step sees
do not depend on the number of processes at all.

Under `torchrun` (WORLD_SIZE > 1) the same code runs DistributedDataParallel (NCCL on GPUs, gloo on
the CPU); every process trains on its own slice of each batch and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import config as cfg
from . import seeds, train_cache
from . import tasks as task_modules
from .checkpoint import build_network
from .config import TrainConfig
from .atomic import write_text
from .data import Stamp, TrainingImages, check_images, stamp, validation_batch
from .devices import pick_device
from .diffusion import gammas as schedule_gammas
from .diffusion import training_loss
from .errors import PaletteError
from .files import training_images
from .tasks.colorize import with_controls
from .train_cache import FeatureSource
from .train_condition import PERCEPTUAL_SIZE, Conditioner
from .train_plan import (FIXED_ON_RESUME, MODEL_DIR, STATE_FORMAT, STATE_NAME, RunPlan, _grown, new_model_config,
                         parse_tasks, plan_run, prior_history, read_state, resumed_config, validate, with_encoder,
                         with_pyramid, with_recipe)
from .train_state import TrainingState, ema_decay_at, lr_at
from .train_writer import METRICS_NAME, SAMPLES_DIR, RunWriter, session_history, write_grid

__all__ = ["FIXED_ON_RESUME", "MODEL_DIR", "METRICS_NAME", "PERCEPTUAL_SIZE", "SAMPLES_DIR", "STATE_FORMAT",
           "STATE_NAME", "FeatureSource", "TrainConfig", "TrainEvent", "TrainResult", "_grown", "cfg",
           "ema_decay_at", "finetune", "lr_at", "new_model_config", "parse_tasks", "read_state", "resume", "train",
           "validate", "with_controls", "with_encoder", "with_pyramid", "with_recipe", "write_grid"]
CACHE_KEY = "feature_cache"  # state.pt's record of a run's feature cache


@dataclass
class TrainEvent:
    """What the loop reports to its callback (on rank 0 only)."""

    kind: str  # "check", "start", "warning", "cache", "step", "log", "save", "sample"
    step: int  # optimizer steps done (a "check" event: images decoded; a "cache" event: views computed)
    total: int  # steps of the run (a "check" event: images listed; a "cache" event: views to compute)
    message: str = ""  # a "cache" event: the cache folder
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


Callback = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """How a run ended."""

    run_dir: Path
    step: int  # optimizer steps done
    total: int
    stopped: bool  # stopped early on request (Ctrl-C); a checkpoint was saved
    images: int  # readable training images
    skipped: list[Path]  # unreadable images left out

    @property
    def model_dir(self) -> Path:
        return self.run_dir / MODEL_DIR



# --- distributed ------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down


def _setup_distributed(device: str | torch.device | None) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return _Dist(0, 1, dev, False)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


# --- the objective ----------------------------------------------------------------------------


class _Objective(nn.Module):
    """The training loss of a mixed-task batch, one `training_loss` per task group.

    One module call per micro-batch keeps DistributedDataParallel's one-forward-one-backward
    contract even though the network runs once per task present in the batch.
    """

    def __init__(self, network: nn.Module, tasks: Sequence[str], train_gammas: torch.Tensor,
                 loss: str, objective: str, residual: bool, perceptual: Callable | None = None):
        super().__init__()
        self.network = network
        self.perceptual = perceptual
        self.tasks = tuple(tasks)
        self.train_gammas = train_gammas  # a plain attribute: DDP must not broadcast it
        self.loss, self.objective, self.residual = loss, objective, residual

    def forward(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, task: torch.Tensor,
                generator: torch.Generator, condition: dict[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss averaged over items, per-task [sum of loss x items, items]) of one micro-batch."""
        total = target.new_zeros(())
        per_task = torch.zeros(2, len(self.tasks))
        for t in sorted(set(task.tolist())):
            sel = task == t
            m = mask[sel] if task_modules.get(self.tasks[t]).MASKED else None  # loss on the hole only
            value = training_loss(self.network, target[sel], cond[sel], train_gammas=self.train_gammas,
                                  mask=m, loss=self.loss, objective=self.objective, residual=self.residual,
                                  generator=generator, condition={k: v[sel] for k, v in (condition or {}).items()},
                                  perceptual=self.perceptual)
            n = int(sel.sum())
            total = total + value * (n / target.shape[0])
            per_task[0, t] += value.detach().float().cpu() * n
            per_task[1, t] += n
        return total, per_task



# --- the run ----------------------------------------------------------------------------------


def train(data: Sequence[str | os.PathLike], run_dir: str | os.PathLike, config: TrainConfig, *,
          device: str | torch.device | None = None, callback: Callback | None = None,
          should_stop: Callable[[], bool] | None = None, features: FeatureSource | None = None) -> TrainResult:
    """Train a new model from scratch on the images in `data`; writes `run_dir`. With `features`, the
    encoder's maps come from that feature cache (built for the images first; train_cache.py)."""
    return _run(data, Path(run_dir), config, init=None, resume=False, device=device, callback=callback,
                should_stop=should_stop, features=features)


def finetune(model: str | os.PathLike, data: Sequence[str | os.PathLike], run_dir: str | os.PathLike,
             config: TrainConfig, *, device: str | torch.device | None = None, callback: Callback | None = None,
             should_stop: Callable[[], bool] | None = None, features: FeatureSource | None = None) -> TrainResult:
    """Continue training a saved model (any model spec) on `data`, keeping its network config (and its
    colour head's weights, unchanged)."""
    return _run(data, Path(run_dir), config, init=str(model), resume=False, device=device, callback=callback,
                should_stop=should_stop, features=features)


def resume(data: Sequence[str | os.PathLike], run_dir: str | os.PathLike, changes: dict[str, Any] | None = None,
           *, device: str | torch.device | None = None, callback: Callback | None = None,
           should_stop: Callable[[], bool] | None = None, features: FeatureSource | None = None) -> TrainResult:
    """Continue the run in `run_dir` from its state.pt, with optional changes (e.g. more steps). A run
    trained from a feature cache keeps its cache unless `features` names another."""
    run_dir = Path(run_dir)
    config = resumed_config(run_dir, changes)
    return _run(data, run_dir, config, init=None, resume=True, device=device, callback=callback,
                should_stop=should_stop, features=features)


def _run(data: Sequence[str | os.PathLike], run_dir: Path, config: TrainConfig, *, init: str | None,
         resume: bool, device: str | torch.device | None, callback: Callback | None,
         should_stop: Callable[[], bool] | None, features: FeatureSource | None) -> TrainResult:
    d = _setup_distributed(device)
    try:
        return _Trainer(data, run_dir, config, init, resume, d, callback, should_stop, features).run()
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# The run's photos that decoded, with their size and modification time: a resume decodes only what changed.
CHECKED_FILE = "checked-images.tsv"


def read_checked(path: Path) -> dict[str, Stamp]:
    """{photo path: (size, mtime_ns)} from a run's CHECKED_FILE; empty if there is none or it is unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    checked = {}
    for line in lines:
        size, mtime, name = (line.split("\t", 2) + ["", ""])[:3]
        if size.isdigit() and mtime.isdigit() and name:
            checked[name] = (int(size), int(mtime))
    return checked


def write_checked(path: Path, good: Sequence[Path]) -> None:
    """Record the photos that decoded (atomically), for the next resume of the run."""
    rows = []
    for photo in good:
        st = stamp(photo)
        if st is not None and "\n" not in str(photo):
            rows.append(f"{st[0]}\t{st[1]}\t{photo}\n")
    write_text(path, "".join(rows))


class _Trainer:
    """One run: set up once, then `run()` the loop."""

    def __init__(self, data: Sequence[str | os.PathLike], run_dir: Path, config: TrainConfig, init: str | None,
                 resume: bool, d: _Dist, callback: Callback | None, should_stop: Callable[[], bool] | None,
                 features: FeatureSource | None = None):
        self.d, self.run_dir = d, run_dir
        self.emit = callback if (callback and d.rank == 0) else (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        plan = plan_run(run_dir, config, init, resume, d.device)
        self.model_config, self.config, self.init = plan.model_config, plan.config, plan.init
        source = _feature_source(plan, features)
        self.head = plan.head  # a colour head's weights: carried into every save, and in the loop for "hints"

        torch.manual_seed(self.config.seed)  # the initial weights of a new network
        network = build_network(self.model_config, plan.weights, where=str(plan.init or run_dir))
        validate(self.config, d.world, network.downsample_factor)
        if source is not None:
            train_cache.check(source, self.config, self.model_config)
        self._setup_data(data, source)
        self.training = TrainingState(network, self.model_config, self.config, d.device, d.rank, plan.state)
        self.start = self.training.restore(plan.state, run_dir)
        self.history = prior_history(plan)
        self.objective = _Objective(self.training.network, self.config.tasks,
                                    schedule_gammas(self.model_config.train_schedule), self.config.loss,
                                    self.config.objective, self.config.residual, self.conditioner.perceptual())
        self.module: nn.Module = self.objective
        if d.world > 1:
            self.module = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        self.last_saved = self.start if resume else None
        self.writer = RunWriter(run_dir, self.model_config, self.config, self.init, plan.head,
                                {CACHE_KEY: source.to_dict()} if source else None)
        if d.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.writer.trim_metrics(self.start)
            write_checked(run_dir / CHECKED_FILE, self.checked)
        _barrier(d)

    # -- setting up --

    def _setup_data(self, data: Sequence[str | os.PathLike], source: FeatureSource | None) -> None:
        """Every process scans the same list; rank 0 reports what it skips (and builds a feature cache)."""
        c = self.config
        paths = training_images(data)
        if not paths:
            raise PaletteError(f"no images found in {', '.join(str(p) for p in data)}")
        self.data_names = [Path(p).name for p in data]
        good, self.skipped = check_images(paths, warn=lambda m: self.emit(TrainEvent("warning", 0, c.steps, m)),
                                          progress=lambda done, total: self.emit(TrainEvent("check", done, total)),
                                          checked=read_checked(self.run_dir / CHECKED_FILE))
        self.checked = good
        self.images = len(good)
        self.conditioner = Conditioner(self.model_config, c, self.d.device, self.d.rank, self.d.world,
                                       cached=source is not None, head=self.head)
        if source is not None:
            self._cached_data(data, good, source)
            return
        encoder = self.model_config.encoder
        view = encoder.size if encoder else None
        self.dataset = TrainingImages(good, c.tasks, c.image_size, c.seed, c.crop, view)
        self.validation = (validation_batch(good, c.tasks, c.image_size, c.seed, c.sample_count, c.crop, view)
                           if c.sample_every and self.d.rank == 0 else [])

    def _cached_data(self, data: Sequence[str | os.PathLike], good: list[Path], source: FeatureSource) -> None:
        """The views of the readable images, from the feature cache (rank 0 adds the views it lacks)."""
        c, readable = self.config, set(good)
        photos = [(p, Path(arg).name) for arg in data for p in training_images([arg]) if p in readable]
        if self.d.rank == 0:
            def progress(done: int, total: int) -> None:
                self.emit(TrainEvent("cache", done, total, str(source.folder)))

            train_cache.build(source, photos, c.seed, self.d.device, progress)
        _barrier(self.d)
        rows = train_cache.rows_of(source, good)
        self.dataset = train_cache.dataset(source, rows, c.image_size, c.seed, taps=self.conditioner.head is not None)
        self.validation = (train_cache.validation_items(self.dataset, c.sample_count)
                           if c.sample_every and self.d.rank == 0 else [])

    # -- the loop --

    def run(self) -> TrainResult:
        c, d = self.config, self.d
        micro = c.batch_size // (d.world * c.grad_accum)
        batches = _StepBatches(self.start, c.steps, c.batch_size, c.grad_accum, d.world, d.rank)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=c.workers,
                                             pin_memory=d.device.type == "cuda")
        self.emit(TrainEvent("start", self.start, c.steps, f"{self.images} images, "
                             f"{len(self.skipped)} skipped, {d.world} process(es), {micro} images per micro-batch"
                             + (f", {len(self.dataset)} cached views" if self.conditioner.top else ""),
                             {"images": self.images, "skipped": len(self.skipped), "world_size": d.world}))
        # loss x items, items, per-task loss x items, per-task items; since t0
        self._window, self._t0 = np.zeros(2 + 2 * len(c.tasks)), time.perf_counter()
        self._began = self._t0  # this session's wall-clock time goes into the model's history
        step, stopped, consistent = self.start, False, True
        it = iter(loader)
        try:
            while step < c.steps and not stopped:
                self.training.set_lr(step)
                flags = self._all_reduce(self._accumulate(step, it))
                if flags[0] > 0:
                    self._diverged(step + 1)
                consistent = False  # the optimizer and EMA updates must not be cut in half
                self.training.apply()
                self.training.update_ema(step)
                step += 1
                consistent = True
                stopped = bool(flags[1] > 0)
                self._after_step(step, flags, stopped)
        except KeyboardInterrupt:
            # A hard interrupt: keep what was done unless it came mid-update.
            if consistent and step > (self.last_saved or 0):
                self._save(step)
            raise
        return TrainResult(self.run_dir, step, c.steps, stopped, self.images, self.skipped)

    def _accumulate(self, step: int, it) -> torch.Tensor:
        """Forward and backward over the step's micro-batches; per-task [loss x items, items]."""
        c, d = self.config, self.d
        autocast = (torch.autocast(d.device.type, dtype=torch.bfloat16 if c.precision == "bf16" else torch.float16)
                    if c.precision != "fp32" else contextlib.nullcontext())
        per_task = torch.zeros(2, len(c.tasks))
        for m in range(c.grad_accum):
            batch = _next(it)
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            gen = seeds.stream(c.seed, "noise", (step * d.world + d.rank) * c.grad_accum + m)
            sync = self.module.no_sync() if d.world > 1 and m < c.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    condition = self.conditioner(batch, step * c.grad_accum + m)
                    loss, groups = self.module(batch["target"], batch["cond"], batch["mask"], batch["task"], gen,
                                               condition)
                self.training.scaler.scale(loss / c.grad_accum).backward()
            per_task += groups
        return per_task

    def _all_reduce(self, per_task: torch.Tensor) -> torch.Tensor:
        """One small all-reduce per step: [non-finite flag, stop request, loss statistics...]."""
        stop_request = bool(self.should_stop())
        finite = bool(torch.isfinite(per_task[0]).all())
        flags = torch.cat([torch.tensor([float(not finite), float(stop_request)]), per_task.flatten()])
        if self.d.world > 1:
            flags = flags.to(self.d.device)
            dist.all_reduce(flags)
            flags = flags.cpu()
        return flags

    def _after_step(self, step: int, flags: torch.Tensor, stopped: bool) -> None:
        """Report the step; log, sample and save when due (writing is kept out of images/s)."""
        c, ntasks, window = self.config, len(self.config.tasks), self._window
        sums, counts = flags[2:2 + ntasks].numpy(), flags[2 + ntasks:].numpy()
        window += np.concatenate([[sums.sum(), counts.sum()], sums, counts])
        step_loss = float(sums.sum() / max(counts.sum(), 1))
        elapsed = time.perf_counter() - self._t0
        rate = window[1] / elapsed if elapsed > 0 else 0.0
        self.emit(TrainEvent("step", step, c.steps, metrics={"loss": step_loss, "lr": lr_at(c, step - 1),
                                                             "images_per_s": rate}))
        if step % c.log_every == 0 or step == c.steps or stopped:
            if self.d.rank == 0 and window[1]:
                self.emit(TrainEvent("log", step, c.steps, metrics=self.writer.log(step, window, elapsed)))
            window[:] = 0
            self._t0 = time.perf_counter()
        paused = False
        if c.sample_every and (step % c.sample_every == 0 or step == c.steps):
            self._sample(step)
            paused = True
        if step % c.save_every == 0 or step == c.steps or stopped:
            self._save(step)
            paused = True
        if paused:
            _barrier(self.d)
            window[:] = 0
            self._t0 = time.perf_counter()

    def _diverged(self, step: int) -> None:
        where = (f"the last checkpoint (step {self.last_saved}) in {self.run_dir} is intact"
                 if self.last_saved else f"no checkpoint was written to {self.run_dir} yet")
        raise PaletteError(f"step {step}: the training loss is not finite (NaN or inf); stopped, {where}. "
                           f"Lower --lr, lengthen --warmup or use --precision fp32")

    def _save(self, step: int) -> None:
        if self.d.rank != 0 or self.training.ema is None:
            return
        done = step - self.start  # steps of this session
        history = session_history(self.history, done, self.config.batch_size, self._began)
        self.writer.save(step, self.training, history, self.data_names, self.images, self.d.world)
        self.last_saved = step
        self.emit(TrainEvent("save", step, self.config.steps, path=self.run_dir))

    def _sample(self, step: int) -> None:
        ema = self.training.ema
        if self.d.rank != 0 or ema is None or not self.validation:
            return
        grid = lambda rows: self.conditioner.grid_network(ema, self.validation, rows)  # noqa: E731
        path = self.writer.sample(step, ema, self.validation, grid, self.d.device)
        self.emit(TrainEvent("sample", step, self.config.steps, path=path))


def _feature_source(plan: RunPlan, given: FeatureSource | None) -> FeatureSource | None:
    """The feature cache a run trains from: the one given, else a resumed run's own."""
    if given is not None or plan.state is None or CACHE_KEY not in plan.state:
        return given
    return FeatureSource.from_dict(plan.state[CACHE_KEY])


class _StepBatches(torch.utils.data.Sampler):
    """Item indices of this process's micro-batches, step by step from `start`.

    Step s uses items s * batch .. (s + 1) * batch - 1; each process takes its own slices.
    """

    def __init__(self, start: int, total: int, batch: int, accum: int, world: int, rank: int):
        self.start, self.total, self.batch, self.accum, self.world, self.rank = start, total, batch, accum, world, rank
        self.micro = batch // (world * accum)

    def __iter__(self):
        for step in range(self.start, self.total):
            for m in range(self.accum):
                first = step * self.batch + (m * self.world + self.rank) * self.micro
                yield list(range(first, first + self.micro))

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum



def _next(it) -> dict[str, torch.Tensor]:
    """Next batch; a PaletteError raised in a loader worker comes back as its own one-line message."""
    try:
        return next(it)
    except PaletteError as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        last = lines[-1] if lines else str(err)
        raise PaletteError(last.split("PaletteError: ", 1)[-1]) from None
