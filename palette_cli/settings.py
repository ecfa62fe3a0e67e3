"""One restore's settings: what the command line, the page, `palette eval` and `restore_files` all take.

    settings = RestoreSettings("colorize", num_samples=4, seed=7, hints=("400,150,#7ea6d6,40",))
    report = palette_cli.restore_files(settings, ["photo.jpg"], output="out/")

Every field is checked when the object is made (`SettingsError`, a message a user can act on), so
a wrong setting fails before any model is loaded or photo read. `check_files` adds what restoring
files needs (inpaint's hole given, the colour-control images readable); `check_hints_inside`
refuses a hint outside a photo. None and "auto" mean
the model's or the machine's choice. Importing this module imports neither torch nor typer.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PaletteError

MAX_SAMPLES = 1000  # samples per input: each is a whole sampling run, written as soon as it is done
SAMPLERS = ("ddpm", "ddim", "dpmpp")
DTYPES = ("auto", "fp32", "fp16", "bf16")
REFINE_MODES = ("auto", "exemplar", "sdedit", "off")
MASK_MODES = ("center", "free-form")
SIDES = ("left", "right", "top", "bottom", "all")
MAX_STEPS = 10_000


class SettingsError(PaletteError):
    """A setting the model or this machine cannot run (device, precision, sampler, steps, controls),
    found before any photo is read: the call, not an input, is wrong."""


@dataclass(frozen=True)
class RestoreSettings:
    """How to restore: the task, its samples and sampler, where to run, the task's own options."""

    task: str
    num_samples: int = 1  # samples per input: NAME.TASK.0.png ... (at most MAX_SAMPLES)
    seed: int = 0  # sample k of a photo is drawn from seeds.generator(seed, k), whatever else runs
    sampler: str | None = None  # one of SAMPLERS; None: the model's
    steps: int | None = None  # network calls per sample; None: the model's
    strength: float | None = None  # 1 = pure noise, lower = from the noised input; None: the model's
    guidance: float | None = None  # classifier-free guidance weight (>= 0); None: the model's
    refine: str = "auto"  # inpaint/uncrop full-size fills, one of REFINE_MODES ("auto": exemplar completion)
    batch_size: int | None = None  # samples per network call; None: from free memory
    device: str = "auto"  # auto, cpu, cuda[:N], mps
    dtype: str = "auto"  # network precision, one of DTYPES
    compile: bool = False  # torch.compile the network
    # colorize: colour controls (models trained with them)
    hints: tuple[Any, ...] = ()  # points: `x,y,#rrggbb[,radius]` strings or colour_controls.Hint
    hints_image: Any = None  # RGBA image (path or PIL image) whose opaque pixels are hints
    reference: Any = None  # a photo (path or PIL image) whose colours to follow
    # inpaint: one of mask (a file, a folder of masks named like the inputs, or a mask image/tensor),
    # mask_box (x, y, w, h pixels) or mask_mode
    mask: Any = None
    mask_box: tuple[int, int, int, int] | None = None  # or its text, X,Y,W,H
    mask_mode: str | None = None
    # uncrop
    side: str = "right"
    ratio: float = 0.5  # share of the output that is new
    keep_frame: bool = False  # keep a scan's flat frame on the growing edges (by default it joins the new part)
    # jpeg: recompress each input at this quality first (demos, evaluation)
    quality: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # options of a task registered outside palette

    def __post_init__(self) -> None:
        _check(self)

    def replace(self, **changes: Any) -> RestoreSettings:
        """A copy with `changes`, checked again."""
        return dataclasses.replace(self, **changes)

    def task_options(self) -> dict[str, Any]:
        """The keyword options `pipeline.prepare` takes for this task (only those given)."""
        by_task = {"colorize": {"hints": list(self.hints) or None, "hints_image": self.hints_image,
                                "reference": self.reference},
                   "inpaint": {"mask": self.mask, "mask_box": self.mask_box, "mask_mode": self.mask_mode},
                   "uncrop": {"side": self.side, "ratio": self.ratio, "keep_frame": self.keep_frame},
                   "jpeg": {"quality": self.quality}}
        options = {k: v for k, v in by_task.get(self.task, {}).items() if v is not None}
        return {**options, **self.extra}

    def check_files(self) -> None:
        """What restoring files also needs, before any photo is read: inpaint's hole given, and the
        colour-control images readable (their headers), so a missing one fails once, not per photo."""
        from . import images

        if self.task == "inpaint" and self.mask is None and self.mask_box is None and self.mask_mode is None:
            raise SettingsError("give exactly one of --mask, --mask-box, --mask-mode")
        for option, value in (("--hints", self.hints_image), ("--reference", self.reference)):
            if isinstance(value, (str, os.PathLike)):
                try:
                    images.load_photo(value, draft=64)
                except PaletteError as exc:
                    raise SettingsError(f"{option}: {exc}") from None

    def check_hints_inside(self, width: int, height: int) -> None:
        """Refuse a colour hint outside a width x height photo."""
        from .tasks.colour_controls import check_hints

        try:
            check_hints(list(self.hints), width, height)
        except PaletteError as exc:
            raise SettingsError(str(exc)) from None


def _set(settings: RestoreSettings, name: str, value: Any) -> None:
    object.__setattr__(settings, name, value)  # normalising a frozen field once, while it is made


def _number(name: str, value: Any, kind: type, low: float | None = None, high: float | None = None,
            optional: bool = True) -> None:
    """Refuse a value that is not a finite `kind` (an int is a float too) within [low, high]."""
    if value is None and optional:
        return
    is_kind = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not is_kind or not math.isfinite(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        span = "" if low is None else f" between {low:g} and {high:g}" if high is not None else f" of {low:g} or more"
        raise SettingsError(f"{name} must be {'an integer' if kind is int else 'a number'}{span}, got {value!r}")


def _one_of(name: str, value: Any, choices: tuple[str, ...], optional: bool = False) -> None:
    if (value is None and optional) or value in choices:
        return
    raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check(s: RestoreSettings) -> None:
    """Every field's own check, and the options that go together."""
    if not isinstance(s.task, str) or not s.task:
        raise SettingsError(f"task must be a task name, got {s.task!r}")
    _number("num_samples", s.num_samples, int, 1, optional=False)
    if s.num_samples > MAX_SAMPLES:
        raise SettingsError(f"num_samples (-n) is at most {MAX_SAMPLES} per input, got {s.num_samples}; each sample "
                            f"is a whole sampling run (for more, run again with another --seed)")
    _number("seed", s.seed, int, optional=False)
    _one_of("sampler", s.sampler, SAMPLERS, optional=True)
    _number("steps", s.steps, int, 1, MAX_STEPS)
    _number("strength", s.strength, float, 0.0, 1.0)
    if s.strength is not None and s.strength <= 0:
        raise SettingsError(f"strength must be above 0 and at most 1, got {s.strength!r}")
    _number("guidance", s.guidance, float, 0.0)
    _one_of("refine", s.refine, REFINE_MODES)
    _number("batch_size", s.batch_size, int, 1)
    if not isinstance(s.device, str) or not s.device:
        raise SettingsError(f"device must be auto, cpu, cuda[:N] or mps, got {s.device!r}")
    _one_of("dtype", s.dtype, DTYPES)
    _check_controls(s)
    _check_mask(s)
    _one_of("side", s.side, SIDES)
    _number("ratio", s.ratio, float, 0.01, 0.99, optional=False)
    if not isinstance(s.keep_frame, bool):
        raise SettingsError(f"keep_frame must be True or False, got {s.keep_frame!r}")
    _number("quality", s.quality, int, 1, 100)


def _check_controls(s: RestoreSettings) -> None:
    """Colour hints parsed (`x,y,#rrggbb[,radius]`); they belong to colorize only."""
    from .tasks.colour_controls import Hint, parse_hint  # light: no model code runs

    given = s.hints or s.hints_image is not None or s.reference is not None
    if given and s.task != "colorize":
        raise SettingsError(f"colour hints and references are colorize options, not {s.task}'s")
    try:
        hints = tuple(h if isinstance(h, Hint) else parse_hint(str(h)) for h in s.hints)
    except PaletteError as exc:
        raise SettingsError(str(exc)) from None
    _set(s, "hints", hints)


def _check_mask(s: RestoreSettings) -> None:
    """At most one way to say the hole (files need one: `check_files`); a box of positive size."""
    given = [name for name, value in (("mask", s.mask), ("mask_box", s.mask_box), ("mask_mode", s.mask_mode))
             if value is not None]
    if given and s.task != "inpaint":
        raise SettingsError(f"{given[0]} is an inpaint option, not {s.task}'s")
    if len(given) > 1:
        raise SettingsError(f"give exactly one of --mask, --mask-box, --mask-mode (got "
                            f"{', '.join('--' + g.replace('_', '-') for g in given)})")
    if isinstance(s.mask, (str, os.PathLike)):
        if not Path(s.mask).exists():
            raise SettingsError(f"--mask {s.mask}: no such file or folder")
        _set(s, "mask", Path(s.mask))
    if s.mask_box is not None:
        box = _parse_box(s.mask_box) if isinstance(s.mask_box, str) else tuple(s.mask_box)
        if len(box) != 4 or not all(isinstance(v, int) for v in box) or box[2] < 1 or box[3] < 1:
            raise SettingsError(f"--mask-box {s.mask_box!r}: expected X,Y,W,H in pixels, e.g. 10,20,64,48")
        _set(s, "mask_box", box)
    _one_of("mask_mode", s.mask_mode, MASK_MODES, optional=True)


def _parse_box(text: str) -> tuple[int, ...]:
    """`X,Y,W,H` -> a tuple of ints; () if they are not integers."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        return ()

