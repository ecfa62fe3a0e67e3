"""Model cards: the one renderer of the YAML header (Hub metadata) and markdown body palette writes.

Trained models (`save_model`'s default card), converted checkpoints and pushed models all get
their header here; `complete_card` adds what a user's own card lacks before a push.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

LIBRARY_NAME = "palette"
PIPELINE_TAG = "image-to-image"
BASE_TAGS = ("palette", "image-to-image", "diffusion")
DEFAULT_LICENSE = "unknown"  # the Hub's value for "terms not stated"


def card_metadata(tasks: Sequence[str], license: str | None = DEFAULT_LICENSE,
                  extra_tags: Sequence[str] = ()) -> dict:
    """The Hub metadata palette puts in a model card's YAML header."""
    tags = list(dict.fromkeys([*BASE_TAGS, *tasks, *extra_tags]))
    return {"library_name": LIBRARY_NAME, "pipeline_tag": PIPELINE_TAG, "license": license or DEFAULT_LICENSE,
            "tags": tags}


def render_card(body: str, *, tasks: Sequence[str], license: str | None = DEFAULT_LICENSE,
                extra_tags: Sequence[str] = (), license_line: bool = True,
                history: TrainingHistory | None = None) -> str:
    """A model card: the YAML header with Hub metadata, then the markdown body. Every card palette
    writes comes from here; without `license_line` the header states no license (`push` adds one);
    `history` goes into the header under HISTORY_KEY, where the next finetune reads it."""
    from huggingface_hub import ModelCardData

    metadata = card_metadata(tasks, license, extra_tags)
    if not license_line:
        del metadata["license"]
    if history is not None:
        metadata[HISTORY_KEY] = history.to_dict()
    return f"---\n{ModelCardData(**metadata).to_yaml()}\n---\n\n{body.strip()}\n"


HISTORY_KEY = "palette_training"  # the card header's record of all training behind the weights


@dataclass(frozen=True)
class TrainingHistory:
    """All training behind a model's weights, summed over every run that made them (train, finetune,
    and resumed sessions of either): what a later run adds its own to."""

    steps: int = 0  # optimizer steps
    images: int = 0  # training images seen (steps x batch size)
    seconds: float = 0.0  # wall-clock time of the training loops
    runs: int = 0  # train and finetune runs (a resumed run is the same run)

    def plus(self, steps: int, images: int, seconds: float, runs: int = 0) -> TrainingHistory:
        """This history with a run's (or a session's) own training added."""
        return TrainingHistory(self.steps + steps, self.images + images, self.seconds + seconds, self.runs + runs)

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 1)}

    @classmethod
    def from_dict(cls, data: object) -> TrainingHistory | None:
        """The history a card header holds, or None when it holds none (or something unreadable)."""
        if not isinstance(data, dict):
            return None
        try:
            values = {f.name: data.get(f.name, 0) for f in fields(cls)}
            return cls(int(values["steps"]), int(values["images"]), float(values["seconds"]), int(values["runs"]))
        except (TypeError, ValueError):
            return None

    def sentence(self) -> str:
        """One line for a card's body."""
        return (f"All training behind these weights, over {self.runs} run(s): {self.steps:,} steps, "
                f"{self.images:,} images seen, {self.seconds / 3600:.2f} h of training wall-clock time.")


def read_history(text: str) -> TrainingHistory | None:
    """The training history in a model card's header, or None when it has none."""
    from huggingface_hub import ModelCard

    if not text.lstrip().startswith("---"):
        return None
    data = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
    return TrainingHistory.from_dict(data.get(HISTORY_KEY))


def complete_card(text: str, tasks: Sequence[str], license: str | None = None) -> str:
    """`text` with any missing Hub metadata added (and the license replaced if one is given)."""
    from huggingface_hub import ModelCard, ModelCardData

    original = text
    if text.lstrip().startswith("---"):
        card = ModelCard(text, ignore_metadata_errors=True)
        data, body = card.data, card.text
    else:  # no YAML header (ModelCard would log its absence)
        data, body = ModelCardData(), text
    before = data.to_dict()
    wanted = card_metadata(tasks, license)
    for key in ("library_name", "pipeline_tag"):
        if not getattr(data, key, None):
            setattr(data, key, wanted[key])
    if license or not data.license:
        data.license = wanted["license"]
    data.tags = list(dict.fromkeys([*(data.tags or []), *wanted["tags"]]))
    if data.to_dict() == before:
        return original
    body = body.strip() or f"# Palette model ({', '.join(tasks)})"
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"
