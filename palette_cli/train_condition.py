"""The conditioner: what the network sees besides the noisy target and the source image.

The frozen encoder's maps of each item's view (computed by the encoder in the loop, or read from a
feature cache, train_cache.py), a task's own inputs (colorize's colour hints and reference vector),
and the null condition for a share of items (encoder dropout), so the model also works, and can be
guided, without them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import config as cfg
from . import seeds
from . import tasks as task_modules
from .config import TrainConfig
from .data import Item

PERCEPTUAL_SIZE = 128  # input side of the perceptual loss's classifier (a 4x4 final map; 224 cost 3x more)


class Conditioner:
    """A run's extra conditions. `key` is the batch field the encoder maps come from: "view" (the task's
    base image at the encoder's size, encoded here) or "encoded" (cached stride-32 maps, topped here).

    A colorize model whose UNet samples around its colour head (`colour_head.use` "hints") trains with
    the head in the loop: the frozen head's colours (`head`, its weights) are every colorize item's hint
    map, as at inference, under the random ground-truth hints."""

    def __init__(self, model_config: cfg.ModelConfig, config: TrainConfig, device: torch.device, rank: int,
                 world: int, cached: bool = False, head: dict[str, torch.Tensor] | None = None):
        self.model_config, self.config, self.rank, self.world = model_config, config, rank, world
        self.device = device
        self.encoder = None  # the live encoder, when the maps are not cached
        self.top: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.key = "encoded" if cached else "view"
        self.head = None  # the frozen colour head, when the UNet learns to sample around it
        spec = model_config.colour_head
        if head and spec is not None and spec.use == "hints" and "colorize" in config.tasks:
            from .checkpoint import build_colour_head

            self.head = build_colour_head(model_config, head, "the run's colour head").to(device)
        if model_config.encoder is not None:
            from . import features

            if cached:
                from .train_cache import frozen_top

                self.top = frozen_top(model_config.encoder.sha256, device)
            else:
                self.encoder = features.load(model_config.encoder.sha256, device).to(
                    memory_format=torch.channels_last)

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The encoder's final map of a batch of views, or of cached maps (no gradient)."""
        if self.top is not None:
            with torch.no_grad():
                return self.top(inputs).float()
        from . import features

        return features.encode(self.encoder, inputs, self.model_config.encoder.size,
                               pyramid=bool(self.model_config.unet.pyramid_channels))

    def __call__(self, batch: dict[str, torch.Tensor], micro: int) -> dict[str, torch.Tensor]:
        """The network's extra conditions for a micro-batch: the frozen encoder's maps of its views,
        colour hints and a reference vector. A share `encoder.dropout` of items gets every condition
        null (zeros) together, so the model also works, and can be guided, without them."""
        condition = self._controls(batch, micro)
        if self.model_config.encoder is not None:
            condition["features"] = self.features(batch[self.key])
        if self.head is not None:
            condition["hints"] = self._head_hints(batch, condition.get("hints"), micro)
        if condition and self.model_config.encoder is not None:
            gen = seeds.stream(self.config.seed, "dropout", micro * self.world + self.rank)
            keep = torch.rand(batch["target"].shape[0], generator=gen) >= self.model_config.encoder.dropout
            condition = {k: v * keep.to(v).view(-1, *[1] * (v.dim() - 1)) for k, v in condition.items()}
        return condition

    def _head_hints(self, batch: dict[str, torch.Tensor], given: torch.Tensor | None, micro: int) -> torch.Tensor:
        """The colour head's hint map for the batch's colorize items (zeros for other tasks' items)."""
        from . import colour_head

        colorize = task_modules.get("colorize")
        cond = batch["cond"].to(self.device)
        with torch.no_grad():
            if self.top is not None:
                final = self.top(batch["encoded"]).float()
                logits = self.head(final, batch["s8"].to(self.device).float(), batch["s16"].to(self.device).float(),
                                   colour_head.gray_input(cond))
            else:
                logits = colorize.head_logits(self.head, self.encoder, batch["view"].to(self.device),
                                              self.model_config.encoder.size)
        gen = seeds.stream(self.config.seed, "head", micro * self.world + self.rank)
        hints = colorize.training_head_hints(self.head, self.model_config.colour_head, logits.float(), cond,
                                             given, gen)
        mine = (batch["task"] == self.config.tasks.index("colorize")).to(hints)
        return (hints * mine.view(-1, 1, 1, 1)).to(batch["target"].dtype)

    def _controls(self, batch: dict[str, torch.Tensor], micro: int) -> dict[str, torch.Tensor]:
        """Network inputs a task adds to its own items (colorize's colour controls: `training_condition`)."""
        condition: dict[str, torch.Tensor] = {}
        for index, name in enumerate(self.config.tasks):
            add = getattr(task_modules.get(name), "training_condition", None)
            if add is not None:
                gen = seeds.stream(self.config.seed, "hints", micro * self.world + self.rank)
                mine = (batch["task"] == index).to(batch["target"].device)
                condition.update(add(self.model_config, batch["target"], mine, gen))
        return condition

    def grid_network(self, ema: torch.nn.Module, validation: Sequence[Item], rows: list[int]) -> Any:
        """The EMA network for sample-grid rows, given their encoder maps if the model has an encoder."""
        if self.model_config.encoder is None:
            return ema
        inputs = torch.stack([getattr(validation[i], self.key) for i in rows]).to(self.device)
        return functools.partial(ema, features=self.features(inputs))

    def perceptual(self) -> Callable | None:
        """W x the frozen classifier's feature distance between predicted and true clean images."""
        weight = self.config.perceptual
        if not weight:
            return None
        from . import features

        network = self.encoder or features.load(device=self.device).to(memory_format=torch.channels_last)
        return lambda x_hat, x: weight * features.perceptual_distance(network, x_hat, x, PERCEPTUAL_SIZE)
