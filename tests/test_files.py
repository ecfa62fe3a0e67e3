"""The one file finder: inputs of inference, training and evaluation; output names; mask files."""

from __future__ import annotations

from pathlib import Path

import pytest

from palette_cli import files
from palette_cli.errors import PaletteError



def test_find_inputs_folders_globs_and_outputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "b.JPG", "sub/c.png", "a.colorize.0.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    flat, problems = files.find_inputs([str(tmp_path)])
    assert [i.relative.as_posix() for i in flat] == ["a.png", "b.JPG"] and problems == []
    deep, _ = files.find_inputs([str(tmp_path), str(tmp_path / "a.png")], recursive=True)
    assert [i.relative.as_posix() for i in deep] == ["a.png", "b.JPG", "sub/c.png"]  # a.png once
    globbed, _ = files.find_inputs([str(tmp_path / "**" / "*.png")])
    assert sorted(i.relative.as_posix() for i in globbed) == ["a.png", "sub/c.png"]
    _, problems = files.find_inputs([str(tmp_path / "sub" / "*.jpg"), str(tmp_path / "sub" / "empty")])
    assert len(problems) == 1 and "no image matches" in problems[0]


def test_output_paths_and_masks(tmp_path):
    item = files.InputFile(tmp_path / "in" / "trip" / "x.jpg", Path("trip/x.jpg"))
    assert files.output_paths(item, "inpaint", 2, tmp_path / "out") == [
        tmp_path / "out" / "trip" / "x.inpaint.0.png", tmp_path / "out" / "trip" / "x.inpaint.1.png"]
    assert files.output_paths(item, "jpeg", 1, None) == [tmp_path / "in" / "trip" / "x.jpeg.0.png"]
    (tmp_path / "masks" / "trip").mkdir(parents=True)
    with pytest.raises(PaletteError, match="x.jpg: no mask for it"):
        files.find_mask(tmp_path / "masks", item)
    (tmp_path / "masks" / "trip" / "x.bmp").write_bytes(b"x")
    assert files.find_mask(tmp_path / "masks", item).name == "x.bmp"
    (tmp_path / "masks" / "trip" / "x.png").write_bytes(b"x")
    assert files.find_mask(tmp_path / "masks", item).name == "x.png"


def test_training_and_evaluation_skip_our_outputs_and_hidden_files_like_inference(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "b.JPG", "sub/c.webp", "a.colorize.0.png", "a.blur.0.png", ".hidden.png",
                 "notes.txt", "d.gif"):
        (tmp_path / name).write_bytes(b"x")
    expected = ["a.png", "a.blur.0.png", "b.JPG", "d.gif", "sub/c.webp"]  # blur is no task of ours
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files.training_images([tmp_path])) == sorted(expected)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files.evaluation_images(tmp_path)) == sorted(expected)
    inputs, _ = files.find_inputs([str(tmp_path)], recursive=True)
    assert sorted(i.relative.as_posix() for i in inputs) == sorted(expected)


def test_plan_refuses_clashes_and_existing_outputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    items = [files.InputFile(tmp_path / "a" / "x.jpg", Path("x.jpg")),
             files.InputFile(tmp_path / "b" / "x.png", Path("x.png")),
             files.InputFile(tmp_path / "a" / "y.jpg", Path("y.jpg"))]
    out = tmp_path / "out"
    out.mkdir()
    (out / "y.jpeg.0.png").write_bytes(b"x")
    jobs, skipped, problems = files.plan(items, "jpeg", 1, out)
    assert [job.item.path.name for job in jobs] == ["x.jpg"] and skipped == 0
    assert "would also be written for" in problems[0] and "y.jpeg.0.png: already exists" in problems[1]
    jobs, skipped, problems = files.plan(items[2:], "jpeg", 1, out, skip_existing=True)
    assert jobs == [] and skipped == 1 and problems == []
    jobs, _, _ = files.plan(items[2:], "jpeg", 1, out, overwrite=True)
    assert jobs[0].write == [True]
