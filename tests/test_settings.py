"""RestoreSettings: every check the command line makes, made once in the library; the finetune defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from palette_cli.config import FINETUNE_LR, FINETUNE_STEPS, FINETUNE_WARMUP, TrainConfig
from palette_cli.settings import MAX_SAMPLES, RestoreSettings, SettingsError
from palette_cli.tasks.colour_controls import Hint

DATA = Path(__file__).parent / "data"


def test_defaults_and_the_task_options_prepare_takes():
    s = RestoreSettings("inpaint", mask_box="30,10,25,20", num_samples=3)
    assert s.mask_box == (30, 10, 25, 20) and s.task_options() == {"mask_box": (30, 10, 25, 20)}
    assert RestoreSettings("uncrop").task_options() == {"side": "right", "ratio": 0.5, "keep_frame": False}
    with pytest.raises(SettingsError, match="keep_frame must be True or False"):
        RestoreSettings("uncrop", keep_frame="no")
    assert RestoreSettings("jpeg", quality=10).task_options() == {"quality": 10}
    assert RestoreSettings("blur", extra={"radius": 2}).task_options() == {"radius": 2}  # a task of one's own


def test_hints_are_parsed_once_and_checked_against_the_photo():
    s = RestoreSettings("colorize", hints=("400,150,#7ea6d6,40", Hint(1, 2, (0, 0, 0))))
    assert s.hints == (Hint(400.0, 150.0, (0x7E, 0xA6, 0xD6), 40.0), Hint(1, 2, (0, 0, 0)))
    assert s.task_options()["hints"] == list(s.hints)
    s.check_hints_inside(768, 512)
    with pytest.raises(SettingsError, match=r"--hint 400,150,#7ea6d6,40: point \(400, 150\) is outside the 96x64"):
        s.check_hints_inside(96, 64)
    with pytest.raises(SettingsError, match="--hint '1,2,#12': colour must be #rrggbb"):
        RestoreSettings("colorize", hints=("1,2,#12",))


@pytest.mark.parametrize("changes, message", [
    ({"num_samples": 0}, "num_samples must be an integer of 1 or more, got 0"),
    ({"num_samples": 1_000_000}, f"num_samples \\(-n\\) is at most {MAX_SAMPLES} per input, got 1000000"),
    ({"num_samples": 2.0}, "num_samples must be an integer"),
    ({"steps": 0}, "steps must be an integer between 1 and"),
    ({"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpmpp, got 'euler'"),
    ({"strength": 0.0}, "strength must be above 0 and at most 1"),
    ({"strength": 1.5}, "strength must be a number between 0 and 1"),
    ({"guidance": -1}, "guidance must be a number of 0 or more"),
    ({"guidance": float("inf")}, "guidance must be a number"),
    ({"refine": "on"}, "refine must be one of auto, exemplar, sdedit, off"),
    ({"batch_size": 0}, "batch_size must be an integer of 1 or more"),
    ({"dtype": "fp8"}, "dtype must be one of auto, fp32, fp16, bf16"),
    ({"seed": "7"}, "seed must be an integer"),
    ({"mask_box": (1, 2, 3, 4)}, "mask_box is an inpaint option, not colorize's"),
    ({"reference": "x.png", "task": "jpeg"}, "colour hints and references are colorize options, not jpeg's"),
])
def test_each_wrong_setting_is_one_message(changes, message):
    with pytest.raises(SettingsError, match=message):
        RestoreSettings(**{"task": "colorize", **changes})


def test_replace_checks_again():
    s = RestoreSettings("colorize")
    assert s.replace(num_samples=4).num_samples == 4
    with pytest.raises(SettingsError, match="num_samples"):
        s.replace(num_samples=MAX_SAMPLES + 1)


def test_mask_options_one_and_only_one(tmp_path):
    with pytest.raises(SettingsError, match="give exactly one of --mask, --mask-box, --mask-mode \\(got --mask-box, "
                                            "--mask-mode\\)"):
        RestoreSettings("inpaint", mask_box=(1, 1, 2, 2), mask_mode="center")
    with pytest.raises(SettingsError, match="give exactly one of --mask, --mask-box, --mask-mode$"):
        RestoreSettings("inpaint").check_files()  # nothing to fill: refused before any photo is read
    with pytest.raises(SettingsError, match="--mask-box 'a,b,c,d': expected X,Y,W,H"):
        RestoreSettings("inpaint", mask_box="a,b,c,d")
    with pytest.raises(SettingsError, match="--mask-box .*expected X,Y,W,H"):
        RestoreSettings("inpaint", mask_box=(1, 1, 0, 2))
    with pytest.raises(SettingsError, match="--mask .*no-such: no such file or folder"):
        RestoreSettings("inpaint", mask=tmp_path / "no-such")
    with pytest.raises(SettingsError, match="mask_mode must be one of center, free-form"):
        RestoreSettings("inpaint", mask_mode="random")
    assert RestoreSettings("inpaint", mask=str(tmp_path)).mask == tmp_path  # a folder of masks


def test_colour_images_are_opened_before_any_photo(tmp_path):
    RestoreSettings("colorize", reference=DATA / "kodim23-96.png", hints_image=DATA / "kodim05-96.png").check_files()
    with pytest.raises(SettingsError, match="--reference: .*no.jpg"):
        RestoreSettings("colorize", reference=tmp_path / "no.jpg").check_files()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SettingsError, match="--hints: .*broken.png"):
        RestoreSettings("colorize", hints_image=tmp_path / "broken.png").check_files()


def test_importing_settings_imports_no_torch():
    code = "import sys, palette_cli.settings; print('torch' in sys.modules, 'typer' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_finetune_defaults_live_in_the_library():
    config = TrainConfig.finetune(tasks=("jpeg",), lr=None, steps=30)
    assert (config.lr, config.warmup, config.steps, config.tasks) == (FINETUNE_LR, FINETUNE_WARMUP, 30, ("jpeg",))
    assert TrainConfig.finetune().steps == FINETUNE_STEPS and TrainConfig().lr != FINETUNE_LR
