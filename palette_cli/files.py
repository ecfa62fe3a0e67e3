"""Files: finding input images (files, folders, globs, list files), naming outputs, the job plan, masks.

One finder serves inference, training and evaluation: the same suffixes (what Pillow opens), the
same recursion, and our own outputs (`photo.colorize.0.png`) and hidden files always skipped, so a
rerun never restores or trains on what palette wrote.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import tasks
from .errors import PaletteError
from .settings import SettingsError

_GLOB_CHARS = "*?["


def is_output_name(name: str) -> bool:
    """Whether a file name looks like one of our outputs (`photo.colorize.0.png`), for any registered task."""
    pattern = re.compile(r"\.(?:" + "|".join(map(re.escape, tasks.names())) + r")\.\d+\.png$", re.IGNORECASE)
    return bool(pattern.search(name))


@dataclass(frozen=True)
class InputFile:
    """An input image and where its outputs go, relative to the output folder."""

    path: Path
    relative: Path  # e.g. `trip/photo.jpg` for `photos/trip/photo.jpg` read from `photos` with --recursive


def image_suffixes() -> set[str]:
    """File extensions Pillow can open."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _wanted(path: Path, suffixes: set[str]) -> bool:
    """An image file, not hidden, not one of our outputs."""
    return (path.suffix.lower() in suffixes and not path.name.startswith(".")
            and not is_output_name(path.name) and path.is_file())


def folder_images(folder: Path, recursive: bool = True, suffixes: set[str] | None = None) -> list[Path]:
    """The images in a folder (and its subfolders with `recursive`), sorted; hidden files and
    folders and our own outputs skipped. Inference, training and evaluation all list folders so."""
    suffixes = suffixes or image_suffixes()
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in paths if _wanted(p, suffixes)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _folder(folder: Path, recursive: bool, suffixes: set[str]) -> list[InputFile]:
    """The input files of a folder, keeping their path below it."""
    return [InputFile(p, p.relative_to(folder)) for p in folder_images(folder, recursive, suffixes)]


def _glob(pattern: str, suffixes: set[str]) -> list[InputFile]:
    """Files matching a glob; outputs keep the path below the pattern's first wildcard part."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    return [InputFile(p, p.relative_to(base)) for p in matches if _wanted(p, suffixes)]


def find_inputs(args: Iterable[str], *, recursive: bool = False) -> tuple[list[InputFile], list[str]]:
    """Expand files, folders and globs into input files, each once; and one message per bad arg."""
    suffixes = image_suffixes()
    found: list[InputFile] = []
    problems: list[str] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            items = _folder(path, recursive, suffixes)
            if not items:
                hint = "" if recursive else " (add --recursive to look in subfolders)"
                problems.append(f"{arg}: no images in this folder{hint}")
        elif path.exists() or not any(c in arg for c in _GLOB_CHARS):
            items = [InputFile(path, Path(path.name))]  # a missing file is reported when it is read
        else:
            items = _glob(arg, suffixes)
            if not items:
                problems.append(f"{arg}: no image matches this pattern")
        found.extend(items)
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique, problems


def _read_list_file(path: Path) -> list[Path]:
    """Paths listed in a text file, one per line; relative ones are relative to the list file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PaletteError(f"{path}: neither an image (by its extension) nor a UTF-8 list file") from None
    except OSError as err:
        raise PaletteError(f"{path}: cannot read list file ({err.strerror or err})") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            out.append(entry if entry.is_absolute() else path.parent / entry)
    return out


def training_images(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Training images: folders (recursive, sorted), single images and list files, deduplicated."""
    suffixes = image_suffixes()
    found: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found += folder_images(path, True, suffixes)
        elif path.is_file() and path.suffix.lower() in suffixes:
            found.append(path)
        elif path.is_file():
            for entry in _read_list_file(path):
                if entry.is_dir():
                    found += folder_images(entry, True, suffixes)
                else:
                    found.append(entry)  # a missing entry is reported by check_images
        else:
            raise PaletteError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def evaluation_images(data: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Ground-truth images: a folder (recursive, sorted) or a single file; the first `limit` of them."""
    data = Path(data)
    if data.is_file():
        found = [data]
    elif data.is_dir():
        found = folder_images(data, recursive=True)
        if not found:
            raise PaletteError(f"{data}: no images found")
    else:
        raise PaletteError(f"{data}: no such file or folder")
    if limit is not None:
        if limit < 1:
            raise PaletteError(f"limit must be at least 1, got {limit}")
        found = found[:limit]
    return found


def output_file(output: Path | None) -> Path | None:
    """`output` when it names one output file rather than a folder: a `.png` name that is not a folder.

    Outputs are PNG (with their settings in its text chunks), so another image name is refused rather
    than made a folder of that name."""
    if output is None or output.is_dir():
        return None
    suffix = output.suffix.lower()
    if suffix == ".png":
        return output
    if suffix in image_suffixes():
        raise SettingsError(f"-o {output}: outputs are PNG; name a .png file (one input, -n 1) or a folder")
    return None


def output_paths(item: InputFile, task: str, num_samples: int, output_dir: Path | None) -> list[Path]:
    """`OUTDIR/<relative dir>/<stem>.<task>.<i>.png`, or beside the input without an output folder."""
    folder = item.path.parent if output_dir is None else output_dir / item.relative.parent
    return [folder / f"{item.path.stem}.{task}.{i}.png" for i in range(num_samples)]


@dataclass
class Job:
    """One input: its file, its output paths, which of them to write."""

    item: InputFile
    outputs: list[Path]
    write: list[bool]


def plan(items: Iterable[InputFile], task: str, num_samples: int, output_dir: Path | None, *,
         skip_existing: bool = False, overwrite: bool = False) -> tuple[list[Job], int, list[str]]:
    """The jobs of a run, how many inputs are already done, and one message per input refused.

    An input is refused when its outputs would clash with another input's, overwrite an input, or
    exist already (unless `skip_existing` or `overwrite`). An output that names a file (`output_file`)
    is the one output of a single input and sample."""
    items = list(items)
    single = output_file(output_dir)  # `-o NAME.png`: that file is the one output
    if single is not None and (len(items) > 1 or num_samples > 1):
        what = f"{len(items)} inputs" if len(items) > 1 else f"-n {num_samples}"
        raise SettingsError(f"-o {output_dir}: a .png name takes one input and one sample, not {what}; "
                            f"give a folder instead")
    input_keys = {item.path.resolve() for item in items}
    claimed: dict[Path, Path] = {}
    jobs, skipped, problems = [], 0, []
    for item in items:
        outputs = [single] if single is not None else output_paths(item, task, num_samples, output_dir)
        keys = [p.resolve() for p in outputs]
        clash = next((claimed[k] for k in keys if k in claimed), None)
        if clash is not None:
            problems.append(f"{item.path}: its output {outputs[0].name} would also be written for {clash}; "
                            f"rename one of them or restore them into different folders")
            continue
        if any(k in input_keys for k in keys):
            problems.append(f"{item.path}: an output would overwrite another input ({outputs[0]}); use -o")
            continue
        exists = [p.exists() for p in outputs]
        if any(exists) and not (skip_existing or overwrite):
            first = outputs[exists.index(True)]
            problems.append(f"{first}: already exists; use --skip-existing to keep it or --overwrite to replace it")
            continue
        claimed.update(dict.fromkeys(keys, item.path))
        write = [not (e and skip_existing) for e in exists]
        if not any(write):
            skipped += 1
            continue
        jobs.append(Job(item, outputs, write))
    return jobs, skipped, problems


def find_mask(mask_dir: Path, item: InputFile) -> Path:
    """The mask of an input in a mask folder: same relative path and stem, PNG preferred."""
    folder = mask_dir / item.relative.parent
    stem = item.path.stem
    candidates = [folder / f"{stem}.png"] + sorted(p for p in folder.glob(f"{glob.escape(stem)}.*")
                                                    if p.suffix.lower() in image_suffixes())
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PaletteError(f"{item.path}: no mask for it in {mask_dir} (expected {folder / stem}.png)")
