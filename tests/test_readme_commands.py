"""The README's "First commands" run cleanly, in order, in a fresh folder after the install line's colorize."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


def _bash_block(text: str, after: str) -> list[str]:
    """The command lines of the first ```bash block after the heading `after`."""
    block = text.split(after, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_blocks_are_found():
    text = README.read_text(encoding="utf-8")
    install = _bash_block(text, "# palette")[0]
    assert install.split(" && ", 1)[1] == "palette colorize tests/data/parrots-gray.jpg -o out/"
    assert all(line.startswith("palette ") for line in _bash_block(text, "## First commands"))


@pytest.mark.slow
def test_first_commands_run_in_order_after_the_install_line(tmp_path):
    text = README.read_text(encoding="utf-8")
    install_colorize = _bash_block(text, "# palette")[0].split(" && ", 1)[1]
    shutil.copytree(ROOT / "tests" / "data", tmp_path / "tests" / "data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in [install_colorize, *_bash_block(text, "## First commands")]:
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1800)  # minutes on a loaded CPU
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
        assert "error:" not in proc.stderr and "Traceback" not in proc.stderr, (line, proc.stderr[-2000:])
    assert (tmp_path / "out" / "parrots-gray.colorize.0.png").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "four").iterdir()) == [
        f"parrots-gray.colorize.{i}.png" for i in range(4)]
