"""`palette ui` in a real browser: headless Chromium, driven through chromedriver's W3C WebDriver HTTP API
with the standard library only. Opens a photo, paints a mask (undo, redo), runs inpaint and finds the result
in place on the canvas, compares before/after, uses the result as the next photo and colorizes it, previews
and runs uncrop, runs jpeg, and opens a photo the browser cannot show. Skipped where Chromium or its driver
is not installed (.ci/run installs both).

Run as a script, it takes the docs' screenshot with the built-in models:

    python tests/test_ui_browser.py PHOTO docs/figures/ui.jpg
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

    def keys(self, *steps: tuple[str, str]) -> None:
        """Key actions: ("down" | "up", key), e.g. ("down", CONTROL), ("down", "z"), ("up", "z"), ("up", CONTROL)."""
        actions = [{"type": f"key{kind.capitalize()}", "value": key} for kind, key in steps]
        self.call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def press(self, *keys: str) -> None:
        """Press `keys` together (modifiers first) and release them."""
        self.keys(*[("down", k) for k in keys], *[("up", k) for k in reversed(keys)])

    def after_frames(self, code: str, *args):
        """A script's value once the canvas has drawn the state (two animation frames later)."""
        return self.call("POST", "/execute/async", {"script": "const done = arguments[arguments.length - 1];"
                         "requestAnimationFrame(() => requestAnimationFrame(() => done((() => {" + code + "})())));",
                         "args": list(args)})

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


CONTROL, SHIFT = "\ue009", "\ue008"  # WebDriver's key codes
STROKE = [(-60, -20), (-20, -10), (20, 0), (50, 10)]  # CSS pixels from the canvas's centre
BOX = [(-90, 25), (-50, 45)]
EDITOR = "document.getElementById('editor')"
# The canvas's pixel at photo pixel (x, y), and the view that maps one to the other.
PIXEL = (f"const e = {EDITOR}, v = JSON.parse(e.dataset.view);"
         "const d = e.getContext('2d').getImageData(Math.floor(v.x + (arguments[0] + 0.5) * v.zoom),"
         " Math.floor(v.y + (arguments[1] + 0.5) * v.zoom), 1, 1).data; return [d[0], d[1], d[2]];")


def text(page: Browser, element_id: str) -> str:
    return page.script(f"return document.getElementById('{element_id}').textContent")


def open_photo(page: Browser, url: str, photo: Path) -> None:
    """Load the page (if `url`) and open `photo` with the Open button's file field."""
    if url:
        page.call("POST", "/url", {"url": url})
        page.wait("return document.readyState === 'complete' && document.getElementById('editor').dataset.view")
    page.call("POST", f"/element/{page.find('#photo')}/value", {"text": str(photo.resolve())})
    page.wait(f"return document.getElementById('status').textContent.startsWith('{photo.name}')")


def task(page: Browser, name: str) -> None:
    page.click(f"input[name=task][value={name}] + span")


def paint(page: Browser, stroke=STROKE, box=BOX, brush: int = 24) -> None:
    """Inpaint: a brush stroke of `brush` screen pixels and a box (CSS pixels from the canvas's centre)."""
    task(page, "inpaint")
    page.script("const b = document.getElementById('brush-size'); b.value = arguments[0];"
                "b.dispatchEvent(new Event('input'))", brush)
    page.click("input[name=tool][value=brush] + span")
    page.drag("#editor", stroke)
    if box:
        page.click("input[name=tool][value=box] + span")
        page.drag("#editor", box)


def run(page: Browser, timeout: float = 120) -> dict:
    """Click Run and wait for the result on the canvas: the picked sample's size, source and download name."""
    page.script("for (const t of document.querySelectorAll('#thumbs .thumb')) t.dataset.stale = 'yes'")
    page.click("#run")
    page.wait("return document.querySelector('#thumbs .thumb:not([data-stale])') && !document.getElementById('run').disabled"
              " || document.getElementById('status').classList.contains('error')", timeout)
    assert "sample(s) in" in text(page, "status"), text(page, "status")
    return page.wait("const img = document.querySelector('#thumbs .thumb.picked img')"
                     " || document.querySelector('#thumbs .thumb[data-index=\"0\"] img');"
                     "const a = document.getElementById('download');"
                     "return img.complete && img.naturalWidth > 0 &&"
                     " {width: img.naturalWidth, height: img.naturalHeight, src: img.src.slice(0, 22), download: a.download}")


def shown_png(page: Browser) -> Image.Image:
    """The picked sample as the page holds it (the download link's data)."""
    href = page.script("return document.getElementById('download').href")
    return Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB")


def pixel(page: Browser, x: int, y: int) -> tuple[int, ...]:
    """The canvas's colour at photo pixel (x, y), once drawn."""
    return tuple(page.after_frames(PIXEL, x, y))


def close(a, b, tolerance: int = 3) -> bool:
    return max(abs(int(u) - int(v)) for u, v in zip(a, b)) <= tolerance


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
def test_the_editor(controls_model_dir, tmp_path):
    data = Path(__file__).parent / "data"
    photo = Image.open(data / "kodim05-96.png").convert("RGB")
    with serving(str(controls_model_dir)) as url, browser() as page:
        open_photo(page, url, data / "kodim05-96.png")
        assert text(page, "status") == "kodim05-96.png: 96x64"
        assert page.script(f"return {EDITOR}.dataset.showing") == "input"

        # Inpaint: a stroke and a box, each undone and redone with the buttons and the keys.
        paint(page)
        assert text(page, "mask-count") == "2 strokes"
        page.press(CONTROL, "z")
        assert text(page, "mask-count") == "1 stroke"
        page.click("#redo")
        assert text(page, "mask-count") == "2 strokes"
        page.click("#undo")
        page.press(CONTROL, SHIFT, "z")
        assert text(page, "mask-count") == "2 strokes"
        size = int(text(page, "brush-value"))
        page.press("]")
        assert int(text(page, "brush-value")) > size
        page.press("[")
        assert int(text(page, "brush-value")) == size

        # The result in place: the canvas shows the sample where the photo was, at the photo's scale.
        assert run(page) == sample("inpaint", 96, 64)
        assert page.script(f"return {EDITOR}.dataset.showing") == "result"
        assert page.script("return [...document.querySelectorAll('#thumbs .thumb span')].map(s => s.textContent)") == \
            ["input", "sample 0"]
        result = shown_png(page)
        zoom = json.loads(page.script(f"return {EDITOR}.dataset.view"))["zoom"]
        x, y = int(48 + 20 / zoom), 32  # under the stroke: filled
        assert not close(result.getpixel((x, y)), photo.getpixel((x, y)), 10)
        assert close(pixel(page, x, y), result.getpixel((x, y)))
        assert close(pixel(page, 5, 5), result.getpixel((5, 5)))

        # Before/after: hold B for the input; the slider shows the input left of its line.
        page.keys(("down", "b"))
        assert close(pixel(page, x, y), photo.getpixel((x, y)))
        page.keys(("up", "b"))
        assert close(pixel(page, x, y), result.getpixel((x, y)))
        set_split = "const r = document.getElementById('split'); r.value = arguments[0]; r.dispatchEvent(new Event('input'))"
        page.script(set_split, 0.9)
        assert close(pixel(page, x, y), photo.getpixel((x, y))) and close(pixel(page, 92, 5), result.getpixel((92, 5)))
        page.script(set_split, 0)
        assert close(pixel(page, x, y), result.getpixel((x, y)))

        # "Use this result": the sample is the photo now; undo brings the first photo and its result back.
        page.click("#use")
        assert text(page, "status") == "kodim05-96.inpaint.0.png is the photo now"
        assert page.script("return document.getElementById('strip').hidden") is True
        assert text(page, "mask-count") == "no strokes"
        assert close(pixel(page, x, y), result.getpixel((x, y)))
        page.press(CONTROL, "z")
        assert page.script("return document.getElementById('strip').hidden") is False
        assert text(page, "mask-count") == "2 strokes"
        page.click("#thumbs .thumb[data-index=input]")  # the first photo under its mask, half #ff2d55
        assert close(pixel(page, x, y), [(c + m) / 2 for c, m in zip(photo.getpixel((x, y)), (255, 45, 85))])
        page.press(CONTROL, "y")
        assert close(pixel(page, x, y), result.getpixel((x, y)))

        # ...then colorize it: hints are dots on the canvas (a click on one removes it), removable from the list.
        task(page, "colorize")
        for point in [(10, 10), (-30, 5), (60, -20), (60, -20)]:
            page.drag("#editor", [point])
        assert page.script("return document.querySelectorAll('#hints li').length") == 2
        page.click("#hints li button")
        assert page.script("return document.querySelectorAll('#hints li').length") == 1
        page.call("POST", f"/element/{page.find('#reference')}/value", {"text": str(data / "kodim23-96.png")})
        assert run(page) == {**sample("colorize", 96, 64), "download": "kodim05-96.inpaint.0.colorize.0.png"}
        meta = json.loads(shown_png_raw(page).text["palette"])
        hx, hy, colour, radius = meta["hints"].split(",")  # the hint left, where it was clicked, in photo pixels
        assert abs(int(hx) - (48 - 30 / zoom)) <= 1 and abs(int(hy) - (32 + 5 / zoom)) <= 1
        assert (colour, radius, meta["reference"], meta["input"]) == \
            ("#c83c3c", "3", "kodim23-96.png", "kodim05-96.inpaint.0.png")

        # Uncrop: before Run, the area it adds shows below the photo; after, the result fills it in place.
        open_photo(page, "", data / "kodim05-96.png")
        task(page, "uncrop")
        page.script("const s = document.getElementById('side'); s.value = 'bottom'; s.dispatchEvent(new Event('change'))")
        preview = pixel(page, 48, 66)
        task(page, "jpeg")
        assert pixel(page, 48, 66) == (0x15, 0x17, 0x1b)  # the canvas's background: nothing is added
        task(page, "uncrop")
        assert pixel(page, 48, 66) == preview and preview[2] > preview[0] + 20  # the blue hatching
        assert run(page) == sample("uncrop", 96, 128)
        grown = shown_png(page)
        assert close(pixel(page, 48, 90), grown.getpixel((48, 90))) and close(pixel(page, 48, 20), grown.getpixel((48, 20)))
        assert close(grown.getpixel((48, 20)), photo.getpixel((48, 20)))  # the photo kept where it was

        task(page, "jpeg")
        page.click("#recompress")
        assert run(page) == sample("jpeg", 96, 64)

        # A photo the browser cannot show: nothing of the one before stays, and its object URL is revoked.
        old_url = page.script("return document.querySelector('#thumbs .thumb[data-index=input] img').src")
        assert old_url.startswith("blob:")
        photo.save(tmp_path / "kodim05-96.tiff")
        open_photo(page, "", tmp_path / "kodim05-96.tiff")
        assert text(page, "stage-hint") == "kodim05-96.tiff: this browser cannot show it; Run sends it anyway"
        assert page.script(f"return {EDITOR}.dataset.showing") == "nothing"
        assert page.script("return document.getElementById('strip').hidden") is True
        assert page.after_frames(f"const d = {EDITOR}.getContext('2d').getImageData(700, 400, 1, 1).data;"
                                 "return [d[0], d[1], d[2]]") == [0x15, 0x17, 0x1b]
        assert page.call("POST", "/execute/async", {"script": "const done = arguments[1]; const i = new Image();"
                         "i.onload = () => done('loaded'); i.onerror = () => done('revoked'); i.src = arguments[0];",
                         "args": [old_url]}) == "revoked"
        assert run(page)["download"] == "kodim05-96.jpeg.0.png"


def shown_png_raw(page: Browser) -> Image.Image:
    href = page.script("return document.getElementById('download').href")
    return Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))


def main(photo: str, screenshot: str) -> None:
    """The docs' screenshot: the built-in inpaint model on `photo` (kodim03 at 512x341), the result in place
    with the input left of the compare line, as a person sees the page."""
    with serving(None) as url, browser() as page:
        page.call("POST", "/window/rect", {"width": 1400, "height": 900})
        open_photo(page, url, Path(photo))
        # A brush stroke over the lettering of the yellow cap; the compare line through it.
        paint(page, [(-309, -114), (-280, -97), (-250, -79), (-221, -62), (-192, -44)], None, 40)
        page.script("const s = document.getElementById('num-samples'); s.value = 2; s.dispatchEvent(new Event('change'))")
        run(page, timeout=3000)
        page.click("#thumbs .thumb[data-index='1']")
        page.script("const r = document.getElementById('split'); r.value = 0.25; r.dispatchEvent(new Event('input'))")
        page.after_frames("return 1")
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        image.save(screenshot, quality=90) if screenshot.endswith(".jpg") else image.save(screenshot)


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).parents[1]))
    main(*sys.argv[1:])
