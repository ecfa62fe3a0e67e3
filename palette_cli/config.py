"""Typed configuration: the network, the noise schedules, the model directory, size presets.

Everything here is a frozen dataclass with its defaults in one place; `to_dict`/`from_dict`
turn a `ModelConfig` into the `config.json` of a model directory and back.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class ScheduleConfig:
    """A beta schedule; gamma_t = prod_{s<=t} (1 - beta_s) is Palette's noise level."""

    kind: str = "linear"  # "linear" or "cosine"
    num_steps: int = 2000
    beta_start: float = 1e-6  # linear only
    beta_end: float = 1e-2  # linear only
    cosine_s: float = 8e-3  # cosine only (Nichol & Dhariwal's offset)


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
    format_version: int = FORMAT_VERSION


PRESETS: dict[str, UNetConfig] = {
    # For tests: 0.83M parameters, a forward at 32x32 takes milliseconds.
    "tiny": UNetConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                       attn_factors=(2,), num_head_channels=16),
    # CPU default: about 3M parameters, 64x64 to 128x128 crops.
    "small": UNetConfig(base_channels=32, channel_mults=(1, 2, 2, 4), num_res_blocks=1,
                        attn_factors=(8,), num_head_channels=32),
    # Palette's 256x256 network (Appendix B): 64 channels, mults 1,2,4,8, 2 res blocks.
    "paper256": UNetConfig(base_channels=64, channel_mults=(1, 2, 4, 8), num_res_blocks=2,
                           attn_factors=(8, 16), num_head_channels=32),
}


def preset(name: str) -> UNetConfig:
    """The network config of a named size preset."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PaletteError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of a model config; a model without an encoder is written as before encoders
    existed, so older readers still load it."""
    data = dataclasses.asdict(config)
    if config.encoder is None:
        del data["encoder"]
    if not config.unet.encoder_channels:
        del data["unet"]["encoder_channels"]
    return data


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise PaletteError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a `ModelConfig` from `config.json` content, refusing unknown versions and fields."""
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise PaletteError(
            f"config format version {version!r} is not supported (this palette reads version "
            f"{FORMAT_VERSION}); upgrade palette or re-export the model"
        )
    data = dict(data)
    try:
        unet = _build(UNetConfig, data.pop("unet", {}), "unet")
        train = _build(ScheduleConfig, data.pop("train_schedule", {}), "train_schedule")
        sample = _build(ScheduleConfig, data.pop("sample_schedule", {}), "sample_schedule")
        encoder = data.pop("encoder", None)
        if encoder is not None:
            if not isinstance(encoder, dict):
                raise PaletteError("encoder: expected an object or null")
            encoder = _build(EncoderConfig, encoder, "encoder")
        return _build(ModelConfig, {**data, "unet": unet, "train_schedule": train,
                                    "sample_schedule": sample, "encoder": encoder}, "config")
    except TypeError as err:
        raise PaletteError(f"config: {err}") from None
