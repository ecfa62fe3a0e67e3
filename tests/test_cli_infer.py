"""The real `palette colorize|inpaint|uncrop|jpeg` commands on real photos and a tiny saved model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import make_tiny_model
from palette_cli.cli import _register, app
from palette_cli.settings import MAX_SAMPLES

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
PHOTOS = sorted(DATA.glob("kodim*-96.png"))  # four 96x64 Kodak photos

_register()


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder with copies of the Kodak photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in PHOTOS:
        shutil.copy(p, folder / p.name)
    return folder


def palette(*args: object, stdin: str | None = None):
    """Run the real CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted write could leave."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


# --- outputs --------------------------------------------------------------------------------


def test_colorize_folder(photos, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    result = palette("colorize", photos, "-o", out, "--model", tiny_model_dir, "--json", "--seed", 7)
    assert result.exit_code == 0, result.output
    lines = json_lines(result)
    assert [Path(line["output"]).name for line in lines] == [f"{p.stem}.colorize.0.png" for p in PHOTOS]
    for line, source in zip(lines, PHOTOS):
        assert set(line) == {"input", "output", "task", "seed", "sample", "steps", "seconds"}
        assert line["input"] == str(photos / source.name)
        assert (line["task"], line["seed"], line["sample"], line["steps"]) == ("colorize", 7, 0, 4)
        with Image.open(line["output"]) as written, Image.open(source) as original:
            assert written.size == original.size and written.format == "PNG"
            meta = json.loads(written.text["palette"])
        assert meta | {"version": None} == {"input": source.name, "task": "colorize", "model": "tiny", "seed": 7,
                                            "sample": 0, "sampler": "ddim", "steps": 4, "strength": 1.0,
                                            "version": None}
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(line["output"]).name for line in lines)


def test_num_samples_are_different_images(photos, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    result = palette("colorize", photos / "kodim23-96.png", "-n", 3, "-o", out, "--model", tiny_model_dir, "-q")
    assert result.exit_code == 0 and result.output == ""
    samples = [pixels(out / f"kodim23-96.colorize.{i}.png") for i in range(3)]
    assert not any(np.array_equal(samples[i], samples[j]) for i, j in ((0, 1), (0, 2), (1, 2)))


def test_same_seed_same_pixels_whatever_the_batch_size(photos, tmp_path, tiny_model_dir):
    inputs = [photos / "kodim05-96.png", photos / "kodim23-96.png"]
    runs = {}
    for name, options in {"b1": ["--batch-size", 1], "b4": ["--batch-size", 4], "again": ["--batch-size", 4],
                          "seed": ["--batch-size", 4, "--seed", 1]}.items():
        result = palette("colorize", *inputs, "-n", 2, "-o", tmp_path / name, "--model", tiny_model_dir, "-q",
                         *options)
        assert result.exit_code == 0, result.output
        runs[name] = {p.name: pixels(p) for p in sorted((tmp_path / name).iterdir())}
    assert len(runs["b1"]) == 4
    for name in runs["b1"]:
        assert np.array_equal(runs["b1"][name], runs["b4"][name])  # every 8-bit pixel
        assert np.array_equal(runs["b4"][name], runs["again"][name])
        assert not np.array_equal(runs["b4"][name], runs["seed"][name])


def test_jpeg_tiles_are_batch_size_invariant(tmp_path, tiny_model_dir):
    for source in PHOTOS[:2]:
        with Image.open(source) as im:
            im.crop((0, 0, 56, 40)).save(tmp_path / source.name)  # 2x2 tiles of 32 pixels
    runs = {}
    for size in (1, 4):
        out = tmp_path / f"b{size}"
        result = palette("jpeg", tmp_path, "-n", 2, "--quality", 30, "-o", out, "--model", tiny_model_dir,
                         "--batch-size", size)
        assert result.exit_code == 0, result.output
        runs[size] = {p.name: pixels(p) for p in sorted(out.iterdir())}
    assert len(runs[1]) == 4 and all(a.shape == (40, 56, 3) for a in runs[1].values())
    assert all(np.array_equal(runs[1][name], runs[4][name]) for name in runs[1])
    with Image.open(tmp_path / "b1" / f"{PHOTOS[0].stem}.jpeg.1.png") as im:
        assert json.loads(im.text["palette"])["quality"] == 30


def test_outputs_beside_inputs_never_over_them(photos, tiny_model_dir):
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    assert palette("colorize", photos, "--model", tiny_model_dir).exit_code == 0
    assert {p.name for p in photos.iterdir()} == set(before) | {f"{Path(n).stem}.colorize.0.png" for n in before}
    assert all((photos / name).read_bytes() == data for name, data in before.items())
    # A second run over the folder does not restore its own outputs.
    result = palette("colorize", photos, "--model", tiny_model_dir, "--skip-existing", "--json")
    assert result.exit_code == 0 and result.stdout == ""


def test_recursive_keeps_the_folder_structure(photos, tmp_path, tiny_model_dir):
    (photos / "trip").mkdir()
    shutil.move(photos / "kodim03-96.png", photos / "trip" / "kodim03-96.png")
    out = tmp_path / "out"
    assert palette("colorize", photos, "-o", out, "--model", tiny_model_dir, "-q").exit_code == 0
    assert not (out / "trip").exists()
    assert palette("colorize", photos, "-r", "-o", out, "--model", tiny_model_dir, "--skip-existing").exit_code == 0
    assert (out / "trip" / "kodim03-96.colorize.0.png").is_file()
    assert len(list(out.rglob("*.png"))) == 4


def test_paths_from_stdin(photos, tmp_path, tiny_model_dir):
    names = ["kodim03-96.png", "kodim15-96.png"]
    stdin = "".join(f"{photos / n}\n" for n in names) + "\n"
    result = palette("colorize", "-", "-o", tmp_path / "out", "--model", tiny_model_dir, "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    assert [Path(line["input"]).name for line in json_lines(result)] == names


def test_alpha_is_kept(tmp_path, tiny_model_dir):
    with Image.open(PHOTOS[0]) as im:
        rgba = im.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(0, 192, 2, dtype=np.uint8), (64, 1))))
    rgba.save(tmp_path / "cutout.png")
    assert palette("colorize", tmp_path / "cutout.png", "--model", tiny_model_dir).exit_code == 0
    out = pixels(tmp_path / "cutout.colorize.0.png")
    assert out.shape == (64, 96, 4) and np.array_equal(out[..., 3], np.asarray(rgba)[..., 3])


# --- tasks ----------------------------------------------------------------------------------


def test_inpaint_box_keeps_every_pixel_outside(photos, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    result = palette("inpaint", photos, "--mask-box", "30,10,25,20", "-n", 2, "-o", out, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    hole = np.zeros((64, 96), bool)
    hole[10:30, 30:55] = True
    for source in PHOTOS:
        original = pixels(source)
        for i in range(2):
            got = pixels(out / f"{source.stem}.inpaint.{i}.png")
            assert got.shape == original.shape
            assert np.array_equal(got[~hole], original[~hole])
            assert not np.array_equal(got[hole], original[hole])


def test_inpaint_mask_folder_and_a_mask_that_does_not_fit(photos, tmp_path, tiny_model_dir):
    masks = tmp_path / "masks"
    masks.mkdir()
    drawn = Image.new("L", (96, 64), 0)
    drawn.paste(255, (5, 5, 20, 40))
    drawn.save(masks / "kodim03-96.png")
    Image.new("L", (50, 50), 255).save(masks / "kodim05-96.png")
    inputs = [photos / "kodim03-96.png", photos / "kodim05-96.png", photos / "kodim15-96.png"]
    result = palette("inpaint", *inputs, "--mask", masks, "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert f"{masks / 'kodim05-96.png'}: mask is 50x50 but {inputs[1]} is 96x64" in result.stderr
    assert f"{inputs[2]}: no mask for it in {masks}" in result.stderr
    assert "2 input(s) failed" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kodim03-96.inpaint.0.png"]
    got, original = pixels(tmp_path / "out" / "kodim03-96.inpaint.0.png"), pixels(inputs[0])
    keep = np.asarray(drawn) == 0
    assert np.array_equal(got[keep], original[keep]) and not np.array_equal(got[~keep], original[~keep])


@pytest.mark.parametrize("args", [[], ["--mask-mode", "center", "--mask-box", "1,1,5,5"], ["--mask-box", "1,2,3"],
                                  ["--mask", "no-such-mask.png"]])
def test_inpaint_mask_options_are_checked(photos, tiny_model_dir, args):
    result = palette("inpaint", photos, *args, "--model", tiny_model_dir)
    assert result.exit_code == 2 and "--mask" in result.stderr
    assert len(list(photos.iterdir())) == 4


@pytest.mark.parametrize("side, size, at", [("left", (192, 64), (96, 0)), ("bottom", (96, 128), (0, 0)),
                                            ("all", (136, 90), (20, 13))])
def test_uncrop_grows_and_keeps_the_original(photos, tmp_path, tiny_model_dir, side, size, at):
    source = photos / "kodim15-96.png"
    result = palette("uncrop", source, "--side", side, "-o", tmp_path, "--model", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.output
    (line,) = json_lines(result)
    with Image.open(line["output"]) as im:
        assert im.size == size
        got = np.asarray(im)
    left, top = at
    assert np.array_equal(got[top:top + 64, left:left + 96], pixels(source))


# --- bad input, nothing lost ----------------------------------------------------------------


def test_bad_files_among_good_ones(photos, tmp_path, tiny_model_dir):
    good = PHOTOS[0].read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 2])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("not a picture")
    out = tmp_path / "out"
    result = palette("colorize", photos, photos / "missing.png", "-o", out, "--model", tiny_model_dir, "--json")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for name, problem in [("truncated.png", "truncated or corrupt"), ("empty.jpg", "empty file"),
                          ("notes.png", "not an image"), ("missing.png", "no such file")]:
        assert any(f"{photos / name}: {problem}" in line for line in errors), (name, errors)
    assert errors[-1] == "error: 4 input(s) failed (see above)" and len(errors) == 5
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{p.stem}.colorize.0.png" for p in PHOTOS]
    assert len(json_lines(result)) == 4 and leftovers(tmp_path) == []


def test_existing_outputs_skip_overwrite_or_refuse(photos, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    args = ["colorize", photos, "-o", out, "--model", tiny_model_dir, "--json"]
    assert palette(*args).exit_code == 0
    (out / "kodim15-96.colorize.0.png").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    resumed = palette(*args, "--skip-existing")
    assert resumed.exit_code == 0
    assert [Path(line["output"]).name for line in json_lines(resumed)] == ["kodim15-96.colorize.0.png"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    again = palette(*args, "--skip-existing")
    assert again.exit_code == 0 and again.stdout == ""
    refused = palette(*args)
    assert refused.exit_code == 1 and "already exists; use --skip-existing" in refused.stderr
    assert refused.stdout == ""
    assert len(json_lines(palette(*args, "--overwrite"))) == 4
    assert palette(*args, "--overwrite", "--skip-existing").exit_code == 2


def test_output_may_name_the_file_for_one_input_and_one_sample(photos, tmp_path, tiny_model_dir):
    photo, target = photos / "kodim23-96.png", tmp_path / "new" / "restored.png"
    result = palette("colorize", photo, "-o", target, "--model", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.stderr
    assert [line["output"] for line in json_lines(result)] == [str(target)]
    with Image.open(target) as im:
        assert im.format == "PNG" and im.size == (96, 64) and json.loads(im.text["palette"])["task"] == "colorize"
    assert sorted(p.name for p in target.parent.iterdir()) == ["restored.png"]
    again = palette("colorize", photo, "-o", target, "--model", tiny_model_dir)
    assert again.exit_code == 1 and f"{target}: already exists" in again.stderr
    for extra, why in ((["-n", 2], "not -n 2"), ([photos / "kodim03-96.png"], "not 2 inputs")):
        refused = palette("colorize", photo, *extra, "-o", tmp_path / "two.png", "--model", tiny_model_dir)
        assert refused.exit_code == 2 and why in refused.stderr and len(refused.stderr.splitlines()) == 1
    jpeg = palette("colorize", photo, "-o", tmp_path / "out.jpg", "--model", tiny_model_dir)
    assert jpeg.exit_code == 2 and "outputs are PNG" in jpeg.stderr
    assert not (tmp_path / "two.png").exists() and not (tmp_path / "out.jpg").exists()
    (tmp_path / "folder.png").mkdir()  # an existing folder stays a folder, whatever its name
    assert palette("colorize", photo, "-o", tmp_path / "folder.png", "--model", tiny_model_dir).exit_code == 0
    assert [p.name for p in (tmp_path / "folder.png").iterdir()] == ["kodim23-96.colorize.0.png"]


def test_two_inputs_that_would_share_an_output(tmp_path, tiny_model_dir):
    shutil.copy(PHOTOS[0], tmp_path / "same.png")
    Image.open(PHOTOS[1]).save(tmp_path / "same.bmp")
    result = palette("colorize", tmp_path / "same.bmp", tmp_path / "same.png", "-o", tmp_path / "out",
                     "--model", tiny_model_dir)
    assert result.exit_code == 1 and "would also be written for" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["same.colorize.0.png"]


def test_model_problems_are_one_line(photos, tmp_path, tiny_model_dir):
    result = palette("colorize", photos, "--model", tmp_path / "nope")
    assert result.exit_code == 1 and "no such model" in result.stderr and len(result.stderr.splitlines()) == 1
    colour_only = make_tiny_model(tmp_path / "colour-only", tasks=("colorize",))
    result = palette("uncrop", photos, "--model", colour_only)
    assert result.exit_code == 1 and "trained for colorize, not uncrop" in result.stderr
    result = palette("colorize", photos, "--model", tiny_model_dir, "--steps", 5000)
    assert result.exit_code == 2 and "steps must be between 1 and 1000" in result.stderr
    assert len(list(photos.iterdir())) == 4


def test_bf16_autocast_on_cpu(photos, tmp_path, tiny_model_dir):
    result = palette("colorize", photos / "kodim03-96.png", "--dtype", "bf16", "--device", "cpu", "-o", tmp_path,
                     "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kodim03-96.colorize.0.png").is_file()


# --- processes ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_help_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "palette_cli", "inpaint", "--help"],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert proc.returncode == 0 and "--mask-box" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "typer" in imported and not any(name.split(".")[0] == "torch" for name in imported)


@pytest.mark.slow
def test_ctrl_c_leaves_only_complete_files_and_skip_existing_resumes(tmp_path, tiny_model_dir):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10):
        shutil.copy(PHOTOS[i % 4], folder / f"p{i:02d}.png")
    out = tmp_path / "out"
    args = ["colorize", str(folder), "-o", str(out), "--model", str(tiny_model_dir), "--json", "-n", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "palette_cli", *args, "--batch-size", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
    first = proc.stdout.readline()  # the first written file: the run is well under way
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=120)
    assert json.loads(first)["output"].endswith("p00.colorize.0.png")
    assert proc.returncode == 130 and "rerun with --skip-existing" in stderr and "Traceback" not in stderr
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 20 and leftovers(tmp_path) == []
    for path in written:
        with Image.open(path) as im:
            im.load()  # complete, decodable PNGs only
    resumed = palette(*args, "--skip-existing")  # at another batch size: the same pixels, by design
    assert resumed.exit_code == 0, resumed.output
    assert len(json_lines(resumed)) == 20 - len(written) and len(list(out.iterdir())) == 20


@pytest.mark.slow
def test_ctrl_c_while_torch_is_imported_exits_130_with_no_outputs(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    args = ["-X", "importtime", "-m", "palette_cli", "colorize", str(PHOTOS[0]), "-o", str(out), "--model",
            str(tiny_model_dir)]
    proc = subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=_env())
    for line in proc.stderr:  # -X importtime reports each module as its import finishes
        if line.rsplit("|", 1)[-1].strip().startswith("numpy._typing"):
            break  # inside `import torch`, where it probes numpy: a KeyboardInterrupt here was swallowed
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted before any work; nothing was written" in stderr and "Traceback" not in stderr
    assert not out.exists() or list(out.iterdir()) == []


# Runs the real command line, noting the OpenMP wait policy in force when torch is first imported.
_WAIT_PROBE = """
import builtins, os, sys
real_import = builtins.__import__
def probe(name, *args, **kwargs):
    if name == "torch" and "torch" not in sys.modules:
        sys.stderr.write(f"torch imported under OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}\\n")
    return real_import(name, *args, **kwargs)
builtins.__import__ = probe
sys.argv = ["palette", *sys.argv[1:]]
from palette_cli.cli import main
main()
"""


@pytest.mark.parametrize("command", [["jpeg", "--quality", "30"], ["eval", "--task", "jpeg", "--limit", "1"]])
def test_restores_let_torchs_threads_sleep_while_they_wait(command, tmp_path, tiny_model_dir):
    """Two restores side by side on the same cores crawl while OpenMP threads spin (benchmarks/README.md)."""
    env = {k: v for k, v in _env().items() if k != "OMP_WAIT_POLICY"}
    target = [str(PHOTOS[0]), "-o", str(tmp_path / "out.png")] if command[0] == "jpeg" else \
        [str(PHOTOS[0].parent), "-o", str(tmp_path / "report")]
    args = [*command[:1], *target, *command[1:], "--model", str(tiny_model_dir), "-q"]
    proc = subprocess.run([sys.executable, "-c", _WAIT_PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch imported under OMP_WAIT_POLICY=PASSIVE" in proc.stderr
    chosen = subprocess.run([sys.executable, "-c", _WAIT_PROBE, *args, *(["--overwrite"] if command[0] == "jpeg"
                                                                          else [])],
                            capture_output=True, text=True, cwd=ROOT, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            timeout=300)
    assert chosen.returncode == 0 and "torch imported under OMP_WAIT_POLICY=ACTIVE" in chosen.stderr  # the user's


def test_dpmpp_and_strength_reach_the_sampler(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from palette_cli.cli import app

    photos = PHOTOS
    runs = {}
    for strength in ("1.0", "0.3"):
        out = tmp_path / strength
        result = CliRunner().invoke(app, ["jpeg", str(photos[0]), "-o", str(out), "--model", str(tiny_model_dir),
                                          "--sampler", "dpmpp", "--steps", "3", "--strength", strength])
        assert result.exit_code == 0, result.output
        (written,) = out.iterdir()
        with Image.open(written) as image:
            meta = json.loads(image.text["palette"])
            runs[strength] = np.asarray(image.convert("RGB"))
        assert (meta["sampler"], meta["steps"], meta["strength"]) == ("dpmpp", 3, float(strength))
    assert not np.array_equal(runs["1.0"], runs["0.3"])
    bad = CliRunner().invoke(app, ["jpeg", str(photos[0]), "-o", str(tmp_path / "bad"), "--model",
                                   str(tiny_model_dir), "--strength", "0"])
    assert bad.exit_code == 2 and "strength" in bad.output


def test_uncrop_half_doubles_a_seven_pixel_photo(tmp_path, tiny_model_dir):
    with Image.open(PHOTOS[0]) as im:
        im.convert("RGB").crop((0, 0, 7, 5)).save(tmp_path / "small.png")
    result = palette("uncrop", tmp_path / "small.png", "-o", tmp_path / "out", "--model", tiny_model_dir,
                     "--side", "right", "--ratio", "0.5")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "small.uncrop.0.png") as out:
        assert out.size == (14, 5)
        assert np.array_equal(np.asarray(out.convert("RGB"))[:, :7], pixels(tmp_path / "small.png"))


# --- issue 29: huge -n, streaming samples, the summary, the default model --------------------


def test_a_million_samples_is_one_error_line_before_any_work(tmp_path):
    shutil.copy(DATA / "kodim23-96.png", tmp_path / "kodim23-96.png")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "palette_cli", "inpaint", "kodim23-96.png", "--mask-box",
                           "30,10,25,20", "-n", "1000000"], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds, not wall time, so that a loaded machine does not fail it: 0.3 s on an idle one.
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 5
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: num_samples (-n) is at most {MAX_SAMPLES} per input, got 1000000; "
                                        "each sample is a whole sampling run (for more, run again with another --seed)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kodim23-96.png"]


def test_the_summary_counts_every_input_tried(photos, tmp_path, tiny_model_dir):
    (photos / "notes.png").write_text("not a picture")
    out = tmp_path / "out"
    result = palette("colorize", photos, photos / "missing.png", "-o", out, "--model", tiny_model_dir, "-n", "2")
    assert result.exit_code == 1
    summary = [line for line in result.stderr.splitlines() if line.startswith("colorize:")]
    assert summary == [f"colorize: 4 written, 2 failed; 8 image(s) in {out} in " + summary[0].split(" in ")[-1]]
    again = palette("colorize", photos / "kodim05-96.png", "-o", out, "--model", tiny_model_dir, "-n", "3",
                    "--skip-existing")
    assert again.exit_code == 0 and again.stderr.startswith(f"colorize: 1 written, 0 failed; 1 image(s) in {out}")


@pytest.mark.slow
def test_ctrl_c_during_many_samples_keeps_those_written(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    args = ["inpaint", str(PHOTOS[0]), "--mask-box", "30,10,25,20", "-n", "40", "-o", str(out), "--model",
            str(tiny_model_dir), "--json", "--batch-size", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "palette_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
    first = json.loads(proc.stdout.readline())  # sample 0 is written while the others are still sampling
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=120)
    assert first["output"].endswith(f"{PHOTOS[0].stem}.inpaint.0.png") and first["sample"] == 0
    assert proc.returncode == 130 and "rerun with --skip-existing" in stderr and "Traceback" not in stderr
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 40 and leftovers(tmp_path) == []
    assert len(written) == 1 + len(rest.splitlines())  # every file written was reported, and is complete
    for path in written:
        with Image.open(path) as im:
            im.load()


@pytest.mark.slow
def test_the_default_model_is_the_builtin_one_whatever_folders_are_here(tmp_path, monkeypatch):
    """`palette colorize photo.jpg -o colorize`, and a run from a folder that holds a `colorize/` folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "kodim23-96.png", "photo.png")
    result = palette("colorize", "photo.png", "-o", "colorize")
    assert result.exit_code == 0, result.output
    assert [p.name for p in Path("colorize").iterdir()] == ["photo.colorize.0.png"]
    (tmp_path / "inpaint").mkdir()  # a folder named like a task, not a model
    result = palette("inpaint", "photo.png", "--mask-box", "30,10,25,20")
    assert result.exit_code == 0, result.output
    assert Path("photo.inpaint.0.png").is_file()
    with Image.open("colorize/photo.colorize.0.png") as im:
        assert json.loads(im.text["palette"])["model"] == "colorize"
    # A local folder is still a model when named with --model, as a path.
    bad = palette("jpeg", "photo.png", "--model", "./inpaint")
    assert bad.exit_code == 1 and "inpaint: missing config.json; not a palette model directory" in bad.stderr
