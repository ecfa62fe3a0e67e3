"""benchmarks/gpu_session.py --dry-run: the GPU session's own code, on the CPU at toy sizes, so it
cannot rot while no GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_dry_run_writes_the_report_and_the_trained_models(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_session.py"), "--dry-run", "--shard", "toy",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {"device", "versions", "tests", "training", "eval", "sampling", "seconds"} <= set(report)
    assert report["dry_run"] and report["tests"]["rc"] == 0 and report["photos"]["val"] == 5
    assert [(s["precision"], s["compile"]) for s in report["sampling"]] == [("fp32", False), ("bf16", False),
                                                                            ("fp32", True)]
    assert all(s["images_per_s"] > 0 for s in report["sampling"])
    for model in ("colorize", "inpaint"):
        trained = report["training"][model]
        assert 1 <= trained["steps"] <= 3 and trained["images"] == 4 * trained["steps"] and trained["seconds"] > 0
        assert report["eval"][model]["trained"]["num_images"] == 4
        assert report["eval"][model]["trained"]["features"]["model"]["ca"] is not None  # the labels reached eval
        assert {p.name for p in (out / model).iterdir()} == {"config.json", "model.safetensors", "README.md"}
    colorize = report["training"]["colorize"]
    assert colorize["history"]["steps"] == 15000 + colorize["steps"]  # the built-in's card and this run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and max(p.stat().st_size for p in files) <= 16 << 20
