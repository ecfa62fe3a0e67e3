"""Model directories (Hugging Face Hub layout) and where they come from.

A model directory holds `config.json` (a `ModelConfig`), `model.safetensors` (EMA weights, fp16 or
fp32) and `README.md` (the model card). `load_model` takes a built-in name, a local directory or a
Hub repo id (`org/name` or `org/name@revision`); Hub ids go through `huggingface_hub`, its cache,
`HF_HOME` and `HF_HUB_OFFLINE`. Only safetensors and JSON are ever read: never a pickle.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import config as cfg
from . import tasks as task_modules
from .atomic import atomic_path, write_text
from .cards import TrainingHistory, render_card
from .devices import as_dtype, pick_device
from .errors import PaletteError
from .models_index import builtin_dir
from .colour_head import ColourHead, HeadShape
from .unet import UNet

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")


@dataclass
class PaletteModel:
    """A loaded model: its config, its network (in eval mode) and where it came from."""

    config: cfg.ModelConfig
    network: UNet
    source: str  # the spec it was loaded from
    path: Path  # the directory it was read from
    colour_head: ColourHead | None = None  # colorize's colour head (config.colour_head), in eval mode

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype


def builtin_names() -> list[str]:
    """Names of the shipped models."""
    root = builtin_dir()
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file()) if root.is_dir() else []


def builtin_for_task(task: str) -> Path | None:
    """The built-in model trained for `task` when none is named after it (a multi-task model)."""
    for name in builtin_names():
        try:
            tasks = json.loads((builtin_dir() / name / CONFIG_NAME).read_text(encoding="utf-8")).get("tasks", [])
        except (OSError, ValueError):
            continue
        if task in tasks:
            return builtin_dir() / name
    return None


def resolve(spec: str | os.PathLike) -> Path:
    """The local directory of a model spec: a directory, a built-in name (or task) or a Hub id."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text in builtin_names():
        return builtin_dir() / text
    if "/" not in text and (for_task := builtin_for_task(text)) is not None:
        return for_task
    if _HUB_ID.match(text) and not path.exists():
        return _hub_snapshot(text)
    if path.exists():
        raise PaletteError(f"{text}: not a model directory (expected a folder with {CONFIG_NAME} "
                           f"and {WEIGHTS_NAME})")
    names = ", ".join(builtin_names()) or "none"
    raise PaletteError(f"{text}: no such model: not a directory, not a built-in model "
                       f"(built-in: {names}), not a Hub id (org/name)")


def _hub_snapshot(spec: str) -> Path:
    """Download (or find in the cache) a Hub model repo; `org/name@revision` pins a revision."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo_id, _, revision = spec.partition("@")
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        raise PaletteError(
            f"{spec}: not in the Hugging Face cache and the Hub cannot be reached "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}); fetch it once with network "
            f"access (`{fetch}`) or pass a local model directory") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise PaletteError(f"{spec}: no such model repo on the Hub, or it is private or gated "
                           f"(log in with `hf auth login` or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise PaletteError(f"{spec}: revision {revision!r} not found on the Hub") from None


def read_config(directory: Path) -> cfg.ModelConfig:
    """Parse and check `config.json` of a model directory."""
    file = directory / CONFIG_NAME
    if not file.is_file():
        raise PaletteError(f"{directory}: missing {CONFIG_NAME}; not a palette model directory")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PaletteError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise PaletteError(f"{file}: expected a JSON object")
    try:
        config = cfg.from_dict(data)
        task_modules.check_names(config.tasks, "tasks")
        task_modules.check_names(config.refine.tasks if config.refine else (), "refine.tasks")
    except PaletteError as err:
        raise PaletteError(f"{file}: {err}") from None
    return config


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Read `model.safetensors`, turning a missing or damaged file into a clear error."""
    file = directory / WEIGHTS_NAME
    if not file.is_file():
        raise PaletteError(f"{directory}: missing {WEIGHTS_NAME}")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise PaletteError(f"{file}: corrupt or truncated safetensors file ({err})") from None


def build_network(config: cfg.ModelConfig, state: dict[str, torch.Tensor] | None = None,
                  where: str = "weights") -> UNet:
    """A network for `config`, with `state` loaded strictly (every key, every shape) if given."""
    try:
        network = UNet(config.unet)
    except ValueError as err:
        raise PaletteError(f"{where}: invalid network config ({err})") from None
    if state is not None:
        expected = network.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                problems.append(f"{label} keys: {shown}")
        if problems:
            raise PaletteError(f"{where}: weights do not match the config ({'; '.join(problems)})")
        network.load_state_dict({k: v.float() for k, v in state.items()})
    return network.eval()


def load_model(spec: str | os.PathLike, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> PaletteModel:
    """Load a model from a built-in name, a local directory or a Hub id (`org/name[@rev]`).

    `dtype` takes the command line's names (auto, fp32, fp16, bf16) or a torch dtype."""
    dtype = as_dtype(dtype)
    directory = resolve(spec)
    config = read_config(directory)
    where = str(directory / WEIGHTS_NAME)
    state, head_state = split_head(read_weights(directory))
    network = build_network(config, state, where=where)
    network = network.to(device=pick_device(device), dtype=dtype)
    if network.out[2].weight.device.type == "cpu":
        # oneDNN's CPU convolutions are faster on NHWC weights (1.2-1.4x here, more under bf16).
        network = network.to(memory_format=torch.channels_last)
    head = build_colour_head(config, head_state, where)
    head = head.to(device=network.out[2].weight.device) if head is not None else None
    return PaletteModel(config=config, network=network, source=str(spec), path=directory, colour_head=head)


HEAD_PREFIX = "colour_head."  # the colour head's keys in model.safetensors


def split_head(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A model's weights -> (the UNet's, the colour head's without their prefix)."""
    head = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}, head


def build_colour_head(config: cfg.ModelConfig, state: dict[str, torch.Tensor], where: str) -> ColourHead | None:
    """The colour head of `config` with `state` loaded strictly, or None for a model without one."""
    spec = config.colour_head
    if spec is None:
        if state:
            raise PaletteError(f"{where}: holds colour_head weights, but config.json has no colour_head block")
        return None
    head = ColourHead(HeadShape(spec.bins, spec.channels, spec.fine_channels, spec.tail))
    expected = head.state_dict()
    bad = sorted(set(expected) ^ set(state)) + sorted(k for k in set(expected) & set(state)
                                                      if expected[k].shape != state[k].shape)
    if bad:
        raise PaletteError(f"{where}: colour_head weights do not match config.json's colour_head "
                           f"({', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''})")
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval().requires_grad_(False)


def default_card(config: cfg.ModelConfig, body: str = "", history: TrainingHistory | None = None) -> str:
    """The model card of a saved model directory: a title, `body`, and Hub metadata without a license
    (with the training history behind the weights when given)."""
    return render_card(f"# Palette model ({', '.join(config.tasks)})\n\n{body}", tasks=config.tasks,
                       license_line=False, history=history)


def save_model(directory: str | os.PathLike, config: cfg.ModelConfig, network: torch.nn.Module | dict,
               *, dtype: torch.dtype = torch.float32, card: str | None = None) -> Path:
    """Write a model directory (each file atomically); `network` may be a module or a state dict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = network.state_dict() if isinstance(network, torch.nn.Module) else network
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text(directory / CONFIG_NAME, json.dumps(cfg.to_dict(config), indent=2) + "\n")
    if card is not None or not (directory / CARD_NAME).exists():
        write_text(directory / CARD_NAME, card if card is not None else default_card(config))
    return directory
