"""Model cards: the one renderer of the YAML header (Hub metadata) and markdown body palette writes.

Trained models (`save_model`'s default card), converted checkpoints and pushed models all get
their header here; `complete_card` adds what a user's own card lacks before a push.
"""

from __future__ import annotations

from collections.abc import Sequence

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
                extra_tags: Sequence[str] = (), license_line: bool = True) -> str:
    """A model card: the YAML header with Hub metadata, then the markdown body. Every card palette
    writes comes from here; without `license_line` the header states no license (`push` adds one)."""
    from huggingface_hub import ModelCardData

    metadata = card_metadata(tasks, license, extra_tags)
    if not license_line:
        del metadata["license"]
    return f"---\n{ModelCardData(**metadata).to_yaml()}\n---\n\n{body.strip()}\n"


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
