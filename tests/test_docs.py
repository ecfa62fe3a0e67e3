"""The README is a front door: small, its first commands those CI runs, its links alive."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
FIRST = ['pip install torch==2.13.0 ".[dev]" && palette colorize tests/data/parrots-gray.jpg -o out/',
         "python -m pytest -q"]


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))


def test_readme_is_small_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 15_000
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block == FIRST


def test_ci_runs_exactly_the_readmes_commands():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert 'pip install -q torch==2.13.0 ".[dev]"' in lines
    assert "palette colorize tests/data/parrots-gray.jpg -o out/" in lines
    assert lines[-1] == FIRST[1]


def test_readme_links_the_docs_and_every_link_resolves():
    links = _links(README)
    assert {f"docs/{name}.md" for name in ("commands", "training", "evaluation", "models")} <= set(links)
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for link in _links(page):
            if not link.startswith("http"):
                assert (page.parent / link).exists(), (page.name, link)


# Spelled in pieces so that a search of the repository for these paths finds only real leaks.
MACHINE_PATHS = ("/" + "work/", "/" + "tmp/", ".." + "/shared")


def test_no_machine_paths_in_the_product_docs():
    for page in [README, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        assert not [p for p in MACHINE_PATHS if p in text], page.name
