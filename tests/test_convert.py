"""Tests for palette_cli.convert: trainer checkpoints become palette model directories, exactly."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors import safe_open

from palette_cli import load_model
from palette_cli.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from palette_cli.config import ScheduleConfig, UNetConfig
from palette_cli.convert import (
    SCHEDULE_BUFFERS,
    convert_checkpoint,
    find_checkpoint,
    read_trainer_config,
    schedule_from_gammas,
    strip_json_comments,
)
from palette_cli.diffusion import fill_noise
from palette_cli.diffusion import gammas as schedule_gammas
from palette_cli.errors import PaletteError
from palette_cli.samplers import sample
from palette_cli.seeds import generator as sample_generator
from palette_cli.tasks.inpaint import center_mask
from palette_cli.unet import UNet

FIXTURE = Path(__file__).parent / "fixtures" / "reference-palette-small"
DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    """x, gammas and the trainer's EMA network output for them."""
    return torch.load(FIXTURE / "forward_ema.pt", weights_only=True)


@pytest.fixture(scope="module")
def ema_state() -> dict[str, torch.Tensor]:
    """The fixture's EMA checkpoint, as the trainer saved it."""
    return torch.load(FIXTURE / "100_Network_ema.pth", weights_only=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, object]:
    """The fixture folder converted with default settings (its config.json is found beside the weights)."""
    out = tmp_path_factory.mktemp("converted") / "model"
    return out, convert_checkpoint(FIXTURE, out)


def run_network(model_dir: Path, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """The converted network's output on the reference input."""
    model = load_model(model_dir, device="cpu")
    with torch.no_grad():
        return model.network(reference["x"], reference["gammas"])


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same checkpoint with other UNet weights (a non-EMA or older-epoch stand-in)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v if k in SCHEDULE_BUFFERS else v + 0.05 * torch.randn(v.shape, generator=gen)
            for k, v in state.items()}


# --- the reference fixture ------------------------------------------------------------------------

def test_fixture_reproduces_trainer_output(converted, reference):
    out_dir, result = converted
    assert result.source.name == "100_Network_ema.pth" and result.ema
    assert result.config_source == FIXTURE / "config.json"
    out = run_network(out_dir, reference)
    assert (out - reference["out"]).abs().max().item() < 1e-5


def test_fixture_config_is_mapped(converted):
    _, result = converted
    cfg = result.config
    assert cfg.unet == UNetConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attn_factors=(2,),
                                  num_head_channels=16)
    assert cfg.image_size == 32 and cfg.tasks == ("inpaint",)
    assert cfg.train_schedule == ScheduleConfig("linear", 2000, 1e-6, 1e-2)
    assert cfg.sample_schedule == ScheduleConfig("linear", 1000, 1e-4, 0.09)
    assert any("--task" in note for note in result.notes)  # the fixture's config names no task


def test_model_card_has_provenance_and_hub_metadata(converted):
    out_dir, result = converted
    text = (out_dir / "README.md").read_text(encoding="utf-8")
    card = ModelCard(text)
    assert card.data.library_name == "palette"
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "unknown"
    assert {"palette", "inpaint"} <= set(card.data.tags)
    sha = hashlib.sha256((FIXTURE / "100_Network_ema.pth").read_bytes()).hexdigest()
    assert result.sha256 == sha and sha in text
    assert "100_Network_ema.pth" in text and "EMA weights" in text
    assert "channel mults 1, 2" in text and "16 channels per head" in text
    assert json.loads((out_dir / CONFIG_NAME).read_text())["unet"]["base_channels"] == 32


def test_converted_model_samples(converted):
    """Two DDIM steps of inpainting on a real photo: known pixels kept, the hole filled, seeds reproducible."""
    out_dir, _ = converted
    model = load_model(out_dir, device="cpu")
    photo = Image.open(DATA / "kodim23-96.png").convert("RGB").resize((32, 32), Image.BICUBIC)
    x0 = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float()[None] / 127.5 - 1
    mask = center_mask(32, 32)[None]
    cond = fill_noise(x0[0], mask[0], torch.Generator().manual_seed(0))[None]
    gammas = schedule_gammas(model.config.sample_schedule).float()

    def run(seed: int) -> torch.Tensor:
        return sample(model.network, cond, gammas, sampler="ddim", steps=2,
                      generators=[sample_generator(seed, 0)], mask=mask)

    result = run(1)
    assert result.shape == (1, 3, 32, 32) and torch.isfinite(result).all()
    assert result.min() >= -1 and result.max() <= 1
    known = mask.expand_as(result) == 0
    assert torch.equal(result[known], cond[known])
    assert (result - cond)[~known].abs().mean() > 1e-3
    assert torch.equal(run(1), result) and not torch.equal(run(2), result)


# --- finding the checkpoint -----------------------------------------------------------------------

def test_folder_and_prefix_prefer_ema_of_latest_epoch(tmp_path, ema_state, reference):
    shutil.copy(FIXTURE / "100_Network_ema.pth", tmp_path / "100_Network_ema.pth")
    torch.save(perturbed(ema_state, 1), tmp_path / "100_Network.pth")
    torch.save(perturbed(ema_state, 2), tmp_path / "90_Network_ema.pth")
    (tmp_path / "100.state").write_bytes(b"optimizer state, never read")
    assert find_checkpoint(tmp_path) == (tmp_path / "100_Network_ema.pth", True)
    assert find_checkpoint(tmp_path / "100") == (tmp_path / "100_Network_ema.pth", True)
    assert find_checkpoint(tmp_path / "90") == (tmp_path / "90_Network_ema.pth", True)
    assert find_checkpoint(tmp_path / "100_Network.pth") == (tmp_path / "100_Network.pth", False)

    # The explicitly named non-EMA file is used as asked, and it is a different network.
    result = convert_checkpoint(tmp_path / "100_Network.pth", tmp_path / "non-ema", config=FIXTURE / "config.json")
    assert not result.ema
    assert (run_network(result.path, reference) - reference["out"]).abs().max() > 1e-3


def test_without_ema_the_plain_network_is_used(tmp_path, ema_state):
    torch.save(perturbed(ema_state, 1), tmp_path / "100_Network.pth")
    result = convert_checkpoint(tmp_path, tmp_path / "out", config=FIXTURE / "config.json")
    assert result.source == tmp_path / "100_Network.pth" and not result.ema
    assert "non-EMA weights" in (tmp_path / "out" / "README.md").read_text()


def test_inferred_from_shapes_alone(tmp_path, reference):
    """No config anywhere: the layout comes from the shapes, the rest from flags or stated assumptions."""
    shutil.copy(FIXTURE / "100_Network_ema.pth", tmp_path)
    bare = convert_checkpoint(tmp_path / "100_Network_ema.pth", tmp_path / "bare")
    assert bare.config_source is None
    flags = " ".join(bare.notes)
    for flag in ("--num-head-channels", "--num-heads", "--image-size", "--task", "--new-attention-order"):
        assert flag in flags
    assert bare.config.image_size == 256 and bare.config.unet.num_head_channels == 32

    result = convert_checkpoint(tmp_path / "100", tmp_path / "flags", num_head_channels=16, image_size=32)
    assert result.config.unet == UNetConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                                            attn_factors=(2,), num_head_channels=16)
    # The training schedule is read back from the trainer's stored gammas buffer.
    assert result.config.train_schedule == ScheduleConfig("linear", 2000, 1e-6, 1e-2)
    assert (run_network(result.path, reference) - reference["out"]).abs().max().item() < 1e-5


def test_fp16_weights(tmp_path, reference, converted):
    result = convert_checkpoint(FIXTURE, tmp_path / "half", dtype="fp16")
    weights = tmp_path / "half" / WEIGHTS_NAME
    with safe_open(weights, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert weights.stat().st_size < 0.6 * (converted[0] / WEIGHTS_NAME).stat().st_size
    assert result.config == converted[1].config
    assert (run_network(result.path, reference) - reference["out"]).abs().max().item() < 5e-3


# --- any trainer layout ---------------------------------------------------------------------------

LAYOUTS = {
    # mults (1,2,3), attention at two factors, fixed head count with another count on the way up
    "resblock-updown": dict(unet=UNetConfig(base_channels=32, channel_mults=(1, 2, 3), num_res_blocks=2,
                                            attn_factors=(1, 4), num_heads=4, num_head_channels=-1,
                                            num_heads_upsample=2, legacy_attention_order=False),
                            trainer={"inner_channel": 32, "channel_mults": [1, 2, 3], "res_blocks": 2,
                                     "attn_res": [1, 4], "num_heads": 4, "num_heads_upsample": 2,
                                     "use_new_attention_order": True},
                            schedule=ScheduleConfig("cosine", 500), flags=dict(num_heads=4, num_heads_upsample=2)),
    # conv resampling instead of ResBlocks, attention only at factor 2
    "conv-resample": dict(unet=UNetConfig(base_channels=32, channel_mults=(1, 1, 2), num_res_blocks=1,
                                          attn_factors=(2,), num_heads=2, num_head_channels=-1,
                                          resblock_updown=False, legacy_attention_order=False),
                          trainer={"inner_channel": 32, "channel_mults": [1, 1, 2], "res_blocks": 1,
                                   "attn_res": [2], "num_heads": 2, "resblock_updown": False,
                                   "use_new_attention_order": True},
                          schedule=ScheduleConfig("linear", 300, 1e-5, 2e-2), flags=dict(num_heads=2)),
    # parameter-free resampling (average pool, nearest), attention in the middle block only
    "avgpool": dict(unet=UNetConfig(base_channels=32, channel_mults=(2, 2), num_res_blocks=1, attn_factors=(),
                                    num_head_channels=32, resblock_updown=False, conv_resample=False),
                    trainer={"inner_channel": 32, "channel_mults": [2, 2], "res_blocks": 1, "attn_res": [16],
                             "num_head_channels": 32, "resblock_updown": False, "conv_resample": False},
                    schedule=ScheduleConfig("linear", 2000, 1e-6, 1e-2), flags=dict(num_head_channels=32)),
}


def trainer_checkpoint(path: Path, unet: UNetConfig, schedule: ScheduleConfig, seed: int = 0) -> UNet:
    """Save a random network as the trainer does: UNet under denoise_fn. plus its schedule buffers."""
    network = UNet(unet)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():  # large enough that head count and order change the output
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    state = {f"denoise_fn.{k}": v for k, v in network.state_dict().items()}
    g = schedule_gammas(schedule)
    for name in SCHEDULE_BUFFERS:  # values other than gammas do not matter: they are dropped
        state[name] = (g if name == "gammas" else torch.rand(len(g), generator=gen)).float()
    torch.save(state, path)
    return network.eval()


def trainer_config_text(unet_args: dict, schedule: ScheduleConfig, task: str) -> str:
    """A full-layout trainer config, with the trainer's // comments."""
    unet = {"in_channel": 6, "out_channel": 3, **unet_args, "dropout": 0.2, "image_size": 64}
    entry = ({"schedule": "linear", "n_timestep": schedule.num_steps, "linear_start": schedule.beta_start,
              "linear_end": schedule.beta_end} if schedule.kind == "linear"
             else {"schedule": "cosine", "n_timestep": schedule.num_steps})
    config = {"name": "test", "path": {"resume_state": "http://example.com/a//b"},  # '//' inside a string
              "model": {"which_model": {"name": ["models.model", "Palette"], "args": {"task": task}},
                        "which_networks": [{"name": ["models.network", "Network"],
                                            "args": {"init_type": "kaiming", "module_name": "guided_diffusion",
                                                     "unet": unet, "beta_schedule": {"train": entry,
                                                                                     "test": entry}}}]}}
    lines = json.dumps(config, indent=4).splitlines()
    return "\n".join(f"{line} // comment {i}" if line.rstrip().endswith((",", "{", "[")) else line
                     for i, line in enumerate(lines)) + "\n// trailing comment\n"


@pytest.mark.parametrize("name", LAYOUTS)
def test_other_layouts_from_config_and_from_shapes(tmp_path, name):
    layout = LAYOUTS[name]
    network = trainer_checkpoint(tmp_path / "7_Network_ema.pth", layout["unet"], layout["schedule"])
    x = torch.randn(2, 6, 16, 16, generator=torch.Generator().manual_seed(1))
    gamma = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        expected = network(x, gamma)

    def output(directory: Path) -> torch.Tensor:
        with torch.no_grad():
            return load_model(directory, device="cpu").network(x, gamma)

    config_file = tmp_path / "elsewhere" / "colorization.json"
    config_file.parent.mkdir()
    config_file.write_text(trainer_config_text(layout["trainer"], layout["schedule"], "colorization"))
    from_config = convert_checkpoint(tmp_path, tmp_path / "from-config", config=config_file)
    assert from_config.config.unet == dataclass_replace(layout["unet"], dropout=0.2,
                                                        attn_factors=tuple(layout["trainer"]["attn_res"]))
    assert from_config.config.tasks == ("colorize",) and from_config.config.image_size == 64
    assert from_config.config.train_schedule == layout["schedule"] == from_config.config.sample_schedule
    assert from_config.notes == []
    assert torch.allclose(output(from_config.path), expected, atol=1e-5)

    new_order = not layout["unet"].legacy_attention_order
    inferred = convert_checkpoint(tmp_path / "7", tmp_path / "inferred", image_size=64, task="colorize",
                                  new_attention_order=new_order, **layout["flags"])
    assert inferred.config.unet == layout["unet"]
    assert inferred.config.train_schedule == layout["schedule"]
    assert torch.allclose(output(inferred.path), expected, atol=1e-5)


def test_head_settings_matter(tmp_path):
    """The check above can fail: a wrong head count or order gives another output."""
    layout = LAYOUTS["resblock-updown"]
    network = trainer_checkpoint(tmp_path / "7_Network_ema.pth", layout["unet"], layout["schedule"])
    x = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(1))
    gamma = torch.tensor([0.5])
    with torch.no_grad():
        expected = network(x, gamma)
    for name, flags in {"heads": dict(num_heads=1, new_attention_order=True),
                        "order": dict(num_heads=4, new_attention_order=False)}.items():
        result = convert_checkpoint(tmp_path, tmp_path / name, image_size=16, **flags)
        with torch.no_grad():
            got = load_model(result.path, device="cpu").network(x, gamma)
        assert (got - expected).abs().max() > 1e-3, name


def dataclass_replace(obj, **changes):
    """dataclasses.replace, named for readability in asserts."""
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_schedule_from_gammas_reads_linear_and_cosine():
    for schedule in (ScheduleConfig("linear", 2000, 1e-6, 1e-2), ScheduleConfig("linear", 1000, 1e-4, 0.09),
                     ScheduleConfig("linear", 250, 3.5e-5, 0.0123), ScheduleConfig("cosine", 1000)):
        assert schedule_from_gammas(schedule_gammas(schedule).float()) == schedule
    quad = torch.cumprod(1 - torch.linspace(1e-3, 1e-1, 100) ** 2, 0)
    assert schedule_from_gammas(quad) is None


def test_config_comments_and_layouts(tmp_path):
    text = '{"a": "http://x//y", // note\n "b": "say \\"//\\"" // more\n}\n'
    assert json.loads(strip_json_comments(text)) == {"a": "http://x//y", "b": 'say "//"'}
    flat = read_trainer_config(FIXTURE / "config.json")
    assert flat.unet["inner_channel"] == 32 and flat.beta_schedule["test"]["n_timestep"] == 1000
    bare = tmp_path / "unet.json"
    bare.write_text(json.dumps(flat.unet))
    assert read_trainer_config(bare).unet == flat.unet


def test_config_without_required_arguments_is_completed_from_shapes(tmp_path, reference):
    shutil.copy(FIXTURE / "100_Network_ema.pth", tmp_path)
    (tmp_path / "partial.json").write_text(json.dumps(
        {"unet": {"inner_channel": 32, "channel_mults": [1, 2], "num_head_channels": 16, "image_size": 32}}))
    result = convert_checkpoint(tmp_path, tmp_path / "out", config=tmp_path / "partial.json")
    assert any("res_blocks" in note and "attn_res" in note for note in result.notes)
    assert result.config.unet.num_res_blocks == 1 and result.config.unet.attn_factors == (2,)
    assert (run_network(result.path, reference) - reference["out"]).abs().max().item() < 1e-5


# --- bad inputs -----------------------------------------------------------------------------------

def assert_refused(tmp_path: Path, src: Path, *match: str, **kwargs) -> PaletteError:
    """Converting src fails with a PaletteError naming the file and every `match`, and writes nothing."""
    out = tmp_path / "out"
    with pytest.raises(PaletteError) as info:
        convert_checkpoint(src, out, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for text in (src.name, *match):
        assert text in message
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return info.value


def test_non_checkpoint_files(tmp_path):
    photo = tmp_path / "photo.pth"
    shutil.copy(DATA / "kodim03-96.png", photo)
    assert_refused(tmp_path, photo, "not a PyTorch checkpoint")
    text = tmp_path / "notes.pth"
    text.write_text("hello\n")
    assert_refused(tmp_path, text, "not a PyTorch checkpoint")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    assert_refused(tmp_path, tensor, "not a state dict of tensors")
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, other)
    assert_refused(tmp_path, other, "not a Palette trainer checkpoint")


class RunsCode:
    """Unpickling this calls exec: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("writer", ["zip", "legacy", "pickle"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, ema_state, writer):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "100_Network_ema.pth"
    payload = {"denoise_fn.extra": RunsCode(marker), **ema_state}
    if writer == "pickle":
        with open(evil, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, evil, _use_new_zipfile_serialization=writer == "zip")
    # Unpickled without protection, it would run: the test payload is real.
    with open(tmp_path / "probe.pkl", "wb") as f:
        pickle.dump(RunsCode(tmp_path / "probe-ran"), f)
    with open(tmp_path / "probe.pkl", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "probe-ran").exists()

    assert_refused(tmp_path, evil, "refusing to load", "could run code", "exec")
    assert not marker.exists()


def test_missing_keys(tmp_path, ema_state):
    broken = dict(ema_state)
    del broken["denoise_fn.middle_block.1.qkv.weight"]
    torch.save(broken, tmp_path / "100_Network_ema.pth")
    assert_refused(tmp_path, tmp_path / "100_Network_ema.pth", "missing keys", "middle_block.1.qkv.weight",
                   config=FIXTURE / "config.json")


def test_wrong_shapes(tmp_path, ema_state):
    broken = {**ema_state, "denoise_fn.out.2.weight": torch.zeros(3, 16, 3, 3)}
    torch.save(broken, tmp_path / "100_Network_ema.pth")
    assert_refused(tmp_path, tmp_path / "100_Network_ema.pth", "wrong shape", "out.2.weight",
                   config=FIXTURE / "config.json")


def test_unknown_extra_keys(tmp_path, ema_state):
    torch.save({**ema_state, "ema_decay": torch.tensor(0.9999)}, tmp_path / "a.pth")
    assert_refused(tmp_path, tmp_path / "a.pth", "map to no part of the network", "ema_decay")
    torch.save({**ema_state, "denoise_fn.extra_head.weight": torch.zeros(3)}, tmp_path / "b.pth")
    assert_refused(tmp_path, tmp_path / "b.pth", "unexpected keys", "extra_head.weight",
                   config=FIXTURE / "config.json")


def test_config_that_does_not_match_the_weights(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    config["unet"]["inner_channel"] = 64
    (tmp_path / "wrong.json").write_text(json.dumps(config))
    shutil.copy(FIXTURE / "100_Network_ema.pth", tmp_path)
    err = assert_refused(tmp_path, tmp_path / "100_Network_ema.pth", "wrong.json", "wrong shape",
                         config=tmp_path / "wrong.json")
    assert "cond_embed.0.weight" in str(err)


def test_existing_model_is_not_overwritten_unless_asked(tmp_path, converted):
    out = tmp_path / "model"
    shutil.copytree(converted[0], out)
    before = (out / WEIGHTS_NAME).read_bytes()
    with pytest.raises(PaletteError, match="--overwrite"):
        convert_checkpoint(FIXTURE, out, dtype="fp16")
    assert (out / WEIGHTS_NAME).read_bytes() == before
    convert_checkpoint(FIXTURE, out, dtype="fp16", overwrite=True)
    assert (out / WEIGHTS_NAME).stat().st_size < len(before)


# --- the command line -----------------------------------------------------------------------------

def palette(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the `palette` entry point in this process: exit code, stdout, stderr."""
    from palette_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["palette", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cli_convert_and_bad_input(tmp_path, monkeypatch, capsys):
    shutil.copy(FIXTURE / "100_Network_ema.pth", tmp_path)
    shutil.copy(FIXTURE / "config.json", tmp_path)
    code, out, err = palette(monkeypatch, capsys, "convert", str(tmp_path / "100"), "-o",
                             str(tmp_path / "converted"), "--task", "inpaint", "--dtype", "fp16")
    assert code == 0, err
    assert "100_Network_ema.pth (EMA weights" in out and "fp16" in out
    assert load_model(tmp_path / "converted").config.tasks == ("inpaint",)

    (tmp_path / "broken.pth").write_bytes(b"\x00" * 100)
    code, out, err = palette(monkeypatch, capsys, "convert", str(tmp_path / "broken.pth"), "-o", str(tmp_path / "x"))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "broken.pth" in lines[0] and "not a PyTorch checkpoint" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_help_does_not_import_torch():
    code = ("import sys; from palette_cli.cli import app, _register; _register(); "
            "from palette_cli.cli import hub; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
