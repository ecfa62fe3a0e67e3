"""Write a training list file from photo folders: deduplicated, evaluation photos kept out.

    python benchmarks/training_list.py TRAIN_DIR... --exclude EVAL_DIR... -o train_list.txt \
        [--min-saturation 15] [--min-colourfulness 15] [--exclude-list LABELS.tsv:val]

- exact duplicates (same bytes) and near-duplicates (same 8x8 average hash of the gray thumbnail)
  are kept once, first folder first;
- any photo whose thumbnail hash matches a photo under an --exclude folder (or a file named in an
  --exclude-list) is dropped, so evaluation photos never enter training even when copied elsewhere;
- with --min-saturation S, photos whose mean HSV saturation is below S (of 255) are dropped: near-gray
  photos teach a colorizer that gray is a colour;
- with --min-colourfulness C, photos whose Hasler-Suesstrunk colourfulness (of a 64x64 thumbnail, 0..255
  scale) is below C are dropped too (BigColor's and DDColor's cleaning uses 15).

Prints one JSON line of counts. The list holds absolute paths, one per line: `palette train LIST`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def find(folder: Path) -> list[Path]:
    """Image files under a folder (absolute paths, so the list works from any folder), sorted."""
    return sorted(p.absolute() for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colourfulness of an (H, W, 3) array on the 0..255 scale."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def fingerprint(path: Path) -> tuple[str, int, str, float, float] | None:
    """(path, 64-bit average hash, sha1 of the bytes, mean saturation, colourfulness) or None if unreadable."""
    try:
        data = path.read_bytes()
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))
            rgb = img.convert("RGB")
            small = rgb.resize((32, 32), Image.BILINEAR)
            colour = colourfulness(np.asarray(rgb.resize((64, 64), Image.BILINEAR)))
    except (OSError, ValueError):
        return None
    gray = np.asarray(small.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float32)
    bits = (gray > gray.mean()).flatten()
    ahash = int("".join("1" if b else "0" for b in bits), 2)
    sat = float(np.asarray(small.convert("HSV"), dtype=np.float32)[..., 1].mean())
    return str(path), ahash, hashlib.sha1(data).hexdigest(), sat, colour


def fingerprints(paths: list[Path], workers: int) -> list[tuple[str, int, str, float, float]]:
    with ProcessPoolExecutor(workers) as pool:
        return [f for f in pool.map(fingerprint, paths, chunksize=256) if f is not None]


def excluded_paths(folders: list[Path], lists: list[str]) -> list[Path]:
    """Evaluation photos: every image under the folders, plus `file.tsv:split` rows of that split."""
    paths = [p for folder in folders for p in find(folder)]
    for spec in lists:
        tsv, _, split = spec.partition(":")
        for line in Path(tsv).read_text().splitlines():
            cols = line.split("\t")
            if len(cols) >= 3 and not line.startswith("#") and cols[2].strip() == split:
                paths.append(Path(tsv).parent / cols[0])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--exclude", nargs="*", type=Path, default=[], help="evaluation photo folders")
    ap.add_argument("--exclude-list", nargs="*", default=[], help="LABELS.tsv:val rows to keep out")
    ap.add_argument("--min-saturation", type=float, default=0.0)
    ap.add_argument("--min-colourfulness", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    held_out = excluded_paths(args.exclude, args.exclude_list)
    banned = {f[1] for f in fingerprints(held_out, args.workers)}
    banned_files = {p.resolve() for p in held_out}
    candidates = [p for folder in args.folders for p in find(folder) if p.resolve() not in banned_files]
    seen_hash, seen_bytes, keep = set(), set(), []
    counts = {"found": len(candidates), "held_out": len(held_out), "unreadable": 0, "evaluation_match": 0,
              "duplicate": 0, "near_gray": 0, "dull": 0}
    prints = fingerprints(candidates, args.workers)
    counts["unreadable"] = len(candidates) - len(prints)
    for path, ahash, sha, sat, colour in prints:
        if ahash in banned:
            counts["evaluation_match"] += 1
        elif sha in seen_bytes or ahash in seen_hash:
            counts["duplicate"] += 1
        elif sat < args.min_saturation:
            counts["near_gray"] += 1
        elif colour < args.min_colourfulness:
            counts["dull"] += 1
        else:
            keep.append(path)
        seen_bytes.add(sha)
        seen_hash.add(ahash)
    args.output.write_text("".join(p + "\n" for p in keep))
    print(json.dumps({**counts, "kept": len(keep), "output": str(args.output)}))


if __name__ == "__main__":
    main()
