"""`palette ui`: the local browser page (palette_cli/ui), started, announced and stopped with Ctrl-C."""

from __future__ import annotations

import signal
import threading
import webbrowser
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from .common import app, err, fail, imports_done, out, share_cores
from .options import RunOptions, option_groups


@dataclass(frozen=True)
class UiRunOptions(RunOptions):
    """The restoring commands' model and device options; the page serves several tasks, hence its own --model."""

    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Built-in model name, local model folder or Hub id (org/name or org/name@revision) "
        "for the tasks it was trained for. Default: the built-in model of each task.", show_default=False,
        rich_help_panel="Model and device")] = None


def _stop(signum: int, frame: object) -> None:
    """SIGTERM stops the server as Ctrl-C does: the restore in progress ends, the temporary folder goes."""
    raise KeyboardInterrupt


@app.command("ui")
@option_groups(run=UiRunOptions)
def ui_command(
    *,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. Anything but a loopback address lets other machines use the "
        "page and the models.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one.")] = 7860,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open the page in a browser.")] = False,
    run: UiRunOptions,
) -> None:
    """Draw inpainting masks, click colour hints and see the samples in a local browser page (offline).

    The models load once and serve every request, one restore at a time; each sample downloads as the
    PNG the matching command writes. --model serves the tasks it was trained for; the built-in models
    the others. Ctrl-C or SIGTERM stops the server.
    """
    share_cores()
    from ..errors import PaletteError
    from ..ui.restorer import Restorer
    from ..ui.server import Server, is_loopback

    imports_done()
    try:
        restorer = Restorer(run.model, device=run.device, dtype=run.dtype,
                            batch_size=run.batch_size, compile=run.compile)
    except PaletteError as exc:
        raise fail(str(exc)) from None
    try:
        server = Server(restorer, host, port, log=lambda line: err.print(line, markup=False))
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port or --host") from None
    if not is_loopback(host):
        err.print(f"[yellow]warning:[/] listening on {host}: other machines can reach the page and run the models",
                  markup=True)
    out.print(f"palette ui: {server.url}  (Ctrl-C to stop)", markup=False)
    if not no_browser:  # in a thread: a text-mode browser must not hold up the server
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if not restorer.stop():
            err.print("palette ui: a restore did not stop in time", markup=False)
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    err.print("palette ui: stopped", markup=False)
