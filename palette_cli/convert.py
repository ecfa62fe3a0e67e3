"""Convert checkpoints of the public PyTorch Palette trainer into palette model directories.

The trainer (Janspiry/Palette-Image-to-Image-Diffusion-Models) saves `{epoch}_Network.pth` and
`{epoch}_Network_ema.pth`: `torch.save` of its `Network.state_dict()`, the UNet under `denoise_fn.`
(the module names `palette_cli.unet` uses) plus six noise-schedule buffers. The UNet's
hyper-parameters come from the trainer's JSON config, from the tensor shapes, or from the caller;
every key must map and every shape must match, or nothing is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import temporary_name
from .cards import render_card
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, build_network, save_model
from .config import PAPER_SAMPLE_SCHEDULE, TRAIN_SCHEDULE, ModelConfig, ScheduleConfig, UNetConfig
from .diffusion import gammas as schedule_gammas
from .errors import PaletteError
from .tasks import TASKS

# Buffers of the trainer's Network that describe its training schedule, not the network.
SCHEDULE_BUFFERS = ("gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")
PREFIX = "denoise_fn."
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# The trainer's task names (`model.which_model.args.task`) in palette's words.
TRAINER_TASKS = {"inpainting": "inpaint", "colorization": "colorize", "uncropping": "uncrop"}
DEFAULT_TASK = "inpaint"  # the only public weights of that trainer are inpainting models
DEFAULT_IMAGE_SIZE = 256
ASSUMED_HEAD_CHANNELS = 32  # what every config shipped with the trainer uses
# Arguments of the trainer's UNet that change nothing in the weights or the output.
_IGNORED_ARGS = {"use_checkpoint", "use_fp16", "image_size"}
_TRAINER_DEFAULTS = {"num_heads": 1, "num_head_channels": -1, "num_heads_upsample": -1, "dropout": 0.0,
                     "channel_mults": (1, 2, 4, 8), "conv_resample": True, "use_scale_shift_norm": True,
                     "resblock_updown": True, "use_new_attention_order": False}
# Arguments the trainer's UNet requires (no default), mapped to `UNetConfig` fields.
_REQUIRED_ARGS = {"in_channel": "in_channels", "out_channel": "out_channels", "inner_channel": "base_channels",
                  "res_blocks": "num_res_blocks", "attn_res": "attn_factors"}
_EPOCH_FILE = re.compile(r"^(\d+)_(.+)\.pth$")

Callback = Callable[[str], None]  # a one-line progress message


@dataclass
class ConversionResult:
    """What `convert_checkpoint` wrote and how it decided."""

    path: Path  # the model directory written
    source: Path  # the checkpoint file read
    ema: bool  # whether it holds the EMA weights
    sha256: str  # of the source file
    config: ModelConfig
    config_source: Path | None  # the trainer config used, None when inferred from the weights
    notes: list[str] = field(default_factory=list)  # settings assumed because nothing determined them


def find_checkpoint(src: str | os.PathLike) -> tuple[Path, bool]:
    """The checkpoint file for SRC (a .pth file, a prefix like `ckpt/100` or a folder) and whether it is EMA.

    A prefix or a folder prefers `{epoch}_Network_ema.pth` over `{epoch}_Network.pth`; a folder takes
    its highest epoch.
    """
    path = Path(src).expanduser()
    if path.is_file():
        return path, path.name.endswith("_ema.pth")
    if path.is_dir():
        epochs = {int(m.group(1)) for p in path.iterdir() if (m := _EPOCH_FILE.match(p.name))}
        if epochs:
            return _pick_epoch_file(path / str(max(epochs)))
        pths = sorted(path.glob("*.pth"))
        if len(pths) == 1:
            return pths[0], pths[0].name.endswith("_ema.pth")
        raise PaletteError(f"{path}: no trainer checkpoint here (expected files like 100_Network_ema.pth"
                           + (f"; found {', '.join(p.name for p in pths)}" if pths else "") + ")")
    if path.parent.is_dir() and path.name.isdigit():
        return _pick_epoch_file(path)
    raise PaletteError(f"{src}: no such checkpoint file, folder or prefix (like checkpoint/100)")


def _pick_epoch_file(prefix: Path) -> tuple[Path, bool]:
    """`{prefix}_Network_ema.pth`, else any `{prefix}_*_ema.pth`, else `{prefix}_Network.pth`, else any."""
    files = sorted(prefix.parent.glob(f"{prefix.name}_*.pth"))
    ema = [p for p in files if p.name.endswith("_ema.pth")]
    for group in (ema, [p for p in files if p not in ema]):
        if group:
            preferred = [p for p in group if p.name in (f"{prefix.name}_Network_ema.pth",
                                                         f"{prefix.name}_Network.pth")]
            choice = (preferred or group)[0]
            return choice, group is ema
    raise PaletteError(f"{prefix}: no checkpoint {prefix.name}_Network_ema.pth or {prefix.name}_Network.pth "
                       f"in {prefix.parent}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth` state dict, through `torch.load(weights_only=True)` only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # torch raises many types here (UnpicklingError, RuntimeError, KeyError...)
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:  # weights_only refused a callable or class: the file could run code
            raise PaletteError(f"{path}: refusing to load: the file holds Python objects other than tensors, "
                               f"which could run code ({found.group(1)})") from None
        detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line),
                      text.splitlines()[0] if text else type(err).__name__)
        raise PaletteError(f"{path}: not a PyTorch checkpoint of tensors (torch.load with weights_only=True "
                           f"cannot read it: {detail})") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise PaletteError(f"{path}: not a state dict of tensors (found {type(state).__name__}); expected "
                           f"the trainer's {{epoch}}_Network_ema.pth or {{epoch}}_Network.pth")
    return state


def _listing(keys: list[str]) -> str:
    """The first few keys and how many more."""
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def split_state(state: dict[str, torch.Tensor], where: Path
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """UNet weights (prefix removed) and the stored training gammas; any other key is an error."""
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped network
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith((f"{PREFIX}noise_level_mlp.", f"{PREFIX}downs.")) for k in state):
        raise PaletteError(f"{where}: this checkpoint uses the trainer's 'sr3' UNet (module_name sr3); "
                           f"palette converts 'guided_diffusion' networks only")
    has_prefix = any(k.startswith(PREFIX) for k in state)
    unet, unmapped = {}, []
    for key, value in state.items():
        if key in SCHEDULE_BUFFERS:
            continue
        if key.startswith(PREFIX):
            unet[key[len(PREFIX):]] = value
        elif not has_prefix:  # a bare UNet state dict (`*_denoise_fn.pth` of some forks)
            unet[key] = value
        else:
            unmapped.append(key)
    if unmapped:
        raise PaletteError(f"{where}: key(s) that map to no part of the network: {_listing(sorted(unmapped))}")
    if "input_blocks.0.0.weight" not in unet or "cond_embed.0.weight" not in unet:
        raise PaletteError(f"{where}: not a Palette trainer checkpoint (no {PREFIX}input_blocks.0.0.weight "
                           f"or {PREFIX}cond_embed.0.weight among {len(state)} keys)")
    gammas = state.get("gammas")
    return unet, (gammas if gammas is not None and gammas.dim() == 1 else None)


# --- the trainer's JSON config --------------------------------------------------------------------

def strip_json_comments(text: str) -> str:
    """Remove `//` line comments outside strings (the trainer's configs are JSON with comments)."""
    out, i, in_string = [], 0, False
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


@dataclass
class TrainerConfig:
    """The parts of a trainer config that matter here."""

    unet: dict[str, Any]
    beta_schedule: dict[str, Any]
    task: str | None
    path: Path


def read_trainer_config(path: str | os.PathLike) -> TrainerConfig:
    """Parse a trainer config: the full layout (`model.which_networks[0].args`) or a flat one."""
    path = Path(path).expanduser()
    try:
        data = json.loads(strip_json_comments(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise PaletteError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PaletteError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(data, dict):
        raise PaletteError(f"{path}: expected a JSON object")
    task = None
    args = data
    model = data.get("model")
    if isinstance(model, dict) and "which_networks" in model:
        try:
            args = model["which_networks"][0]["args"]
        except (IndexError, KeyError, TypeError):
            raise PaletteError(f"{path}: model.which_networks[0].args is missing") from None
        which_model = model.get("which_model")
        if isinstance(which_model, dict) and isinstance(which_model.get("args"), dict):
            task = which_model["args"].get("task")
    elif "inner_channel" in data:  # the unet arguments alone
        args = {"unet": data}
    if not isinstance(args, dict) or not isinstance(args.get("unet"), dict):
        raise PaletteError(f"{path}: no UNet arguments found (expected model.which_networks[0].args.unet "
                           f"or a top-level 'unet')")
    if args.get("module_name", "guided_diffusion") != "guided_diffusion":
        raise PaletteError(f"{path}: module_name {args['module_name']!r} is not supported; palette converts "
                           f"'guided_diffusion' networks only")
    schedule = args.get("beta_schedule") or {}
    if not isinstance(schedule, dict):
        raise PaletteError(f"{path}: beta_schedule must be an object with 'train' and 'test'")
    return TrainerConfig(unet=args["unet"], beta_schedule=schedule, task=task, path=path)


def find_trainer_config(checkpoint: Path) -> TrainerConfig | None:
    """A trainer config beside the checkpoint or one folder up (where the trainer writes it), if any."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        candidate = folder / "config.json"
        if candidate.is_file():
            try:
                return read_trainer_config(candidate)
            except PaletteError:
                continue  # some other config.json (a palette model directory, say)
    return None


def unet_kwargs_from_trainer(args: dict[str, Any], where: Path) -> dict[str, Any]:
    """`UNetConfig` fields from the trainer's `unet` arguments, with the trainer's defaults."""
    names = {"in_channel": "in_channels", "out_channel": "out_channels", "inner_channel": "base_channels",
             "channel_mults": "channel_mults", "res_blocks": "num_res_blocks", "attn_res": "attn_factors",
             "num_heads": "num_heads", "num_head_channels": "num_head_channels",
             "num_heads_upsample": "num_heads_upsample", "dropout": "dropout",
             "use_scale_shift_norm": "use_scale_shift_norm", "resblock_updown": "resblock_updown",
             "conv_resample": "conv_resample"}
    unknown = sorted(set(args) - set(names) - _IGNORED_ARGS - {"use_new_attention_order"})
    if unknown:
        raise PaletteError(f"{where}: unknown UNet argument(s) {', '.join(unknown)}")
    merged = {**_TRAINER_DEFAULTS, **args}
    out = {names[k]: (tuple(v) if isinstance(v, list) else v) for k, v in merged.items() if k in names}
    out["legacy_attention_order"] = not merged["use_new_attention_order"]
    return out


def schedule_from_trainer(entry: Any, where: str) -> tuple[ScheduleConfig | None, str | None]:
    """A `ScheduleConfig` for one trainer beta schedule, or None and the reason it cannot be one."""
    if not isinstance(entry, dict) or "schedule" not in entry:
        return None, f"{where}: no schedule given"
    kind = entry["schedule"]
    n = int(entry.get("n_timestep", 0))
    if kind == "linear":
        return ScheduleConfig("linear", n, float(entry.get("linear_start", 1e-6)),
                              float(entry.get("linear_end", 1e-2))), None
    if kind == "cosine":
        return ScheduleConfig("cosine", n, cosine_s=float(entry.get("cosine_s", 8e-3))), None
    return None, f"{where}: schedule {kind!r} is not supported (palette has linear and cosine)"


def _rounded(x: float, digits: int) -> float:
    """x rounded to `digits` significant digits."""
    return float(f"{x:.{digits - 1}e}")


def schedule_from_gammas(stored: torch.Tensor) -> ScheduleConfig | None:
    """The linear or cosine schedule whose gammas match the trainer's stored buffer, if one does."""
    g = stored.double()
    n = len(g)
    if n < 2 or not torch.isfinite(g).all():
        return None

    def matches(s: ScheduleConfig) -> bool:
        return bool((schedule_gammas(s) - g).abs().max() < 1e-5)  # the buffer is float32

    candidates = [ScheduleConfig("cosine", n)]
    beta = 1 - g / torch.cat([g.new_ones(1), g[:-1]])
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    slope, start = torch.linalg.lstsq(torch.stack([t, torch.ones_like(t)], 1), beta[:, None]).solution[:, 0]
    for digits in (2, 3, 4, 6):
        candidates.append(ScheduleConfig("linear", n, _rounded(float(start), digits),
                                         _rounded(float(start + slope), digits)))
    return next((s for s in candidates if matches(s)), None)


# --- hyper-parameters from the tensor shapes -----------------------------------------------------

def _layer_kinds(state: dict[str, torch.Tensor], part: str) -> dict[int, dict[int, str]]:
    """For `input_blocks`/`output_blocks`: block -> layer -> 'res', 'attn' or 'conv'."""
    kinds: dict[int, dict[int, str]] = {}
    pattern = re.compile(rf"^{part}\.(\d+)\.(\d+)\.(.+)$")
    for key in state:
        m = pattern.match(key)
        if not m:
            continue
        block, layer, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        kind = ("res" if rest.startswith("in_layers.") else "attn" if rest.startswith("qkv.")
                else "conv" if rest.startswith(("op.", "conv.")) or rest in ("weight", "bias") else None)
        if kind and kinds.setdefault(block, {}).get(layer) != "res":
            kinds[block][layer] = kind
    return kinds


def _layout_error(where: Path, why: str) -> PaletteError:
    return PaletteError(f"{where}: cannot infer the network layout from the weights ({why}); "
                        f"pass the trainer's config with --config")


def infer_unet(state: dict[str, torch.Tensor], where: Path) -> dict[str, Any]:
    """`UNetConfig` fields read off the tensor shapes (all but the attention heads and their order)."""
    fail = functools.partial(_layout_error, where)
    try:
        base = state["cond_embed.0.weight"].shape[1]  # Linear(base, 4 * base)
        first, in_channels = state["input_blocks.0.0.weight"].shape[:2]
        out_channels = state["out.2.weight"].shape[0]
    except (KeyError, IndexError):
        raise fail("cond_embed.0, input_blocks.0.0 or out.2 is missing") from None
    ins, outs = _layer_kinds(state, "input_blocks"), _layer_kinds(state, "output_blocks")
    if not outs:
        raise fail("no output_blocks")
    n_out, n_in = max(outs) + 1, max(ins) + 1
    # Output blocks that end a level carry the upsampling layer (a ResBlock or a conv) after layer 0.
    up_blocks = sorted(b for b, layers in outs.items() if any(j > 0 and k in ("res", "conv")
                                                              for j, k in layers.items()))
    kw: dict[str, Any] = {}
    if up_blocks:
        res_blocks, levels = up_blocks[0], len(up_blocks) + 1
        up_kind = next(k for j, k in outs[up_blocks[0]].items() if j > 0 and k in ("res", "conv"))
        kw["resblock_updown"] = up_kind == "res"
        if up_kind == "conv":
            kw["conv_resample"] = True
        expected_up = [lvl * (res_blocks + 1) + res_blocks for lvl in range(levels - 1)]
        if up_blocks != expected_up:
            raise fail(f"upsampling layers in output blocks {up_blocks}, expected {expected_up}")
    else:
        gaps = [b for b in range(1, n_in) if b not in ins]  # parameter-free average-pool downsampling
        if gaps:
            res_blocks, levels = gaps[0] - 1, len(gaps) + 1
            kw["resblock_updown"], kw["conv_resample"] = False, False
        else:
            res_blocks, levels = n_out - 1, 1
    if n_out != levels * (res_blocks + 1) or n_in != 1 + levels * res_blocks + levels - 1:
        raise fail(f"{n_in} input and {n_out} output blocks do not fit {levels} levels of "
                   f"{res_blocks} res blocks")
    mults: list[int | float] = []
    attn: list[int] = []
    for level in range(levels):
        block = (levels - 1 - level) * (res_blocks + 1)  # output blocks run from the deepest level up
        width = state[f"output_blocks.{block}.0.in_layers.2.weight"].shape[0]
        mults.append(width // base if width % base == 0 else width / base)
        if outs[block].get(1) == "attn":
            attn.append(2 ** level)
    if int(mults[0] * base) != first:
        raise fail(f"input_blocks.0.0 has {first} channels, the first level {int(mults[0] * base)}")
    emb = state["output_blocks.0.0.emb_layers.1.weight"].shape[0]
    kw.update(in_channels=in_channels, out_channels=out_channels, base_channels=base,
              channel_mults=tuple(mults), num_res_blocks=res_blocks, attn_factors=tuple(attn),
              use_scale_shift_norm=emb == 2 * int(mults[-1] * base), dropout=0.0)
    return kw


# --- the conversion -------------------------------------------------------------------------------

def _describe_unet(u: UNetConfig) -> str:
    """One line of network hyper-parameters for the model card."""
    heads = (f"{u.num_head_channels} channels per head" if u.num_head_channels != -1
             else f"{u.num_heads} heads" + (f" ({u.num_heads_upsample} on the way up)"
                                            if u.num_heads_upsample not in (-1, u.num_heads) else ""))
    return (f"base channels {u.base_channels}, channel mults {', '.join(map(str, u.channel_mults))}, "
            f"{u.num_res_blocks} res block(s) per level, attention at downsample factors "
            f"{', '.join(map(str, u.attn_factors)) or 'none'} and in the middle block, {heads}, "
            f"{'legacy' if u.legacy_attention_order else 'new'} attention order, scale-shift norm "
            f"{'on' if u.use_scale_shift_norm else 'off'}, "
            + ("ResBlock up/downsampling" if u.resblock_updown else
               f"{'conv' if u.conv_resample else 'parameter-free'} up/downsampling"))


def _schedule_text(s: ScheduleConfig) -> str:
    """`linear, 2000 steps, 1e-06..0.01`."""
    return (f"linear, {s.num_steps} steps, beta {s.beta_start:g}..{s.beta_end:g}" if s.kind == "linear"
            else f"cosine, {s.num_steps} steps, s={s.cosine_s:g}")


def model_card(result: ConversionResult, parameters: int, license: str | None) -> str:
    """The generated model card: provenance, hyper-parameters, Hub metadata, usage."""
    cfg = result.config
    task = cfg.tasks[0]
    usage = f"palette {task} photo.png --model path/to/this/folder" + (" --mask-mode center"
                                                                       if task == "inpaint" else "")
    rows = [("source file", f"`{result.source.name}` ({'EMA' if result.ema else 'non-EMA'} weights)"),
            ("sha256", f"`{result.sha256}`"),
            ("task", task), ("image size", f"{cfg.image_size}x{cfg.image_size}"),
            ("parameters", f"{parameters / 1e6:.2f} M"), ("network", _describe_unet(cfg.unet)),
            ("training schedule", _schedule_text(cfg.train_schedule)),
            ("sampling schedule", _schedule_text(cfg.sample_schedule)),
            ("hyper-parameters from", f"`{result.config_source.name}` (trainer config)"
             if result.config_source else "the tensor shapes of the checkpoint")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    notes = "".join(f"- {n}\n" for n in result.notes)
    body = (f"# Palette {task} model converted from `{result.source.name}`\n\n"
            f"Converted with `palette convert` from a checkpoint of the public PyTorch Palette trainer "
            f"(Janspiry/Palette-Image-to-Image-Diffusion-Models). The network output equals the "
            f"trainer's for the same input and noise level.\n\n| | |\n|---|---|\n{table}\n\n"
            + (f"## Assumed settings\n\nNothing in the checkpoint determined these:\n\n{notes}\n" if notes else "")
            + f"## Use\n\n```bash\n{usage}\n```\n\n```python\nimport palette_cli\n\n"
              f"model = palette_cli.load_model(\"path/to/this/folder\")\n```\n\n"
              f"## Terms\n\nThe weights carry the terms of the data they were trained on; check the source "
              f"of the checkpoint before redistributing them.\n")
    return render_card(body, tasks=cfg.tasks, license=license, extra_tags=("palette-trainer-converted",))


def _network_settings(state: dict[str, torch.Tensor], source: Path, trainer: TrainerConfig | None,
                      notes: list[str], *, num_heads: int | None, num_head_channels: int | None,
                      num_heads_upsample: int | None, new_attention_order: bool | None) -> dict[str, Any]:
    """`UNetConfig` fields: the config's (or the shapes'), then the caller's; assumptions go to `notes`."""
    if trainer is not None:
        kw = unet_kwargs_from_trainer(trainer.unet, trainer.path)
        missing = [k for k in _REQUIRED_ARGS if k not in trainer.unet]
        if missing:  # fill the gaps from the shapes rather than from palette's own defaults
            inferred = infer_unet(state, source)
            kw.update({_REQUIRED_ARGS[k]: inferred[_REQUIRED_ARGS[k]] for k in missing})
            notes.append(f"{', '.join(missing)} not in {trainer.path.name}: read from the weights")
    else:
        kw = infer_unet(state, source)
        if num_heads is None and num_head_channels is None:
            kw["num_head_channels"] = ASSUMED_HEAD_CHANNELS
            notes.append(f"attention heads are not stored in the weights: assumed {ASSUMED_HEAD_CHANNELS} "
                         f"channels per head, as the trainer's shipped configs (set --num-head-channels or "
                         f"--num-heads)")
        if new_attention_order is None:
            notes.append("attention order is not stored in the weights: assumed the trainer's default, legacy "
                         "(set --new-attention-order if the config had use_new_attention_order)")
    if num_heads is not None:  # a head count means no fixed head width, as in the trainer
        kw.update(num_heads=num_heads, num_heads_upsample=-1,
                  num_head_channels=num_head_channels if num_head_channels is not None else -1)
    elif num_head_channels is not None:
        kw["num_head_channels"] = num_head_channels
    if num_heads_upsample is not None:
        kw["num_heads_upsample"] = num_heads_upsample
    if new_attention_order is not None:
        kw["legacy_attention_order"] = not new_attention_order
    return kw


def _schedules(trainer: TrainerConfig | None, stored_gammas: torch.Tensor | None, source: Path,
               notes: list[str]) -> tuple[ScheduleConfig, ScheduleConfig]:
    """Training and sampling schedules: the config's, else the stored gammas', else the paper's."""
    entries = trainer.beta_schedule if trainer else {}
    train, why = schedule_from_trainer(entries.get("train"), "training schedule") if trainer else (None, None)
    if train is None and stored_gammas is not None:
        train = schedule_from_gammas(stored_gammas)
    if train is None:
        train = TRAIN_SCHEDULE
        notes.append(f"{why or 'training schedule: not in a config nor recognised in the stored gammas'}; "
                     f"assumed {_schedule_text(TRAIN_SCHEDULE)}")
    elif stored_gammas is not None and (len(stored_gammas) != train.num_steps or
                                        (schedule_gammas(train) - stored_gammas.double()).abs().max() > 1e-4):
        notes.append(f"the gammas stored in {source.name} differ from the config's training schedule; "
                     f"kept the config's ({_schedule_text(train)})")
    sample, why = schedule_from_trainer(entries.get("test"), "sampling schedule") if trainer else (None, None)
    if sample is None:
        sample = PAPER_SAMPLE_SCHEDULE
        if why and "no schedule given" not in why:
            notes.append(f"{why}; using {_schedule_text(PAPER_SAMPLE_SCHEDULE)}")
    return train, sample


def convert_checkpoint(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                       config: str | os.PathLike | None = None, task: str | None = None,
                       dtype: str = "fp32", image_size: int | None = None, num_heads: int | None = None,
                       num_head_channels: int | None = None, num_heads_upsample: int | None = None,
                       new_attention_order: bool | None = None,
                       license: str | None = None, overwrite: bool = False,
                       callback: Callback | None = None) -> ConversionResult:
    """Convert a trainer checkpoint into a palette model directory; returns what was used and assumed.

    Settings come from, in order of precedence: the keyword arguments, the trainer config (`config`,
    else a `config.json` beside the checkpoint or one folder up), the tensor shapes; anything left
    is assumed and listed in `ConversionResult.notes` with the argument that sets it.
    """
    report = callback or (lambda message: None)
    if dtype not in DTYPES:
        raise PaletteError(f"unknown dtype {dtype!r}; use {' or '.join(DTYPES)}")
    if task is not None and task not in TASKS:
        raise PaletteError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise PaletteError(f"{out}: exists and is not a directory")
    if not overwrite and any((out / name).exists() for name in (CONFIG_NAME, WEIGHTS_NAME)):
        raise PaletteError(f"{out}: already holds a model; choose another output folder or overwrite it "
                           f"(--overwrite)")

    source, ema = find_checkpoint(src)
    report(f"reading {source}")
    state, stored_gammas = split_state(load_state(source), source)
    trainer = read_trainer_config(config) if config is not None else find_trainer_config(source)
    notes: list[str] = []

    unet_kw = _network_settings(state, source, trainer, notes, num_heads=num_heads,
                                num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
                                new_attention_order=new_attention_order)
    if image_size is None:
        image_size = trainer.unet.get("image_size") if trainer else None
        if image_size is None:
            image_size = DEFAULT_IMAGE_SIZE
            notes.append(f"image size is not stored in the weights: assumed {DEFAULT_IMAGE_SIZE} (set --image-size)")
    if task is None:
        task = TRAINER_TASKS.get(trainer.task) if trainer else None
        if task is None:
            task = DEFAULT_TASK
            notes.append(f"task not given: assumed {DEFAULT_TASK} (set --task)")
    train, sample = _schedules(trainer, stored_gammas, source, notes)

    try:
        unet_config = UNetConfig(**unet_kw)
    except TypeError as err:
        raise PaletteError(f"{source}: invalid network settings ({err})") from None
    model_config = ModelConfig(unet=unet_config, train_schedule=train, sample_schedule=sample, tasks=(task,),
                               image_size=int(image_size))
    where = f"{source} (UNet under '{PREFIX}'" + (f", settings from {trainer.path})" if trainer else
                                                  ", settings inferred from the weights)")
    report("checking every key and shape")
    network = build_network(model_config, state, where=where)  # strict: all keys, all shapes

    result = ConversionResult(path=out, source=source, ema=ema, sha256=sha256_file(source), config=model_config,
                              config_source=trainer.path if trainer else None, notes=notes)
    card = model_card(result, sum(p.numel() for p in network.parameters()), license)
    report(f"writing {out}")
    _write_directory(out, model_config, network, DTYPES[dtype], card)
    return result


def _write_directory(out: Path, config: ModelConfig, network: torch.nn.Module, dtype: torch.dtype,
                     card: str) -> None:
    """Write the model directory; a new one appears complete or not at all."""
    if out.is_dir():
        save_model(out, config, network, dtype=dtype, card=card)  # each file atomic
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(out)  # named before it exists: a Ctrl-C at any point leaves nothing
    try:
        os.mkdir(tmp, 0o700)
        save_model(tmp, config, network, dtype=dtype, card=card)
        os.chmod(tmp, 0o777 & ~_umask())  # private until complete; then the usual permissions
        os.replace(tmp, out)
    except BaseException as exc:
        if not (isinstance(exc, FileExistsError) and exc.filename == str(tmp)):  # not someone else's folder
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    """The process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask

