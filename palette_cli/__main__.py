"""`python -m palette_cli` runs the `palette` command."""

from .cli import main

main()
