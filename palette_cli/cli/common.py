"""What every subcommand shares: the consoles, error reporting and the app runner."""

from __future__ import annotations

from typing import Literal

import typer
from rich.console import Console

# palette_cli.tasks.TASKS, spelled out because importing that module imports torch.
Task = Literal["colorize", "inpaint", "uncrop", "jpeg"]

# Results on stdout, messages and progress on stderr, so `--json` output stays machine-readable.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """One red line on stderr."""
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Report an error and return the Exit to raise."""
    error_line(message)
    return typer.Exit(code)


def run_app(app: typer.Typer) -> int:
    """Run the Typer app; a library error becomes one red line and exit code 1.

    Typer's standalone mode handles the rest: usage errors exit 2, `--help` exits 0.
    """
    from ..errors import PaletteError

    try:
        app()
    except PaletteError as exc:
        error_line(str(exc))
        return 1
    return 0
