"""`palette models`: the models this machine can use without a download."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import app, imports_done, out


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per model.")] = False,
) -> None:
    """List built-in models and Palette models in the Hugging Face cache."""
    from ..models_index import list_models

    imports_done()

    rows = list_models()
    if as_json:
        for row in rows:
            out.print(json.dumps(row), markup=False)
        return
    from rich.table import Table

    table = Table("name", "tasks", "size", "source")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["tasks"]), f"{row['megabytes']:.1f} MB", row["source"])
    out.print(table)
    if not rows:
        out.print("no models found")
