"""Fully convolutional networks (the compact preset) and jpeg tiles fitted to the photo."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, randomize
from palette_cli import config as cfg
from palette_cli import images, pipeline
from palette_cli.checkpoint import build_network, load_model, save_model
from palette_cli.errors import PaletteError

COMPACT = cfg.ModelConfig(unet=cfg.PRESETS["compact"], image_size=32, tasks=("jpeg",), steps=1, objective="x0",
                          residual=True, sample_schedule=cfg.TRAIN_SCHEDULE, tile_size=64)


def test_old_configs_are_written_as_before_and_new_fields_round_trip():
    small = cfg.to_dict(cfg.ModelConfig(unet=cfg.PRESETS["small"], image_size=64))
    assert not {"norm_groups", "middle_attention", "hint_channels", "reference_channels"} & set(small["unet"])
    assert "tile_size" not in small
    data = cfg.to_dict(COMPACT)
    assert data["unet"]["norm_groups"] == 8 and data["unet"]["middle_attention"] is False and data["tile_size"] == 64
    assert cfg.from_dict(json.loads(json.dumps(data))) == COMPACT


def test_larger_tiles_need_a_network_without_attention():
    with pytest.raises(PaletteError, match="tile_size: 64 differs from image_size 32, but self-attention"):
        cfg.validate(dataclasses.replace(COMPACT, unet=cfg.PRESETS["small"]))
    with pytest.raises(PaletteError, match="tile_size: 44 must be a multiple of 8"):
        cfg.validate(dataclasses.replace(COMPACT, tile_size=44))
    with pytest.raises(PaletteError, match="multiple of norm_groups 8"):
        cfg.validate(dataclasses.replace(COMPACT, unet=dataclasses.replace(cfg.PRESETS["compact"], base_channels=12)))


def test_the_compact_network_has_no_attention_and_runs_at_any_multiple_of_8():
    net = build_network(COMPACT).eval()
    assert not any("Attention" in type(m).__name__ for m in net.modules())
    with torch.no_grad():
        assert net(torch.randn(1, 6, 40, 72), torch.rand(1)).shape == (1, 3, 40, 72)


@pytest.mark.parametrize("length, most, expected", [(768, 512, 400), (512, 512, 512), (100, 512, 112),
                                                    (2000, 512, 512)])
def test_fitted_tile_sides_cover_with_little_overlap(length, most, expected):
    side = images.fitted_side(length, most, 16, 16)
    assert side == expected and side % 16 == 0 and side <= max(most, -(-length // 16) * 16)
    starts = images.tile_starts(length, side, 16) if length > side else [0]
    assert starts[-1] + side >= length
    assert all(b - a <= side - 16 for a, b in zip(starts, starts[1:]))  # neighbours overlap >= 16


def test_fitted_tiles_restore_the_whole_photo_alike_alone_or_batched(tmp_path):
    model = load_model(save_model(tmp_path / "compact", COMPACT, randomize(build_network(COMPACT), 2)))
    wide, square = DATA / "kodim05-96.png", DATA / "kodim23-96.png"
    prep = pipeline.prepare(model, "jpeg", Image.open(wide).resize((150, 70)))
    assert prep.cond.shape[-2:] == (48, 64) and len(prep.cond) == 6  # 2 rows x 3 columns
    out = pipeline.restore(model, "jpeg", wide, seed=3)[0]
    assert out.size == (96, 64)
    photos = [pipeline.prepare(model, "jpeg", p) for p in (wide, Image.open(square).crop((0, 0, 40, 30)))]
    assert photos[0].cond.shape[-2:] != photos[1].cond.shape[-2:]  # two tile shapes in one group
    results = dict(pipeline.restore_stream(model, enumerate(photos), seed=3, batch_size=8))
    assert np.array_equal(np.asarray(results[0].outputs[0]), np.asarray(out))
