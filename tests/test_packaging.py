"""What an installed palette holds: every package and data file of the source tree is in the wheel's list."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_package_of_the_source_tree_is_installed():
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "palette_cli").rglob("__init__.py")
                if "__pycache__" not in p.parts}
    listed = set(_setuptools()["packages"])
    assert packages - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_data_files_the_code_reads_are_installed():
    data = _setuptools()["package-data"]
    assert "resources/*.txt" in data["palette_cli"]
    assert list((ROOT / "palette_cli" / "resources").glob("*.txt"))
