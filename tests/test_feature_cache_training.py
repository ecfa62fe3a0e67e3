"""Training from a feature cache: the UNet without the encoder in its loop, and the colour head from the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from palette_cli import features
from palette_cli import train as T
from palette_cli.checkpoint import HEAD_PREFIX, build_network, load_model, read_weights, save_model, split_head
from palette_cli.cli import _register, app
from palette_cli.config import PRESETS, ModelConfig
from palette_cli.errors import PaletteError
from palette_cli.train_cache import FeatureSource

DATA = Path(__file__).parent / "data"
KODAK = sorted(DATA.glob("kodim*-96.png"))

_register()
runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for p in KODAK[:3]:
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture(scope="module")
def cache(photos, tmp_path_factory) -> FeatureSource:
    """Two views of each photo, built by a one-step run (the run builds what the cache lacks)."""
    source = FeatureSource(tmp_path_factory.mktemp("features") / "cache", views=2)
    T.train([photos], tmp_path_factory.mktemp("first") / "run", tiny(steps=1), device="cpu", features=source)
    return source


@pytest.fixture(scope="module")
def tiny_encoder_model(tmp_path_factory) -> Path:
    """A tiny colorize model with the frozen encoder: random weights, real files."""
    config = T.with_encoder(ModelConfig(unet=PRESETS["tiny"], image_size=32, tasks=("colorize",), steps=2),
                            "efficientnet-lite0")
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("models") / "tiny-encoder", config, build_network(config))


def tiny(**kw) -> T.TrainConfig:
    base = dict(tasks=("colorize",), preset="tiny", image_size=32, batch_size=2, steps=3, lr=1e-3, warmup=0,
                encoder="efficientnet-lite0", sample_every=0, sample_steps=2, precision="fp32", log_every=1)
    return T.TrainConfig(**{**base, **kw})


class EncoderCalls:
    """Counts passes of the real encoder (every path to its blocks goes through feature_maps)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = features.EfficientNetLite0.feature_maps

        def counted(network, *args, **kwargs):
            self.count += 1
            return original(network, *args, **kwargs)

        monkeypatch.setattr(features.EfficientNetLite0, "feature_maps", counted)


def test_the_cache_holds_every_view_of_the_training_photos(cache):
    meta = json.loads((cache.folder / "cache.json").read_text())
    assert sorted((Path(e["path"]).name, e["view"]) for e in meta["entries"]) == \
        sorted((p.name, v) for p in KODAK[:3] for v in (0, 1))


def test_the_unet_trains_from_the_cache_without_the_encoder_in_its_loop(cache, photos, tmp_path, monkeypatch):
    calls = EncoderCalls(monkeypatch)
    config = tiny(controls=True, sample_every=3, sample_count=2)
    result = T.train([photos], tmp_path / "cached", config, device="cpu", features=cache)
    assert calls.count == 0  # the cache had every view: no encoder pass, grids included
    lines = [json.loads(line) for line in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3] and all(math.isfinite(line["loss"]) for line in lines)
    assert result.images == 3 and (tmp_path / "cached" / "samples" / "step-000000003.png").is_file()
    assert load_model(result.model_dir).config.encoder is not None
    T.train([photos], tmp_path / "live", dataclasses.replace(config, steps=1), device="cpu")
    assert calls.count > 0  # the counter does see the encoder of an ordinary run


def test_a_resumed_cached_run_keeps_its_cache_and_ends_where_a_straight_run_ends(cache, photos, tmp_path):
    straight = T.train([photos], tmp_path / "straight", tiny(steps=3), device="cpu", features=cache)
    T.train([photos], tmp_path / "halves", tiny(steps=2), device="cpu", features=cache)
    resumed = T.resume([photos], tmp_path / "halves", {"steps": 3}, device="cpu")
    a, b = read_weights(straight.model_dir), read_weights(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change, message", [
    (dict(pyramid=True), "stride-4 map"),
    (dict(tasks=("colorize", "inpaint")), "colorize only"),
    (dict(image_size=128, preset="small"), "64x64"),
    (dict(encoder=None), "--encoder"),
])
def test_what_the_cache_cannot_feed_is_refused(cache, photos, tmp_path, change, message):
    with pytest.raises(PaletteError, match=message):
        T.train([photos], tmp_path / "run", tiny(**change), device="cpu", features=cache)


def test_cli_trains_from_a_feature_cache(cache, photos, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "colorize", "--preset", "tiny",
                                 "--encoder", "efficientnet-lite0", "--feature-cache", str(cache.folder),
                                 "--cache-views", "2", "--steps", "2", "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 2
    assert torch.load(run / "state.pt", weights_only=True)["feature_cache"] == cache.to_dict()


@pytest.fixture(scope="module")
def head_run(photos, tiny_encoder_model, tmp_path_factory) -> Path:
    """`palette train --colour-head` onto a tiny colorize model, two steps."""
    run = tmp_path_factory.mktemp("colour") / "run"
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--task", "colorize", "--colour-head",
                                 "--init", str(tiny_encoder_model), "--cache-views", "2", "--steps", "2",
                                 "--batch-size", "2", "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 2
    return run


def test_cli_colour_head_writes_a_model_with_its_head(head_run, tiny_encoder_model):
    model = load_model(head_run / "model")
    assert model.colour_head is not None and model.config.colour_head is not None
    unet, head = split_head(read_weights(head_run / "model"))
    base = read_weights(tiny_encoder_model)
    # the UNet is the base's, as write_model stores it (fp16)
    assert set(unet) == set(base) and all(torch.equal(unet[k], base[k].half()) for k in base)
    assert (head_run / "features" / "cache.json").is_file()


def test_cli_colour_head_resumes_to_more_steps(head_run, photos, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(head_run, run)
    result = runner.invoke(app, ["train", str(photos), "-o", str(run), "--resume", "--steps", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 3
    assert torch.load(run / "head" / "head_state.pt", weights_only=False)["config"]["batch_size"] == 2


def test_cli_finetune_continues_a_models_head(head_run, photos, tmp_path):
    run = tmp_path / "more"
    result = runner.invoke(app, ["finetune", str(head_run / "model"), str(photos), "-o", str(run), "--colour-head",
                                 "--steps", "1", "--batch-size", "2", "--lr", "0", "--warmup", "1",
                                 "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    _, before = split_head(read_weights(head_run / "model"))
    _, after = split_head(read_weights(run / "model"))
    # lr 0 for one step (AdamW's weight decay is lr-scaled too): the head is the model's own, bins and all
    assert set(before) == set(after) and all(torch.equal(before[k].float(), after[k].float()) for k in before)


def test_cli_finetune_gives_a_models_head_a_tail(head_run, photos, tmp_path):
    """`--head-tail` on a head without one: the tail is added (the encoder's own layers), the rest is the head's."""
    run = tmp_path / "tailed"
    result = runner.invoke(app, ["finetune", str(head_run / "model"), str(photos), "-o", str(run), "--colour-head",
                                 "--head-tail", "--steps", "1", "--batch-size", "2", "--lr", "0", "--warmup", "1",
                                 "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    _, before = split_head(read_weights(head_run / "model"))
    _, after = split_head(read_weights(run / "model"))
    assert set(after) - set(before) and all(k.startswith("tail.") for k in set(after) - set(before))
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before)
    assert load_model(run / "model").config.colour_head.tail
    bad = runner.invoke(app, ["train", str(photos), "-o", str(tmp_path / "x"), "--task", "colorize", "--head-tail"])
    assert bad.exit_code == 2 and "--head-tail goes with --colour-head" in bad.output


def test_finetuning_the_unet_carries_the_head_unchanged_across_resume(head_run, photos, tmp_path):
    _, head = split_head(read_weights(head_run / "model"))
    config = T.TrainConfig.finetune(steps=1, batch_size=2, sample_every=1, sample_count=1, precision="fp32")
    first = T.finetune(head_run / "model", [photos], tmp_path / "ft", config, device="cpu")
    resumed = T.resume([photos], tmp_path / "ft", {"steps": 2}, device="cpu")
    for result in (first, resumed):
        unet, carried = split_head(read_weights(result.model_dir))
        assert set(carried) == set(head) and all(torch.equal(carried[k].float(), head[k].float()) for k in head)
    assert (tmp_path / "ft" / "samples" / "step-000000002.png").is_file()  # the UNet's grid, sampled by the UNet
    assert load_model(resumed.model_dir).colour_head is not None
    assert any(k.startswith(HEAD_PREFIX) for k in read_weights(resumed.model_dir))


@pytest.fixture(scope="module")
def sampling_model(head_run, tmp_path_factory) -> Path:
    """The built-in colorize model (it takes colour hints) with head_run's head, its UNet sampling around it."""
    from palette_cli.train_head import write_model

    return write_model("colorize", head_run / "head", tmp_path_factory.mktemp("sampling") / "model", use="hints",
                       temperature=0.5, adjust=0.3)


def test_a_unet_that_samples_around_its_head_trains_on_the_heads_colours(sampling_model, cache, photos, tmp_path):
    """The training hint map is what inference gives the UNet: the head's colour (mask HEAD_HINT_MASK) on
    every pixel of a colorize item, a random ground-truth hint (mask 1) wherever one was drawn."""
    from palette_cli import colour_head, tasks
    from palette_cli.data import CachedViews
    from palette_cli.train_cache import rows_of
    from palette_cli.train_condition import Conditioner

    colorize = tasks.get("colorize")
    model = load_model(sampling_model)
    _, head = split_head(read_weights(sampling_model))
    config = T.TrainConfig.finetune(steps=2, batch_size=3, image_size=64, precision="fp32", controls=True)
    views = CachedViews(cache.folder, rows_of(cache, KODAK[:3]).tolist(), 64, 0, taps=True)
    batch = {k: torch.stack([views[i][k] for i in range(3)]) for k in views[0]}
    conditioner = Conditioner(model.config, config, torch.device("cpu"), 0, 1, cached=True, head=head)
    hints = conditioner._head_hints(batch, None, micro=0)
    assert hints.shape == (3, 3, 64, 64) and torch.all(hints[:, 2] == colorize.HEAD_HINT_MASK)
    # Items shown the head's annealed mean carry exactly the colour the inference path decodes.
    final = conditioner.top(batch["encoded"])
    logits = model.colour_head(final, batch["s8"], batch["s16"], colour_head.gray_input(batch["cond"]))
    colours, _ = zip(*(colorize.head_colours(model.colour_head, model.config.colour_head, logits[i:i + 1],
                                             batch["cond"][i:i + 1], [0], seed=0) for i in range(3)))
    mean = [i for i in range(3) if torch.allclose(hints[i, :2], 2 * colorize.colour_hints.chroma(colours[i])[0],
                                                  atol=1e-4)]
    noisy = [i for i in range(3) if i not in mean]
    assert (hints[:, :2].abs().amax(dim=(1, 2, 3)) > 0.02).all()  # a colour, not gray
    given = colorize.colour_hints.random_hints(batch["target"], torch.Generator().manual_seed(3))
    merged = conditioner._head_hints(batch, given, micro=0)
    shown = given[:, 2:] > 0
    assert shown.any() and torch.equal(torch.where(shown, merged, 0 * merged), torch.where(shown, given, 0 * given))
    # micro-batch 0's draws (seeds.stream(0, "head", 0)): 0.43, 0.07, 0.17 against TRAIN_HEAD_MEAN 0.25
    assert mean == [1, 2] and noisy == [0]
    # And the loop runs with it: the UNet moves, the head is carried unchanged.
    result = T.finetune(sampling_model, [photos], tmp_path / "ft", config, device="cpu", features=cache)
    unet_after, head_after = split_head(read_weights(result.model_dir))
    unet_before, _ = split_head(read_weights(sampling_model))
    assert all(torch.equal(head_after[k].float(), head[k].float()) for k in head)
    assert any(not torch.equal(unet_after[k], unet_before[k]) for k in unet_before)
