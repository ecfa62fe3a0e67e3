"""benchmarks/diversity.py: a real run over labelled photos with a tiny model, one JSON row per setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, make_tiny_model

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_stochastic_sampling_is_more_diverse_than_deterministic_sampling(tmp_path) -> None:
    model = make_tiny_model(tmp_path / "tiny", tasks=("colorize",))
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "diversity.py"), str(DATA / "labelled"),
                           "--model", str(model), "--image-size", "32", "-n", "3", "--limit", "3", "--labels", str(DATA / "labelled" / "LABELS.tsv"),
                           "--setting", "ddim:1", "--setting", "ddpm:4", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["sampler"] for r in rows] == ["ddim", "ddpm"] and [r["steps"] for r in rows] == [1, 4]
    assert [json.loads(line) for line in done.stdout.splitlines()] == rows
    for row in rows:
        assert row["abs_diff"] > 0 and 0 < row["ms_ssim"] <= 1 and row["colorfulness"] >= 0
        assert 0 <= row["ca"] <= 1 and row["input_ca"] is not None
    assert rows[1]["abs_diff"] != rows[0]["abs_diff"]
