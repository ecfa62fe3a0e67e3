"""Options declared once, shared by commands: option groups and single reusable options.

An option group is a dataclass whose fields are typer options:

    @app.command("colorize")
    @option_groups(out=OutputOptions, sampling=SamplingOptions)
    def colorize_command(*, inputs: InputsArg, out: OutputOptions, sampling: SamplingOptions) -> None: ...

`option_groups` appends every field of each dataclass to the command's signature, where typer finds
it, and calls the command with the built dataclasses by keyword. Single options that several
commands take (`--sampler`, `--device`, `--dtype`) are `Annotated` aliases at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def _fields_as_parameters(cls: type) -> list[inspect.Parameter]:
    """A keyword-only parameter per dataclass field, carrying its annotation and default."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                              default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)]


def option_groups(**groups: type) -> Callable[[F], F]:
    """Replace the command's parameters named in `groups` by the fields of their dataclasses."""
    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name not in groups]
        added = [p for cls in groups.values() for p in _fields_as_parameters(cls)]
        clash = {p.name for p in own} & {p.name for p in added}
        if clash:
            raise TypeError(f"{command.__name__}: options declared twice: {', '.join(sorted(clash))}")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            built = {name: cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
                     for name, cls in groups.items()}
            return command(**kwargs, **built)

        parameters = own + added
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return typing.cast(F, wrapper)
    return decorate


# --- options that several commands take, declared once ----------------------------------------

_SAMPLING, _RUN = "Sampling", "Model and device"

SamplerOpt = Annotated[Optional[Literal["ddpm", "ddim", "dpmpp"]], typer.Option(
    "--sampler", help="ddim (deterministic given the seed), dpmpp (DPM-Solver++ 2M, deterministic, "
    "good at few steps) or ddpm (ancestral). Default: the model's.", show_default=False, rich_help_panel=_SAMPLING)]
DeviceOpt = Annotated[str, typer.Option(
    "--device", metavar="auto|cpu|cuda[:N]|mps", help="Where to run.", rich_help_panel=_RUN)]
DtypeOpt = Annotated[Literal["auto", "fp32", "fp16", "bf16"], typer.Option(
    "--dtype", help="Network precision: auto is bf16 where it runs natively (CPUs with AVX512-BF16 or AMX, "
    "CUDA), else fp32 on CPU and fp16 on other GPUs (autocast). On a CPU, half precision computes "
    "each item alone, so outputs never depend on the batch.", rich_help_panel=_RUN)]


# --- the restoring commands' options (colorize, inpaint, uncrop, jpeg; `palette ui` takes RunOptions) ------

_OUT = "Output"
InputsArg = Annotated[list[str], typer.Argument(
    help="Image files, folders (the images in them; with --recursive, in their subfolders too), globs, or - to "
    "read paths from stdin, one per line.",
    show_default=False)]


@dataclass(frozen=True)
class OutputOptions:
    """Where outputs go, what happens to existing ones, what is printed."""

    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Output folder (created if needed), or NAME.png for one input and one sample. "
        "Default: beside each input.",
        show_default=False, rich_help_panel=_OUT)] = None
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also read the subfolders of folders; outputs keep the folder structure.",
        rich_help_panel=_OUT)] = False
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
        "--num-samples", "-n", min=1, help="Samples per input, at most 1000: NAME.TASK.0.png, NAME.TASK.1.png, ..., "
        "each written as soon as its batch is done.",
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
        "Default: the built-in model of the task (a local folder is used only when named here).", show_default=False, rich_help_panel=_RUN)] = None
    device: DeviceOpt = "auto"
    dtype: DtypeOpt = "auto"
    compile: Annotated[bool, typer.Option(
        "--compile", help="Compile the network (torch.compile) for a folder of many photos: each new photo "
        "size first waits for the compiler (seconds with its cache warm, a minute or more cold), then runs "
        "faster where the CPU has native bf16 (no gain in fp32). Outputs may differ from eager by rounding.",
        rich_help_panel=_RUN)] = False


# The masked tasks' coarse-to-fine fills, one option for inpaint and uncrop.
RefineOpt = Annotated[Literal["auto", "exemplar", "sdedit", "off"], typer.Option(
    "--refine", help="How a fill reaches the photo's full size. exemplar: the model lays out the hole and the "
    "photo's own patches fill it (PatchMatch completion); sdedit: the model refines its fill at doubled sizes "
    "(models whose config has a refine block); auto (the default): exemplar, where it measured better (inpaint "
    "and uncrop); off: the model-size fill scaled up.",
    rich_help_panel=_SAMPLING)]
