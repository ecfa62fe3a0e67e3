"""Publishing model directories on the Hugging Face Hub.

`push_model` checks that the directory loads, that the Hub can be reached and that a token exists
before it creates anything; the upload is one commit, so a repo never shows half a model.
Model cards are written by `cards.py`; nothing here imports torch at module level.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text
from .cards import complete_card
from .errors import PaletteError

CARD_NAME = "README.md"  # as checkpoint.CARD_NAME, repeated to keep torch out of this import
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_TRUE = {"1", "on", "yes", "true"}

Callback = Callable[[str], None]  # a one-line progress message


@dataclass
class PushResult:
    """Where a model went."""

    repo_id: str
    revision: str  # the branch written
    commit_url: str
    files: list[str]
    card_updated: bool  # whether README.md was given missing Hub metadata before the upload


def _offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, looked up now rather than at its import."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """HTTP and network errors of the client huggingface_hub is built on (requests or httpx)."""
    from huggingface_hub.errors import HfHubHTTPError

    # HfHubHTTPError subclasses its client's HTTPError, the base of that client's connection errors.
    return (OSError, *(c for c in HfHubHTTPError.__mro__[1:] if c.__name__ == "HTTPError"))


def _hub_error(err: BaseException, repo_id: str, step: str) -> PaletteError:
    """One line for a failed Hub call: what failed, why, and that nothing was published."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401:
        why = "the Hub rejected the token (set HF_TOKEN or run `hf auth login` with a write token)"
    elif status == 403:
        why = f"the token may not write to {repo_id} (use a write token with access to that namespace)"
    elif status is not None:
        why = f"the Hub answered HTTP {status}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    else:
        why = f"the Hub cannot be reached ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return PaletteError(f"{repo_id}: {step} failed: {why}; nothing was uploaded")


def _check_push(model_dir: str | os.PathLike, directory: Path, repo_id: str) -> str:
    """Refuse a push that cannot work before anything is sent; return the token."""
    from huggingface_hub import get_token

    from .checkpoint import CONFIG_NAME, WEIGHTS_NAME

    if not directory.is_dir():
        raise PaletteError(f"{model_dir}: not a directory; push takes a model folder (with {CONFIG_NAME} "
                           f"and {WEIGHTS_NAME}), for example the output of `palette convert`")
    if not _REPO_ID.match(repo_id):
        raise PaletteError(f"{repo_id!r}: not a Hub repo id; use namespace/name, like your-name/palette-inpaint")
    if _offline():
        raise PaletteError(f"{repo_id}: cannot push while HF_HUB_OFFLINE is set; unset it and run again "
                           f"(nothing was uploaded)")
    token = get_token()
    if not token:
        raise PaletteError(f"{repo_id}: not logged in to the Hugging Face Hub; set HF_TOKEN or run "
                           f"`hf auth login` (nothing was uploaded)")
    return token


def push_model(model_dir: str | os.PathLike, repo_id: str, *, private: bool = False,
               revision: str | None = None, license: str | None = None, endpoint: str | None = None,
               commit_message: str | None = None, callback: Callback | None = None) -> PushResult:
    """Upload a model directory to the Hub repo `repo_id` (created if needed) in one commit.

    The token is the usual one (HF_TOKEN or `hf auth login`); `endpoint` defaults to HF_ENDPOINT.
    """
    from huggingface_hub import HfApi

    from .checkpoint import HUB_FILES, load_model

    report = callback or (lambda message: None)
    directory = Path(model_dir).expanduser()
    token = _check_push(model_dir, directory, repo_id)
    model = load_model(directory, device="cpu")  # a broken model must not reach the Hub

    card_file = directory / CARD_NAME
    old_card = card_file.read_text(encoding="utf-8") if card_file.is_file() else ""
    new_card = complete_card(old_card, model.config.tasks, license)
    api = HfApi(endpoint=endpoint, token=token)
    step = "checking the token"
    try:
        api.whoami()
        step = "creating the repo"
        report(f"creating {repo_id} if needed")
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if private and not api.model_info(repo_id).private:
            raise PaletteError(f"{repo_id}: exists and is public; --private does not change that, so nothing "
                               f"was uploaded (make it private on the Hub, or push without --private)")
        if revision and revision != "main":
            step = f"creating branch {revision}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        if new_card != old_card:  # only once the Hub accepted the token and the repo exists
            write_text(card_file, new_card)
        step = "uploading"
        report(f"uploading {', '.join(HUB_FILES)}")
        commit = api.upload_folder(repo_id=repo_id, folder_path=directory, revision=revision,
                                   allow_patterns=HUB_FILES, repo_type="model",
                                   commit_message=commit_message or "Upload palette model")
    except PaletteError:
        raise
    except _transport_errors() as err:
        raise _hub_error(err, repo_id, step) from None
    except ValueError as err:  # huggingface_hub's own checks: refused card metadata, bad ids or URLs
        raise PaletteError(f"{repo_id}: {step} failed: {' '.join(str(err).split())}; nothing was uploaded") from None
    return PushResult(repo_id=repo_id, revision=revision or "main", commit_url=str(commit.commit_url),
                      files=[f for f in HUB_FILES if (directory / f).is_file()], card_updated=new_card != old_card)
