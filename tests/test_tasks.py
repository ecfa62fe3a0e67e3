"""Tests for palette_cli.tasks: masks, degradations and the degrade() entry point."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from palette_cli import tasks
from palette_cli.errors import PaletteError
from palette_cli.tasks import (
    MASKED_TASKS,
    TASKS,
    UNCROP_SIDES,
    box_mask,
    center_mask,
    degrade,
    encode_jpeg,
    fill_noise,
    free_form_mask,
    jpeg_recompress,
    jpeg_recompress_tensor,
    mask_from_image,
    random_box_mask,
    sample_jpeg_quality,
    to_gray,
    train_inpaint_mask,
    train_uncrop_mask,
    uncrop_mask,
)

H, W = 64, 48
SEEDS = range(20)


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


def assert_valid_mask(mask: torch.Tensor, h: int = H, w: int = W) -> None:
    """Masks are float32, shaped (1,h,w), binary."""
    assert mask.dtype == torch.float32
    assert tuple(mask.shape) == (1, h, w)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def natural_image(h: int = 64, w: int = 64) -> Image.Image:
    """A smooth gradient plus noise, JPEG-compressible like a photo."""
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], axis=-1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def random_target(seed: int = 0, h: int = 32, w: int = 32) -> torch.Tensor:
    """A (3,h,w) image in [-1, 1]."""
    return torch.rand(3, h, w, generator=gen(seed)) * 2 - 1


def test_constants():
    assert TASKS == ("colorize", "inpaint", "uncrop", "jpeg")
    assert MASKED_TASKS == ("inpaint", "uncrop")
    assert UNCROP_SIDES == ("left", "right", "top", "bottom", "all")


# --- colour ---------------------------------------------------------------------------------


def test_to_gray_red_pixel_matches_bt601():
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)
    out = to_gray(red)
    assert out.shape == (3, 1, 1)
    assert torch.allclose(out, torch.full((3, 1, 1), 0.299 - 0.587 - 0.114), atol=1e-6)


def test_to_gray_batched_equal_channels():
    img = torch.rand(2, 3, 5, 7, generator=gen(1)) * 2 - 1
    out = to_gray(img)
    assert out.shape == img.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    expected = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    assert torch.allclose(out[:, 0], expected, atol=1e-6)


def test_to_gray_rejects_wrong_channels():
    with pytest.raises(PaletteError):
        to_gray(torch.zeros(4, 2, 2))


# --- deterministic masks --------------------------------------------------------------------


def test_box_mask_clips_to_image():
    mask = box_mask(H, W, (40, -5, 20, 10))
    assert_valid_mask(mask)
    assert mask.sum() == (W - 40) * 5
    assert mask[0, 0:5, 40:].all() and mask[0, 5:, :].sum() == 0


@pytest.mark.parametrize("box", [(W, 0, 5, 5), (0, 0, 0, 5), (-10, -10, 5, 5)])
def test_box_mask_empty_after_clipping_raises(box):
    with pytest.raises(PaletteError):
        box_mask(H, W, box)


def test_center_mask_is_quarter_in_the_middle():
    mask = center_mask(H, W)
    assert_valid_mask(mask)
    assert mask.mean().item() == 0.25
    assert mask[0, H // 4 : H // 4 + H // 2, W // 4 : W // 4 + W // 2].all()
    assert mask[0, H // 2, W // 2] == 1 and mask[0, 0, 0] == 0


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_uncrop_one_side_masks_exactly_half_on_that_side(side):
    mask = uncrop_mask(H, W, side)
    assert_valid_mask(mask)
    assert mask.mean().item() == 0.5
    edge = {"left": mask[0, :, 0], "right": mask[0, :, -1], "top": mask[0, 0], "bottom": mask[0, -1]}
    opposite = {"left": mask[0, :, -1], "right": mask[0, :, 0], "top": mask[0, -1], "bottom": mask[0, 0]}
    assert edge[side].all() and not opposite[side].any()


def test_uncrop_ratio_other_than_half():
    assert uncrop_mask(H, W, "left", 0.25).sum() == H * (W // 4)


def test_uncrop_all_borders_half_area():
    mask = uncrop_mask(H, W, "all", 0.5)
    assert_valid_mask(mask)
    assert abs(mask.mean().item() - 0.5) <= 1 / min(H, W)
    # Border masked on every side, centre kept.
    assert mask[0, 0].all() and mask[0, -1].all() and mask[0, :, 0].all() and mask[0, :, -1].all()
    assert mask[0, H // 2, W // 2] == 0


@pytest.mark.parametrize("side,ratio", [("middle", 0.5), ("left", 0.0), ("all", 1.0), ("top", -0.2)])
def test_uncrop_rejects_bad_arguments(side, ratio):
    with pytest.raises(PaletteError):
        uncrop_mask(H, W, side, ratio)


# --- random masks ---------------------------------------------------------------------------


def test_free_form_mask_valid_and_nonempty():
    for seed in range(10):
        mask = free_form_mask(H, W, gen(seed))
        assert_valid_mask(mask)
        assert mask.sum() > 0 and mask.mean() < 1


def test_free_form_mask_scales_with_size():
    # Stroke geometry scales with min(h, w), so coverage is similar at 64 and 256 px.
    small = np.mean([free_form_mask(64, 64, gen(s)).mean().item() for s in range(30)])
    large = np.mean([free_form_mask(256, 256, gen(s)).mean().item() for s in range(30)])
    assert abs(small - large) < 0.08


@pytest.mark.parametrize("h,w", [(64, 64), (48, 80)])
def test_random_box_mask_area_in_range(h, w):
    for seed in SEEDS:
        mask = random_box_mask(h, w, gen(seed))
        assert_valid_mask(mask, h, w)
        assert 0.1 <= mask.mean().item() <= 0.3


def test_random_box_mask_custom_range_and_validation():
    for seed in range(5):
        assert 0.4 <= random_box_mask(H, W, gen(seed), 0.4, 0.5).mean().item() <= 0.5
    with pytest.raises(PaletteError):
        random_box_mask(H, W, gen(0), 0.5, 0.2)


def test_random_box_mask_terminates_on_tiny_image():
    assert_valid_mask(random_box_mask(2, 2, gen(0)), 2, 2)


@pytest.mark.parametrize("h,w", [(64, 64), (32, 56)])
def test_train_inpaint_mask_area_in_range(h, w):
    for seed in SEEDS:
        mask = train_inpaint_mask(h, w, gen(seed))
        assert_valid_mask(mask, h, w)
        assert 0.1 <= mask.mean().item() <= 0.3


def test_train_inpaint_mask_mixes_free_form_and_boxes():
    # Rows of a union of at most 5 rectangles change only at box edges (<= 11 distinct rows);
    # free-form strokes have slanted edges and give many more distinct rows.
    def distinct_rows(mask: torch.Tensor) -> int:
        return len({row.numpy().tobytes() for row in mask[0]})

    counts = [distinct_rows(train_inpaint_mask(64, 64, gen(s))) for s in range(20)]
    boxes = sum(c <= 11 for c in counts)
    assert 2 <= boxes <= 18


def test_train_uncrop_mask_half_and_covers_all_options():
    patterns = set()
    for seed in range(40):
        mask = train_uncrop_mask(H, W, gen(seed))
        assert_valid_mask(mask)
        assert abs(mask.mean().item() - 0.5) <= 1 / min(H, W)
        patterns.add(mask.numpy().tobytes())
    expected = {uncrop_mask(H, W, s, 0.5).numpy().tobytes() for s in UNCROP_SIDES}
    assert patterns == expected


@pytest.mark.parametrize("sampler", [free_form_mask, random_box_mask, train_inpaint_mask])
def test_masks_deterministic_under_seed(sampler):
    assert torch.equal(sampler(H, W, gen(7)), sampler(H, W, gen(7)))
    assert not torch.equal(sampler(H, W, gen(7)), sampler(H, W, gen(8)))


def test_no_global_rng_used():
    torch.manual_seed(0)
    np.random.seed(0)
    a = train_inpaint_mask(H, W, gen(3))
    torch.manual_seed(123)
    np.random.seed(123)
    b = train_inpaint_mask(H, W, gen(3))
    assert torch.equal(a, b)


# --- user masks -----------------------------------------------------------------------------


def _hole_array(h: int = 100, w: int = 80) -> np.ndarray:
    """uint8 image, white rectangle in the top-left quarter."""
    arr = np.zeros((h, w), dtype=np.uint8)
    arr[: h // 2, : w // 2] = 255
    return arr


@pytest.mark.parametrize("mode", ["L", "RGB", "1", "P", "RGBA", "I;16"])
def test_mask_from_image_modes_and_resize(mode):
    arr = _hole_array()
    if mode == "I;16":
        image = Image.fromarray(arr.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = Image.fromarray(arr, mode="L").convert(mode)
    mask = mask_from_image(image, H, W)
    assert_valid_mask(mask)
    assert mask[0, : H // 2, : W // 2].all()
    assert mask.sum() == (H // 2) * (W // 2)


def test_mask_from_image_16bit_dark_is_not_hole():
    # 300/65535 is near black; Pillow's own convert("L") would clip it to white.
    arr = np.full((10, 10), 300, dtype=np.uint16)
    arr[:5] = 65535
    mask = mask_from_image(Image.fromarray(arr), 10, 10)
    assert mask.sum() == 50


def test_mask_from_image_rgba_uses_luminance_not_alpha():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere
    rgba[:4, :, :3] = 255  # white top half
    mask = mask_from_image(Image.fromarray(rgba, mode="RGBA"), 8, 8)
    assert mask[0, :4].all() and not mask[0, 4:].any()


def test_mask_from_image_threshold():
    arr = np.array([[127, 128]], dtype=np.uint8)
    assert mask_from_image(Image.fromarray(arr, mode="L"), 1, 2).tolist() == [[[0.0, 1.0]]]


def test_mask_from_image_empty_raises():
    with pytest.raises(PaletteError, match="mask is empty"):
        mask_from_image(Image.new("L", (30, 30), 100), H, W)


# --- noise fill -----------------------------------------------------------------------------


def test_fill_noise_keeps_known_pixels_and_unit_variance_hole():
    img = random_target(0, 64, 64)
    mask = center_mask(64, 64)
    out = fill_noise(img, mask, gen(0))
    known = mask.expand_as(img) == 0
    assert torch.equal(out[known], img[known])
    hole = out[~known]
    assert abs(hole.mean().item()) < 0.1
    assert abs(hole.var().item() - 1.0) < 0.1
    assert torch.equal(out, fill_noise(img, mask, gen(0)))


def test_fill_noise_batched():
    img = torch.rand(2, 3, 16, 16, generator=gen(1)) * 2 - 1
    mask = uncrop_mask(16, 16, "left")
    out = fill_noise(img, mask, gen(1))
    assert out.shape == img.shape
    assert torch.equal(out[..., 8:], img[..., 8:])
    assert not torch.equal(out[..., :8], img[..., :8])
    assert not torch.equal(out[0, :, :, :8], out[1, :, :, :8])


# --- JPEG -----------------------------------------------------------------------------------


def test_jpeg_recompress_changes_pixels_at_low_quality():
    img = natural_image()
    out = jpeg_recompress(img, 5)
    assert out.mode == "RGB" and out.size == img.size
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(img, dtype=np.int16))
    assert diff.mean() > 2


def test_jpeg_bytes_smaller_at_low_quality():
    img = natural_image()
    assert len(encode_jpeg(img, 5)) < len(encode_jpeg(img, 95))
    # The bytes really are a JPEG that decodes to the recompressed image.
    assert Image.open(io.BytesIO(encode_jpeg(img, 5))).format == "JPEG"
    high = np.asarray(jpeg_recompress(img, 95), dtype=np.int16)
    low = np.asarray(jpeg_recompress(img, 5), dtype=np.int16)
    ref = np.asarray(img, dtype=np.int16)
    assert np.abs(high - ref).mean() < np.abs(low - ref).mean()


@pytest.mark.parametrize("quality", [0, 101, 50.5, True])
def test_jpeg_rejects_bad_quality(quality):
    with pytest.raises(PaletteError):
        jpeg_recompress(natural_image(8, 8), quality)


def test_jpeg_recompress_tensor_shapes_and_range():
    img = torch.from_numpy(np.asarray(natural_image(), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    out = jpeg_recompress_tensor(img, 10)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert out.min() >= -1 and out.max() <= 1
    assert (out - img).abs().mean() > 0.01
    batched = jpeg_recompress_tensor(torch.stack([img, -img]), 10)
    assert batched.shape == (2, *img.shape)
    assert torch.equal(batched[0], out)


def test_sample_jpeg_quality_distribution():
    g = gen(0)
    draws = np.array([sample_jpeg_quality(g) for _ in range(5000)])
    assert draws.min() >= 5 and draws.max() <= 30
    q = np.arange(5, 31)
    p = np.exp(-q / 10)
    mean = (q * p).sum() / p.sum()
    assert abs(draws.mean() - mean) < 0.4
    # Exponential decay: low qualities are much more frequent than high ones.
    assert (draws == 5).sum() > 3 * (draws == 30).sum()


def test_sample_jpeg_quality_custom_range_and_validation():
    g = gen(1)
    assert {sample_jpeg_quality(g, 10, 12) for _ in range(200)} == {10, 11, 12}
    with pytest.raises(PaletteError):
        sample_jpeg_quality(g, 30, 5)


# --- degrade --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_degrade_shapes(task):
    target = random_target()
    cond, mask = degrade(task, target, gen(0))
    assert cond.shape == target.shape and cond.dtype == target.dtype
    if task in MASKED_TASKS:
        assert_valid_mask(mask, 32, 32)
        known = mask.expand_as(target) == 0
        assert torch.equal(cond[known], target[known])
        assert not torch.equal(cond, target)
    else:
        assert mask is None


def test_degrade_colorize_and_jpeg_match_helpers():
    target = random_target()
    assert torch.equal(degrade("colorize", target, gen(0))[0], to_gray(target))
    assert torch.equal(degrade("jpeg", target, gen(0), quality=20)[0], jpeg_recompress_tensor(target, 20))
    q = sample_jpeg_quality(gen(5))
    assert torch.equal(degrade("jpeg", target, gen(5))[0], jpeg_recompress_tensor(target, q))


@pytest.mark.parametrize("task", MASKED_TASKS)
def test_degrade_uses_given_mask(task):
    target = random_target()
    given = box_mask(32, 32, (4, 4, 10, 10))
    cond, mask = degrade(task, target, gen(0), mask=given)
    assert torch.equal(mask, given)
    assert torch.equal(cond[:, 20:, :], target[:, 20:, :])
    assert not torch.equal(cond[:, 4:14, 4:14], target[:, 4:14, 4:14])


def test_degrade_deterministic():
    target = random_target()
    a = degrade("inpaint", target, gen(3))
    b = degrade("inpaint", target, gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_degrade_errors():
    target = random_target()
    with pytest.raises(PaletteError, match="colorize, inpaint, uncrop, jpeg"):
        degrade("superres", target, gen(0))
    with pytest.raises(PaletteError):
        degrade("inpaint", target, gen(0), mask=torch.ones(1, 16, 16))


def test_module_uses_no_global_random():
    src = open(tasks.__file__, encoding="utf-8").read()
    assert "import random" not in src and "np.random" not in src
    assert math.isclose(0.299 + 0.587 + 0.114, 1.0)
