"""`palette ui` in a real browser: headless Chromium, driven through chromedriver's W3C WebDriver HTTP API
with the standard library only. Opens the page, uploads a photo, paints a mask, runs inpaint and checks
the sample it shows. Skipped where Chromium or its driver is not installed (.ci/run installs both).

Run as a script, it takes the README's screenshot with the built-in models:

    python tests/test_ui_browser.py PHOTO docs/figures/ui.png
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900", "--force-device-scale-factor=1"]


class Browser:
    """One WebDriver session: `call` sends a command, the helpers name the ones the test needs."""

    def __init__(self, driver: str, session: str) -> None:
        self.base = f"{driver}/session/{session}"

    @staticmethod
    def request(url: str, method: str = "GET", body: dict | None = None, timeout: float = 60) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return json.loads(answer.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {url}: {exc.read().decode()[:500]}") from None

    def call(self, method: str, path: str, body: dict | None = None):
        return self.request(self.base + path, method, {} if method == "POST" and body is None else body)

    def find(self, css: str) -> str:
        return self.call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.find(css)}/click")

    def script(self, code: str, *args):
        return self.call("POST", "/execute/sync", {"script": code, "args": list(args)})

    def wait(self, code: str, timeout: float = 120):
        """The first truthy value of a script, polled."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.script(code)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for: {code}; status: {self.script(STATUS)}")

    def drag(self, css: str, points: list[tuple[int, int]]) -> None:
        """Press at the first point (CSS pixels from the element's centre), move through the others, release."""
        origin = {ELEMENT: self.find(css)}
        moves = [{"type": "pointerMove", "duration": 50, "origin": origin, "x": x, "y": y} for x, y in points]
        actions = [moves[0], {"type": "pointerDown", "button": 0}, *moves[1:], {"type": "pointerUp", "button": 0}]
        self.call("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse",
                                                    "parameters": {"pointerType": "mouse"}, "actions": actions}]})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("GET", "/screenshot"))


STATUS = "return document.getElementById('status').textContent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def browser() -> Iterator[Browser]:
    """A fresh headless Chromium (its own profile folder) behind a chromedriver on a free port."""
    port = free_port()
    driver_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="palette-chromium-") as profile:
        proc = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    if Browser.request(driver_url + "/status", timeout=2).get("ready"):
                        break
                except (OSError, AssertionError):
                    time.sleep(0.1)
            options = {"binary": CHROMIUM, "args": [*FLAGS, f"--user-data-dir={profile}"]}
            caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
            session = Browser.request(driver_url + "/session", "POST", caps)["sessionId"]
            try:
                yield Browser(driver_url, session)
            finally:
                Browser.request(f"{driver_url}/session/{session}", "DELETE")
        finally:
            proc.terminate()
            proc.wait(10)


STROKE = [(-60, -20), (-20, -10), (20, 0), (50, 10)]  # CSS pixels from the editor's centre
BOX = [(-90, 25), (-50, 45)]


def inpaint_in_the_page(page: Browser, url: str, photo: Path, stroke=STROKE, box=BOX, brush: int = 24) -> dict:
    """Open the page, upload `photo`, paint a stroke and a box, run inpaint; the first sample's size and source."""
    page.call("POST", "/url", {"url": url})
    page.wait("return document.readyState === 'complete'")
    page.call("POST", f"/element/{page.find('#photo')}/value", {"text": str(photo.resolve())})
    page.wait("const e = document.getElementById('editor'); return !e.hidden && e.width > 0")
    page.click("input[name=task][value=inpaint]")
    page.script("document.getElementById('brush-size').value = arguments[0]", brush)
    page.drag("#editor", stroke)
    if box:
        page.click("input[name=tool][value=box]")
        page.drag("#editor", box)
    return run(page)


def run(page: Browser) -> dict:
    """Click Run and wait for the new row of results: its first sample's size, source and download name."""
    before = page.script("return document.querySelectorAll('article.run').length")
    page.click("#run")
    page.wait(f"return document.querySelectorAll('article.run').length > {before}"
              " || document.getElementById('status').classList.contains('error')")
    assert "sample(s) in" in page.script(STATUS), page.script(STATUS)
    return page.wait("const img = document.querySelector('article.run img.result');"
                     "return img.complete && img.naturalWidth > 0 &&"
                     " {width: img.naturalWidth, height: img.naturalHeight, src: img.src.slice(0, 22),"
                     "  download: img.nextSibling.querySelector('a').download}")


@contextmanager
def serving(model: str | None) -> Iterator[str]:
    """A `palette ui` server on 127.0.0.1 (a free port) in a thread; its page's address."""
    from palette_cli.ui.restorer import Restorer
    from palette_cli.ui.server import Server

    server = Server(Restorer(model, device="cpu"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()


def sample(task: str, width: int, height: int) -> dict:
    return {"width": width, "height": height, "src": "data:image/png;base64,", "download": f"kodim05-96.{task}.0.png"}


needs_chromium = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                    reason="needs chromium and chromedriver (.ci/run installs them)")


@pytest.fixture(scope="module")
def controls_model_dir(tmp_path_factory) -> Path:
    """A tiny model of every task that also takes colour hints and a reference."""
    from conftest import TASKS, randomize
    from palette_cli import train
    from palette_cli.checkpoint import build_network, save_model
    from palette_cli.config import PRESETS, ModelConfig

    config = train.with_controls(ModelConfig(unet=PRESETS["tiny"], image_size=32, tasks=TASKS, steps=2))
    return save_model(tmp_path_factory.mktemp("models") / "controls", config, randomize(build_network(config)))


@pytest.mark.slow
@needs_chromium
def test_paint_a_mask_and_see_the_inpainted_sample(controls_model_dir):
    data = Path(__file__).parent / "data"
    with serving(str(controls_model_dir)) as url, browser() as page:
        assert inpaint_in_the_page(page, url, data / "kodim05-96.png") == sample("inpaint", 96, 64)
        # colorize: hints are dots on the canvas (a click on one removes it), removable from the list too.
        page.click("input[name=task][value=colorize]")
        for point in [(10, 10), (-30, 5), (60, -20), (60, -20)]:
            page.drag("#editor", [point])
        assert page.script("return document.querySelectorAll('#hints li').length") == 2
        page.click("#hints li button")
        assert page.script("return document.querySelectorAll('#hints li').length") == 1
        page.call("POST", f"/element/{page.find('#reference')}/value", {"text": str(data / "kodim23-96.png")})
        assert run(page) == sample("colorize", 96, 64)
        shown = page.script("return document.querySelector('article.run img.result').src").split(",", 1)[1]
        meta = json.loads(Image.open(io.BytesIO(base64.b64decode(shown))).text["palette"])
        x, y, colour, radius = meta["hints"].split(",")  # the hint left, where it was clicked, in photo pixels
        scale = page.script("return document.getElementById('editor').getBoundingClientRect().width") / 96
        assert abs(int(x) - (48 - 30 / scale)) <= 1 and abs(int(y) - (32 + 5 / scale)) <= 1
        assert (colour, radius, meta["reference"]) == ("#c83c3c", "3", "kodim23-96.png")
        page.click("input[name=task][value=uncrop]")
        page.script("document.getElementById('side').value = 'bottom'")
        assert run(page) == sample("uncrop", 96, 128)
        page.click("input[name=task][value=jpeg]")
        page.click("#recompress")
        assert run(page) == sample("jpeg", 96, 64)
        assert page.script("return document.querySelectorAll('article.run').length") == 4


def main(photo: str, screenshot: str) -> None:
    """The README's screenshot: the built-in inpaint model on `photo`, the page as a person sees it."""
    with serving(None) as url, browser() as page:
        page.call("POST", "/window/rect", {"width": 1400, "height": 1300})
        # A brush stroke over the lettering of the orange cap (kodim03, 768x512).
        inpaint_in_the_page(page, url, Path(photo), [(-22, -8), (20, 20), (62, 48)], None, 30)
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        image.save(screenshot, quality=90) if screenshot.endswith(".jpg") else image.save(screenshot)


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).parents[1]))
    main(*sys.argv[1:])
