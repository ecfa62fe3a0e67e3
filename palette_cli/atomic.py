"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


_UMASK = os.umask(0)
os.umask(_UMASK)


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside `path` for a file or folder that becomes `path` when complete."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, else removed."""
    path = Path(path)
    tmp: Path | None = None
    try:
        # The name is chosen before the file exists, so a Ctrl-C at any point leaves nothing behind.
        while True:
            tmp = temporary_name(path)
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                continue
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # a private file until complete; then the usual permissions
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave the temporary file behind
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
