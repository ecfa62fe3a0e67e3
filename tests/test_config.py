"""config.json validation: every field, every kind of bad value, one PaletteError naming the field."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model

import palette_cli
from palette_cli import PaletteError
from palette_cli.checkpoint import read_config
from palette_cli.config import PRESETS, ModelConfig, RefineConfig, from_dict, to_dict, validate

# Fields where zero is a valid value (everything else numeric must be positive).
ZERO_IS_VALID = {"unet.dropout", "train_schedule.cosine_s", "sample_schedule.cosine_s"}
# Fields where -1 means "derive it" (so -1 is valid, other negatives are not).
MINUS_ONE_IS_VALID = {"unet.num_head_channels", "unet.num_heads_upsample"}


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted path, value) of every leaf field of a config dict."""
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def _mutations(path: str, value: object) -> list[object]:
    """Values that must be refused for a field holding `value`."""
    bad: list[object] = [None, {"a": 1}, [[]] if not isinstance(value, list) else "x"]
    if isinstance(value, bool):
        return bad + [1, 0, "true", 0.5]
    if isinstance(value, (int, float)):
        bad += ["x", "64", True, -7, -1e9, float("nan") if path == "strength" else -7.5]
        if isinstance(value, int):
            bad += [1.5]
        if path not in ZERO_IS_VALID:
            bad.append(0)
        if path not in MINUS_ONE_IS_VALID:
            bad.append(-1)
        return bad
    if isinstance(value, str):
        return bad + ["nope", "", 3, "DDIM" if path == "sampler" else "Linear"]
    if isinstance(value, list):
        empty_ok = path in ("unet.attn_factors", "refine.tasks")
        return bad + ([] if empty_ok else [[]]) + [["x"], [0], [-2], [1.5], "1,2"]
    raise AssertionError(path)


def _set(data: dict, path: str, value: object) -> dict:
    data = json.loads(json.dumps(data))
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value
    return data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    # With every optional block that needs no extra weights, so that its fields are fuzzed too.
    return make_tiny_model(tmp_path_factory.mktemp("fuzz") / "m", tasks=("colorize", "jpeg"), refine=RefineConfig())


def test_every_bad_value_of_every_field_is_a_palette_error(model_dir: Path, tmp_path: Path) -> None:
    good = json.loads((model_dir / "config.json").read_text())
    cases = [(path, bad) for path, value in _leaves(good) if path != "format_version"
             for bad in _mutations(path, value)]
    assert {"refine.strength", "refine.steps", "refine.block", "refine.tasks"} <= {path for path, _ in cases}
    assert len(cases) > 250
    for path, bad in cases:
        (tmp_path / "config.json").write_text(json.dumps(_set(good, path, bad)))
        with pytest.raises(PaletteError) as info:  # as a model is loaded: task names are checked there
            read_config(tmp_path)
        leaf = path.split(".")[-1]
        assert leaf in str(info.value) or path.split(".")[0] in str(info.value), (path, bad, str(info.value))


def test_random_combinations_never_raise_anything_else(model_dir: Path, tmp_path: Path) -> None:
    """Several fields broken at once, loaded through load_model: a PaletteError or a working model."""
    good = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    leaves = [(p, v) for p, v in _leaves(good) if p != "format_version"]
    rng = random.Random(0)
    for _ in range(60):
        data = good
        for path, value in rng.sample(leaves, 3):
            data = _set(data, path, rng.choice(_mutations(path, value)))
        (tmp_path / "config.json").write_text(json.dumps(data))
        with pytest.raises(PaletteError, match="config.json"):
            palette_cli.load_model(tmp_path, device="cpu")


@pytest.mark.parametrize(("path", "value", "message"), [
    ("image_size", "big", "image_size: must be an integer"),
    ("image_size", -64, "image_size: must be at least 1"),
    ("image_size", 0, "image_size: must be at least 1"),
    ("image_size", 33, "image_size: 33 must be a multiple of 2"),
    ("steps", "x", "steps: must be an integer"),
    ("steps", 5000, "steps: 5000 is more than"),
    ("unet.base_channels", -32, "unet.base_channels: must be at least 1"),
    ("unet.base_channels", 48, r"unet: base_channels x channel_mults\[0\] = 48 must be a multiple of norm_groups 32"),
    ("unet.channel_mults", [], "unet.channel_mults: must not be empty"),
    ("unet.num_res_blocks", "two", "unet.num_res_blocks: must be an integer"),
    ("unet.num_head_channels", 24, "unet: 64 channels are not divisible by num_head_channels 24"),
    ("sampler", "euler", "sampler: must be one of ddpm, ddim, dpmpp"),
    ("objective", "score", "objective: must be one of eps, x0, v, regression"),
    ("tasks", ["colorise"], r"tasks: unknown task\(s\) 'colorise'"),
    ("train_schedule.kind", "sigmoid", "train_schedule.kind: must be one of linear, cosine"),
    ("sample_schedule.beta_start", 0.5, "sample_schedule: beta_start 0.5 is larger than beta_end"),
])
def test_the_message_names_the_file_the_field_and_the_problem(model_dir, tmp_path, path, value, message):
    good = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(_set(good, path, value)))
    with pytest.raises(PaletteError, match=f"config.json: {message}"):
        palette_cli.load_model(tmp_path, device="cpu")


def test_heads_and_channels_both_zero_is_refused(model_dir, tmp_path):
    data = json.loads((model_dir / "config.json").read_text())
    data["unet"].update(num_heads=0, num_head_channels=0)
    with pytest.raises(PaletteError, match="num_heads: must be at least 1"):
        from_dict(data)


def test_the_cli_reports_a_bad_config_as_one_line(model_dir, tmp_path):
    from typer.testing import CliRunner

    from palette_cli.cli import _register, app

    _register()
    good = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**good, "image_size": "big"}))
    photo = Path(__file__).parent / "data" / "kodim03-96.png"
    result = CliRunner().invoke(app, ["jpeg", str(photo), "-o", str(tmp_path / "out"), "--model",
                                      str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "config.json: image_size: must be an integer" in result.output
    assert "Traceback" not in result.output


def test_presets_and_defaults_are_valid():
    for unet in PRESETS.values():
        assert validate(ModelConfig(unet=unet)) == ModelConfig(unet=unet)
    assert from_dict(to_dict(ModelConfig())) == ModelConfig()


@pytest.mark.parametrize(("name", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                              ("fp32", torch.float32), ("auto", torch.float32),
                                              (torch.float16, torch.float16), (None, torch.float32)])
def test_load_model_takes_the_cli_dtype_names(model_dir, name, dtype):
    assert palette_cli.load_model(model_dir, device="cpu", dtype=name).dtype == dtype


def test_load_model_refuses_an_unknown_dtype_name(model_dir):
    with pytest.raises(PaletteError, match="unknown dtype 'half'"):
        palette_cli.load_model(model_dir, device="cpu", dtype="half")


def test_names_checked_here_are_the_ones_the_library_implements():
    from palette_cli import config, diffusion, samplers

    assert config.SAMPLER_NAMES == tuple(samplers.SAMPLERS)
    assert config.OBJECTIVES == diffusion.OBJECTIVES


def test_rules_for_an_optional_nested_block():
    """What an optional block of config.json (such as an encoder) gets: null, or a checked object."""
    from palette_cli.config import ScheduleConfig, _nested, _optional, _text

    rule = _optional(_nested(ScheduleConfig))
    assert rule(None, "block") is None
    assert rule({"kind": "cosine"}, "block") == ScheduleConfig(kind="cosine")
    for bad, message in (([], "block: must be a JSON object"), ({"kind": 3}, "block.kind: must be one of"),
                         ({"wings": 1}, "block: unknown field")):
        with pytest.raises(PaletteError, match=message):
            rule(bad, "block")
    with pytest.raises(PaletteError, match="name: must be a non-empty string"):
        _text()("", "name")


def test_every_training_field_has_a_rule_and_bad_values_name_the_field():
    import dataclasses

    from palette_cli.config import _FIELDS, TrainConfig, check_training

    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(_FIELDS[TrainConfig])
    assert check_training(TrainConfig()) == TrainConfig()
    for field, value, message in [("steps", 0, "steps: must be at least 1"), ("lr", 0.0, "lr: must be in"),
                                  ("ema_decay", 1.0, r"ema_decay: must be in \[0, 1\)"),
                                  ("warmup", -1, "warmup: must be at least 0"), ("loss", "l3", "loss: must be one of"),
                                  ("crop", "zoom", "crop: must be one of native, fit"),
                                  ("sample_steps", 0, "sample_steps: must be at least 1"),
                                  ("perceptual", float("nan"), "perceptual: must be a number")]:
        with pytest.raises(PaletteError, match=message):
            check_training(dataclasses.replace(TrainConfig(), **{field: value}))
