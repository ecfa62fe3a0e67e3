"""Model directories: round trips, every broken directory, built-in names and the offline Hub cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import load_file

import palette_cli
from palette_cli import PaletteError
from palette_cli.checkpoint import build_network, save_model
from palette_cli.config import PRESETS, ModelConfig, from_dict, to_dict


def test_save_load_round_trip_is_exact(tmp_path):
    directory = make_tiny_model(tmp_path / "m")
    saved = load_file(directory / "model.safetensors")
    model = palette_cli.load_model(directory, device="cpu")
    assert model.config == from_dict(json.loads((directory / "config.json").read_text()))
    for name, value in model.network.state_dict().items():
        assert torch.equal(value, saved[name]), name
    x, g = torch.randn(1, 6, 32, 32), torch.tensor([0.5])
    again = palette_cli.load_model(str(directory))
    assert torch.equal(model.network(x, g), again.network(x, g))
    assert (directory / "README.md").read_text().startswith("---\nlibrary_name: palette")
    # Atomic writes go through a private temporary file; the result has the usual permissions.
    modes = {(directory / f).stat().st_mode & 0o777 for f in ("model.safetensors", "config.json")}
    assert len(modes) == 1 and modes.pop() & 0o044 == 0o044 - (0o044 & _umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_fp16_weights_load_as_their_fp16_values(tmp_path):
    net = build_network(ModelConfig(unet=PRESETS["tiny"]))
    torch.nn.init.normal_(net.out[2].weight)
    save_model(tmp_path, ModelConfig(unet=PRESETS["tiny"]), net, dtype=torch.float16)
    assert load_file(tmp_path / "model.safetensors")["out.2.weight"].dtype == torch.float16
    model = palette_cli.load_model(tmp_path)
    assert model.dtype == torch.float32
    assert torch.equal(model.network.out[2].weight, net.out[2].weight.half().float())


def test_config_round_trip_and_unknown_fields():
    config = ModelConfig(unet=PRESETS["small"], tasks=("jpeg", "inpaint"), steps=25)
    assert from_dict(json.loads(json.dumps(to_dict(config)))) == config
    data = to_dict(config)
    data["unet"]["wings"] = 2
    with pytest.raises(PaletteError, match="wings"):
        from_dict(data)


def broken(tmp_path: Path, how: str) -> Path:
    directory = make_tiny_model(tmp_path / how)
    weights, config = directory / "model.safetensors", directory / "config.json"
    if how == "no-config":
        config.unlink()
    elif how == "bad-json":
        config.write_text("{not json")
    elif how == "future-version":
        config.write_text(json.dumps({**json.loads(config.read_text()), "format_version": 99}))
    elif how == "no-weights":
        weights.unlink()
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage":
        weights.write_bytes(os.urandom(4096))
    elif how == "pickle":
        torch.save({"a": torch.zeros(1)}, weights)  # a .pth renamed: must never be unpickled
    elif how == "mismatch":
        data = json.loads(config.read_text())
        data["unet"]["base_channels"] = 64
        config.write_text(json.dumps(data))
    elif how == "missing-key":
        state = load_file(weights)
        del state["out.2.bias"]
        from safetensors.torch import save_file

        save_file(state, str(weights))
    return directory


@pytest.mark.parametrize("how, message", [
    ("no-config", "missing config.json"),
    ("bad-json", "not valid JSON"),
    ("future-version", "format version 99 is not supported"),
    ("no-weights", "missing model.safetensors"),
    ("truncated", "corrupt or truncated"),
    ("garbage", "corrupt or truncated"),
    ("pickle", "corrupt or truncated"),
    ("mismatch", "weights do not match the config.*wrong shape keys"),
    ("missing-key", "missing keys: out.2.bias"),
])
def test_every_broken_directory_gives_one_clear_error(tmp_path, how, message):
    directory = broken(tmp_path, how)
    with pytest.raises(PaletteError, match=message) as info:
        palette_cli.load_model(directory)
    assert str(directory) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_unknown_specs(tmp_path):
    with pytest.raises(PaletteError, match="no such model"):
        palette_cli.load_model(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PaletteError, match="not a model directory"):
        palette_cli.load_model(tmp_path / "file.txt")


HUB_SCRIPT = textwrap.dedent("""
    import palette_cli
    model = palette_cli.load_model("acme/tiny-palette")
    print("path", model.path)
    for spec in ("acme/not-cached", "acme/tiny-palette@v2"):
        try:
            palette_cli.load_model(spec)
        except palette_cli.PaletteError as err:
            print("error", err)
""")


@pytest.mark.slow
def test_hub_ids_resolve_offline_from_the_cache(tmp_path):
    # The cache layout huggingface_hub writes: refs/main names a snapshot folder of real files.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--acme--tiny-palette"
    make_tiny_model(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"path {repo / 'snapshots' / commit}"
    assert lines[1].startswith("error acme/not-cached: not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in lines[1] and "hf download acme/not-cached" in lines[1]
    assert "hf download acme/tiny-palette --revision v2" in lines[2]


def test_help_does_not_import_torch():
    code = "import sys; from palette_cli.cli import _register, app; _register(); " \
           "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
    help_text = subprocess.run([sys.executable, "-m", "palette_cli", "--help"], capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0 and "models" in help_text.stdout
