"""Atomic writes leave the old file or the new one, and no temporary file, whatever interrupts them."""

import os
import signal

import pytest

from palette_cli import atomic
from palette_cli.atomic import atomic_path, write_text


def test_write_replaces_whole_and_keeps_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_error_inside_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_right_after_the_temporary_file_is_created_leaves_nothing(tmp_path, monkeypatch):
    # Ctrl-C arriving the moment the temporary file exists (the window a CLI test once hit).
    real_close = os.close

    def close_then_ctrl_c(fd):
        real_close(fd)
        if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "close", close_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "out.png") as tmp:
            tmp.write_bytes(b"x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
