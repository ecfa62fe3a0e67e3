"""Typed configuration: the network, the schedules, the model directory, presets, training runs.

Everything here is a frozen dataclass with its defaults in one place; `to_dict`/`from_dict`
turn a `ModelConfig` into the `config.json` of a model directory and back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import PaletteError

# Bumped when config.json changes in a way older readers cannot follow.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class UNetConfig:
    """A guided-diffusion UNet as used by Palette (names follow the public Palette trainer)."""

    in_channels: int = 6  # source image (3) concatenated with the noisy target (3)
    out_channels: int = 3  # predicted noise
    base_channels: int = 64  # channels of the first level ("inner_channel")
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)  # one entry per resolution level
    num_res_blocks: int = 2  # ResBlocks per level on the way down (one more on the way up)
    attn_factors: tuple[int, ...] = (16,)  # downsample factors (1, 2, 4, ...) with self-attention
    num_heads: int = 1  # used when num_head_channels == -1
    num_head_channels: int = 32  # fixed width per head; -1 to use num_heads instead
    num_heads_upsample: int = -1  # heads on the way up when num_head_channels == -1; -1: num_heads
    dropout: float = 0.0
    use_scale_shift_norm: bool = True  # FiLM-like conditioning of the second GroupNorm
    resblock_updown: bool = True  # ResBlocks do the down/upsampling
    conv_resample: bool = True  # learned conv resampling when resblock_updown is off
    legacy_attention_order: bool = True  # split heads before q/k/v, as the public trainer does
    noise_embed_scale: float = 1.0  # gamma is multiplied by this before the sinusoidal embedding
    encoder_channels: int = 0  # channels of a frozen encoder's feature map fed in (0: none; see unet.py)
    norm_groups: int = 32  # GroupNorm groups; every level's channel count must be a multiple
    middle_attention: bool = True  # self-attention in the bottleneck; off: fully convolutional
    hint_channels: int = 0  # channels of a colour-hint map concatenated to the input (tasks/colour_controls.py); 0: none
    reference_channels: int = 0  # length of a reference colour vector added to the embedding; 0: none
    # Channels of the encoder's finer maps (strides 4, 8, 16) fed to the first levels; (): none (unet.py).
    pyramid_channels: tuple[int, ...] = ()


SCHEDULE_KINDS = ("linear", "cosine")
# What the network predicts (diffusion.py implements each) and the samplers (samplers.SAMPLERS).
OBJECTIVES = ("eps", "x0", "v", "regression")
SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp")
ENCODER_NAMES = ("efficientnet-lite0",)  # frozen pretrained encoders palette knows (features.py)
COLOUR_HEAD_USES = ("colour", "hints")  # what colorize does with a colour head's output (ColourHeadConfig.use)


@dataclass(frozen=True)
class EncoderConfig:
    """A frozen pretrained image encoder that conditions the UNet (PITI's semantic prior).

    It sees the task's base image (the gray photo, the JPEG, the known pixels with the hole
    mean-filled) at its own resolution; its weights are not part of model.safetensors but are
    named here with their hash."""

    name: str = "efficientnet-lite0"
    sha256: str = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    size: int = 256  # input side; the feature map is size / 32 on a side
    dropout: float = 0.1  # training: share of items whose features are zeroed (the null condition)
    guidance: float = 0.0  # sampling: classifier-free guidance weight over the features (guidance.py)


@dataclass(frozen=True)
class RefineConfig:
    """Coarse-to-fine fills (inpaint, uncrop): after sampling at image_size, the fill is refined at
    successively doubled sizes up to the crop's own resolution, in model-size tiles, each level
    starting from the upsampled fill noised to `strength` (SDEdit), the known pixels kept."""

    strength: float = 0.5  # start level of every refinement level: the share of the schedule redone
    steps: int = 1  # network calls per tile at every level
    block: int = 8  # the hole is refined in two passes, a checkerboard of block x block squares and the rest
    tasks: tuple[str, ...] = ("inpaint", "uncrop")  # the tasks refined (a measured choice per task)


@dataclass(frozen=True)
class ColourHeadConfig:
    """A colour head over the encoder's maps (colour_head.py): the colour colorize commits to, in one pass.

    Its weights are in model.safetensors under `colour_head.`; it sees the encoder's view of the photo."""

    bins: int = 313  # Q, the chroma bins it classifies into (fitted to its training photos)
    channels: int = 128  # its FPN's width at strides 8, 16 and 32
    fine_channels: int = 48  # its width at stride 4, the 64x64 output grid
    tail: bool = False  # its own trained copy of the encoder's layers after stride 16 (colour_head.EncoderTail)
    temperature: float = 0.38  # the annealed mean's T: lower is more vivid (chosen on val)
    adjust: float = 0.0  # post-hoc rebalancing: the prior divided out to this power before decoding
    noise: float = 1.0  # -n samples: scale of the smooth random field added to the logits (sample 0 too)
    noise_grid: int = 2  # that field's lattice (grid x grid per bin, bilinearly upsampled)
    use: str = "colour"  # "colour": the head's colour is the output; "hints": the UNet samples around it
    confidence: float = 1.0  # hints: only where the head's entropy / log Q is below this (1: everywhere)


@dataclass(frozen=True)
class ScheduleConfig:
    """A beta schedule; gamma_t = prod_{s<=t} (1 - beta_s) is Palette's noise level."""

    kind: str = "linear"  # one of SCHEDULE_KINDS
    num_steps: int = 2000
    beta_start: float = 1e-6  # linear only
    beta_end: float = 1e-2  # linear only
    cosine_s: float = 8e-3  # cosine only (Nichol & Dhariwal's offset)


# Palette, Appendix A: train on 2000 steps linear 1e-6..0.01, sample on 1000 steps 1e-4..0.09.
TRAIN_SCHEDULE = ScheduleConfig("linear", 2000, 1e-6, 1e-2)
PAPER_SAMPLE_SCHEDULE = ScheduleConfig("linear", 1000, 1e-4, 0.09)


@dataclass(frozen=True)
class ModelConfig:
    """Everything `config.json` of a model directory records."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    train_schedule: ScheduleConfig = TRAIN_SCHEDULE
    sample_schedule: ScheduleConfig = PAPER_SAMPLE_SCHEDULE
    tasks: tuple[str, ...] = ("colorize",)  # tasks the model was trained for
    image_size: int = 256  # training resolution; inference runs the network at this size
    objective: str = "eps"  # network output: "eps" (Palette), "x0", "v", or "regression" (one pass)
    residual: bool = False  # diffuse target - source (see diffusion.residual_base) instead of target
    sampler: str = "ddim"  # default sampler for inference: "ddpm", "ddim" or "dpmpp"
    steps: int = 50  # default number of sampling steps (network calls)
    strength: float = 1.0  # default start level: 1 = pure noise, < 1 = the noised source
    encoder: EncoderConfig | None = None  # a frozen pretrained encoder of the base image; None: none
    tile_size: int | None = None  # inference tile side of tiled tasks (jpeg); None: image_size. Larger
    # tiles need a fully convolutional network (no attention), which behaves alike at any size.
    refine: RefineConfig | None = None  # coarse-to-fine fills of masked tasks above image_size; None: none
    colour_head: ColourHeadConfig | None = None  # colorize: a colour head over the encoder's maps; None: none
    format_version: int = FORMAT_VERSION


PRESETS: dict[str, UNetConfig] = {
    # For tests: 0.83M parameters, a forward at 32x32 takes milliseconds.
    "tiny": UNetConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                       attn_factors=(2,), num_head_channels=16),
    # CPU default: about 3M parameters, 64x64 to 128x128 crops.
    "small": UNetConfig(base_channels=32, channel_mults=(1, 2, 2, 4), num_res_blocks=1,
                        attn_factors=(8,), num_head_channels=32),
    # Palette's 256x256 network (Appendix B): 64 channels, mults 1,2,4,8, 2 res blocks.
    # JPEG and other local restorations at full resolution: 0.6M parameters, about a third of
    # small's FLOPs per pixel, no attention (fully convolutional: any tile size behaves alike).
    "compact": UNetConfig(base_channels=16, channel_mults=(1, 2, 4, 8), num_res_blocks=1, attn_factors=(),
                          norm_groups=8, middle_attention=False),
    "paper256": UNetConfig(base_channels=64, channel_mults=(1, 2, 4, 8), num_res_blocks=2,
                           attn_factors=(8, 16), num_head_channels=32),
}


def preset(name: str) -> UNetConfig:
    """The network config of a named size preset."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PaletteError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# --- training -------------------------------------------------------------------------------

DEFAULT_IMAGE_SIZE = {"tiny": 32, "small": 64, "compact": 64, "paper256": 256}  # crop size of a new run per preset
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 where it runs natively, else fp32
FREEZE = ("none", "encoder", "decoder")
LOSSES = ("l2", "l1")
CROP_MODES = ("native", "fit")  # native: crops at the photo's resolution; fit: the photo shrunk first
# Finetuning starts from trained weights: a smaller step and a short warmup.
FINETUNE_LR = 2e-5
FINETUNE_WARMUP = 500
FINETUNE_STEPS = 2000


@dataclass(frozen=True)
class Recipe:
    """What a new run of one task trains and how its model samples, chosen by measurement: every
    task module holds its own (`tasks/<task>.py`, `RECIPE`), and a run follows its first task's.

    The `small` network was trained with every objective, with and without residual diffusion, for
    the same budget (600 steps of 8 images at 64 px, 8.4 minutes on one CPU thread) and scored with
    `palette eval` on cbsd68: x0 with residual diffusion was the best diffusion setting on both
    tasks measured (jpeg q10 and colorize), and a few DDIM steps from pure noise beat more steps and DPM-Solver++, while
    strength < 1 cost PSNR (jpeg) or colour (colorize). The table is in the CHANGELOG;
    `--objective eps` trains Palette's own parameterisation.
    """

    objective: str
    residual: bool
    sampler: str
    steps: int
    strength: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run; recorded in state.pt."""

    tasks: tuple[str, ...] = ("colorize",)  # several tasks train one generalist model
    preset: str = "small"  # network size (config.PRESETS); ignored when finetuning
    image_size: int | None = None  # crop size; None: the preset's default or the finetuned model's
    batch_size: int = 8  # images per optimizer step, over all processes and micro-batches
    grad_accum: int = 1  # micro-batches per optimizer step
    steps: int = 10_000  # total optimizer steps of the run
    lr: float = 1e-4  # Adam learning rate after warmup (Palette: 1e-4)
    warmup: int = 10_000  # linear warmup steps (Palette: 10k)
    ema_decay: float = 0.9999  # ceiling of the EMA decay min(decay, (1 + n) / (10 + n))
    loss: str = "l2"  # "l2" (Palette) or "l1"
    # Network output: "eps" (Palette), "x0", "v", or "regression" (one pass); None: the first task's recipe.
    objective: str | None = None
    # Diffuse target - source (diffusion.residual_base); None: the recipe's, with the recipe's objective only.
    residual: bool | None = None
    precision: str = "auto"  # "auto", "fp32", "bf16" or "fp16" (autocast; fp16 adds loss scaling)
    encoder: str | None = None  # a frozen pretrained encoder conditioning the UNet ("efficientnet-lite0")
    perceptual: float = 0.0  # weight of a feature-space loss between predicted and true clean image
    controls: bool = False  # colorize: learn colour hints and a reference palette (tasks/colour_controls.py)
    pyramid: bool = False  # feed the encoder's finer maps (strides 4, 8, 16) too, not only its final map
    seed: int = 0
    workers: int = 0  # data loader processes; 0 loads in the training process
    save_every: int = 1000  # steps between checkpoints (one is always written at the end)
    sample_every: int = 1000  # steps between sample grids; 0 disables them
    log_every: int = 10  # steps per metrics.jsonl line
    freeze: str = "none"  # "encoder", "decoder" or "none": parts left untrained
    crop: str = "native"  # "native" crops at the photo's resolution, "fit" shrinks it first
    sample_count: int = 4  # rows of the sample grid
    sample_steps: int | None = None  # sampler steps for grids; None: the model's default

    @classmethod
    def finetune(cls, **changes: Any) -> TrainConfig:
        """A finetune's config: a gentler lr, warmup and length (FINETUNE_LR, FINETUNE_WARMUP,
        FINETUNE_STEPS) where `changes` leave them unset, as `palette finetune` runs."""
        given = {k: v for k, v in changes.items() if v is not None}
        return cls(**{"lr": FINETUNE_LR, "warmup": FINETUNE_WARMUP, "steps": FINETUNE_STEPS, **given})


def to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of a model config; a model without an encoder or refine block is written as
    before they existed, so older readers still load it."""
    data = dataclasses.asdict(config)
    for block in ("encoder", "refine", "colour_head"):  # optional blocks newer than format 1, written when present
        if data[block] is None:
            del data[block]
    if config.tile_size is None:
        del data["tile_size"]
    for name, default in _UNET_OPTIONAL.items():  # fields newer than format 1, written when they differ
        if data["unet"][name] == default:
            del data["unet"][name]
    return data


_UNET_OPTIONAL = {"encoder_channels": 0, "norm_groups": 32, "middle_attention": True, "hint_channels": 0,
                  "reference_channels": 0, "pyramid_channels": ()}


# --- validation -------------------------------------------------------------------------------
#
# One rule per field: a function (value, where) -> the value to store, raising PaletteError that
# names the field. Nested configs are rules too (`_nested`), so adding an optional block to
# config.json is one dataclass, its own entry in _FIELDS, one field rule such as
# `"encoder": _optional(_nested(EncoderConfig))` in ModelConfig's entry, and, if it needs one,
# a cross-field check in _CHECKS.

Rule = Callable[[Any, str], Any]


def _fail(where: str, problem: str, value: Any) -> PaletteError:
    return PaletteError(f"{where}: {problem}, got {json.dumps(value) if _jsonable(value) else repr(value)}")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _int(low: int, *, allow: tuple[int, ...] = ()) -> Rule:
    """An integer >= low (or one of the sentinel values in `allow`)."""
    def rule(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, "must be an integer", value)
        if value < low and value not in allow:
            sentinel = f" (or {', '.join(map(str, allow))})" if allow else ""
            raise _fail(where, f"must be at least {low}{sentinel}", value)
        return value
    return rule


def _float(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number in [low, high], either end open on request."""
    def rule(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(where, "must be a number", value)
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise _fail(where, f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}",
                        value)
        return float(value) if isinstance(value, int) else value
    return rule


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "must be true or false", value)
    return value


def _choice(known: Sequence[str]) -> Rule:
    """One of the names in `known`."""
    def rule(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in known:
            raise _fail(where, f"must be one of {', '.join(known)}", value)
        return value
    return rule


def _tuple(item: Rule, *, nonempty: bool) -> Rule:
    """A JSON list of items, stored as a tuple."""
    def rule(value: Any, where: str) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, "must be a list", value)
        if nonempty and not value:
            raise _fail(where, "must not be empty", value)
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
    return rule


def _text(*, nonempty: bool = True) -> Rule:
    """A string (not empty unless allowed)."""
    def rule(value: Any, where: str) -> str:
        if not isinstance(value, str) or (nonempty and not value):
            raise _fail(where, "must be a non-empty string" if nonempty else "must be a string", value)
        return value
    return rule


def _optional(rule: Rule) -> Rule:
    """`rule`, or null (JSON) / None for a field that may be absent."""
    def optional(value: Any, where: str) -> Any:
        return None if value is None else rule(value, where)
    return optional


def _nested(cls: type) -> Rule:
    """A JSON object holding the config dataclass `cls`."""
    def rule(value: Any, where: str) -> Any:
        if isinstance(value, cls):
            value = dataclasses.asdict(value)
        return _build(cls, value, where)
    return rule


_FIELDS: dict[type, dict[str, Rule]] = {
    UNetConfig: {
        "in_channels": _int(1), "out_channels": _int(1), "base_channels": _int(1),
        "channel_mults": _tuple(_int(1), nonempty=True), "num_res_blocks": _int(1),
        "attn_factors": _tuple(_int(1), nonempty=False), "num_heads": _int(1),
        "num_head_channels": _int(1, allow=(-1,)), "num_heads_upsample": _int(1, allow=(-1,)),
        "dropout": _float(0.0, 1.0, high_open=True), "use_scale_shift_norm": _bool,
        "resblock_updown": _bool, "conv_resample": _bool, "legacy_attention_order": _bool,
        "noise_embed_scale": _float(0.0, math.inf, low_open=True), "encoder_channels": _int(0),
        "norm_groups": _int(1), "middle_attention": _bool, "hint_channels": _int(0), "reference_channels": _int(0),
        "pyramid_channels": _tuple(_int(1), nonempty=False),
    },
    EncoderConfig: {
        "name": _choice(ENCODER_NAMES), "sha256": _text(), "size": _int(32),
        "dropout": _float(0.0, 1.0, high_open=True), "guidance": _float(0.0, math.inf),
    },
    RefineConfig: {"strength": _float(0.0, 1.0, low_open=True), "steps": _int(1), "block": _int(1),
                   "tasks": _tuple(_text(), nonempty=False)},  # names checked where a model is loaded
    ColourHeadConfig: {
        "bins": _int(2), "channels": _int(4), "fine_channels": _int(4), "tail": _bool,
        "temperature": _float(0.0, math.inf, low_open=True), "adjust": _float(0.0, 1.0),
        "noise": _float(0.0, math.inf), "noise_grid": _int(1), "use": _choice(COLOUR_HEAD_USES),
        "confidence": _float(0.0, 1.0, low_open=True),
    },
    ScheduleConfig: {
        "kind": _choice(SCHEDULE_KINDS), "num_steps": _int(2),
        "beta_start": _float(0.0, 1.0, low_open=True, high_open=True),
        "beta_end": _float(0.0, 1.0, low_open=True, high_open=True),
        "cosine_s": _float(0.0, 1.0, high_open=True),
    },
    ModelConfig: {
        "unet": _nested(UNetConfig), "train_schedule": _nested(ScheduleConfig),
        "sample_schedule": _nested(ScheduleConfig), "tasks": _tuple(_text(), nonempty=True),
        "image_size": _int(1), "objective": _choice(OBJECTIVES), "residual": _bool,
        "sampler": _choice(SAMPLER_NAMES), "steps": _int(1), "strength": _float(0.0, 1.0, low_open=True),
        "format_version": _int(FORMAT_VERSION), "encoder": _optional(_nested(EncoderConfig)),
        "tile_size": _optional(_int(1)),
        "refine": _optional(_nested(RefineConfig)), "colour_head": _optional(_nested(ColourHeadConfig)),
    },
}


def _check_unet(u: UNetConfig, where: str) -> None:
    """Channel counts the network can be built with: whole GroupNorm groups and attention heads."""
    ds, attention = 1, []
    for level, mult in enumerate(u.channel_mults):
        ch = u.base_channels * mult
        if ch % u.norm_groups:
            raise PaletteError(f"{where}: base_channels x channel_mults[{level}] = {ch} must be a multiple of "
                               f"norm_groups {u.norm_groups} (GroupNorm uses {u.norm_groups} groups)")
        if ds in u.attn_factors or (u.middle_attention and level == len(u.channel_mults) - 1):
            attention.append(ch)
        ds *= 2
    for ch in attention:
        if u.num_head_channels != -1 and ch % u.num_head_channels:
            raise PaletteError(f"{where}: {ch} channels are not divisible by num_head_channels "
                               f"{u.num_head_channels}")
        for name in ("num_heads", "num_heads_upsample"):
            heads = getattr(u, name)
            if u.num_head_channels == -1 and heads != -1 and ch % heads:
                raise PaletteError(f"{where}: {ch} channels are not divisible by {name} {heads}")
    if u.pyramid_channels and not u.encoder_channels:
        raise PaletteError(f"{where}.pyramid_channels: an encoder's finer maps need its final map too "
                           f"(encoder_channels is 0)")
    if len(u.pyramid_channels) > min(3, len(u.channel_mults)):
        raise PaletteError(f"{where}.pyramid_channels: at most {min(3, len(u.channel_mults))} finer maps "
                           f"(strides 4, 8, 16) for {len(u.channel_mults)} levels, got {len(u.pyramid_channels)}")


def _check_encoder(e: EncoderConfig, where: str) -> None:
    if e.size % 32:
        raise PaletteError(f"{where}.size: {e.size} must be a multiple of 32 (the encoder's stride)")


def _check_schedule(s: ScheduleConfig, where: str) -> None:
    if s.kind == "linear" and s.beta_start > s.beta_end:
        raise PaletteError(f"{where}: beta_start {s.beta_start} is larger than beta_end {s.beta_end}")


def _check_model(c: ModelConfig, where: str) -> None:
    factor = 2 ** (len(c.unet.channel_mults) - 1)
    if c.image_size % factor:
        raise PaletteError(f"image_size: {c.image_size} must be a multiple of {factor} (the network "
                           f"halves the image {len(c.unet.channel_mults) - 1} times)")
    if (c.encoder is None) != (c.unet.encoder_channels == 0):
        raise PaletteError(f"encoder: the network takes {c.unet.encoder_channels} encoder channels but the "
                           f"config names {'no encoder' if c.encoder is None else c.encoder.name}")
    if c.tile_size is not None and (c.tile_size % factor or c.tile_size < c.image_size):
        raise PaletteError(f"tile_size: {c.tile_size} must be a multiple of {factor} and at least image_size "
                           f"{c.image_size}")
    if c.tile_size not in (None, c.image_size) and (c.unet.attn_factors or c.unet.middle_attention):
        raise PaletteError(f"tile_size: {c.tile_size} differs from image_size {c.image_size}, but self-attention "
                           f"does not carry over to other sizes; only a network without attention can tile larger")
    if c.steps > c.sample_schedule.num_steps:
        raise PaletteError(f"steps: {c.steps} is more than the {c.sample_schedule.num_steps} steps "
                           f"of sample_schedule")
    if c.colour_head is not None and c.encoder is None:
        raise PaletteError("colour_head: a colour head reads the encoder's maps, but the config names no encoder")
    if c.colour_head is not None and c.colour_head.use == "hints" and not c.unet.hint_channels:
        raise PaletteError("colour_head.use: \"hints\" gives the head's colour to the UNet as colour hints, but "
                           "the UNet takes none (unet.hint_channels 0); use \"colour\" or a model with --controls")
    if c.refine is not None and c.refine.steps > math.ceil(c.sample_schedule.num_steps * c.refine.strength):
        raise PaletteError(f"refine.steps: {c.refine.steps} is more than the {c.sample_schedule.num_steps} x "
                           f"{c.refine.strength} steps of sample_schedule that refine.strength leaves")


# A training run's fields. Task names are checked by the registry (train.parse_tasks), and the crop
# size against the network (train.validate), where both are known.
_FIELDS[TrainConfig] = {
    "tasks": _tuple(_text(), nonempty=True), "preset": _choice((*PRESETS, "custom")),
    "image_size": _optional(_int(8)), "batch_size": _int(1), "grad_accum": _int(1), "steps": _int(1),
    "lr": _float(0.0, math.inf, low_open=True), "warmup": _int(0), "ema_decay": _float(0.0, 1.0, high_open=True),
    "loss": _choice(LOSSES), "objective": _optional(_choice(OBJECTIVES)), "residual": _optional(_bool),
    "precision": _choice(PRECISIONS), "encoder": _optional(_choice(ENCODER_NAMES)),
    "perceptual": _float(0.0, math.inf), "controls": _bool, "pyramid": _bool, "seed": _int(-2**63),
    "workers": _int(0), "save_every": _int(1), "sample_every": _int(0), "log_every": _int(1),
    "freeze": _choice(FREEZE), "crop": _choice(CROP_MODES), "sample_count": _int(1),
    "sample_steps": _optional(_int(1)),
}


def check_training(config: TrainConfig) -> TrainConfig:
    """Check every field of a training config by its rule; messages name the field."""
    for name, value in dataclasses.asdict(config).items():
        if name in _FIELDS[TrainConfig]:  # a field without a rule fails test_config, not a run
            _FIELDS[TrainConfig][name](value, name)
    return config


# Checks that involve several fields of one config, run after its fields are valid.
_CHECKS: dict[type, Callable[[Any, str], None]] = {
    UNetConfig: _check_unet, ScheduleConfig: _check_schedule, ModelConfig: _check_model,
    EncoderConfig: _check_encoder,
}


def _build(cls: type, data: Any, where: str) -> Any:
    """`cls` from a JSON object, every field checked by its rule; missing fields keep their defaults."""
    if not isinstance(data, dict):
        raise _fail(where, "must be a JSON object", data)
    rules = _FIELDS[cls]
    unknown = sorted(set(data) - set(rules))
    if unknown:
        raise PaletteError(f"{where}: unknown field(s) {', '.join(unknown)}")
    prefix = "" if where == "config" else f"{where}."
    kwargs = {name: rules[name](value, prefix + name) for name, value in data.items()}
    obj = cls(**kwargs)
    if cls in _CHECKS:
        _CHECKS[cls](obj, where)
    return obj


def validate(config: ModelConfig) -> ModelConfig:
    """Check every field of a config built in code, as `from_dict` does for config.json."""
    return from_dict(to_dict(config))


def from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a `ModelConfig` from `config.json` content, checking every field.

    Unknown versions and fields, wrong types, out-of-range values, unknown names and channel
    counts the network cannot be built with raise `PaletteError` naming the field.
    """
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise PaletteError(
            f"config format version {version!r} is not supported (this palette reads version "
            f"{FORMAT_VERSION}); upgrade palette or re-export the model"
        )
    return _build(ModelConfig, data, "config")
