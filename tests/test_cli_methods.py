"""``bench methods``: list and pretrain-encoder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.registry import available_methods

runner = CliRunner()


def test_list_shows_every_method_with_access_level_and_description():
    result = runner.invoke(app, ["methods", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, cls in available_methods().items():
        row = next(line for line in lines if line.split()[0] == name)
        assert str(cls.access) in row.split() and cls.description in row
    assert {"erm", "fm_tvn", "arm_bn", "cs_arm_bn"} <= set(available_methods())


def test_pretrain_encoder_writes_loadable_weights(tmp_path, monkeypatch):
    import benchmark.datasets.synthetic as synthetic
    import numpy as np

    monkeypatch.setattr(synthetic, "pretraining_images", lambda n, seed, image_size=64:
                        np.random.default_rng(seed).integers(0, 256, (n, 5, image_size, image_size), dtype=np.uint8))
    out = tmp_path / "enc.safetensors"
    result = runner.invoke(app, ["methods", "pretrain-encoder", "--out", str(out), "--n-images", "16",
                                 "--epochs", "1", "--image-size", "48"])
    assert result.exit_code == 0, result.output
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["objective"].startswith("SimCLR") and config["n_images"] == 16 and config["dim"] == 128
    from benchmark.datasets.synthetic import SIMULATOR_VERSION
    assert f"pretraining_images(16, seed=0, image_size=48) of simulator {SIMULATOR_VERSION}" in config["pretraining_data"]
    assert set(config["code"]) == {"git_commit", "git_tree"}
    from benchmark.core.encoders.loading import load_encoder
    assert load_encoder(f"platebench-ssl:{out}").embed(np.zeros((2, 5, 32, 32), np.uint8)).shape == (2, 128)


def test_pretrain_encoder_rejects_a_wrong_file_suffix(tmp_path):
    result = runner.invoke(app, ["methods", "pretrain-encoder", "--out", str(tmp_path / "enc.pt")])
    assert result.exit_code == 1
    assert "must end in .safetensors" in result.output


def test_listing_methods_does_not_load_heavy_libraries():
    """`bench methods list` must stay quick: timm and scikit-learn load only when a model is built or fitted."""
    import subprocess
    import sys
    from pathlib import Path

    import benchmark

    code = ("import sys; from benchmark.registry import available_methods; available_methods(); "
            "print(sorted(m for m in ('timm', 'sklearn', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(benchmark.__file__).parents[1])  # the same checkout as this test process
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
