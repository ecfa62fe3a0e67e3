"""Pack training and evaluation photos into one small file that travels with the working tree.

    python benchmarks/pack_data.py --train PHOTOS_A PHOTOS_B --val EVAL_PHOTOS --labels LABELS.tsv \
        --out packed/shard.npz --max-mib 24

Each training photo is shrunk (short side to `--train-size`), centre-cropped square and stored as
JPEG bytes (4:4:4 chroma: colour is what colorize learns); the evaluation photos likewise at
`--val-size`, under their own file names, with their ImageNet class when the labels file gives
one. Training sources are taken in turn (each shuffled with `--seed`), so a small source is not
drowned by a large one, until the file would pass `--max-mib`.

A labels file (`file<TAB>class[<TAB>split]`) keeps evaluation honest: a file it marks `val` is never
packed for training, and with a split column only its `val` files are packed for evaluation.
`unpack` writes the photos back as files (train/, val/, val/LABELS.tsv) for `palette train` and
`palette eval`. The shard goes into an ignored folder (packed/): it holds other people's photos.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from palette_cli.data import load_rgb  # noqa: E402
try:  # the training file finder, named training_images since the files.py rework
    from palette_cli.files import training_images as find_images  # noqa: E402
except ImportError:
    from palette_cli.files import find_images  # noqa: E402

MIB = 1 << 20
OVERHEAD = 64 * 1024  # the npz's headers and index arrays, kept free under the limit


def square_jpeg(path: Path, size: int, quality: int) -> bytes:
    """The photo, short side shrunk to `size`, centre-cropped square, as JPEG bytes (4:4:4)."""
    img = load_rgb(path)
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (w - size) // 2, (h - size) // 2
    buffer = io.BytesIO()
    img.crop((left, top, left + size, top + size)).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def read_labels(path: Path | None) -> tuple[dict[str, int], set[str]]:
    """(file name -> class index, names marked val) of a labels file; empty without one."""
    classes: dict[str, int] = {}
    val: set[str] = set()
    if path is None:
        return classes, val
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if line.startswith("#") or len(fields) < 2 or not fields[1].strip().isdigit():
            continue
        classes[fields[0]] = int(fields[1])
        if len(fields) > 2 and fields[2].strip() == "val":
            val.add(fields[0])
    return classes, val


def interleave(sources: list[list[Path]], seed: int) -> list[Path]:
    """Files of every source in turn, each source in its own seeded order."""
    rng = random.Random(seed)
    queues = []
    for files in sources:
        files = list(files)
        rng.shuffle(files)
        queues.append(files)
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def _blob(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated bytes and the offsets of each item (len + 1)."""
    offsets = np.cumsum([0] + [len(b) for b in items]).astype(np.int64)
    return np.frombuffer(b"".join(items), dtype=np.uint8), offsets


def pack(train_sources: list[list[Path]], val_files: list[Path], labels: dict[str, int], out: Path, *,
         train_size: int = 128, val_size: int = 256, quality: int = 90, max_mib: float = 24.0,
         seed: int = 0, limit: int | None = None) -> dict:
    """Write the shard; returns what went in."""
    val = [square_jpeg(p, val_size, quality) for p in val_files]
    budget = int(max_mib * MIB) - OVERHEAD - sum(map(len, val))
    if budget <= 0:
        raise SystemExit(f"the {len(val)} evaluation photos alone fill --max-mib {max_mib}")
    train: list[bytes] = []
    for path in interleave(train_sources, seed):
        if limit is not None and len(train) >= limit:
            break
        data = square_jpeg(path, train_size, quality)
        if len(data) > budget:
            break
        train.append(data)
        budget -= len(data)
    info = {"train": len(train), "val": len(val), "train_size": train_size, "val_size": val_size,
            "quality": quality, "seed": seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    (train_bytes, train_offsets), (val_bytes, val_offsets) = _blob(train), _blob(val)
    np.savez(out, train_bytes=train_bytes, train_offsets=train_offsets, val_bytes=val_bytes,
             val_offsets=val_offsets, val_names=np.array([p.stem + ".jpg" for p in val_files], dtype=str),
             val_classes=np.array([labels.get(p.name, -1) for p in val_files], dtype=np.int16),
             meta=np.array(json.dumps(info)))
    return {**info, "mib": round(out.stat().st_size / MIB, 2)}


def unpack(shard: Path, dest: Path) -> dict[str, Path]:
    """Write a shard's photos as files: dest/train/*.jpg, dest/val/*.jpg and dest/val/LABELS.tsv."""
    with np.load(shard, allow_pickle=False) as z:
        parts = {k: z[k] for k in z.files}
    train_dir, val_dir = dest / "train", dest / "val"
    for folder in (train_dir, val_dir):
        folder.mkdir(parents=True, exist_ok=True)
    blobs, offsets = parts["train_bytes"], parts["train_offsets"]
    for i in range(len(offsets) - 1):
        (train_dir / f"{i:06d}.jpg").write_bytes(blobs[offsets[i]:offsets[i + 1]].tobytes())
    blobs, offsets = parts["val_bytes"], parts["val_offsets"]
    lines = []
    for i, (name, label) in enumerate(zip(parts["val_names"], parts["val_classes"])):
        (val_dir / str(name)).write_bytes(blobs[offsets[i]:offsets[i + 1]].tobytes())
        if label >= 0:
            lines.append(f"{name}\t{int(label)}\n")
    labels = val_dir / "LABELS.tsv"
    labels.write_text("".join(lines), encoding="utf-8")
    return {"train": train_dir, "val": val_dir, "labels": labels, "meta": json.loads(str(parts["meta"]))}


def select(args: argparse.Namespace) -> tuple[list[list[Path]], list[Path], dict[str, int]]:
    """Training sources without evaluation photos, and the evaluation photos."""
    classes, marked_val = read_labels(args.labels)
    val_files = [p for p in find_images(args.val)] if args.val else []
    if marked_val:
        val_files = [p for p in val_files if p.name in marked_val]
    held_out = marked_val | {p.name for p in val_files}
    sources = [[p for p in find_images([src]) if p.name not in held_out] for src in args.train]
    return sources, val_files, classes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", required=True, help="training photo sources (folders, files, lists)")
    parser.add_argument("--val", nargs="*", default=[], help="evaluation photo sources")
    parser.add_argument("--labels", type=Path, help="file<TAB>class[<TAB>split] of the photos")
    parser.add_argument("--out", type=Path, default=Path("packed/shard.npz"))
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--max-mib", type=float, default=24.0)
    parser.add_argument("--limit", type=int, help="at most N training photos")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sources, val_files, classes = select(args)
    info = pack(sources, val_files, classes, args.out, train_size=args.train_size, val_size=args.val_size,
                quality=args.quality, max_mib=args.max_mib, seed=args.seed, limit=args.limit)
    print(json.dumps({"out": str(args.out), **info}))


if __name__ == "__main__":
    main()
