"""The HTTP side of `palette ui`, on the standard library's threading server.

    GET  /               the page (static/index.html)
    GET  /static/NAME    the page's other files: a fixed list read into memory at start, so no path
                         a request names ever reaches the file system
    GET  /api/info       tasks and limits, for the page
    GET  /api/progress   the restore in progress: task, done and total steps, how many wait
    POST /api/TASK       multipart/form-data (see forms.py) -> {"images": [data URLs], "seeds": [...], ...}

Every error is JSON `{"error": "..."}` with a 4xx status for the request's problems, 503 with
`Retry-After` when too many restores wait already, and 500 for the server's; the server goes on answering. Bound to a loopback address, it answers only requests that name
one as their Host (a page from elsewhere cannot reach it by DNS rebinding). Uploads and outputs live in
one temporary folder, removed on `server_close`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from .forms import MAX_SAMPLES, TASK_FIELDS, BadRequest, check_fields, load_image, parse_multipart, \
    restore_settings
from .restorer import Busy, ModelError, Restorer, Stopped

MAX_UPLOAD_BYTES = 64 << 20  # a request's whole body; the pixels are limited as the command line decodes
LINGER_S = 1.0  # after a 413, how long the rest of a refused body is dropped before the connection closes
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The page's own files and the images it makes; nothing from the network.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def static_files() -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, content type) of every file of the page, read once; "/" is index.html."""
    folder = resources.files(__package__) / "static"
    files = {f"/static/{entry.name}": (entry.read_bytes(), CONTENT_TYPES[Path(entry.name).suffix])
             for entry in folder.iterdir() if entry.is_file() and Path(entry.name).suffix in CONTENT_TYPES}
    files["/"] = files["/static/index.html"]
    return files


def _size(count: int) -> str:
    """Bytes for people: KiB below a MiB."""
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"


class TooLarge(BadRequest):
    """A body over the upload limit: answered at once, before it is read."""


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: a loopback IP address or `localhost`, nothing else (a DNS
    name such as 127.example.com may point anywhere, and a rebinding page would use one)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    """The page and the API for one `Restorer`. `port` 0 picks a free one (see `url`); `log` receives a
    line per restore and each server error's traceback (the library prints nothing itself)."""

    daemon_threads = True  # a Ctrl-C does not wait for a restore in progress
    request_queue_size = 128  # the listen backlog: scripts that send many requests at once get answers, not resets

    def __init__(self, restorer: Restorer, host: str = "127.0.0.1", port: int = 7860, *,
                 max_bytes: int = MAX_UPLOAD_BYTES, log: Callable[[str], None] | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.restorer, self.max_bytes, self.log = restorer, max_bytes, log or (lambda line: None)
        self.loopback = is_loopback(host)
        self.files = static_files()
        # Removed by server_close, which a failed bind calls too.
        self._workdir = tempfile.TemporaryDirectory(prefix="palette-ui-", ignore_cleanup_errors=True)
        self.workdir = Path(self._workdir.name)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        """The page's address, with the port actually bound."""
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self._workdir.cleanup()


class Handler(BaseHTTPRequestHandler):
    """One request: a route, a JSON answer or one of the page's files."""

    server: Server
    server_version = f"palette-ui/{__version__}"
    sys_version = ""
    timeout = 120  # seconds a client may stall while sending; a restore itself may take longer

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the library prints nothing); errors go to the server's `log`."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method) as JSON too."""
        self.close_connection = True
        self._json(code, {"error": message or HTTPStatus(code).phrase})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _allowed(self) -> bool:
        """On loopback, only requests addressed to a loopback name, and for a POST from its own page."""
        host = self.headers.get("Host", "")
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        origin = self.headers.get("Origin")
        if self.server.loopback and not is_loopback(name.lower()):
            self._json(403, {"error": f"Host {host[:80]!r} is not this machine; open {self.server.url}"})
        elif self.command == "POST" and origin is not None and origin != f"http://{host}":
            self._json(403, {"error": f"requests from {origin[:80]} are refused; use the page at {self.server.url}"})
        else:
            return True
        return False

    def do_GET(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path == "/api/progress":
            self._json(200, self.server.restorer.progress.snapshot())
        elif path == "/api/info":
            self._json(200, {"tasks": list(TASK_FIELDS), "max_bytes": self.server.max_bytes,
                             "max_samples": MAX_SAMPLES, "version": __version__})
        elif path in self.server.files:
            self._send(200, *self.server.files[path])
        else:
            self._json(404, {"error": f"{path[:80]}: not found"})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        task = path.removeprefix("/api/")
        if not path.startswith("/api/") or task not in TASK_FIELDS:
            self._json(404, {"error": f"{path[:80]}: not found; POST to /api/{{{','.join(TASK_FIELDS)}}}"})
            return
        try:
            self._json(200, self._restore(task, self._body()))
        except TooLarge as exc:  # answered before the body is read, then the connection closes
            self.close_connection = True
            self._json(exc.status, {"error": str(exc)})
            self._linger()
        except BadRequest as exc:
            self.close_connection = True
            self._json(exc.status, {"error": str(exc)})
        except ModelError as exc:
            self._json(500, {"error": str(exc)})
        except Busy as exc:
            self._json(503, {"error": str(exc)}, {"Retry-After": str(exc.retry_after)})
        except Stopped as exc:
            self._json(503, {"error": str(exc)})
        except Exception as exc:  # a bug: the client gets its name, the server's log the traceback
            self.server.log(traceback.format_exc())
            self._json(500, {"error": f"internal error ({type(exc).__name__}); see the server's output"})

    def _body(self) -> bytes:
        """The request's body, refused (413) above the upload limit before it is read."""
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest("send a Content-Length", 411)
        if not length.isdigit():
            raise BadRequest(f"Content-Length {length[:20]!r} is not a number")
        if int(length) > self.server.max_bytes:
            raise TooLarge(f"upload of {_size(int(length))} is over the limit of {_size(self.server.max_bytes)}", 413)
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            raise BadRequest("the body ended before its Content-Length")
        return body

    def _linger(self, seconds: float = LINGER_S) -> None:
        """After a refusal sent before the body: end our side, then drop what the client still sends for a
        moment before closing, so that the close does not reset the connection before the answer is read."""
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.25)
            end = time.monotonic() + seconds
            while time.monotonic() < end and self.connection.recv(1 << 16):
                pass
        except OSError:  # the client is gone or has gone quiet: close now
            pass

    def _restore(self, task: str, body: bytes) -> dict[str, Any]:
        """Check the form, decode the uploads, restore: the JSON answer."""
        fields = check_fields(task, parse_multipart(self.headers.get("Content-Type", ""), body))
        with tempfile.TemporaryDirectory(dir=self.server.workdir) as tmp:
            folder = Path(tmp)
            path, photo = load_image(fields["image"], folder)
            settings = restore_settings(task, fields, photo, folder)
            samples, seconds = self.server.restorer.restore(settings, path, folder=folder)
        self.server.log(f"{task}: {len(samples)} sample(s) of a {photo.size[0]}x{photo.size[1]} photo "
                        f"in {seconds:.1f} s")
        return {"images": ["data:image/png;base64," + base64.b64encode(s.png).decode() for s in samples],
                "seeds": [s.seed for s in samples], "samples": [s.sample for s in samples],
                "names": [s.name for s in samples], "seconds": round(seconds, 3)}
