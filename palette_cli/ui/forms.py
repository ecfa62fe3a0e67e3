"""The HTTP form of a restore: multipart/form-data parsed by hand, each field checked and turned into
the options the library takes. A problem is a `BadRequest`: an HTTP status and a message naming the field.

Uploaded files are written into the request's temporary folder and decoded from there by the same
functions as the command line (`images.load_photo`, `images.load_mask`), so the same pixel limits apply.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import images
from ..errors import PaletteError
from ..tasks.colour_controls import check_hints, parse_hint

# The fields every task takes, and those of each task; the first one is required.
COMMON_FIELDS = ("image", "seed", "num_samples", "steps")
TASK_FIELDS = {"colorize": ("hints", "reference"), "inpaint": ("mask",), "uncrop": ("side", "ratio"),
               "jpeg": ("quality",)}
REQUIRED = {"inpaint": ("image", "mask")}
FILE_FIELDS = ("image", "mask", "reference")
SIDES = ("left", "right", "top", "bottom", "all")
MAX_SAMPLES = 8  # samples per request: each is a full sampling run
MAX_HINTS = 256
MAX_SEED = 2**63


class BadRequest(PaletteError):
    """A request the server refuses: `status` (4xx) and a message naming the field at fault."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Part:
    """One field of a multipart body."""

    name: str
    data: bytes
    filename: str | None = None  # set for file fields

    @property
    def text(self) -> str:
        """The field's value as text (form fields are UTF-8)."""
        try:
            return self.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadRequest(f"{self.name}: not UTF-8 text") from None


_PARAM = re.compile(r'(?:^|;)\s*(name|filename)\s*=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)


def _boundary(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or BadRequest (415 for another type)."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise BadRequest(f"send the form as multipart/form-data, not {kind.strip() or 'no content type'}", 415)
    match = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', params, re.IGNORECASE)
    if not match:
        raise BadRequest("multipart/form-data without a boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


def _part(chunk: bytes) -> Part:
    """One part between two boundaries: its headers, a blank line, its data."""
    head, sep, data = chunk.partition(b"\r\n\r\n")
    if not sep:
        raise BadRequest("malformed multipart body (a part without headers)")
    params: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                      for m in _PARAM.finditer(value.partition(";")[2])}
    if not params.get("name"):
        raise BadRequest("malformed multipart body (a part without a field name)")
    return Part(params["name"], data, params.get("filename"))


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The fields of a multipart/form-data body by name; a field given twice or a broken body is refused."""
    delimiter = b"\r\n--" + _boundary(content_type)
    _preamble, *chunks, closing = (b"\r\n" + body).split(delimiter)
    if not closing.startswith(b"--"):
        raise BadRequest("malformed multipart body (no closing boundary)")
    fields: dict[str, Part] = {}
    for chunk in chunks:
        if not chunk.startswith(b"\r\n"):
            raise BadRequest("malformed multipart body (text after a boundary)")
        part = _part(chunk[2:])
        if part.name in fields:
            raise BadRequest(f"{part.name}: given twice")
        fields[part.name] = part
    return fields


def check_fields(task: str, fields: dict[str, Part]) -> dict[str, Part]:
    """The fields with a value (an empty field is an absent one), after refusing unknown and missing ones."""
    allowed = COMMON_FIELDS + TASK_FIELDS[task]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise BadRequest(f"{', '.join(unknown)}: not a field of {task}; it takes {', '.join(allowed)}")
    given = {name: part for name, part in fields.items() if part.data.strip()}
    for name in REQUIRED.get(task, ("image",)):
        if name not in given:
            raise BadRequest(f"{name}: missing; {task} needs " + " and ".join(REQUIRED.get(task, ("image",))))
    for name, part in given.items():
        if (name in FILE_FIELDS) != (part.filename is not None):
            raise BadRequest(f"{name}: expected {'a file' if name in FILE_FIELDS else 'a text field, not a file'}")
    return given


def _number(fields: dict[str, Part], name: str, kind: type, low: float, high: float, default: Any) -> Any:
    """A numeric field in [low, high], or `default` when absent."""
    if name not in fields:
        return default
    text = fields[name].text
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {text[:40]!r}") from None
    if not (low <= value <= high) or (kind is float and not math.isfinite(value)):
        raise BadRequest(f"{name}: must be between {low:g} and {high:g}, got {text[:40]}")
    return value


@dataclass(frozen=True)
class SamplingFields:
    """What every task takes besides the photo."""

    seed: int = 0
    num_samples: int = 1
    steps: int | None = None  # None: the model's


def sampling_fields(fields: dict[str, Part]) -> SamplingFields:
    """seed, num_samples and steps, checked."""
    return SamplingFields(_number(fields, "seed", int, -MAX_SEED, MAX_SEED - 1, 0),
                          _number(fields, "num_samples", int, 1, MAX_SAMPLES, 1),
                          _number(fields, "steps", int, 1, 10_000, None))


def upload_name(part: Part) -> str:
    """A safe file name for an upload: the name the browser sent, without folders or odd characters."""
    name = re.split(r"[\\/]", part.filename or "")[-1]
    name = re.sub(r"[^\w.+-]", "_", name).lstrip(".")[:100]
    return name or part.name


def save_upload(part: Part, folder: Path) -> Path:
    """Write an uploaded file as FOLDER/FIELD/NAME (its own subfolder: names never clash) and return the path."""
    path = folder / part.name / upload_name(part)
    path.parent.mkdir()
    path.write_bytes(part.data)
    return path


def _named(field: str, exc: PaletteError, folder: Path) -> BadRequest:
    """A decoding error with the temporary folder left out of its message: `FIELD: NAME: problem`."""
    return BadRequest(f"{field}: " + str(exc).replace(str(folder / field) + os.sep, ""))


def load_image(part: Part, folder: Path) -> tuple[Path, images.Photo]:
    """The uploaded photo's file and the photo, decoded as the command line decodes a file."""
    try:
        path = save_upload(part, folder)
        return path, images.load_photo(path)
    except PaletteError as exc:
        raise _named(part.name, exc, folder) from None


def task_options(task: str, fields: dict[str, Part], photo: images.Photo, folder: Path) -> dict[str, Any]:
    """The keyword options of `pipeline.prepare` for `task`, from checked fields."""
    if task == "inpaint":
        try:
            return {"mask": images.load_mask(save_upload(fields["mask"], folder), photo.size, "the photo")}
        except PaletteError as exc:
            raise _named("mask", exc, folder) from None
    if task == "uncrop":
        side = fields["side"].text if "side" in fields else "right"
        if side not in SIDES:
            raise BadRequest(f"side: must be one of {', '.join(SIDES)}, got {side[:40]!r}")
        return {"side": side, "ratio": _number(fields, "ratio", float, 0.01, 0.99, 0.5)}
    if task == "jpeg":
        return {"quality": _number(fields, "quality", int, 1, 100, None)}
    return _colour_options(fields, photo, folder)


def _colour_options(fields: dict[str, Part], photo: images.Photo, folder: Path) -> dict[str, Any]:
    """colorize: hints (one `x,y,#rrggbb[,r]` per line, in the photo's pixels) and a reference photo."""
    options: dict[str, Any] = {}
    if "hints" in fields:
        lines = [line.strip() for line in fields["hints"].text.splitlines() if line.strip()]
        if len(lines) > MAX_HINTS:
            raise BadRequest(f"hints: {len(lines)} lines, at most {MAX_HINTS}")
        try:
            options["hints"] = [parse_hint(line) for line in lines]
            check_hints(options["hints"], *photo.size)
        except PaletteError as exc:
            raise BadRequest("hints: " + str(exc).removeprefix("--hint ")) from None
    if "reference" in fields:
        path = save_upload(fields["reference"], folder)
        try:
            images.load_photo(path, draft=64)  # as the command line checks --reference before any photo
        except PaletteError as exc:
            raise _named("reference", exc, folder) from None
        options["reference"] = path
    return options
