"""One command for a machine with one CUDA GPU, done in about 8 minutes: tests, training, evaluation, speed.

    python benchmarks/pack_data.py --train PHOTOS... --val EVAL_PHOTOS --labels LABELS.tsv   # once, beforehand
    python benchmarks/gpu_session.py --out gpu-out                 # on the GPU machine
    python benchmarks/gpu_session.py --dry-run --out dry-out       # the same code on the CPU, toy sizes, < 3 min

Everything it reads travels with the working tree: the code, the built-in models and the packed
photos (`packed/shard.npz`, at most 24 MiB, written by pack_data.py into packed/, which git ignores:
a copy of the working tree made for the GPU machine must be told to bring it along). In order:

1. the CUDA-marked tests (`pytest -m cuda`);
2. for each built-in model in `--models` (colorize, inpaint): a finetune at 128 px with a large batch
   for `--train-seconds` (60), checkpointing (`palette_cli.train.finetune`: its card adds this run to the
   model's training history), then `palette_cli.evaluate` of the result and of the built-in model on
   the packed `val` photos (CA with their labels);
3. sampling throughput of the paper's 256 px network (random weights), 50 DDIM steps, batch 32,
   fp32 and bf16, eager and compiled (bf16).

DIR gets `report.json` (keys `device`, `versions`, `tests`, `training`, `eval`, `sampling`, rewritten
after every part so a cut-off session keeps what it finished) and each trained model folder (fp16
weights, config, card): 7 files of at most ~8 MB. `--dry-run` runs all of it on the CPU at toy sizes
(tiny network at 32 px, a few steps; without a shard it packs tests/data first); a test runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

import pack_data  # noqa: E402
from palette_cli import config as cfg  # noqa: E402
from palette_cli import train  # noqa: E402
from palette_cli.cards import read_history  # noqa: E402
from palette_cli.checkpoint import (CARD_NAME, build_network, load_model, read_config, read_weights,  # noqa: E402
                                    resolve, save_model)
from palette_cli.devices import autocast  # noqa: E402
from palette_cli.diffusion import gammas as schedule_gammas  # noqa: E402
from palette_cli.evaluate import EvalSettings, evaluate  # noqa: E402
from palette_cli.samplers import sample  # noqa: E402
from palette_cli.seeds import generator  # noqa: E402

SHARD = ROOT / "packed" / "shard.npz"


@dataclass(frozen=True)
class Plan:
    """The sizes of a session: the GPU session and its dry run differ here only."""

    device: str
    test_timeout: int  # seconds for `pytest -m cuda`
    sampling_preset: str
    sampling_size: int
    sampling_batch: int
    sampling_steps: int
    sampling_ways: tuple[tuple[str, bool], ...]  # (precision, compiled)
    train_size: int  # crop side of the finetunes
    train_batch: int
    train_seconds: float  # wall-clock budget of each finetune
    train_max_steps: int  # and its step limit, whichever comes first
    save_every: int
    workers: int  # data loader processes
    lr: float
    warmup: int
    eval_size: int
    eval_limit: int | None  # first N val photos; None: all


GPU = Plan("cuda", 150, "paper256", 256, 32, 50, (("fp32", False), ("bf16", False), ("bf16", True)),
           128, 128, 60.0, 100_000, 200, 12, 1e-4, 100, 256, None)
DRY = Plan("cpu", 120, "tiny", 32, 2, 2, (("fp32", False), ("bf16", False), ("fp32", True)),
           32, 4, 60.0, 3, 2, 0, 1e-4, 1, 64, 4)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    from train_speed import cpu_name

    return f"CPU: {cpu_name()} ({torch.get_num_threads()} threads)"


def versions() -> dict:
    import palette_cli

    return {"palette": getattr(palette_cli, "__version__", "?"), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def cuda_tests(plan: Plan) -> dict:
    """`pytest -m cuda` over the test suite in a fresh process: its counts and exit status."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=plan.test_timeout)
        tail, rc = done.stdout.strip().splitlines()[-1:] or [""], done.returncode
    except subprocess.TimeoutExpired:
        tail, rc = ["timed out"], None
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail[0])}
    return {"rc": rc, "summary": tail[0], **counts, "seconds": round(time.perf_counter() - start, 1)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sampling_speed(plan: Plan, precision: str, compiled: bool) -> dict:
    """Images/s of DDIM over a seeded random network of the preset (throughput only), after a warm-up
    run of 2 steps that also compiles."""
    device = torch.device(plan.device)
    config = cfg.ModelConfig(unet=cfg.preset(plan.sampling_preset), image_size=plan.sampling_size)
    torch.manual_seed(0)
    network = build_network(config).to(device, memory_format=torch.channels_last).eval()
    net = torch.compile(network) if compiled else network
    b, s = plan.sampling_batch, plan.sampling_size
    cond = (torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    gammas = schedule_gammas(config.sample_schedule).to(device)

    def run(steps: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device, precision):
            sample(net, cond, gammas, sampler="ddim", steps=steps, generators=[generator(0, i) for i in range(b)])
        _sync(plan.device)
        return time.perf_counter() - start

    warmup = run(2)
    seconds = run(plan.sampling_steps)
    return {"preset": plan.sampling_preset, "image_size": s, "batch": b, "steps": plan.sampling_steps,
            "precision": precision, "compile": compiled, "seconds": round(seconds, 3),
            "images_per_s": round(b / seconds, 3), "warmup_s": round(warmup, 1)}


class _Budget:
    """The finetune's callback and stop request: stop after `seconds` of training, keep the last log."""

    def __init__(self, seconds: float):
        self.deadline, self.last = time.perf_counter() + seconds, {}

    def __call__(self, event) -> None:
        if event.kind == "log":
            self.last = dict(event.metrics)

    def stop(self) -> bool:
        return time.perf_counter() > self.deadline


def finetune(plan: Plan, model: str, photos: Path, run: Path) -> tuple[Path, dict]:
    """Finetune a built-in model on the packed photos for the time budget; its figures."""
    tasks = read_config(resolve(model)).tasks
    config = train.TrainConfig(tasks=tasks, image_size=plan.train_size, batch_size=plan.train_batch,
                               steps=plan.train_max_steps, lr=plan.lr, warmup=plan.warmup, ema_decay=0.999,
                               crop="fit", save_every=plan.save_every, sample_every=0, log_every=10,
                               workers=plan.workers, precision="auto", seed=1)
    budget = _Budget(plan.train_seconds)
    start = time.perf_counter()
    result = train.finetune(model, [photos], run, config, device=plan.device, callback=budget,
                            should_stop=budget.stop)
    seconds = time.perf_counter() - start
    history = read_history((result.model_dir / CARD_NAME).read_text(encoding="utf-8"))
    return result.model_dir, {
        "model": model, "tasks": list(tasks), "steps": result.step, "batch": plan.train_batch,
        "image_size": plan.train_size, "images": result.step * plan.train_batch, "seconds": round(seconds, 1),
        "images_per_s_last_log": budget.last.get("images_per_s"), "loss_last_log": budget.last.get("loss"),
        "photos": result.images, "history": history.to_dict() if history else None}


def score(plan: Plan, task: str, models: dict[str, str | Path], data: dict) -> dict:
    """`palette eval`'s figures (means, CA/FD/KID/PD) of each model on the packed val photos."""
    settings = EvalSettings(task=task, image_size=plan.eval_size, limit=plan.eval_limit, grid_rows=0,
                            labels=str(data["labels"]))
    out = {}
    for name, spec in models.items():
        report = evaluate(load_model(spec, device=plan.device), data["val"], settings).report
        out[name] = {"num_images": report["num_images"], "mean": report["mean"], "features": report["features"]}
    return out


def keep_model(model_dir: Path, dest: Path) -> None:
    """The trained model folder in DIR, weights in fp16 (half the size; inference loads either)."""
    card = (model_dir / CARD_NAME).read_text(encoding="utf-8")
    save_model(dest, read_config(model_dir), read_weights(model_dir), dtype=torch.float16, card=card)


def _write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def session(plan: Plan, shard: Path, out: Path, models: list[str], work: Path) -> dict:
    """The whole session; report.json is rewritten after every part."""
    start = time.perf_counter()
    report: dict = {"device": device_name(plan.device), "dry_run": plan is DRY, "versions": versions(),
                    "plan": dataclasses.asdict(plan), "shard": str(shard)}
    data = pack_data.unpack(shard, work / "data")
    report["photos"] = data.pop("meta")
    report["tests"] = cuda_tests(plan)
    _write(out, report)
    report["training"], report["eval"] = {}, {}
    for model in models:
        model_dir, report["training"][model] = finetune(plan, model, data["train"], work / f"run-{model}")
        keep_model(model_dir, out / model)
        task = report["training"][model]["tasks"][0]
        report["eval"][model] = {"task": task, **score(plan, task, {"trained": model_dir, "builtin": model}, data)}
        _write(out, report)
    report["sampling"] = []
    for precision, compiled in plan.sampling_ways:
        report["sampling"].append(sampling_speed(plan, precision, compiled))
        _write(out, report)
    report["seconds"] = round(time.perf_counter() - start, 1)
    _write(out, report)
    return report


def toy_shard(work: Path) -> Path:
    """A shard of the test photos (tests/data), for a dry run on a clone without packed/."""
    data = ROOT / "tests" / "data"
    labelled = data / "labelled"
    sources = [[p for p in sorted(data.glob("*")) if p.is_file() and p.suffix in (".png", ".jpg")]]
    classes, _ = pack_data.read_labels(labelled / "LABELS.tsv")
    val = sorted(labelled.glob("*.png"))
    pack_data.pack(sources, val, classes, work / "toy.npz", train_size=64, val_size=64, max_mib=2)
    return work / "toy.npz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and the trained models")
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at toy sizes")
    parser.add_argument("--shard", help=f"packed photos, or `toy` for tests/data packed on the spot "
                        f"[default: {SHARD.relative_to(ROOT)}; a dry run without it: toy]")
    parser.add_argument("--models", default="colorize,inpaint", help="built-in models to finetune, comma-separated")
    parser.add_argument("--train-seconds", type=float, help="wall-clock budget of each finetune")
    args = parser.parse_args(argv)
    plan = DRY if args.dry_run else GPU
    if args.train_seconds is not None:
        plan = dataclasses.replace(plan, train_seconds=args.train_seconds)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --dry-run to check the script on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard = Path(args.shard) if args.shard and args.shard != "toy" else SHARD
        if args.shard == "toy" or (args.dry_run and not args.shard and not shard.is_file()):
            shard = toy_shard(work)
        elif not shard.is_file():
            raise SystemExit(f"{shard}: no packed photos; write them first with benchmarks/pack_data.py")
        report = session(plan, shard, args.out, [m for m in args.models.split(",") if m], work)
    print(json.dumps({k: report[k] for k in ("device", "seconds")} | {"out": str(args.out)}))


if __name__ == "__main__":
    main()
