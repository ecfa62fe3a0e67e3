"""What every subcommand shares: the app, the consoles, error reporting, Ctrl-C handling and the runner."""

from __future__ import annotations

import signal
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

# palette_cli.tasks.TASKS, spelled out because importing that module imports torch.
Task = Literal["colorize", "inpaint", "uncrop", "jpeg"]

app = typer.Typer(
    name="palette",
    help="Restore images with Palette image-to-image diffusion models: colorize, inpaint, uncrop, "
         "JPEG artifact removal; train, finetune, convert and publish models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"palette {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Restore images with Palette image-to-image diffusion models."""


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


# A Ctrl-C while the command imports its libraries is held here, not raised: an exception raised
# inside an import can be swallowed by a library's own `except` and the run would go on.
_held = {"deferring": False, "interrupted": False}


def _hold_interrupt(signum: int, frame: Any) -> None:
    _held["interrupted"] = True


def defer_interrupts() -> None:
    """From now until `resume_interrupts`, Ctrl-C is remembered instead of raised."""
    _held["deferring"] = True
    signal.signal(signal.SIGINT, _hold_interrupt)


def resume_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt again; one that came while deferred is raised now."""
    if not _held["deferring"]:
        return
    _held["deferring"] = False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _held["interrupted"]:
        raise KeyboardInterrupt


def share_cores() -> None:
    """Before torch is imported: its OpenMP threads sleep while they wait instead of spinning
    (OMP_WAIT_POLICY=PASSIVE, unless the user set a policy). Two `palette uncrop` runs at once on 2
    cores took 14-99 s together spinning, 7.4 s sleeping; one uncrop alone is about 9% slower
    (benchmarks/README.md). Scripts run restores side by side (`xargs -P`); a training run keeps spinning."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def imports_done() -> None:
    """Call once a command's libraries are imported: a Ctrl-C held meanwhile exits 130 before any work."""
    try:
        resume_interrupts()
    except KeyboardInterrupt:
        error_line("interrupted before any work; nothing was written")
        raise typer.Exit(130) from None


def run_app(app: typer.Typer) -> int:
    """Run the Typer app; a library error becomes one red line and exit code 1.

    Typer's standalone mode handles the rest: usage errors exit 2, `--help` exits 0. A Ctrl-C held
    while deferred and never resumed by the command still ends the run with 130.
    """
    from ..errors import PaletteError

    try:
        app()
    except PaletteError as exc:
        error_line(str(exc))
        return 1
    except SystemExit as exc:
        if _held["interrupted"] and exc.code in (0, None):
            return 130
        raise
    return 130 if _held["interrupted"] else 0
