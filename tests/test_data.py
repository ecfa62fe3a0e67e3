"""Tests for palette_cli.data: finding images, skipping broken ones, crops, items."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from palette_cli.data import (TrainingImages, check_images, load_rgb, make_item, random_crop, to_tensor,
                              validation_batch)
from palette_cli import data
from palette_cli.errors import PaletteError
from palette_cli.files import training_images
from palette_cli.tasks.colorize import to_gray

DATA = Path(__file__).parent / "data"
KODAK = sorted(DATA.glob("kodim*-96.png"))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two Kodak photos at the top, one in a nested folder, one non-image file."""
    root = tmp_path / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(KODAK[0], root / "a.png")
    shutil.copy(KODAK[1], root / "B.PNG")  # extensions match case-insensitively
    shutil.copy(KODAK[2], root / "nested" / "deeper" / "c.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_training_images_recurses_into_folders(folder: Path) -> None:
    found = training_images([folder])
    assert [p.relative_to(folder).as_posix() for p in found] == ["B.PNG", "a.png", "nested/deeper/c.png"]


def test_training_images_reads_list_files_and_deduplicates(folder: Path, tmp_path: Path) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text(f"# my training set\nphotos/a.png\n\n{folder / 'nested' / 'deeper' / 'c.png'}\nphotos/a.png\n")
    found = training_images([listing, folder / "a.png"])
    assert [p.name for p in found] == ["a.png", "c.png"]


def test_training_images_names_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(PaletteError, match="nowhere: no such file or folder"):
        training_images([tmp_path / "nowhere"])


def test_training_images_rejects_a_binary_non_image(tmp_path: Path) -> None:
    blob = tmp_path / "weights.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PaletteError, match="weights.bin: neither an image"):
        training_images([blob])


def test_check_images_skips_unreadable_files_with_one_warning_each(folder: Path) -> None:
    (folder / "garbage.png").write_bytes(b"this is not a png at all")
    full = (DATA / "parrots-gray.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    warnings: list[str] = []
    good, bad = check_images(training_images([folder]), warn=warnings.append)
    assert sorted(p.name for p in bad) == ["empty.jpg", "garbage.png", "truncated.jpg"]
    assert sorted(p.name for p in good) == ["B.PNG", "a.png", "c.png"]
    assert len(warnings) == 3
    assert all("unreadable image" in w for w in warnings)
    assert any("truncated.jpg" in w for w in warnings)


def test_check_images_reports_progress_through_a_long_list(folder: Path) -> None:
    (folder / "garbage.png").write_bytes(b"this is not a png at all")
    paths = [folder / "a.png"] * 1100 + [folder / "garbage.png"]
    calls: list[tuple[int, int]] = []
    good, bad = check_images(paths, progress=lambda done, total: calls.append((done, total)))
    assert len(good) == 1100 and [p.name for p in bad] == ["garbage.png"]
    assert calls == [(0, 1101), (500, 1101), (1000, 1101), (1101, 1101)]


def test_check_images_trusts_a_file_whose_size_and_time_are_as_recorded(folder: Path) -> None:
    good_file, other = folder / "a.png", folder / "B.PNG"
    checked = {str(p): data.stamp(p) for p in (good_file, other)}
    before = good_file.stat()  # other bytes under the same size and time: not decoded again
    good_file.write_bytes(b"\0" * before.st_size)
    os.utime(good_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    kept = other.stat()  # its time changed (by a second, as any write moves it): decoded, and found unreadable
    other.write_bytes(b"\0" * kept.st_size)
    os.utime(other, ns=(kept.st_atime_ns, kept.st_mtime_ns + 1_000_000_000))
    good, bad = check_images([good_file, other], checked=checked)
    assert good == [good_file] and bad == [other]
    assert check_images([good_file])[1] == [good_file]  # without the record it is decoded


def test_load_rgb_applies_exif_orientation(tmp_path: Path) -> None:
    img = Image.open(KODAK[0]).convert("RGB")  # 96x64 landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert load_rgb(tmp_path / "rotated.jpg").size == (64, 96)


def test_native_crop_is_a_window_of_the_photo() -> None:
    img = load_rgb(KODAK[0])
    full = to_tensor(img)
    crop = random_crop(img, 32, gen(3), flip=False)
    assert crop.shape == (3, 32, 32)
    # The crop is pixel for pixel some 32x32 window of the photo: no resampling in native mode.
    windows = full.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 33, 65, 32, 32)
    diff = (windows - crop[:, None, None]).abs().amax(dim=(0, 3, 4))
    assert float(diff.min()) == 0.0


def test_crops_flip_and_are_reproducible() -> None:
    img = load_rgb(KODAK[1])
    a = [random_crop(img, 32, gen(s)) for s in range(20)]
    b = [random_crop(img, 32, gen(s)) for s in range(20)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({x.sum().item() for x in a}) > 10  # different seeds, different crops
    # Some crops are mirrored: they match a window only after flipping back.
    full = to_tensor(img)
    windows = full.unfold(1, 32, 1).unfold(2, 32, 1)

    def is_window(c: torch.Tensor) -> bool:
        return float((windows - c[:, None, None]).abs().amax(dim=(0, 3, 4)).min()) == 0.0

    flipped = [not is_window(c) and is_window(c.flip(-1)) for c in a]
    assert 0 < sum(flipped) < len(a)


def test_small_images_are_upscaled_to_the_crop_size() -> None:
    img = load_rgb(KODAK[0])  # 96x64
    crop = random_crop(img, 80, gen(0))
    assert crop.shape == (3, 80, 80)
    assert -1.0 <= float(crop.min()) and float(crop.max()) <= 1.0


def test_fit_crop_sees_the_whole_short_side() -> None:
    img = Image.new("RGB", (300, 200), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 300, 10))  # a white band along the top edge
    crop = random_crop(img, 40, gen(0), crop="fit", flip=False)
    # Shrunk to 60x40, every crop spans the full height, so it contains the band.
    assert float(crop[:, 0].mean()) > 0.9
    assert float(crop[:, -1].mean()) == -1.0


def test_items_use_the_shared_degradations() -> None:
    img = load_rgb(KODAK[2])
    item = make_item(img, ("colorize",), 32, gen(0))
    assert torch.allclose(item.cond, to_gray(item.target))
    assert float(item.mask.abs().sum()) == 0.0  # unmasked task: an all-zero mask
    masked = make_item(img, ("inpaint",), 32, gen(1))
    area = float(masked.mask.mean())
    assert 0.1 <= area <= 0.3
    keep = masked.mask == 0
    assert torch.equal(masked.cond[keep.expand_as(masked.cond)], masked.target[keep.expand_as(masked.target)])


def test_dataset_items_depend_only_on_seed_and_index() -> None:
    tasks = ("colorize", "inpaint", "uncrop", "jpeg")
    a = TrainingImages(KODAK, tasks, 32, seed=7)
    b = TrainingImages(KODAK, tasks, 32, seed=7)
    for k in (5, 0, 13, 5):  # any order: no hidden iterator state
        x, y = a[k], b[k]
        assert all(torch.equal(x[key], y[key]) for key in x)
    assert not torch.equal(a[0]["target"], TrainingImages(KODAK, tasks, 32, seed=8)[0]["target"])
    # Every task shows up, and each epoch visits every image exactly once.
    assert {int(a[k]["task"]) for k in range(24)} == {0, 1, 2, 3}
    for epoch in range(3):
        assert sorted(a.image_index(epoch * len(KODAK) + i) for i in range(len(KODAK))) == list(range(len(KODAK)))


def test_validation_batch_is_fixed_and_cycles_tasks() -> None:
    tasks = ("inpaint", "colorize")
    first = validation_batch(KODAK, tasks, 32, seed=0, count=3)
    again = validation_batch(KODAK, tasks, 32, seed=0, count=3)
    assert [v.task for v in first] == [0, 1, 0]
    assert all(torch.equal(u.cond, v.cond) and torch.equal(u.mask, v.mask) for u, v in zip(first, again))
    assert float(first[0].mask.sum()) > 0 and float(first[1].mask.sum()) == 0


def test_dataset_refuses_no_images_and_unknown_tasks() -> None:
    with pytest.raises(PaletteError, match="no readable training images"):
        TrainingImages([], ("colorize",), 32, 0)
    with pytest.raises(PaletteError, match="unknown task"):
        TrainingImages(KODAK, ("sharpen",), 32, 0)


def test_to_tensor_range() -> None:
    arr = np.array([[[0, 127, 255]]], dtype=np.uint8)
    t = to_tensor(Image.fromarray(arr, "RGB"))
    assert t.shape == (3, 1, 1)
    assert t.flatten().tolist() == pytest.approx([-1.0, 127 / 127.5 - 1, 1.0])
