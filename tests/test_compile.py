"""`--compile`: the network under torch.compile restores the same photos as eager, up to rounding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA
from PIL import Image
from typer.testing import CliRunner

from palette_cli.cli import _register, app

PHOTO = DATA / "kodim05-96.png"
_register()


@pytest.mark.slow
def test_compile_restores_what_eager_does(tiny_model_dir, tmp_path):
    outputs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["jpeg", str(PHOTO), "-m", str(tiny_model_dir), "-o", str(out),
                                          "--steps", "1", "--dtype", "fp32", "-q", *extra])
        assert result.exit_code == 0, result.output
        (path,) = out.iterdir()
        outputs[name] = np.asarray(Image.open(path), dtype=np.int16)
    assert outputs["eager"].shape == outputs["compiled"].shape == (64, 96, 3)
    assert np.abs(outputs["eager"] - outputs["compiled"]).max() <= 1
