"""The `palette` command line. The only package that imports typer and rich.

Each subcommand lives in its own module here and calls one library function; errors of type
`PaletteError` become one red line on stderr and exit code 1, usage errors exit 2.
Library modules (and so torch) are imported inside the commands, which keeps `palette --help` fast.
"""

from __future__ import annotations

import sys

from .common import app


def _register() -> None:
    # Importing a module adds its commands to `app`.
    from . import eval, hub, infer, models, train, ui  # noqa: F401


def main() -> None:
    """Console-script entry point."""
    from .common import defer_interrupts, run_app

    defer_interrupts()  # the commands resume them once their imports are done
    _register()
    sys.exit(run_app(app))
