"""``bench leaderboard`` rejects submitted records of a method not installed or of a data version not in the repository."""

from __future__ import annotations

from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.leaderboard.build import build_leaderboard, screen_records
from benchmark.records import load_records
import json

import numpy as np
import polars as pl

from benchmark.constants import CLASS_NAMES, N_CLASSES
from benchmark.protocol.evaluation import score
from benchmark.records import write_record
from test_leaderboard_build import fake as fake_record

runner = CliRunner()


def fake(root, method, split, fold, seed, ood, ind, **options):
    """A fake record whose metrics agree with its predictions file (``bench leaderboard`` recomputes them)."""
    path = fake_record(root, method, split, fold, seed, ood, ind, **options)
    n = 40
    parts = []
    for part, accuracy in (("out_of_domain", ood), ("in_domain", ind)):
        labels = np.arange(n) % N_CLASSES
        predicted = np.where(np.arange(n) < round(accuracy * n), labels, (labels + 1) % N_CLASSES)
        probs = np.eye(N_CLASSES, dtype=np.float32)[predicted]
        parts.append(pl.DataFrame({
            "image_id": np.arange(n) + (0 if part == "out_of_domain" else n), "plate": f"p_{part}", "source": "s",
            "batch": "b", "well": "A01", "site": 1, "label": labels.astype(np.int8), "part": part,
            "predicted": predicted.astype(np.int8),
            **{f"prob_{name}": probs[:, k] for k, name in enumerate(CLASS_NAMES)}}))
    predictions = pl.concat(parts)
    data = json.loads(path.read_text())
    data.update(metrics=json.loads(json.dumps(score(predictions))), class_names=list(CLASS_NAMES))
    write_record(path, data, predictions)
    return path


def test_unknown_method_and_foreign_data_version_are_rejected_with_the_reason(tmp_path, toy_methods):
    """``toy_methods``: ``_test_centroid`` is an installed method that is not built in."""
    root = tmp_path / "results"
    fake(root, "erm", "source_out", 0, 0, 0.6, 0.9)
    fake(root, "adabn", "source_out", 0, 0, 0.7, 0.9, access="unlabeled")
    ghost = fake(root, "not_installed_method", "source_out", 0, 0, 0.99, 0.99)
    fake(root, "_test_centroid", "source_out", 0, 0, 0.65, 0.9)
    foreign = fake(root, "_test_centroid", "source_out", 0, 1, 0.99, 0.99, fp="fpOTHER")
    out = tmp_path / "board" / "LEADERBOARD.md"
    result = runner.invoke(app, ["leaderboard", "--results", str(root), "--out", str(out), "--no-figures"])
    assert result.exit_code == 0, result.output
    md = out.read_text()
    table = md.split("## Records")[0]
    assert "| `adabn` |" in table and "| `_test_centroid` |" in table
    assert "not_installed_method" not in table and "fpOTHER" not in table
    assert f"`{ghost.relative_to(root).as_posix()}`: method 'not_installed_method' is not installed" in md
    assert f"`{foreign.relative_to(root).as_posix()}`: data version synthetic-fpOTHER is not in the repository: " \
           "no record of a built-in method uses it" in md
    assert "warning: rejected 1 record(s): method 'not_installed_method' is not installed" in result.output
    assert "warning: rejected 1 record(s): data version synthetic-fpOTHER is not in the repository" in result.output


def test_screen_records_is_a_pure_rule(tmp_path):
    root = tmp_path / "r"
    fake(root, "plugin_x", "batch_out", 0, 0, 0.5, 0.5)  # a plugin's records alone: no built-in shares the data
    fake(root, "plugin_x", "batch_out", 0, 0, 0.5, 0.5, fp="fp9")
    fake(root, "erm", "batch_out", 0, 0, 0.5, 0.5, fp="fp9")
    records = load_records(root).ok
    accepted, rejected = screen_records(records, {"erm": "platebench", "plugin_x": "pb-x"})
    assert sorted((r.method, r.fingerprint) for r in accepted) == [("erm", "fp9"), ("plugin_x", "fp9")]
    assert [(r.fingerprint, why.split(":")[0]) for r, why in rejected] == \
        [("fp1", "data version synthetic-fp1 is not in the repository")]
    res = build_leaderboard(root, tmp_path / "lb.md", figures=False)
    assert res.n_records == 1  # with the real registry plugin_x is not installed: only erm on fp9 remains
