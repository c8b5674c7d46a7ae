"""`bench data` commands on a small dataset folder, and their error messages."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.report.montage import false_colour, montage_image_ids

runner = CliRunner()


def test_info_json_counts(toy_dataset):
    result = runner.invoke(app, ["data", "info", str(toy_dataset.root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["fingerprint"] == toy_dataset.fingerprint
    assert info["n_sources"] == 4 and info["n_batches"] == 12 and info["n_plates"] == 24
    assert info["n_controls"] == 24 * 32 and info["n_treated"] == 24 * 32
    assert info["per_class"]["AMG900"] == 24 * 4
    assert {p["n_controls"] for p in info["per_plate"]} == {32}


def test_info_table_names_fingerprint(toy_dataset):
    result = runner.invoke(app, ["data", "info", str(toy_dataset.root)])
    assert result.exit_code == 0, result.output
    assert toy_dataset.fingerprint in result.stdout and "per plate" in result.stdout


def test_show_writes_png(toy_dataset, tmp_path):
    out = tmp_path / "m.png"
    result = runner.invoke(app, ["data", "show", str(toy_dataset.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_montage_picks_each_source_and_compound(toy_dataset):
    chosen = montage_image_ids(toy_dataset)
    assert len(chosen) == 4 * 9
    for (source, label), ids in chosen.items():
        rows = toy_dataset.index[ids]
        assert set(rows["source"]) == {source} and set(rows["label"]) == {label}


def test_false_colour_maps_dna_to_blue():
    img = np.zeros((5, 2, 2), dtype=np.uint8)
    img[4] = 255  # DNA
    rgb = false_colour(img)
    assert rgb[..., 2].min() > 0.5 and rgb[..., 0].max() == 0


def test_unknown_dataset_is_one_line_with_choices():
    result = runner.invoke(app, ["data", "info", "synthetc"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "unknown dataset 'synthetc'" in result.stderr and "Did you mean 'synthetic'" in result.stderr


def test_negative_severity_is_refused():
    result = runner.invoke(app, ["data", "synth", "--severity", "-1"])
    assert result.exit_code == 1
    assert "--severity must be >= 0" in result.stderr
