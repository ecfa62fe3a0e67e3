"""`palette eval`: score a model against ground-truth photos and a diffusion-free baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import Task, app, err, error_line, imports_done, out, share_cores
from .options import DeviceOpt, DtypeOpt, SamplerOpt

# Kept in step with palette_cli.tasks / evaluate (a test checks it); spelled out here so that
# `palette --help` does not import torch.
MaskMode = Literal["center", "free-form", "box", "wide", "train"]
Side = Literal["left", "right", "top", "bottom", "all", "random"]
Refine = Literal["auto", "exemplar", "sdedit", "off"]

_ARROWS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "colorfulness": "colourfulness"}


@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Argument(help="Folder of ground-truth images (searched recursively) or one image.")],
    *,
    task: Annotated[Task, typer.Option("--task", "-t", help="Task to evaluate.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in name, model directory or Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder: report.json and grid.png.")],
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N images only.", min=1)] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", min=1,
                                             help="Samples per image; 2 or more also measures diversity.")] = 1,
    steps: Annotated[int | None, typer.Option(min=1, help="Sampling steps \\[default: the model's].")] = None,
    sampler: SamplerOpt = None,
    strength: Annotated[float | None, typer.Option(max=1.0, help="Sampler start level: 1 = pure noise, lower = "
                                                   "from the noised input \\[default: the model's].")] = None,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="Classifier-free guidance weight over the "
                                                   "encoder's view of the input and colour controls; 0 = off "
                                                   "\\[default: the model's].")] = None,
    plain_guidance: Annotated[bool, typer.Option("--plain-guidance", help="Plain classifier-free guidance instead "
                                                 "of PITI's normalized form.")] = False,
    hints: Annotated[int, typer.Option(min=0, help="Colorize: give the model N colour hints drawn from the ground "
                                       "truth (the scored points are the first 10 of them).")] = 0,
    reference: Annotated[bool, typer.Option("--reference", help="Colorize: give the model the ground truth as "
                                            "its colour reference.")] = False,
    refine: Annotated[Refine, typer.Option(help="inpaint/uncrop above the model's size: exemplar completes the fill "
                                           "from the photo's own patches, sdedit refines it with the model (models "
                                           "with a refine block), auto: exemplar for inpaint; off: none.")
                      ] = "auto",
    dtype: DtypeOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the degradations and the samples' noise.")] = 0,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality of the jpeg task's inputs.")] = 10,
    mask_mode: Annotated[MaskMode, typer.Option(help="Inpaint mask.")] = "center",
    side: Annotated[Side, typer.Option(help="Uncrop side; random: the training mix.")] = "right",
    image_size: Annotated[int | None, typer.Option(min=1, help="Evaluation size \\[default: the model's].")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Samples per network call.")] = None,
    grid_rows: Annotated[int, typer.Option(min=0, help="Images shown in grid.png.")] = 4,
    labels: Annotated[Path | None, typer.Option(help="TSV of file name and ImageNet class index, for classification "
                                                "accuracy \\[default: from nXXXXXXXX_*.JPEG file names].")] = None,
    features: Annotated[bool, typer.Option("--features/--no-features", help="Score CA, FD, KID and PD with the "
                                           "frozen ImageNet classifier EfficientNet-Lite0.")] = True,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors; the report is still "
                                        "written.")] = False,
) -> None:
    """Degrade ground-truth photos, restore them, and score model and baseline on the same inputs."""
    share_cores()
    from rich.progress import Progress

    from ..checkpoint import load_model
    from ..evaluate import EvalSettings, evaluate, save_report

    imports_done()

    settings = EvalSettings(task=task, num_samples=num_samples, sampler=sampler, steps=steps, seed=seed,
                            strength=strength, dtype=dtype, guidance=guidance, normalized=not plain_guidance,
                            hints=hints, reference=reference, refine=refine,
                            quality=quality, mask_mode=mask_mode, side=side, image_size=image_size,
                            batch_size=batch_size, limit=limit, grid_rows=grid_rows,
                            labels=None if labels is None else str(labels), features=features)
    loaded = load_model(model, device=device)
    with Progress(console=err, transient=True, disable=as_json or quiet or not err.is_terminal) as progress:
        bar = progress.add_task(f"eval {task}", total=None)
        result = evaluate(loaded, data, settings,
                          callback=lambda done, total: progress.update(bar, completed=done, total=total))
    written = save_report(result, output)
    report = result.report
    for problem in report["errors"]:
        error_line(problem["error"])
    if as_json:
        out.print(json.dumps(report, indent=2), markup=False)
    elif not quiet:
        _print_table(report)
        out.print(f"wrote {', '.join(str(p) for p in written)}", markup=False)
    if report["errors"]:
        raise typer.Exit(1)


def _print_table(report: dict) -> None:
    """Model vs baseline means, diversity, and the metrics that were skipped."""
    from rich.table import Table

    s = report["settings"]
    mean = report["mean"]
    n = report["num_images"]
    table = Table(title=f"{s['task']}: {s['model']} on {n} image(s) at {s['image_size']}px, "
                        f"{s['sampler']} {s['steps']} steps, {s['num_samples']} sample(s)",
                  caption=f"baseline: {report['baseline']}")
    gt = mean.get("ground_truth")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("baseline", justify="right")
    if gt:
        table.add_column("ground truth", justify="right")
    for key, label in _ARROWS.items():
        if key not in mean["model"]:
            continue
        cells = [f"{mean['model'][key]:.3f}", f"{mean['baseline'][key]:.3f}"]
        if gt:
            cells.append(f"{gt[key]:.3f}" if key in gt else "")
        table.add_row(label, *cells)
    out.print(table)
    wins = report["wins"]
    out.print(f"model beats the baseline on {wins['psnr']}/{n} images (PSNR), {wins['ssim']}/{n} (SSIM); "
              f"scored on the {report['scored_region']}", markup=False)
    div = report["diversity"]
    if "mean" in div:
        out.print(f"diversity: mean pairwise MS-SSIM {div['mean']:.3f} over {div['pairs']} pairs "
                  f"(lower = more diverse), mean absolute difference {div['mean_abs_diff']:.2f} of 255",
                  markup=False)
    _print_features(report["features"])
    out.print(f"not computed: {', '.join(report['skipped'])} (see report.json)", markup=False)


def _print_features(scores: dict) -> None:
    """CA, FD, KID and PD of model, baseline and ground truth."""
    from rich.table import Table

    if "skipped" in scores:
        return
    table = Table(title=f"in {scores['network']}'s feature space ({scores['labelled']} labelled, "
                        f"{scores['unlabelled']} unlabelled)", caption=scores["note"])
    for column in ("metric", "model", "baseline", "ground truth"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = (("ca", "CA (top-1 %) ↑", "{:.1f}"), ("fd", "FD ↓", "{:.2f}"), ("kid", "KID ↓", "{:.4f}"),
            ("pd", "PD ↓", "{:.2f}"))
    for key, label, fmt in rows:
        cells = []
        for name in ("model", "baseline", "ground_truth"):
            value = scores[name][key]
            cells.append("–" if value is None else fmt.format(value * 100 if key == "ca" else value))
        table.add_row(label, *cells)
    out.print(table)
