"""Shared fixtures: tiny real models saved to disk, and real photos shipped in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from palette_cli.checkpoint import build_network, save_model
from palette_cli.config import PRESETS, ModelConfig

DATA = Path(__file__).parent / "data"
TASKS = ("colorize", "inpaint", "uncrop", "jpeg")


def randomize(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded small random weights everywhere: zero-initialised output layers would make every output equal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return network


def make_tiny_model(directory: Path, tasks=TASKS, seed: int = 0, **overrides) -> Path:
    """Save a tiny model with random (non-zero) weights: a real network and real safetensors."""
    config = ModelConfig(unet=PRESETS["tiny"], image_size=32, tasks=tuple(tasks), steps=4, **overrides)
    return save_model(directory, config, randomize(build_network(config), seed))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny multi-task model directory (32x32, 4 sampling steps)."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def photos() -> list[Path]:
    """Small real photographs (Kodak, 96x64 PNG)."""
    return sorted(DATA.glob("kodim*-96.png"))


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `cuda` run only where a CUDA GPU is: elsewhere they are skipped, never failed."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# The networks of the tests are tiny: a second thread costs more in synchronisation than it gains,
# and a busy machine makes it far worse.
torch.set_num_threads(1)
