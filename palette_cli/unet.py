"""The network: a guided-diffusion UNet mapping (x, gamma[, features]) to its prediction.

x is the source image concatenated with the noisy target on channels, (B, 6, H, W) in [-1, 1];
gamma is the noise level of each item (the cumulative alpha of Palette), shape (B,).
features, when the config has `encoder_channels`, is a frozen encoder's map of the base image,
(B, C, h, w); it enters as guided-diffusion adds class information: pooled and projected into the
noise-level embedding (the scale-shift of every ResBlock), and projected by a 1x1 convolution onto
the bottleneck before the middle block. With `pyramid_channels`, the encoder's finer maps (strides
4, 8, 16; packed after the final map, see features.pack_pyramid) also enter, each through a 1x1
convolution onto the input of the first ResBlock of the UNet level whose resolution it matches
(resized when the UNet runs at another size). Every projection starts at zero, so a network gaining
an encoder or its pyramid begins as the network it was.
Module names follow the public Palette trainer so that its checkpoints load key for key.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig


def gamma_embedding(gamma: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the continuous noise level, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = gamma.float()[:, None] * freqs.to(gamma.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (32 groups unless told) computed in float32 whatever the input dtype."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero the parameters of a module (residual branches start as identity)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Two 3x3 convs with noise-level conditioning, optionally resampling (BigGAN-style)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 scale_shift: bool = True, up: bool = False, down: bool = False, groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(channels, groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if scale_shift else out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, groups), nn.SiLU(), nn.Dropout(dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample between the activation and the conv, on both branches.
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions, through scaled_dot_product_attention."""

    def __init__(self, channels: int, num_heads: int, legacy_order: bool = True, groups: int = 32):
        super().__init__()
        self.num_heads = num_heads
        self.legacy_order = legacy_order
        self.norm = GroupNorm32(channels, groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3*C, T) -> q, k, v each (B, heads, T, C/heads), contiguous."""
        b, width, t = qkv.shape
        ch = width // (3 * self.num_heads)
        if self.legacy_order:  # channels laid out as [head][q|k|v][ch]
            q, k, v = qkv.reshape(b, self.num_heads, 3, ch, t).unbind(2)
        else:  # channels laid out as [q|k|v][head][ch]
            q, k, v = qkv.reshape(b, 3, self.num_heads, ch, t).unbind(1)
        return tuple(z.transpose(-1, -2).contiguous() for z in (q, k, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        x = x.reshape(b, c, hgt * wid)
        q, k, v = self.split_heads(self.qkv(self.norm(x)))
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, ch)
        h = h.transpose(-1, -2).reshape(b, c, hgt * wid)
        return (x + self.proj_out(h)).reshape(b, c, hgt, wid)


class Block(nn.Sequential):
    """A sequence of ResBlocks, attention and resampling layers; ResBlocks get the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _attention(cfg: UNetConfig, ch: int, heads: int) -> AttentionBlock:
    """Self-attention over `ch` channels: fixed-width heads, or `heads` of them when num_head_channels is -1."""
    if cfg.num_head_channels != -1:
        if ch % cfg.num_head_channels:
            raise ValueError(f"{ch} channels are not divisible by num_head_channels {cfg.num_head_channels}")
        heads = ch // cfg.num_head_channels
    return AttentionBlock(ch, heads, cfg.legacy_attention_order, cfg.norm_groups)


def _resized(fmap: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """fmap at like's height and width: area-averaged when shrinking, bilinear when growing."""
    if fmap.shape[-2:] == like.shape[-2:]:
        return fmap
    shrink = fmap.shape[-1] > like.shape[-1]
    return F.interpolate(fmap.float(), size=like.shape[-2:], mode="area" if shrink else "bilinear",
                         **({} if shrink else {"align_corners": False}))


class UNet(nn.Module):
    """Palette's denoiser: (concat[source, x_t], gamma) -> eps."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        cfg = self.config = config
        base = cfg.base_channels
        emb_dim = 4 * base
        self.cond_embed = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(cin: int, cout: int | None = None, **kw) -> ResBlock:
            return ResBlock(cin, emb_dim, cfg.dropout, cout, cfg.use_scale_shift_norm, groups=cfg.norm_groups, **kw)

        attn = functools.partial(_attention, cfg)

        ch = first = int(cfg.channel_mults[0] * base)
        self.input_blocks = nn.ModuleList([Block(nn.Conv2d(cfg.in_channels + cfg.hint_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * base))]
                ch = int(mult * base)
                if ds in cfg.attn_factors:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(Block(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mults) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(Block(down))
                skip_chans.append(ch)
                ds *= 2

        mid = ch  # bottleneck channels (the encoder's map is added there)
        middle = (res(ch), attn(ch, cfg.num_heads), res(ch)) if cfg.middle_attention else (res(ch), res(ch))
        self.middle_block = Block(*middle)

        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(base * mult))]
                ch = int(base * mult)
                if ds in cfg.attn_factors:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown
                                  else Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(Block(*layers))

        self._add_condition_inputs(emb_dim, mid)
        self.out = nn.Sequential(GroupNorm32(ch, cfg.norm_groups), nn.SiLU(),
                                 zero_module(nn.Conv2d(first, cfg.out_channels, 3, padding=1)))

    def _add_condition_inputs(self, emb_dim: int, mid: int) -> None:
        """Zero-initialised projections of the encoder's pooled vector (into the embedding) and map
        (onto the bottleneck's `mid` channels), of a reference vector (into the embedding) and of the
        encoder's finer maps (`_add_pyramid_inputs`): a network gaining any of them starts as it was."""
        c, r = self.config.encoder_channels, self.config.reference_channels
        if c:
            self.feature_embed = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(),
                                               zero_module(nn.Linear(emb_dim, emb_dim)))
            self.feature_map_in = zero_module(nn.Conv2d(c, mid, 1))
        if r:
            self.reference_embed = nn.Sequential(nn.Linear(r, emb_dim), nn.SiLU(),
                                                 zero_module(nn.Linear(emb_dim, emb_dim)))
        self._add_pyramid_inputs()

    def _add_pyramid_inputs(self) -> None:
        """Zero-initialised, bias-free 1x1 projections of the encoder's finer maps onto the input of
        the first ResBlock of levels 0, 1, 2 (block 1 + level * (num_res_blocks + 1))."""
        cfg = self.config
        self._pyramid_at = {}  # input block index -> the pyramid level added before it
        projections = []
        for level, channels in enumerate(cfg.pyramid_channels):
            width = int(cfg.base_channels * cfg.channel_mults[max(level - 1, 0)])  # what enters that block
            self._pyramid_at[1 + level * (cfg.num_res_blocks + 1)] = level
            projections.append(zero_module(nn.Conv2d(channels, width, 1, bias=False)))
        if projections:
            self.pyramid_in = nn.ModuleList(projections)

    def _pyramid(self, features: torch.Tensor | None) -> list[torch.Tensor]:
        """The encoder's finer maps, unpacked from `features`; none for the null condition (zeros
        the size of the final map alone, which the bias-free projections would turn into zeros)."""
        cfg = self.config
        if not cfg.pyramid_channels or features is None or features.shape[1] == cfg.encoder_channels:
            return []
        from .features import unpack_pyramid

        return unpack_pyramid(features, cfg.encoder_channels, cfg.pyramid_channels)

    @property
    def downsample_factor(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, features: torch.Tensor | None = None,
                hints: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> torch.Tensor:
        """x: source and noisy target (B, in_channels, H, W). Optional conditions, each None for its null
        (zeros): `features` a frozen encoder's map, `hints` (B, hint_channels, H, W), `reference`
        (B, reference_channels); each is ignored by a network not built for it."""
        cfg = self.config
        if not cfg.encoder_channels:
            features = None
        if cfg.hint_channels:
            hints = x.new_zeros(x.shape[0], cfg.hint_channels, *x.shape[2:]) if hints is None else hints
            x = torch.cat([x, hints.to(x.dtype)], dim=1)
        gamma = gamma.reshape(-1) * self.config.noise_embed_scale
        emb = self.cond_embed(gamma_embedding(gamma, self.config.base_channels).to(x.dtype))
        if cfg.reference_channels:
            reference = emb.new_zeros(x.shape[0], cfg.reference_channels) if reference is None else reference
            emb = emb + self.reference_embed(reference.to(emb.dtype))
        if self.config.encoder_channels:
            if features is None:  # the null condition (what training's encoder dropout shows)
                features = x.new_zeros(x.shape[0], self.config.encoder_channels, 1, 1)
            features = features.to(emb.dtype)
            emb = emb + self.feature_embed(features[:, :cfg.encoder_channels].mean(dim=(2, 3)))
        skips = []
        h = x
        if self.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout, as the weights are
        pyramid = self._pyramid(features)
        for i, block in enumerate(self.input_blocks):
            if i in self._pyramid_at and pyramid:
                h = h + self.pyramid_in[self._pyramid_at[i]](_resized(pyramid[self._pyramid_at[i]], h).to(h.dtype))
            h = block(h, emb)
            skips.append(h)
        if features is not None:
            features = features[:, :cfg.encoder_channels]  # the final map (a pyramid's finer maps follow it)
            fmap = F.adaptive_avg_pool2d(features, h.shape[-2:]) if features.shape[-2:] != h.shape[-2:] else features
            h = h + self.feature_map_in(fmap.to(h.dtype))
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
