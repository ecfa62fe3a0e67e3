"""Option groups: a dataclass whose fields are typer options, declared once, shared by commands.

    @app.command("colorize")
    @option_groups(out=OutputOptions, sampling=SamplingOptions)
    def colorize_command(*, inputs: InputsArg, out: OutputOptions, sampling: SamplingOptions) -> None: ...

`option_groups` appends every field of each dataclass to the command's signature, where typer finds
it, and calls the command with the built dataclasses by keyword.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

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
