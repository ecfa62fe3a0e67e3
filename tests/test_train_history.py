"""A model's card carries all the training behind its weights, across train, resume and finetune."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from palette_cli import train as T
from palette_cli.cards import TrainingHistory, read_history, render_card
from palette_cli.checkpoint import CARD_NAME
from conftest import make_tiny_model

DATA = Path(__file__).parent / "data"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for p in sorted(DATA.glob("kodim*-96.png"))[:3]:
        shutil.copy(p, root / p.name)
    return root


def tiny(**kw) -> T.TrainConfig:
    base = dict(preset="tiny", batch_size=2, lr=1e-3, warmup=0, sample_every=0, save_every=100, precision="fp32")
    return T.TrainConfig(**{**base, **kw})


def history(model_dir: Path) -> TrainingHistory:
    found = read_history((model_dir / CARD_NAME).read_text(encoding="utf-8"))
    assert found is not None
    return found


def test_card_header_round_trips_and_a_card_without_one_has_none() -> None:
    h = TrainingHistory(1500, 12000, 3600.25, 2)
    assert read_history(render_card("# m", tasks=["colorize"], history=h)) == TrainingHistory(1500, 12000, 3600.2, 2)
    assert read_history(render_card("# m", tasks=["colorize"])) is None
    assert read_history("# a card without a header\n") is None
    assert TrainingHistory.from_dict({"steps": "x"}) is None


def test_history_adds_up_over_train_resume_and_finetune(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    T.train([photos], run, tiny(steps=2))
    first = history(run / "model")
    assert (first.steps, first.images, first.runs) == (2, 4, 1) and first.seconds > 0

    T.resume([photos], run, {"steps": 5, "batch_size": 4})  # the same run, three more steps of 4
    resumed = history(run / "model")
    assert (resumed.steps, resumed.images, resumed.runs) == (5, 16, 1)
    assert resumed.seconds > first.seconds
    assert torch.load(run / "state.pt", weights_only=True)["history"]["images"] == 16

    T.finetune(run / "model", [photos], tmp_path / "ft", tiny(steps=3))
    tuned = history(tmp_path / "ft" / "model")
    assert (tuned.steps, tuned.images, tuned.runs) == (8, 22, 2)
    assert tuned.seconds > resumed.seconds
    assert "8 steps, 22 images seen" in (tmp_path / "ft" / "model" / CARD_NAME).read_text(encoding="utf-8")


def test_finetuning_a_model_with_no_recorded_history_starts_the_count(tmp_path: Path, photos: Path) -> None:
    model = make_tiny_model(tmp_path / "m", tasks=("colorize",))
    T.finetune(model, [photos], tmp_path / "ft", tiny(steps=2))
    assert history(tmp_path / "ft" / "model").steps == 2
    assert history(tmp_path / "ft" / "model").runs == 1


def test_builtin_cards_record_their_training() -> None:
    from palette_cli.checkpoint import resolve

    builtin = history(resolve("colorize"))
    assert builtin.steps == 15000 and builtin.images == 120000 and builtin.runs == 2
    # the fill models: inpaint's run, and uncrop = inpaint + its two finetunes (their cards' recipes)
    assert history(resolve("inpaint")).steps == 6288 and history(resolve("uncrop")).steps == 6288 + 1876 + 2159
