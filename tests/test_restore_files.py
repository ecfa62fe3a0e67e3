"""`palette_cli.restore_files`: folders restored from Python, as the CLI does, without typer or rich."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from palette_cli import restore_files
from palette_cli.errors import PaletteError
from palette_cli.restore import SettingsError
from palette_cli.settings import RestoreSettings

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
PHOTOS = sorted(DATA.glob("kodim*-96.png"))


@pytest.fixture
def folder(tmp_path) -> Path:
    """Copies of the Kodak photos, and three inputs that cannot be read."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in PHOTOS:
        shutil.copy(p, photos / p.name)
    (photos / "truncated.png").write_bytes(PHOTOS[0].read_bytes()[:300])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("not a picture")
    return photos


@pytest.mark.slow
def test_builtin_jpeg_on_a_folder_without_typer_or_rich(tmp_path):
    """The issue's example, in a fresh interpreter: one PNG per photo, and the CLI's libraries never imported."""
    out = tmp_path / "out"
    code = ("import sys, palette_cli\n"
            f"r = palette_cli.restore_files('jpeg', [{str(DATA)!r}], output={str(out)!r}, quality=10)\n"
            "print(len(r.written), r.failures, sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "5 [] []"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{p.stem}.jpeg.0.png" for p in [*PHOTOS, DATA / "parrots-gray.jpg"])
    with Image.open(out / "kodim05-96.jpeg.0.png") as im:
        meta = json.loads(im.text["palette"])
        assert im.size == (96, 64) and im.text["Software"].startswith("palette ")
    assert meta["input"] == "kodim05-96.png" and meta["task"] == "jpeg" and meta["quality"] == 10


def test_errors_per_input_are_returned_and_the_others_written(folder, tmp_path, tiny_model_dir):
    events = []
    out = tmp_path / "out"
    report = restore_files("colorize", [folder, folder / "missing.png"], output=out, model=tiny_model_dir,
                           on_progress=events.append)
    expected = [("truncated.png", "truncated or corrupt"), ("empty.jpg", "empty file"),
                ("notes.png", "not an image"), ("missing.png", "no such file")]
    assert len(report.failures) == 4
    for name, problem in expected:
        assert any(message.startswith(f"{folder / name}: {problem}") for message in report.failures), name
    assert sorted(p.name for p in out.iterdir()) == [f"{p.stem}.colorize.0.png" for p in PHOTOS]
    assert [w.output.name for w in report.written] == [f"{p.stem}.colorize.0.png" for p in PHOTOS]
    assert report.succeeded == 4 and report.skipped == 0
    assert [e.message for e in events if e.kind == "failed"] == report.failures
    assert [e.total for e in events if e.kind == "files"] == [8]  # a missing file is found when it is read
    assert sum(e.kind == "file" for e in events) == 8


def test_skip_existing_overwrite_or_refuse(tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in PHOTOS:
        shutil.copy(p, photos / p.name)
    out = tmp_path / "out"
    run = dict(output=out, model=tiny_model_dir, num_samples=2, mask_box=(10, 10, 30, 20))
    assert len(restore_files("inpaint", [photos], **run).written) == 8
    (out / "kodim15-96.inpaint.1.png").unlink()
    kept = out / "kodim15-96.inpaint.0.png"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}

    resumed = restore_files("inpaint", [photos], skip_existing=True, **run)  # only the missing sample
    assert [w.output.name for w in resumed.written] == ["kodim15-96.inpaint.1.png"]
    assert resumed.skipped == 3 and resumed.succeeded == 1 and resumed.failures == []
    assert all((p.stat().st_mtime_ns, p.read_bytes()) == v for p, v in before.items())
    assert kept.stat().st_mtime_ns == before[kept][0]

    again = restore_files("inpaint", [photos], skip_existing=True, model="no-such-model", output=out,
                          num_samples=2, mask_box=(10, 10, 30, 20))
    assert again.written == [] and again.skipped == 4  # nothing to do: the model is never loaded

    refused = restore_files("inpaint", [photos], **run)
    assert len(refused.failures) == 4 and refused.written == []
    assert all("already exists; use --skip-existing" in m for m in refused.failures)

    replaced = restore_files("inpaint", [photos], overwrite=True, **run)
    assert len(replaced.written) == 8
    for p, (_, data) in before.items():  # same seed, same model: the same pixels again
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(io.BytesIO(data))))
    with pytest.raises(SettingsError, match="exclude each other"):
        restore_files("inpaint", [photos], overwrite=True, skip_existing=True, **run)


def test_whole_run_problems_raise_before_any_work(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    with pytest.raises(PaletteError, match="no such model"):
        restore_files("jpeg", [PHOTOS[0]], output=out, model=tmp_path / "nothing")
    with pytest.raises(SettingsError, match="steps"):
        restore_files("jpeg", [PHOTOS[0]], output=out, model=tiny_model_dir, steps=5000)
    with pytest.raises(SettingsError, match="unknown device"):
        restore_files("jpeg", [PHOTOS[0]], output=out, model=tiny_model_dir, device="tpu")
    assert list(out.iterdir()) == []  # the folder is made, nothing is written in it


def test_samples_are_on_disk_while_the_later_ones_still_sample(tmp_path, tiny_model_dir):
    """-n 8, one sample per network call: sample 0's file exists before the last sample's steps are done."""
    out = tmp_path / "out"
    first = out / f"{PHOTOS[0].stem}.inpaint.0.png"
    seen = []  # (steps done in the current part, whether sample 0 is on disk), at every sampler step

    def watch(event):
        if event.kind == "steps":
            seen.append((event.done, first.is_file()))

    settings = RestoreSettings("inpaint", mask_box=(30, 10, 25, 20), num_samples=8, batch_size=1, refine="off")
    report = restore_files(settings, [PHOTOS[0]], output=out, model=tiny_model_dir, on_progress=watch)
    assert [w.sample for w in report.written] == list(range(8)) and report.succeeded == 1
    steps = len(seen) // 8  # one part per sample, each its own run of sampler steps
    assert len(seen) == 8 * steps and [done for done, _ in seen[:steps]] == list(range(1, steps + 1))
    assert not seen[0][1] and all(on_disk for _, on_disk in seen[-steps:])  # the last sample ran with 0 written
    # The same pixels as all eight samples in one call.
    together = restore_files("inpaint", [PHOTOS[0]], output=tmp_path / "together", model=tiny_model_dir,
                             num_samples=8, mask_box=(30, 10, 25, 20), refine="off")
    for a, b in zip(report.written, together.written):
        with Image.open(a.output) as x, Image.open(b.output) as y:
            assert np.array_equal(np.asarray(x), np.asarray(y))


def test_settings_are_given_once(tmp_path, tiny_model_dir):
    with pytest.raises(SettingsError, match="settings given twice: put seed in the RestoreSettings"):
        restore_files(RestoreSettings("jpeg"), [PHOTOS[0]], output=tmp_path, seed=3)
    with pytest.raises(SettingsError, match="give exactly one of --mask, --mask-box, --mask-mode"):
        restore_files("inpaint", [PHOTOS[0]], output=tmp_path / "never", model=tiny_model_dir)
    assert not (tmp_path / "never").exists()
