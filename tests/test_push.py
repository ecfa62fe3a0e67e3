"""Tests for palette_cli.hub: `palette push` against a local stand-in for the Hub's HTTP API.

The stand-in is a real HTTP server on 127.0.0.1 that records every request huggingface_hub
sends, so the tests see exactly what would reach the Hub, and that nothing does when it must not.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from conftest import make_tiny_model
from palette_cli.checkpoint import HUB_FILES, WEIGHTS_NAME
from palette_cli.errors import PaletteError
from palette_cli.cards import complete_card, render_card
from palette_cli.hub import push_model


class FakeHub(BaseHTTPRequestHandler):
    """Answers the few Hub endpoints a push uses; `server.mode` picks the behaviour."""

    def _reply(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.calls.append((self.command, self.path, body))
        return body

    def do_GET(self) -> None:
        self._record()
        if self.server.mode == "reject":
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        if self.path.startswith("/api/whoami"):
            return self._reply(200, {"name": "me", "type": "user"})
        if self.path.startswith("/api/models/"):
            return self._reply(200, {"id": "me/tiny", "private": self.server.mode == "private", "sha": "0" * 40})
        self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self._record()
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.server.mode == "reject":
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        if self.path == "/api/repos/create":
            return self._reply(200, {"url": f"{base}/me/tiny"})
        if self.path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if "/branch/" in self.path:
            return self._reply(200, {})
        if "/preupload/" in self.path:  # small files go inline in the commit
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "/commit/" in self.path:
            return self._reply(200, {"commitUrl": f"{base}/me/tiny/commit/{'1' * 40}", "commitOid": "1" * 40})
        self._reply(404, {"error": "not found"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub():
    """A running stand-in Hub; `.calls` lists (method, path, body), `.mode` is ok/reject/private."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.calls, server.mode = [], "ok"
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def hub_env(monkeypatch, tmp_path):
    """Online, with a made-up token, and no token file of this machine in the way."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_made_up_token")
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny model (its card has no license yet), safe to modify."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of a directory, by name."""
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def committed_files(calls) -> dict[str, bytes]:
    """Path -> content of the files in the (single) commit request."""
    commits = [body for method, path, body in calls if "/commit/" in path]
    assert len(commits) == 1
    files = {}
    for line in commits[0].decode().splitlines():
        entry = json.loads(line)
        if entry["key"] == "file":
            files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
    return files


def test_push_uploads_the_model_in_one_commit(hub, model_dir):
    weights = (model_dir / WEIGHTS_NAME).read_bytes()
    result = push_model(model_dir, "me/tiny", revision="dev", endpoint=hub.url)

    assert result.repo_id == "me/tiny" and result.revision == "dev"
    assert result.commit_url.endswith("1" * 40) and result.files == HUB_FILES
    paths = [path for _, path, _ in hub.calls]
    assert "/api/repos/create" in paths and "/api/models/me/tiny/branch/dev" in paths
    files = committed_files(hub.calls)
    assert set(files) == set(HUB_FILES) and files[WEIGHTS_NAME] == weights
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "palette" and card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "unknown" and "colorize" in card.data.tags
    # The local card got the metadata it lacked, and says so.
    assert result.card_updated and (model_dir / "README.md").read_bytes() == files["README.md"]
    create = json.loads(next(body for _, path, body in hub.calls if path == "/api/repos/create"))
    assert create["visibility"] == "public"


def test_push_offline_uploads_nothing(hub, model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(model_dir)
    with pytest.raises(PaletteError, match="HF_HUB_OFFLINE") as info:
        push_model(model_dir, "me/tiny", endpoint=hub.url)
    assert "nothing was uploaded" in str(info.value)
    assert hub.calls == [] and snapshot(model_dir) == before


def test_push_without_a_token_uploads_nothing(hub, model_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(PaletteError, match="not logged in.*HF_TOKEN"):
        push_model(model_dir, "me/tiny", endpoint=hub.url)
    assert hub.calls == []


def test_push_with_a_rejected_token_uploads_nothing(hub, model_dir):
    hub.mode = "reject"
    before = snapshot(model_dir)
    with pytest.raises(PaletteError, match="rejected the token.*nothing was uploaded"):
        push_model(model_dir, "me/tiny", endpoint=hub.url)
    assert [path for _, path, _ in hub.calls] == ["/api/whoami-v2"]
    assert snapshot(model_dir) == before


def test_private_push_never_goes_to_a_public_repo(hub, model_dir):
    with pytest.raises(PaletteError, match="is public"):
        push_model(model_dir, "me/tiny", private=True, endpoint=hub.url)
    assert not any("/commit/" in path for _, path, _ in hub.calls)

    hub.mode, hub.calls[:] = "private", []
    push_model(model_dir, "me/tiny", private=True, endpoint=hub.url)
    create = json.loads(next(body for _, path, body in hub.calls if path == "/api/repos/create"))
    assert create["visibility"] == "private"
    assert set(committed_files(hub.calls)) == set(HUB_FILES)


def test_push_checks_the_directory_first(hub, tmp_path):
    with pytest.raises(PaletteError, match="not a directory"):
        push_model(tmp_path / "missing", "me/tiny", endpoint=hub.url)
    broken = make_tiny_model(tmp_path / "broken")
    weights = (broken / WEIGHTS_NAME).read_bytes()
    (broken / WEIGHTS_NAME).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(PaletteError, match="model.safetensors"):
        push_model(broken, "me/tiny", endpoint=hub.url)
    with pytest.raises(PaletteError, match="namespace/name"):
        push_model(make_tiny_model(tmp_path / "ok"), "no-namespace", endpoint=hub.url)
    assert hub.calls == []


def test_cli_push_offline(model_dir, monkeypatch, capsys):
    from palette_cli.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["palette", "push", str(model_dir), "me/tiny", "--private"])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    assert info.value.code == 1 and "pushed" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HF_HUB_OFFLINE" in errors[0] and "Traceback" not in captured.err


def test_card_metadata_is_completed_not_replaced():
    bare = complete_card("# My model\n\nTrained on my photos.\n", ("inpaint",))
    card = ModelCard(bare)
    assert card.data.library_name == "palette" and card.data.license == "unknown"
    assert card.data.tags == ["palette", "image-to-image", "diffusion", "inpaint"]
    assert "Trained on my photos." in card.text

    own = complete_card("---\nlicense: mit\ntags:\n- faces\n---\n\nMine.\n", ("inpaint",))
    card = ModelCard(own)
    assert card.data.license == "mit" and card.data.tags[0] == "faces" and "inpaint" in card.data.tags
    assert complete_card(own, ("inpaint",)) == own  # nothing missing: unchanged, byte for byte
    assert ModelCard(complete_card(own, ("inpaint",), license="cc-by-nc-4.0")).data.license == "cc-by-nc-4.0"

    rendered = render_card("# Body", tasks=("uncrop",), license="mit", extra_tags=("x",))
    assert ModelCard(rendered).data.to_dict() == {"library_name": "palette", "license": "mit",
                                                  "pipeline_tag": "image-to-image",
                                                  "tags": ["palette", "image-to-image", "diffusion", "uncrop", "x"]}
