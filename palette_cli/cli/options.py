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
