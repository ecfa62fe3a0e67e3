"""`palette ui`'s HTTP API on a real server (127.0.0.1, a free port) and a tiny real model: every task,
every bad request, the static files and nothing else, one restore at a time, the same PNGs as the CLI."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TASKS, randomize
from palette_cli import pipeline, train
from palette_cli.checkpoint import build_network, save_model
from palette_cli.config import PRESETS, ModelConfig
from palette_cli.ui.restorer import Restorer
from palette_cli.ui.server import Server

DATA = Path(__file__).parent / "data"
PHOTO = DATA / "kodim05-96.png"  # 96x64
# All four tasks and colour controls, so one model serves every request.
CONFIG = train.with_controls(ModelConfig(unet=PRESETS["tiny"], image_size=32, tasks=TASKS, steps=3))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "ui-tiny", CONFIG, randomize(build_network(CONFIG), 5))


@pytest.fixture(scope="module")
def server(model_dir):
    lines: list[str] = []
    server = Server(Restorer(str(model_dir), device="cpu"), "127.0.0.1", 0, log=lines.append)
    server.lines = lines
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


# --- a client with nothing but the standard library ---------------------------------------------


def multipart(fields: dict[str, str | int | float | Path | tuple[str, bytes]]) -> tuple[str, bytes]:
    """(content type, body): a Path or (filename, bytes) is a file field, anything else text."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        if isinstance(value, Path):
            value = (value.name, value.read_bytes())
        if isinstance(value, tuple):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n' \
                   f"Content-Type: application/octet-stream\r\n\r\n"
            chunks.append(f"--{boundary}\r\n{head}".encode() + value[1] + b"\r\n")
        else:
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks) + f"--{boundary}--\r\n".encode()


def request(server: Server, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """The raw answer to one request; `path` is sent exactly as given."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def send_and_close(server: Server, head: str, body: bytes) -> tuple[int, dict]:
    """A request whose client stops sending after `body` (shut down its side): the status and JSON answer."""
    with socket.create_connection(server.server_address[:2], timeout=60) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server has answered and closed already
            pass
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, data = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(data)


def post(server: Server, task: str, **fields) -> tuple[int, dict]:
    content_type, body = multipart(fields)
    status, headers, data = request(server, "POST", f"/api/{task}", body, {"Content-Type": content_type})
    assert headers["content-type"] == "application/json"
    return status, json.loads(data)


def png(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    image.load()
    return image


def mask_file(size=(96, 64), box=(30, 20, 60, 44)) -> tuple[str, bytes]:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return "mask.png", buffer.getvalue()


def still_serving(server: Server) -> None:
    status, _, data = request(server, "GET", "/api/info")
    assert status == 200 and json.loads(data)["tasks"] == list(TASKS)


# --- the page ---------------------------------------------------------------------------------------


def test_the_page_and_its_files(server):
    status, headers, html = request(server, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"<canvas" in html and b'<script type="module" src="/static/app.js">' in html
    assert "script-src 'self'" in headers["content-security-policy"]  # nothing from the network
    modules = ("app.js", "state.js", "canvas.js", "api.js", "panels.js")
    for name in (*modules, "app.css", "index.html"):
        status, headers, body = request(server, "GET", f"/static/{name}")
        kind = {"js": "text/javascript", "css": "text/css", "html": "text/html"}[name.rpartition(".")[2]]
        assert status == 200 and headers["content-type"].startswith(kind) and body
        assert b"http" not in body.replace(b"HTTP ", b"")  # no address of anything outside the server
    imported = {m for name in modules for m in re.findall(r'from "\./([\w.]+)"', request(server, "GET",
                f"/static/{name}")[2].decode())}
    assert imported == set(modules) - {"app.js"}  # each module is imported, and served


@pytest.mark.parametrize("path", [
    "/../pyproject.toml", "/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%2f..%2fpyproject.toml", "/static/%2E%2E%5C%2E%2E%5Cpyproject.toml", "/etc/passwd",
    "//etc/passwd", "/static//etc/passwd", "/static/" + str(Path(__file__).resolve()),
    "/static/../ui/server.py", "/static/__init__.py", "/static", "/api/../static/app.js",
    "http://127.0.0.1/etc/passwd"])
def test_no_path_outside_the_static_files(server, path):
    status, headers, body = request(server, "GET", path)
    assert status == 404 and json.loads(body)["error"].endswith("not found")
    still_serving(server)


# --- every task -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, fields, size", [
    ("colorize", {}, (96, 64)),
    ("inpaint", {"mask": mask_file()}, (96, 64)),
    ("uncrop", {"side": "right", "ratio": "0.5"}, (192, 64)),
    ("uncrop", {"side": "top", "ratio": "0.25"}, (96, 85)),
    ("jpeg", {"quality": "10"}, (96, 64)),
])
def test_every_task_answers_pngs_with_their_metadata(server, task, fields, size):
    status, answer = post(server, task, image=PHOTO, seed=7, num_samples=2, steps=2, **fields)
    assert status == 200, answer
    assert answer["seeds"] == [7, 7] and answer["samples"] == [0, 1]
    assert answer["names"] == [f"kodim05-96.{task}.0.png", f"kodim05-96.{task}.1.png"]
    first, second = (png(url) for url in answer["images"])
    assert first.size == second.size == size
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # two samples, two draws
    meta = json.loads(first.text["palette"])
    assert (meta["input"], meta["task"], meta["seed"], meta["sample"], meta["steps"]) == \
        ("kodim05-96.png", task, 7, 0, 2)
    assert meta["model"] == "ui-tiny" and first.text["Software"].startswith("palette ")


def test_colorize_with_hints_and_a_reference(server):
    hints = "10,10,#ff0000,4\n  \n70,40,#0000ff\n"
    status, answer = post(server, "colorize", image=PHOTO, hints=hints, reference=DATA / "kodim23-96.png")
    assert status == 200, answer
    out = png(answer["images"][0])
    meta = json.loads(out.text["palette"])
    assert meta["hints"] == "10,10,#ff0000,4 70,40,#0000ff" and meta["reference"] == "kodim23-96.png"
    r, g, b = (int(v) for v in np.asarray(out.convert("RGB"))[10, 10])
    assert r > g and r > b  # the hint's colour is enforced where it was put
    status, plain = post(server, "colorize", image=PHOTO)
    assert plain["images"][0] != answer["images"][0]


def test_the_same_png_as_the_command_line(server, model_dir, tmp_path, monkeypatch, capsys):
    """Pixels and metadata of a downloaded sample are those `palette inpaint` writes."""
    from palette_cli.cli import main

    name, data = mask_file()
    (tmp_path / name).write_bytes(data)
    monkeypatch.setattr(sys, "argv", ["palette", "inpaint", str(PHOTO), "--mask", str(tmp_path / name), "--seed",
                                      "3", "-n", "2", "--model", str(model_dir), "--device", "cpu", "-o",
                                      str(tmp_path / "out"), "-q"])
    with pytest.raises(SystemExit) as exit_code:
        main()
    assert exit_code.value.code == 0, capsys.readouterr().err
    status, answer = post(server, "inpaint", image=PHOTO, mask=(name, data), seed=3, num_samples=2)
    assert status == 200, answer
    for k, url in enumerate(answer["images"]):
        written = Image.open(tmp_path / "out" / answer["names"][k])
        assert written.text == png(url).text
        assert np.array_equal(np.asarray(written), np.asarray(png(url)))


# --- bad requests: 4xx, a message naming the problem, the server goes on ------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("task, fields, status, message", [
    ("jpeg", {"image": ("notes.txt", b"not an image at all")}, 400,
     "image: notes.txt: not an image, or a format Pillow cannot read"),
    ("jpeg", {"image": ("half.png", PHOTO.read_bytes()[:300])}, 400, "image: half.png: truncated or corrupt image"),
    ("jpeg", {"image": ("bomb.png", bomb_png(30000, 30000))}, 400, "decompression bomb guard"),
    ("inpaint", {"image": PHOTO, "mask": mask_file((32, 32), (0, 0, 10, 10))}, 400,
     "mask: mask.png: mask is 32x32 but the photo is 96x64; a mask must have the image's size"),
    ("inpaint", {"image": PHOTO, "mask": mask_file(box=(0, 0, 0, 0))}, 400, "mask: mask.png: mask is empty"),
    ("inpaint", {"image": PHOTO}, 400, "mask: missing; inpaint needs image and mask"),
    ("inpaint", {"image": PHOTO, "mask": ("mask.png", b"GIF89a")}, 400, "mask: mask.png:"),
    ("colorize", {"image": PHOTO, "hints": "10,10,red"}, 400,
     "hints: '10,10,red': colour must be #rrggbb (six hex digits), got 'red'"),
    ("colorize", {"image": PHOTO, "hints": "10;10;#ff0000"}, 400, "hints: '10;10;#ff0000': expected x,y,#rrggbb"),
    ("colorize", {"image": PHOTO, "hints": "500,10,#ff0000"}, 400,
     "hints: 500,10,#ff0000: point (500, 10) is outside the 96x64 photo"),
    ("colorize", {"image": PHOTO, "reference": ("ref.jpg", b"\xff\xd8 broken")}, 400, "reference: ref.jpg:"),
    ("colorize", {"seed": 1}, 400, "image: missing; colorize needs image"),
    ("colorize", {"image": PHOTO, "mask": mask_file()}, 400,
     "mask: not a field of colorize; it takes image, seed, num_samples, steps, hints, reference"),
    ("colorize", {"image": "photo.png"}, 400, "image: expected a file"),
    ("uncrop", {"image": PHOTO, "side": "diagonal"}, 400,
     "side must be one of left, right, top, bottom, all, got 'diagonal'"),
    ("uncrop", {"image": PHOTO, "ratio": "2"}, 400, "ratio must be a number between 0.01 and 0.99, got 2.0"),
    ("uncrop", {"image": PHOTO, "ratio": "nan"}, 400, "ratio must be a number between 0.01 and 0.99, got nan"),
    ("jpeg", {"image": PHOTO, "quality": "0"}, 400, "quality must be an integer between 1 and 100, got 0"),
    ("jpeg", {"image": PHOTO, "num_samples": "99"}, 400, "num_samples: must be between 1 and 8, got 99"),
    ("jpeg", {"image": PHOTO, "seed": "abc"}, 400, "seed: expected an integer, got 'abc'"),
    ("jpeg", {"image": PHOTO, "steps": "50000"}, 400, "steps must be an integer between 1 and 10000, got 50000"),
    ("blur", {"image": PHOTO}, 404, "/api/blur: not found"),
])
def test_bad_requests_are_named_and_the_server_goes_on(server, task, fields, status, message):
    got, answer = post(server, task, **fields)
    assert got == status and message in answer["error"], answer
    assert "Traceback" not in answer["error"] and str(server.workdir) not in answer["error"]
    still_serving(server)


def test_bad_bodies(server):
    content_type, body = multipart({"image": PHOTO})
    cases = [
        ({"Content-Type": "application/json"}, b"{}", 415, "send the form as multipart/form-data"),
        ({"Content-Type": "multipart/form-data"}, body, 400, "without a boundary"),
        ({"Content-Type": content_type}, body[:-40], 400, "malformed multipart body"),
        ({"Content-Type": content_type, "Content-Length": "12x"}, body, 400, "is not a number"),
    ]
    for headers, data, status, message in cases:
        got, _, answer = request(server, "POST", "/api/jpeg", data, headers)
        assert got == status and message in json.loads(answer)["error"], (headers, answer)
    got, _, answer = request(server, "PUT", "/api/jpeg", b"")
    assert got == 501 and json.loads(answer)["error"]
    head = f"POST /api/jpeg HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
    got, answer = send_and_close(server, head + f"Content-Length: {len(body) + 10}\r\n", body)
    assert got == 400 and answer["error"] == "the body ended before its Content-Length"
    got, answer = send_and_close(server, head, body)
    assert got == 411 and answer["error"] == "send a Content-Length"
    still_serving(server)


def test_an_upload_over_the_limit_is_refused_before_it_is_read(server, monkeypatch):
    monkeypatch.setattr(server, "max_bytes", 20_000)
    content_type, body = multipart({"image": ("big.png", b"\0" * 30_000)})
    status, _, answer = request(server, "POST", "/api/jpeg", body, {"Content-Type": content_type})
    assert status == 413 and json.loads(answer)["error"] == "upload of 29.5 KiB is over the limit of 19.5 KiB"
    head = f"POST /api/jpeg HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
    status, answer = send_and_close(server, head + f"Content-Length: {10**12}\r\n", body)
    assert status == 413 and answer["error"] == "upload of 953674.3 MiB is over the limit of 19.5 KiB"
    monkeypatch.undo()
    still_serving(server)


@pytest.mark.parametrize("host", ["127.attacker.example", "127.0.0.1.nip.io", "localhost.example", "127.1",
                                  "0x7f.0.0.1", "[::ffff:7f00:1:2]"])
def test_a_rebinding_name_is_not_this_machine(server, host):
    """A DNS name pointed at 127.0.0.1 (DNS rebinding) is refused as Host and as a POST's Origin."""
    port = server.server_address[1]
    status, _, answer = request(server, "GET", "/api/info", headers={"Host": f"{host}:{port}"})
    assert status == 403 and "is not this machine" in json.loads(answer)["error"]
    content_type, body = multipart({"image": PHOTO})
    for headers in ({"Host": f"{host}:{port}"}, {"Host": f"127.0.0.1:{port}"}):
        status, _, answer = request(server, "POST", "/api/jpeg", body, {
            "Content-Type": content_type, "Origin": f"http://{host}:{port}", **headers})
        assert status == 403, answer
    still_serving(server)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "[::1]"])
def test_loopback_names_are_this_machine(server, host):
    port = server.server_address[1]
    status, _, _ = request(server, "GET", "/api/info", headers={"Host": f"{host}:{port}"})
    assert status == 200


def test_the_413_comes_before_the_body_and_the_connection_closes(server):
    """A client that sends only the headers of a 70 MB upload gets its 413 at once, then the end of the stream."""
    content_type, _ = multipart({"image": PHOTO})
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(f"POST /api/jpeg HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {70 << 20}\r\n\r\n".encode() + b"\0" * 1000)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))  # returns: the server closed its side
    head, _, data = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413" and b"Connection: close" in head
    assert json.loads(data) == {"error": "upload of 70.0 MiB is over the limit of 64.0 MiB"}
    still_serving(server)


def test_32_requests_at_once_each_get_an_answer(server, monkeypatch):
    """Scripts that call the API in parallel get 200, or 503 with Retry-After once 16 wait: no resets."""
    monkeypatch.setattr(server.restorer, "max_waiting", 16)
    content_type, body = multipart({"image": PHOTO, "steps": 2})
    start = threading.Barrier(32)
    answers: list[tuple[int, dict[str, str], dict] | BaseException] = []

    def client():
        start.wait()
        try:
            status, headers, data = request(server, "POST", "/api/jpeg", body, {"Content-Type": content_type},
                                            timeout=600)  # the 16th waits for 16 restores on a busy machine
            answers.append((status, headers, json.loads(data)))
        except BaseException as exc:  # a reset: the failure this test is for
            answers.append(exc)

    threads = [threading.Thread(target=client) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert len(answers) == 32 and [a for a in answers if isinstance(a, BaseException)] == []
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503} and statuses[0] == 200, (statuses, answers[0][2])
    for status, headers, answer in answers:
        if status == 503:
            assert headers["retry-after"] == "2" and "already waiting" in answer["error"]
        else:
            assert png(answer["images"][0]).size == (96, 64)
    still_serving(server)


def test_a_full_wait_queue_is_answered_503_with_retry_after(server, monkeypatch):
    monkeypatch.setattr(server.restorer, "max_waiting", 2)
    answers: list[tuple[int, dict[str, str], bytes]] = []
    content_type, body = multipart({"image": PHOTO, "steps": 1})
    post_one = lambda: answers.append(request(server, "POST", "/api/jpeg", body, {"Content-Type": content_type}))
    threads = [threading.Thread(target=post_one) for _ in range(4)]
    with server.restorer._lock:  # a restore in progress: two wait, two are refused at once
        for thread in threads:
            thread.start()
        for _ in range(100):
            if len(answers) == 2:
                break
            time.sleep(0.05)
        assert [(status, headers["retry-after"], json.loads(data)) for status, headers, data in answers] == \
            [(503, "2", {"error": "2 restores are already waiting; try again in a moment"})] * 2
    for thread in threads:
        thread.join(60)
    assert [status for status, _, _ in answers] == [503, 503, 200, 200]


def test_only_this_machine_and_its_own_page(server):
    status, _, answer = request(server, "GET", "/", headers={"Host": "evil.example:7860"})
    assert status == 403 and "is not this machine" in json.loads(answer)["error"]
    content_type, body = multipart({"image": PHOTO})
    status, _, answer = request(server, "POST", "/api/jpeg", body,
                                {"Content-Type": content_type, "Origin": "http://evil.example"})
    assert status == 403 and "http://evil.example are refused" in json.loads(answer)["error"]
    host = "%s:%d" % server.server_address[:2]
    status, _, _ = request(server, "POST", "/api/jpeg", body, {"Content-Type": content_type, "Host": host,
                                                               "Origin": f"http://{host}"})
    assert status == 200


# --- one at a time, in a temporary folder --------------------------------------------------------


def test_one_restore_at_a_time_and_progress(server, monkeypatch):
    active, most, seen = [0], [0], []
    original = pipeline.restore_stream

    def slow(*args, **kwargs):
        active[0] += 1
        most[0] = max(most[0], active[0])
        time.sleep(0.3)
        seen.append(json.loads(request(server, "GET", "/api/progress")[2]))
        try:
            return list(original(*args, **kwargs))
        finally:
            active[0] -= 1

    monkeypatch.setattr(pipeline, "restore_stream", slow)
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(post(server, "jpeg", image=PHOTO)[0]))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)  # a loaded machine can take minutes
    assert answers == [200, 200, 200] and most == [1]
    assert all(p["busy"] and p["task"] == "jpeg" for p in seen) and max(p["waiting"] for p in seen) >= 1
    idle = json.loads(request(server, "GET", "/api/progress")[2])
    assert idle == {"task": None, "done": 0, "total": 0, "waiting": 0, "busy": False}


def test_stopping_ends_the_restore_in_progress_and_refuses_the_next(model_dir, monkeypatch):
    server = Server(Restorer(str(model_dir), device="cpu"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started, original = threading.Event(), pipeline.restore_stream

    def held(*args, **kwargs):
        started.set()
        time.sleep(0.5)  # the server is told to stop meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "restore_stream", held)
    answers: list[tuple[int, dict]] = []
    client = threading.Thread(target=lambda: answers.append(post(server, "jpeg", image=PHOTO)))
    client.start()
    try:
        assert started.wait(30)
        assert server.restorer.stop(timeout=30)  # returns once the restore has given up
        client.join(30)
        assert answers == [(503, {"error": "the server is stopping"})]
        assert post(server, "jpeg", image=PHOTO) == (503, {"error": "the server is stopping"})
    finally:
        server.shutdown()
        server.server_close()


def test_nothing_is_left_outside_the_temporary_folder(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = Server(Restorer(str(model_dir), device="cpu"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert post(server, "inpaint", image=PHOTO, mask=mask_file())[0] == 200
        assert post(server, "inpaint", image=PHOTO, mask=mask_file((8, 8)))[0] == 400
        assert list(server.workdir.iterdir()) == []  # each request's folder is gone with it
    finally:
        server.shutdown()
        server.server_close()
    assert not server.workdir.exists() and list(tmp_path.iterdir()) == []


def test_the_model_serves_its_tasks_and_the_built_in_models_the_others(tmp_path):
    from conftest import make_tiny_model

    restorer = Restorer(str(make_tiny_model(tmp_path / "jpeg-only", tasks=("jpeg",))), device="cpu")
    assert restorer.model_for("jpeg").source.endswith("jpeg-only")
    assert restorer.model_for("colorize").config.tasks == ("colorize",)  # the built-in one, loaded once
    assert restorer.model_for("colorize") is restorer.model_for("colorize")


# --- the command ------------------------------------------------------------------------------------


def palette(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the `palette` entry point in this process: exit code, stdout, stderr."""
    from palette_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["palette", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


class StoppedServer(Server):
    """A real server whose serve_forever is interrupted at once, as by Ctrl-C."""

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.served = True
        raise KeyboardInterrupt


def test_the_command_announces_opens_and_stops(model_dir, monkeypatch, capsys):
    from palette_cli.cli import ui
    from palette_cli.ui import server as server_module

    opened: list[str] = []
    monkeypatch.setattr(server_module, "Server", StoppedServer)
    monkeypatch.setattr(ui.webbrowser, "open", opened.append)
    code, out, err = palette(monkeypatch, capsys, "ui", "--port", "0", "--model", str(model_dir), "--device", "cpu")
    assert code == 0 and out.startswith("palette ui: http://127.0.0.1:") and "(Ctrl-C to stop)" in out
    for _ in range(50):  # the browser opens in a thread
        if not opened:
            time.sleep(0.1)
    assert opened == [out.split()[2]] and err.strip() == "palette ui: stopped" and "warning" not in err
    code, out, err = palette(monkeypatch, capsys, "ui", "--host", "localhost", "--port", "0", "--no-browser",
                             "--model", str(model_dir), "--device", "cpu")
    assert code == 0 and len(opened) == 1


def test_the_command_warns_off_loopback(model_dir, monkeypatch, capsys):
    from palette_cli.ui import server as server_module

    class Unbound:  # never binds: tests listen on 127.0.0.1 only
        def __init__(self, restorer, host, port, log):
            self.url = f"http://{host}:{port}/"

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            pass

    monkeypatch.setattr(server_module, "Server", Unbound)
    code, out, err = palette(monkeypatch, capsys, "ui", "--host", "0.0.0.0", "--no-browser", "--model",
                             str(model_dir), "--device", "cpu")
    assert code == 0 and "http://0.0.0.0:7860/" in out
    assert "warning: listening on 0.0.0.0: other machines can reach the page and run the models" in err


def test_the_command_fails_in_one_line(model_dir, tmp_path, monkeypatch, capsys):
    code, out, err = palette(monkeypatch, capsys, "ui", "--no-browser", "--model", str(tmp_path / "nothing"))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "nothing" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = palette(monkeypatch, capsys, "ui", "--no-browser", "--port", str(port), "--model",
                                 str(model_dir), "--device", "cpu")
    assert code == 1 and f"error: cannot listen on 127.0.0.1:{port}" in err and "pass another --port" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(model_dir):
    import os
    import signal
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "palette_cli", "ui", "--port", "0", "--no-browser", "--model",
                             str(model_dir), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = line.split()[2]
        host, port = url.removeprefix("http://").strip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err.strip().endswith("palette ui: stopped") and "Traceback" not in err


@pytest.mark.slow
def test_sigterm_stops_the_server_and_removes_its_folder(model_dir, tmp_path):
    import os
    import signal
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1]), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "palette_cli", "ui", "--port", "0", "--no-browser", "--model",
                             str(model_dir), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        host, port = proc.stdout.readline().split()[2].removeprefix("http://").strip("/").split(":")
        assert [p.name[:11] for p in tmp_path.iterdir()] == ["palette-ui-"]  # the server's folder, while it runs
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        content_type, body = multipart({"image": PHOTO})
        conn.request("POST", "/api/jpeg", body, {"Content-Type": content_type})
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err.strip().endswith("palette ui: stopped") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_page_is_installed_with_the_package():
    import fnmatch
    import tomllib

    root = Path(__file__).parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    patterns = setuptools["package-data"]["palette_cli.ui"]
    static = [p.name for p in (root / "palette_cli" / "ui" / "static").iterdir()]
    assert "palette_cli.ui" in setuptools["packages"] and {"index.html", "app.js", "app.css"} <= set(static)
    assert [name for name in static if not any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns)] == []
