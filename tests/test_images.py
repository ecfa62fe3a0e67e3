"""Tests for palette_cli.images: decoding, colour modes, tensors and full-resolution recombination."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from palette_cli import images
from palette_cli.errors import PaletteError

DATA = Path(__file__).parent / "data"
KODAK = DATA / "kodim23-96.png"  # 96x64 RGB


def kodak() -> Image.Image:
    with Image.open(KODAK) as im:
        return im.convert("RGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# --- decoding -------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    img = kodak()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif.tobytes())
    photo = images.load_photo(path)
    assert photo.size == (64, 96)
    assert np.array_equal(np.asarray(photo.rgb), np.rot90(np.asarray(img), k=-1))


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr"])
def test_opaque_modes_become_rgb(tmp_path, mode):
    img = kodak().convert(mode)
    suffix = ".jpg" if mode in ("CMYK", "YCbCr") else ".png"
    path = tmp_path / f"photo{suffix}"
    img.save(path)
    photo = images.load_photo(path)
    with Image.open(path) as expected:
        expected = expected.convert("RGB")
    assert photo.rgb.mode == "RGB" and photo.alpha is None and photo.size == (96, 64)
    assert photo.mode == Image.open(path).mode
    assert np.array_equal(np.asarray(photo.rgb), np.asarray(expected))


def test_gray_is_repeated_on_three_channels(tmp_path):
    path = tmp_path / "gray.png"
    kodak().convert("L").save(path)
    arr = np.asarray(images.load_photo(path).rgb)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_alpha_is_kept(tmp_path, mode):
    rgba = kodak().convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))
    if mode == "P":  # palette with one transparent colour
        img = kodak().convert("P")
        img.info["transparency"] = 0
        expected_alpha = (np.asarray(img) != 0).astype(np.uint8) * 255
    else:
        rgba.putalpha(Image.fromarray(alpha))
        img = rgba.convert(mode)
        expected_alpha = alpha
    path = tmp_path / "alpha.png"
    img.save(path)
    photo = images.load_photo(path)
    assert photo.alpha is not None
    assert np.array_equal(np.asarray(photo.alpha), expected_alpha)


def test_sixteen_bit_gray_is_scaled_to_8_bit(tmp_path):
    values = np.array([[0, 257 * 77, 65535, 257 * 200]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    photo = images.load_photo(path)
    assert np.asarray(photo.rgb)[0, :, 0].tolist() == [0, 77, 255, 200]


def test_float_images_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((8, 8), dtype=np.float32)).save(path)
    with pytest.raises(PaletteError, match=r"float\.tif: 32-bit floating-point"):
        images.load_photo(path)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = KODAK.read_bytes()
    files = {"missing": tmp_path / "missing.png", "folder": tmp_path}
    for name, data in {"empty": b"", "text": b"these are my notes\n", "truncated": good[: len(good) // 2],
                       "garbage": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4}.items():
        files[name] = tmp_path / f"{name}.png"
        files[name].write_bytes(data)
    return files


@pytest.mark.parametrize("kind, message", [("missing", "no such file"), ("folder", "is a folder"),
                                           ("empty", "empty file"), ("text", "not an image"),
                                           ("truncated", "truncated or corrupt"), ("garbage", "")])
def test_bad_files_raise_one_clear_error(tmp_path, kind, message):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(PaletteError) as info:
        images.load_photo(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(30000, 30000))
    with pytest.raises(PaletteError, match="bomb.png.*decompression bomb"):
        images.load_photo(path)
    with pytest.raises(PaletteError, match="96x64 pixels.*over the limit"):
        images.load_photo(KODAK, limit=96 * 64 - 1)


# --- tensors --------------------------------------------------------------------------------


def test_tensor_round_trip_is_exact():
    img = kodak()
    x = images.to_tensor(img)
    assert x.shape == (3, 64, 96) and x.dtype == torch.float32
    assert -1 <= float(x.min()) and float(x.max()) <= 1
    assert np.array_equal(np.asarray(images.to_pil(x)), np.asarray(img))


# --- masks from files ---------------------------------------------------------------------


def test_load_mask_checks_size_and_treats_transparency_as_keep(tmp_path):
    rgba = Image.new("RGBA", (96, 64), (255, 255, 255, 0))  # transparent white: keep everything...
    rgba.paste((255, 255, 255, 255), (10, 10, 30, 20))  # ...but this opaque white box
    path = tmp_path / "mask.png"
    rgba.save(path)
    mask = images.load_mask(path, (96, 64))
    assert mask.sum() == 20 * 10 and mask[0, 10:20, 10:30].all()
    with pytest.raises(PaletteError, match=r"mask.png: mask is 96x64 but photo.jpg is 50x40"):
        images.load_mask(path, (50, 40), "photo.jpg")
    Image.new("L", (96, 64), 0).save(path)
    with pytest.raises(PaletteError, match="mask.png: mask is empty"):
        images.load_mask(path, (96, 64))


# --- output ---------------------------------------------------------------------------------


def test_save_png_writes_metadata_and_alpha(tmp_path):
    img = images.with_alpha(kodak(), Image.new("L", (96, 64), 7))
    path = tmp_path / "out.png"
    images.save_png(img, path, {"palette": '{"seed": 3}'})
    with Image.open(path) as saved:
        assert saved.mode == "RGBA" and saved.text["palette"] == '{"seed": 3}'
        assert np.array_equal(np.asarray(saved), np.asarray(img))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_png_into_a_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(PaletteError, match=r"out.png: cannot write \(folder .* does not exist\)"):
        images.save_png(kodak(), tmp_path / "nope" / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_with_alpha_places_alpha_at_offset():
    rgb = Image.new("RGB", (10, 6))
    out = images.with_alpha(rgb, Image.new("L", (4, 2), 9), (3, 1))
    alpha = np.asarray(out.getchannel("A"))
    assert (alpha[1:3, 3:7] == 9).all() and alpha.sum() == 255 * (60 - 8) + 9 * 8


def test_training_evaluation_and_inference_decode_the_same_pixels(tmp_path):
    from palette_cli.data import load_rgb
    from palette_cli.evaluate import load_ground_truth

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), mode="RGB")
    sixteen = Image.fromarray((rng.integers(0, 65536, (40, 56))).astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8), mode="L"))
    paletted = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    paletted.info["transparency"] = 3
    files = {"16bit.png": sixteen, "rgba.png": rgba, "cmyk.jpg": rgb.convert("CMYK"), "p.png": paletted,
             "gray.png": rgb.convert("L")}
    for name, image in files.items():
        image.save(tmp_path / name)
        photo = images.load_photo(tmp_path / name).rgb
        assert np.array_equal(np.asarray(load_rgb(tmp_path / name)), np.asarray(photo)), name
        truth = load_ground_truth(tmp_path / name, 32)
        expected = photo.resize((45, 32), Image.Resampling.BICUBIC).crop((6, 0, 38, 32))
        assert np.array_equal(np.asarray(images.to_pil(truth)), np.asarray(expected)), name
    # 16-bit is scaled to 8 bits (65535 -> 255), not clipped to white as Image.convert("RGB") does.
    got = np.asarray(load_rgb(tmp_path / "16bit.png"))[..., 0].astype(int)
    want = np.clip(np.rint(np.asarray(sixteen).astype(float) / 257), 0, 255).astype(int)
    assert np.array_equal(got, want)
