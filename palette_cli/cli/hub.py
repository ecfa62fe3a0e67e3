"""`palette convert` and `palette push`: bring trainer checkpoints in, publish model directories."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import Task, app, err, imports_done, out


class DType(str, Enum):
    """Precision of the written weights."""

    fp32 = "fp32"
    fp16 = "fp16"


LicenseOpt = Annotated[str | None, typer.Option(
    "--license", metavar="ID", help="License id for the model card (a Hub id like mit, cc-by-nc-4.0; "
                                    "default: unknown).")]


def _progress(message: str) -> None:
    """Library progress messages, dimmed on stderr."""
    err.print(f"[dim]{message}[/]", markup=True, highlight=False)


@app.command("convert")
def convert_command(
    src: Annotated[Path, typer.Argument(
        help="Trainer checkpoint: a .pth file, an epoch prefix like checkpoint/100, or a checkpoint folder "
             "(highest epoch; *_Network_ema.pth preferred).", show_default=False)],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT_DIR",
                                         help="Model directory to write.", show_default=False)],
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="TRAINER_CONFIG.json",
        help="The trainer's JSON config (comments allowed). Default: config.json beside the checkpoint or "
             "one folder up, else hyper-parameters read from the tensor shapes.")] = None,
    task: Annotated[Task | None, typer.Option(
        "--task", help="Task the model was trained for. Default: from the config, else inpaint.")] = None,
    dtype: Annotated[DType, typer.Option("--dtype", help="Precision of model.safetensors.")] = DType.fp32,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", min=8, help="Training resolution, when no config gives it (default 256).")] = None,
    num_head_channels: Annotated[int | None, typer.Option(
        "--num-head-channels", min=1, help="Channels per attention head, when no config gives it (default 32).")
    ] = None,
    num_heads: Annotated[int | None, typer.Option(
        "--num-heads", min=1, help="Fixed number of attention heads instead of --num-head-channels.")] = None,
    num_heads_upsample: Annotated[int | None, typer.Option(
        "--num-heads-upsample", min=1, help="Heads on the way up, if the trainer config set it apart.")] = None,
    new_attention_order: Annotated[bool | None, typer.Option(
        "--new-attention-order/--legacy-attention-order",
        help="The trainer's use_new_attention_order, when no config gives it (default: legacy).",
        show_default=False)] = None,
    license: LicenseOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model already in OUT_DIR.")] = False,
) -> None:
    """Convert a checkpoint of the PyTorch Palette trainer into a palette model directory."""
    from ..convert import convert_checkpoint

    imports_done()

    result = convert_checkpoint(
        src, output, config=config, task=task, dtype=dtype.value, image_size=image_size,
        num_heads=num_heads, num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample, new_attention_order=new_attention_order,
        license=license, overwrite=overwrite)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", markup=True, highlight=False)
    unet = result.config.unet
    settings = f"settings from {result.config_source}" if result.config_source else "settings inferred from the weights"
    out.print(f"converted {result.source} ({'EMA' if result.ema else 'non-EMA'} weights, {settings}) -> "
              f"{result.path}/ ({result.config.tasks[0]}, {result.config.image_size}px, base {unet.base_channels}, "
              f"mults {','.join(map(str, unet.channel_mults))}, {dtype.value})", markup=False)


@app.command("push")
def push_command(
    model_dir: Annotated[Path, typer.Argument(help="Model directory to upload.", show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="Hub repo, namespace/name.", show_default=False)],
    *,
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    revision: Annotated[str | None, typer.Option(
        "--revision", metavar="BRANCH", help="Branch to push to, created if needed (default: main).")] = None,
    license: LicenseOpt = None,
) -> None:
    """Upload a model directory to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    from ..hub import push_model

    imports_done()

    result = push_model(model_dir, repo_id, private=private, revision=revision, license=license,
                        callback=_progress)
    if result.card_updated:
        err.print(f"[yellow]note:[/] added Hub metadata to {model_dir}/README.md", markup=True, highlight=False)
    out.print(f"pushed {', '.join(result.files)} to {result.repo_id}@{result.revision}: {result.commit_url}",
              markup=False)
