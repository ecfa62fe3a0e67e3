"""benchmarks/train_speed.py: a real short run, FLOPs that add up, a fraction of a measured peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from palette_cli.checkpoint import build_network
from palette_cli.config import PRESETS, ModelConfig

ROOT = Path(__file__).parent.parent


def forward_flops(size: int, batch: int) -> int:
    """FLOPs of one forward of the tiny network with a colorize input (source and noisy target)."""
    network = build_network(ModelConfig(unet=PRESETS["tiny"], image_size=size))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(torch.zeros(batch, 6, size, size), torch.full((batch,), 0.5))
    return counter.get_total_flops()


@pytest.mark.slow
def test_tiny_run_reports_images_per_second_flops_and_fraction() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--preset", "tiny",
                           "--image-size", "32", "--batch-size", "2", "--no-encoder", "--no-controls",
                           "--precision", "fp32", "--steps", "3", "--warmup", "1", "--peak-every", "2",
                           "--peak-size", "256", "--threads", "1", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["steps_timed"] == 3 and report["batch"] == 2 and report["threads"] == 1
    assert report["precision"] == "fp32" and report["recipe"] == "custom"
    # forward + backward of the real step: about 3 forwards (no gradient for the input image)
    ratio = report["flops_per_image"] / (forward_flops(32, 2) / 2)
    assert 2.5 < ratio <= 3.0
    assert report["images_per_s"] > 0 and len(report["peak_gflops_all"]) >= 3
    achieved = report["images_per_s"] * report["flops_per_image"] / 1e9
    assert abs(achieved / report["peak_gflops"] - report["fraction"]) < 0.01
