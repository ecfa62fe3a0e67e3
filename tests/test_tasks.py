"""Tests for palette_cli.tasks: the registry, each fill task's masks, each task's degradation."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from palette_cli import tasks
from palette_cli.diffusion import fill_noise
from palette_cli.errors import PaletteError
from palette_cli.images import mask_from_image
from palette_cli import images
from palette_cli.tasks import TASKS, colorize, degrade, inpaint, jpeg, uncrop
from palette_cli.tasks.colorize import to_gray
from palette_cli.tasks.jpeg import encode_jpeg, jpeg_recompress, jpeg_recompress_tensor, sample_jpeg_quality
from palette_cli.images import box_mask
from palette_cli.tasks.inpaint import center_mask, free_form_mask, random_box_mask, train_inpaint_mask, wide_mask
from palette_cli.tasks.uncrop import UNCROP_SIDES, train_uncrop_mask, uncrop_mask

MASKED_TASKS = tuple(name for name, module in tasks.REGISTRY.items() if module.MASKED)

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
    assert TASKS == tuple(tasks.REGISTRY) == ("colorize", "inpaint", "uncrop", "jpeg")
    assert all(name == module.NAME for name, module in tasks.REGISTRY.items())
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


def test_box_mask_covers_exactly_the_box():
    mask = box_mask(H, W, (40, 5, 8, 10))
    assert_valid_mask(mask)
    assert mask.sum() == 8 * 10 and mask[0, 5:15, 40:48].all()


@pytest.mark.parametrize("box", [(40, -5, 20, 10), (W, 0, 5, 5), (-10, -10, 5, 5), (0, 0, W + 1, 5)])
def test_box_mask_partly_outside_the_image_is_refused_with_one_clear_line(box):
    with pytest.raises(PaletteError, match=rf"reaches outside the {W}x{H} image") as err:
        box_mask(H, W, box)
    assert "\n" not in str(err.value)


def test_empty_box_mask_is_refused():
    with pytest.raises(PaletteError, match="is empty"):
        box_mask(H, W, (0, 0, 0, 5))


def test_inpaint_mask_box_outside_the_photo_names_the_problem():
    photo = images.photo_from_pil(natural_image(64, 96))
    with pytest.raises(PaletteError, match=r"mask box 90,10,20,20 .* reaches outside the 96x64 image"):
        inpaint.inpaint_mask(photo, mask_box=(90, 10, 20, 20))


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


def framed(frame: int, ringing: int = 0, edge: str = "right") -> torch.Tensor:
    """A real photo (96x64) with a scan's frame: `frame` flat gray lines at `edge`, then `ringing` bright lines
    that still follow the photo a little (a scanner's sharpening overshoot)."""
    with Image.open(Path(__file__).parent / "data" / "kodim05-96.png") as im:
        x = images.to_tensor(im.convert("RGB"))
    lines = {"left": x, "right": x.flip(-1), "top": x.transpose(-1, -2), "bottom": x.transpose(-1, -2).flip(-1)}[edge]
    lines = lines.clone()
    lines[..., :frame] = -0.22  # 99 of 255: the Kodak scans' gray
    lines[..., frame:frame + ringing] = 0.5 + 0.3 * lines[..., frame:frame + ringing]
    return {"left": lines, "right": lines.flip(-1), "top": lines.transpose(-1, -2),
            "bottom": lines.flip(-1).transpose(-1, -2)}[edge]


@pytest.mark.parametrize("edge", ["left", "right", "top", "bottom"])
def test_a_scans_frame_is_found_on_each_edge(edge):
    assert uncrop.frame_width(framed(2, edge=edge), edge) == 2
    assert uncrop.frame_width(framed(1, ringing=2, edge=edge), edge) == 3
    others = [e for e in ("left", "right", "top", "bottom") if e != edge]
    assert [uncrop.frame_width(framed(2, edge=edge), e) for e in others] == [0, 0, 0]


def test_flat_lines_that_are_the_picture_are_not_a_frame():
    assert uncrop.frame_width(framed(0), "right") == 0  # the photo's own edge
    assert uncrop.frame_width(framed(3), "right") == 0  # wider than 2% of the side (and two lines): a backdrop
    sky = framed(0)
    sky[:, :20] = torch.linspace(0.2, 0.5, 20)[None, :, None]  # a clear sky, one colour along each row
    assert uncrop.frame_width(sky, "top") == 0  # flat rows go on into flat rows


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
    areas = []
    for seed in SEEDS:
        mask = train_inpaint_mask(h, w, gen(seed))
        assert_valid_mask(mask, h, w)
        areas.append(mask.mean().item())
        assert 0.1 <= areas[-1] <= 0.4  # narrow strokes and boxes 10-30%, wide strokes 15-40%
    # the wide masks are in the mix: about 30% of draws, half of them above 30% of the image
    assert sum(train_inpaint_mask(h, w, gen(seed)).mean().item() > 0.3 for seed in range(100, 200)) >= 3


@pytest.mark.parametrize("h,w", [(256, 256), (64, 96)])
def test_wide_masks_are_lamas_thick_strokes(h, w):
    # A stroke at least 40 px wide (at 256 px) survives an erosion by a 31 px square, a DeepFill stroke
    # (12-40 px) mostly does not: a wide mask keeps most of its pixels, a narrow one loses most.
    def kept_after_erosion(mask: torch.Tensor) -> float:
        k = round(31 * min(h, w) / 256) | 1
        eroded = -torch.nn.functional.max_pool2d(-mask[None], k, stride=1, padding=k // 2)[0]
        return (eroded.sum() / mask.sum()).item()

    wide = [wide_mask(h, w, gen(s)) for s in range(12)]
    narrow = [free_form_mask(h, w, gen(s)) for s in range(12)]
    for mask in wide:
        assert_valid_mask(mask, h, w)
        assert 0.15 <= mask.mean().item() <= 0.4
    assert np.mean([kept_after_erosion(m) for m in wide]) > 2 * np.mean([kept_after_erosion(m) for m in narrow])


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


def kodak() -> Image.Image:
    """A real 96x64 photo."""
    with Image.open(Path(__file__).parent / "data" / "kodim23-96.png") as im:
        return im.convert("RGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


# --- colorize: full resolution -------------------------------------------------------------------------------


def test_recombined_chroma_keeps_full_resolution_luminance():
    img = kodak()
    small = images.resize(images.to_tensor(img), (32, 32))  # a perfect colour prediction at 32x32
    out = colorize.recombine_chroma(img, small)
    assert out.size == img.size
    orig, got = np.asarray(img), np.asarray(out)
    luma = lambda a: a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert np.abs(luma(got) - luma(orig)).mean() < 0.5  # luminance is the original's, up to rounding
    gray = np.asarray(img.convert("L").convert("RGB"))
    assert psnr(got, orig) > 30 > psnr(gray, orig) + 5  # and the colour comes back


def test_recombined_chroma_follows_the_prediction():
    img = kodak().convert("L").convert("RGB")
    red = torch.tensor([0.6, -0.4, -0.4]).view(3, 1, 1).expand(3, 32, 32)
    arr = np.asarray(colorize.recombine_chroma(img, red)).astype(int)
    assert (arr[..., 0] >= arr[..., 1]).mean() > 0.95 and (arr[..., 0] - arr[..., 2]).mean() > 40
    # Far outside the RGB cube: desaturated, not clipped, so luminance is still the input's.
    wild = torch.tensor([3.0, -3.0, 3.0]).view(3, 1, 1).expand(3, 32, 32)
    out = colorize.recombine_chroma(img, wild)
    diff = np.asarray(out.convert("L"), float) - np.asarray(img.convert("L"), float)
    assert np.abs(diff).max() <= 1 and np.asarray(out).std(axis=2).mean() > 10


# --- jpeg tiles -----------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(64, 96), (32, 32), (20, 50), (33, 70), (5, 3)])
def test_tiles_merge_back_to_the_image(h, w):
    x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tiling = images.make_tiling(h, w, tile=32, overlap=8)
    tiles = images.split_tiles(x, tiling)
    assert tiles.shape[1:] == (3, 32, 32)
    assert torch.allclose(images.merge_tiles(tiles, tiling), x, atol=1e-6)


def test_tile_seams_are_blended():
    tiling = images.make_tiling(64, 96, tile=32, overlap=8)
    # Neighbouring tiles that disagree completely (-1 vs 1): a hard seam would jump by 2.
    tiles = torch.stack([torch.full((3, 32, 32), (-1.0) ** (i + t // 24)) for i, (t, _) in
                         enumerate(tiling.corners)])
    merged = images.merge_tiles(tiles, tiling)
    jumps = max(merged.diff(dim=1).abs().max(), merged.diff(dim=2).abs().max())
    assert 0 < float(jumps) <= 0.3


def test_tile_starts_overlap_and_cover():
    for length in (32, 33, 96, 100, 257):
        starts = images.tile_starts(length, 32, 8)
        assert starts[0] == 0 and starts[-1] == max(length - 32, 0)
        assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))


# --- inpaint --------------------------------------------------------------------------------


def test_mask_crop_box_contains_the_mask_and_stays_inside():
    mask = box_mask(64, 96, (70, 5, 10, 8))
    x0, y0, x1, y1 = inpaint.mask_crop_box(mask, min_side=32)
    assert 0 <= x0 <= 70 and 80 <= x1 <= 96 and 0 <= y0 <= 5 and 13 <= y1 <= 64
    assert x1 - x0 == y1 - y0 == 32  # square, at least the model's size
    assert inpaint.mask_crop_box(box_mask(64, 96, (0, 0, 96, 64)), min_side=32) == (0, 0, 96, 64)


def test_paste_masked_changes_only_masked_pixels():
    img = kodak()
    mask = free_form_mask(64, 96, torch.Generator().manual_seed(3))
    box = (10, 0, 74, 64)
    out = np.asarray(inpaint.paste_masked(img, torch.zeros(3, 64, 64), mask, box))
    orig = np.asarray(img)
    keep = mask[0].numpy() == 0
    keep[:, :10] = keep[:, 74:] = True  # outside the box nothing is pasted
    assert np.array_equal(out[keep], orig[keep])
    assert (out[~keep] == 128).all()


# --- uncrop: full resolution ---------------------------------------------------------------------------------


@pytest.mark.parametrize("side", UNCROP_SIDES)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
@pytest.mark.parametrize("h, w", [(64, 96), (17, 5)])
def test_uncrop_canvas_keeps_exactly_the_original(side, ratio, h, w):
    mask, (top, left) = uncrop.uncrop_canvas(h, w, side, ratio)
    assert torch.equal(mask, uncrop_mask(*mask.shape[1:], side, ratio))  # the training mask
    assert (mask[0, top:top + h, left:left + w] == 0).all()
    assert mask.sum() == mask[0].numel() - h * w
    assert uncrop.known_box(mask) == (top, left, h, w)


def test_uncrop_half_doubles_the_width():
    mask, offset = uncrop.uncrop_canvas(64, 96, "left", 0.5)
    assert mask.shape == (1, 64, 192) and offset == (0, 96)


def test_uncrop_half_doubles_any_width():
    # 7 px: a 13-px canvas also keeps 7 (round(6.5) == 6), but ratio 0.5 means double.
    for w in (7, 9, 13, 96):
        mask, offset = uncrop.uncrop_canvas(5, w, "right", 0.5)
        assert mask.shape == (1, 5, 2 * w) and offset == (0, 0)
    mask, offset = uncrop.uncrop_canvas(7, 5, "top", 0.5)
    assert mask.shape == (1, 14, 5) and offset == (7, 0)


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
    for module in (tasks, *tasks.REGISTRY.values()):
        src = open(module.__file__, encoding="utf-8").read()
        assert "import random" not in src and "np.random" not in src, module.__name__
    assert math.isclose(0.299 + 0.587 + 0.114, 1.0)
