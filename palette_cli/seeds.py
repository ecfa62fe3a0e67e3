"""Seeded random streams: one generator helper and every stream constant of the library in one table.

A generator is keyed on (seed, *keys) through numpy's SeedSequence, so streams never overlap
whatever the keys. Sample k of a run draws from `generator(seed, k)`, item k of a training run
from `generator(seed, k)` too (training and inference never share a run); the other streams are
offset far above any sample or item index.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {
    # inference (tasks' prepare)
    "mask": 1 << 40,  # free-form masks drawn from --mask-mode free-form
    "fill": (1 << 40) + 1,  # noise in the hole of inpaint/uncrop conditioning
    "refine": (1 << 40) + 2,  # coarse-to-fine fills: keyed further on (sample, level[, tile])
    # training (data.py, train.py)
    "shuffle": 1 << 40,  # + epoch: the order of the images in each epoch
    "validation": 1 << 41,  # + row: the fixed crops and degradations of the sample grids
    "noise": 1 << 42,  # + micro-batch number: the diffusion noise and noise levels
    "dropout": 1 << 43,  # + micro-batch number: which items see the encoder's null condition
    "hints": 1 << 44,  # + micro-batch number: revealed colour hints and reference dropout (colorize)
    "head": 1 << 45,  # + micro-batch number: which colour-head sample each item's hint map shows (colorize)
    # evaluation: a third key after the image index, not an offset
    "degrade": 0x6576616C,
    "eval_points": 0x68696E74,  # colorize: the scored colour points (and the hints given with --hints)
}


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator keyed on (seed, *keys)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *keys]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFFFFFFFFFFFFFF)


def stream(seed: int, name: str, index: int = 0, *keys: int) -> torch.Generator:
    """The generator of stream `name` (see STREAMS), `index` steps into it, keyed further on `keys`."""
    return generator(seed, STREAMS[name] + index, *keys)
