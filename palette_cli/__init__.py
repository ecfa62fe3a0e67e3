"""palette: restore images with Palette image-to-image diffusion models.

    import palette_cli
    report = palette_cli.restore_files("jpeg", ["photos/"], output="restored/", quality=10)
    settings = palette_cli.RestoreSettings("inpaint", mask_box=(30, 10, 25, 20), num_samples=4)
    report = palette_cli.restore_files(settings, ["photo.png"], output="out/")
    model = palette_cli.load_model("colorize")

Names are imported on first use so that `import palette_cli` (and `palette --help`) stays fast
and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "PaletteError": "errors",
    "PaletteModel": "checkpoint",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "ModelConfig": "config",
    "UNetConfig": "config",
    "ScheduleConfig": "config",
    "convert_checkpoint": "convert",
    "push_model": "hub",
    "restore_files": "restore",
    "RestoreSettings": "settings",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
