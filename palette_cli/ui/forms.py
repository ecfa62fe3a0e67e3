"""The HTTP form of a restore: multipart/form-data parsed by hand, each field parsed and turned into the
`RestoreSettings` the library takes (which checks every value, as for the command line). A problem is a
`BadRequest`: an HTTP status and a message naming the field.

Uploaded files are written into the request's temporary folder and decoded from there by the same
functions as the command line (`images.load_photo`, `images.load_mask`), so the same pixel limits apply.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import images
from ..errors import PaletteError
from ..settings import RestoreSettings, SettingsError

# The fields every task takes, and those of each task; the first one is required.
COMMON_FIELDS = ("image", "seed", "num_samples", "steps")
TASK_FIELDS = {"colorize": ("hints", "reference"), "inpaint": ("mask",), "uncrop": ("side", "ratio"),
               "jpeg": ("quality",)}
REQUIRED = {"inpaint": ("image", "mask")}
FILE_FIELDS = ("image", "mask", "reference")
MAX_SAMPLES = 8  # samples per request: each is a full sampling run, all held in memory until answered
MAX_HINTS = 256


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


def _number(fields: dict[str, Part], name: str, kind: type, default: Any) -> Any:
    """A numeric field as `kind` (its range is RestoreSettings' to check), or `default` when absent."""
    if name not in fields:
        return default
    text = fields[name].text
    try:
        return kind(text)
    except ValueError:
        raise BadRequest(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {text[:40]!r}") from None


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


def without_folder(message: str, folder: Path) -> str:
    """A message with the request's temporary folder left out (`NAME: problem` for FOLDER/FIELD/NAME), and
    the command line's option names as the form's fields."""
    message = re.sub(re.escape(str(folder) + os.sep) + r"\w+" + re.escape(os.sep), "", message)
    for option, field in (("--hint ", "hints: "), ("--reference: ", "reference: ")):
        if message.startswith(option):
            message = field + message.removeprefix(option)
    return message


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


def restore_settings(task: str, fields: dict[str, Part], photo: images.Photo, folder: Path) -> RestoreSettings:
    """The `RestoreSettings` of a checked form: the fields parsed here, every value checked by RestoreSettings
    (as for the command line), the colour hints against the photo's size, the reference opened."""
    num_samples = _number(fields, "num_samples", int, 1)
    if not 1 <= num_samples <= MAX_SAMPLES:  # the page's own limit: a request holds its samples in memory
        raise BadRequest(f"num_samples: must be between 1 and {MAX_SAMPLES}, got {num_samples}")
    values: dict[str, Any] = {"num_samples": num_samples, "seed": _number(fields, "seed", int, 0),
                              "steps": _number(fields, "steps", int, None)}
    if task == "inpaint":
        try:  # decoded here, so a mask of the wrong size is named before the restore waits its turn
            values["mask"] = images.load_mask(save_upload(fields["mask"], folder), photo.size, "the photo")
        except PaletteError as exc:
            raise _named("mask", exc, folder) from None
    elif task == "uncrop":
        values.update(side=fields["side"].text if "side" in fields else "right",
                      ratio=_number(fields, "ratio", float, 0.5))
    elif task == "jpeg":
        values["quality"] = _number(fields, "quality", int, None)
    else:
        lines = [line.strip() for line in fields["hints"].text.splitlines() if line.strip()] if "hints" in fields else []
        if len(lines) > MAX_HINTS:
            raise BadRequest(f"hints: {len(lines)} lines, at most {MAX_HINTS}")
        values["hints"] = tuple(lines)
        if "reference" in fields:
            values["reference"] = save_upload(fields["reference"], folder)
    try:
        settings = RestoreSettings(task, **values)
        settings.check_hints_inside(*photo.size)
        settings.check_files()
    except SettingsError as exc:
        raise BadRequest(without_folder(str(exc), folder)) from None
    return settings
