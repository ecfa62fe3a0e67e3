"""Where the network runs and in which precision: one place for the device and the "auto" choices.

Inference and training both ask `resolve_precision`; they differ only where bf16 is not native on a
GPU: inference falls back to fp16 autocast (outputs stay close), training to fp32 (fp16 training
needs loss scaling, which `precision fp16` asks for explicitly).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .config import PRECISIONS
from .errors import PaletteError

# Precision names, as the command line spells them ("auto" loads float32: autocast gives the speed).
DTYPES = {"auto": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """'auto' or None picks CUDA, then MPS, then the CPU; a device asked for must be there."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise PaletteError(f"unknown device {str(device)!r}; choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PaletteError("--device cuda was asked for but no CUDA GPU is available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PaletteError("--device mps was asked for but MPS is not available")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively here: CUDA with bf16, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 autocast is emulated and slow (5.8x slower than fp32 on an AVX2-only CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve_precision(precision: str, device: torch.device, *, training: bool = False) -> str:
    """The precision `precision` means on `device`: "auto" is bf16 where it runs natively, else fp16 on a
    GPU for inference and fp32 otherwise; other names are checked and kept."""
    if precision not in PRECISIONS:
        raise PaletteError(f"unknown dtype {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type in ("cuda", "mps") and not training else "fp32"


def as_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A torch dtype from a precision name (auto, fp32, fp16, bf16), a torch dtype or None (float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise PaletteError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)} or a torch.dtype")


def autocast(device: torch.device, precision: str = "auto", *, training: bool = False):
    """A context running the network on `device` in `precision` (`resolve_precision`); fp32: no autocast."""
    precision = resolve_precision(precision, device, training=training)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
