"""What only a CUDA GPU can check: sampling, training steps, fp16/bf16 and compile on the device.

Every test here is marked `cuda` and skipped without a GPU (the hook in conftest.py);
`benchmarks/gpu_session.py` runs them first on a lent machine (`pytest -m cuda`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import DATA, make_tiny_model

from palette_cli import train as T
from palette_cli.checkpoint import load_model
from palette_cli.diffusion import gammas as schedule_gammas
from palette_cli.samplers import sample
from palette_cli.seeds import generator

pytestmark = pytest.mark.cuda


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for p in sorted(DATA.glob("kodim*-96.png")):
        shutil.copy(p, root / p.name)
    return root


def _samples(model_dir: Path, device: str, dtype: torch.dtype | None = None, compiled: bool = False) -> torch.Tensor:
    """Two seeded 4-step DDIM samples of the tiny model on `device`, under autocast `dtype` if given."""
    model = load_model(model_dir, device=device)
    network = torch.compile(model.network) if compiled else model.network
    cond = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    gammas = schedule_gammas(model.config.sample_schedule).to(device)
    context = torch.autocast(device, dtype=dtype) if dtype else torch.autocast(device, enabled=False)
    with torch.inference_mode(), context:
        out = sample(network, cond, gammas, sampler="ddim", steps=4, generators=[generator(0, i) for i in range(2)],
                     objective=model.config.objective)
    return out.float().cpu()


def test_cuda_sampling_matches_the_cpu(tiny_model_dir: Path) -> None:
    torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32
    try:
        cpu, gpu = _samples(tiny_model_dir, "cpu"), _samples(tiny_model_dir, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert (cpu - gpu).abs().max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_sampling_stays_close_to_fp32(tiny_model_dir: Path, dtype: torch.dtype) -> None:
    full, half = _samples(tiny_model_dir, "cuda"), _samples(tiny_model_dir, "cuda", dtype)
    assert torch.isfinite(half).all()
    assert (full - half).abs().mean() < 0.05


def test_compiled_sampling_matches_eager(tiny_model_dir: Path) -> None:
    eager = _samples(tiny_model_dir, "cuda", torch.bfloat16)
    compiled = _samples(tiny_model_dir, "cuda", torch.bfloat16, compiled=True)
    assert (eager - compiled).abs().mean() < 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_steps_on_the_gpu_save_a_model_and_resume(photos: Path, tmp_path: Path, precision: str) -> None:
    config = T.TrainConfig(preset="tiny", tasks=("colorize", "inpaint"), batch_size=4, steps=2, lr=1e-3, warmup=0,
                           sample_every=2, sample_steps=2, save_every=2, precision=precision)
    run = tmp_path / "run"
    result = T.train([photos], run, config, device="cuda")
    assert result.step == 2 and (run / "model" / "model.safetensors").is_file()
    assert T.resume([photos], run, {"steps": 3}, device="cuda").step == 3
    model = load_model(run / "model", device="cuda")
    assert all(torch.isfinite(p).all() for p in model.network.parameters())


def test_finetune_of_a_model_on_the_gpu(photos: Path, tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m", tasks=("colorize",))
    config = T.TrainConfig(preset="tiny", batch_size=4, steps=2, warmup=0, sample_every=0, precision="auto")
    assert T.finetune(model, [photos], tmp_path / "ft", config, device="cuda").step == 2
