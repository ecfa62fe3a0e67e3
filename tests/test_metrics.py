"""Tests for palette_cli.metrics: values pinned by hand on small real and synthetic images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from palette_cli import metrics
from palette_cli.errors import PaletteError
from palette_cli.tasks.colorize import to_gray

from conftest import DATA


def photo(size: int = 64) -> torch.Tensor:
    """A real photo (Kodak) as a (3, size, size) tensor in [-1, 1]."""
    with Image.open(DATA / "kodim23-96.png") as im:
        arr = np.asarray(im.convert("RGB").crop((0, 0, size, size)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """x plus Gaussian noise of std sigma (in [-1, 1] units), clipped."""
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_psnr_of_a_constant_offset_is_known():
    x = photo().clamp(-0.7, 0.7)
    # +0.2 in [-1, 1] is +0.1 in [0, 1]: MSE 0.01, PSNR 20 dB; +0.02 gives 40 dB.
    assert float(metrics.psnr(x + 0.2, x)) == pytest.approx(20.0, abs=1e-4)
    assert float(metrics.psnr(x, x - 0.02)) == pytest.approx(40.0, abs=1e-4)


def test_psnr_of_identical_images_is_the_documented_cap():
    x = photo()
    assert float(metrics.psnr(x, x)) == metrics.PSNR_CAP_DB == 100.0


def test_psnr_over_a_mask_scores_only_the_restored_region():
    x = photo().clamp(-0.7, 0.7)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1  # a quarter of the image
    y = x + 0.2 * mask
    assert float(metrics.psnr(y, x, mask)) == pytest.approx(20.0, abs=1e-4)
    # Over the whole image the same error is diluted 4 times: 10 log10(1 / 0.0025).
    assert float(metrics.psnr(y, x)) == pytest.approx(10 * math.log10(400), abs=1e-4)


def test_metrics_return_one_value_per_image():
    x = torch.stack([photo(), noisy(photo(), 0.1)])  # (2, 3, 64, 64)
    y = torch.stack([photo(), photo()])
    for fn in (metrics.psnr, metrics.ssim, metrics.ms_ssim):
        values = fn(x, y)
        assert values.shape == (2,)
        assert values[0] > values[1]
    assert metrics.colorfulness(x).shape == (2,)
    assert metrics.psnr(x[None], y[None]).shape == (1, 2)


def test_ssim_of_identical_images_is_one():
    x = photo()
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_decreases_with_noise():
    x = photo()
    values = [float(metrics.ssim(noisy(x, s), x)) for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.5


def test_ssim_of_flat_images_is_the_luminance_term():
    # Flat images have no variance, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1):
    # 0.5 and 0.75 in [0, 1] give (0.75 + 1e-4) / (0.8125 + 1e-4).
    x = torch.zeros(3, 16, 16)
    y = torch.full((3, 16, 16), 0.5)
    assert float(metrics.ssim(x, y)) == pytest.approx(0.7501 / 0.8126, abs=1e-6)


def test_ssim_agrees_with_a_hand_computed_window():
    # An 11x11 image holds exactly one window: compute Wang et al.'s formula directly.
    x = photo(11)
    y = noisy(x, 0.15, seed=3)
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    expected = []
    for c in range(3):
        a = (x[c].double().numpy() + 1) / 2
        b = (y[c].double().numpy() + 1) / 2
        mu_a, mu_b = (w * a).sum(), (w * b).sum()
        var_a = (w * (a - mu_a) ** 2).sum()
        var_b = (w * (b - mu_b) ** 2).sum()
        cov = (w * (a - mu_a) * (b - mu_b)).sum()
        c1, c2 = 0.01**2, 0.03**2
        expected.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    assert float(metrics.ssim(y, x)) == pytest.approx(float(np.mean(expected)), abs=1e-6)


def test_masked_ssim_ignores_damage_far_from_the_mask():
    x = photo()
    mask = torch.zeros(1, 64, 64)
    mask[:, 0:16, 0:16] = 1
    far = torch.zeros(1, 64, 64)
    far[:, 40:, 40:] = 1  # more than a window away from the mask
    y = x * (1 - far) + noisy(x, 0.3) * far
    assert float(metrics.ssim(y, x)) < 0.95
    assert float(metrics.ssim(y, x, mask)) == pytest.approx(1.0, abs=1e-6)
    # A mask of ones is the unmasked SSIM.
    assert float(metrics.ssim(y, x, torch.ones(1, 64, 64))) == pytest.approx(float(metrics.ssim(y, x)), abs=1e-6)


def test_empty_mask_and_small_images_are_refused():
    x = photo()
    with pytest.raises(PaletteError, match="mask is empty"):
        metrics.psnr(x, x, torch.zeros(1, 64, 64))
    with pytest.raises(PaletteError, match="at least 11x11"):
        metrics.ssim(x[:, :8, :8], x[:, :8, :8])
    with pytest.raises(PaletteError, match="differ in shape"):
        metrics.psnr(x, x[:, :32])


def test_ms_ssim_is_one_on_identical_images_and_decreases_with_noise():
    x = photo(64)
    assert float(metrics.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    values = [float(metrics.ms_ssim(noisy(x, s), x)) for s in (0.05, 0.2, 0.5)]
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_ms_ssim_uses_the_scales_that_fit():
    assert metrics.ms_ssim_scales(256, 256) == 5
    assert metrics.ms_ssim_scales(176, 300) == 5  # 176 / 16 = 11: the coarsest scale still holds a window
    assert metrics.ms_ssim_scales(175, 300) == 4
    assert metrics.ms_ssim_scales(32, 32) == 2
    # One scale is plain SSIM.
    x = photo(16)
    y = noisy(x, 0.1)
    assert float(metrics.ms_ssim(y, x)) == pytest.approx(float(metrics.ssim(y, x)), abs=1e-6)


def test_colorfulness_of_gray_is_zero():
    assert float(metrics.colorfulness(to_gray(photo()))) == pytest.approx(0.0, abs=1e-4)
    assert float(metrics.colorfulness(photo())) > 10


def test_colorfulness_of_a_red_and_blue_image_follows_the_formula():
    x = torch.full((3, 8, 8), -1.0)
    x[0, :, :4] = 1.0  # left half pure red (255, 0, 0)
    x[2, :, 4:] = 1.0  # right half pure blue (0, 0, 255)
    # rg = R - G is 255 | 0; yb = (R + G) / 2 - B is 127.5 | -255.
    std_rg, mean_rg = 127.5, 127.5
    std_yb, mean_yb = 191.25, -63.75
    expected = math.hypot(std_rg, std_yb) + 0.3 * math.hypot(mean_rg, mean_yb)
    assert float(metrics.colorfulness(x)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(272.619, abs=1e-3)


def test_pairwise_ms_ssim_scores_every_pair():
    a, b = photo(32), noisy(photo(32), 0.5)
    values = metrics.pairwise_ms_ssim(torch.stack([a, b, a]))  # pairs (0,1), (0,2), (1,2)
    assert values.shape == (3,)
    assert float(values[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(values[0]) == pytest.approx(float(values[2]), abs=1e-6) and float(values[0]) < 0.9
    assert metrics.pairwise_ms_ssim(a[None]).shape == (0,)


def test_pairwise_abs_diff_is_the_mean_absolute_difference_of_every_pair_in_8_bit_levels():
    a = torch.zeros(3, 4, 4)  # images in [-1, 1]: one 8-bit level is 2 / 255
    b = torch.full((3, 4, 4), 2 * 4 / 255)
    c = b.clone()
    c[0] = 2 * 16 / 255  # one channel differs by 12 levels: a third of the pixels' channels
    values = metrics.pairwise_abs_diff(torch.stack([a, b, c]))  # pairs (0,1), (0,2), (1,2)
    assert values.tolist() == pytest.approx([4.0, 8.0, 4.0], abs=1e-4)
    assert metrics.pairwise_abs_diff(a[None]).shape == (0,)


def test_histogram_counts_every_value_once():
    h = metrics.histogram([0.0, 0.05, 0.1, 0.55, 0.99, 1.0], bins=10)
    assert h["edges"][0] == 0.0 and h["edges"][-1] == 1.0 and len(h["edges"]) == 11
    assert h["counts"] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]


def test_quantize_rounds_to_8_bit_levels():
    x = noisy(photo(), 0.1)
    q = metrics.quantize(x)
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert (q - x).abs().max() <= 1 / 127.5 / 2 + 1e-6
    assert torch.equal(metrics.quantize(q), q)
