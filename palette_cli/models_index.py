"""What models are available locally: the built-in ones and Palette models in the Hub cache."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def builtin_dir() -> Path:
    """The folder of models shipped with the package (also from a source checkout)."""
    try:
        return Path(str(resources.files("palette_cli.weights")))
    except ModuleNotFoundError:  # palette_cli imported from a checkout: weights/ sits beside it
        return Path(__file__).resolve().parent.parent / "weights"


def _describe(name: str, directory: Path, source: str) -> dict[str, Any] | None:
    config = directory / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or "unet" not in data:
        return None  # some other kind of model in the cache
    size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    return {"name": name, "tasks": list(data.get("tasks", [])), "megabytes": size / 1e6,
            "source": source, "path": str(directory)}


def list_models() -> list[dict[str, Any]]:
    """Built-in models, then cached Hub models with a palette config.json (no network, no torch)."""
    rows = []
    root = builtin_dir()
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        row = _describe(directory.name, directory, "built-in")
        if row:
            rows.append(row)
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache yet, or unreadable: nothing cached to list
        return rows
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            row = _describe(repo.repo_id, Path(revision.snapshot_path), f"hub cache ({revision.commit_hash[:8]})")
            if row:
                rows.append(row)
                break
    return rows
