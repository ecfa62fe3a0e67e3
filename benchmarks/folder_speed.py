"""Folder speed: images/s of a folder restore, and the share of the run the sampler waits for PNG writes.

    python benchmarks/folder_speed.py PHOTOS/ --task colorize -n 2 --repeat 2

Runs `restore_files` as `palette colorize PHOTOS/ -n 2 -o OUT` does (OUT a fresh temporary folder per
repeat) and prints one JSON line per repeat: outputs written, seconds, images/s, CPU seconds of the
process (all threads: what a busy machine charges), seconds spent encoding PNGs (on whichever thread) and seconds the run waited for them (`Report.writing`; where a Report has
no such field, as before the writer thread, every save is waited for). `--levels` instead re-encodes
the outputs of one run at each zlib level and prints size and time per level.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from palette_cli import images, restore_files


def _timed_saves() -> list[float]:
    """Wrap images.save_png to add up its seconds (thread-safe); returns the running total's box."""
    total, lock, save = [0.0], threading.Lock(), images.save_png

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return save(*args, **kwargs)
        finally:
            with lock:
                total[0] += time.perf_counter() - start

    images.save_png = timed
    return total


def run(folder: Path, task: str, num_samples: int, out: Path) -> dict:
    saves = _timed_saves()
    start, cpu = time.perf_counter(), time.process_time()
    report = restore_files(task, [folder], output=out, num_samples=num_samples)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    waited = getattr(report, "writing", saves[0])
    return {"outputs": len(report.written), "failed": len(report.failures), "seconds": round(seconds, 2),
            "images_per_s": round(len(report.written) / seconds, 3), "cpu_s": round(cpu, 2),
            "encode_s": round(saves[0], 2), "waited_s": round(waited, 2), "write_share": round(waited / seconds, 3)}


def levels(outputs: list[Path]) -> None:
    """Size and encode time of the outputs at each zlib level."""
    pictures = []
    for p in outputs:
        with Image.open(p) as im:
            pictures.append(im.copy())
    for level in range(10):
        start, size = time.perf_counter(), 0
        for picture in pictures:
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", compress_level=level)
            size += buffer.tell()
        print(json.dumps({"level": level, "seconds": round(time.perf_counter() - start, 3), "bytes": size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--task", default="colorize")
    parser.add_argument("-n", "--num-samples", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--levels", action="store_true", help="re-encode one run's outputs at zlib levels 0-9")
    args = parser.parse_args()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(run(args.folder, args.task, args.num_samples, Path(out))), flush=True)
            if args.levels:
                levels(sorted(Path(out).glob("*.png")))
                return


if __name__ == "__main__":
    main()
