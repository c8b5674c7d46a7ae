"""The leaderboard's table of profile-correction metrics: values, one uncorrected row, links to embedding figures."""

from __future__ import annotations

import pytest
from test_leaderboard_build import fake

from benchmark.leaderboard.build import EMBEDDING_FIGURE, build_leaderboard
from benchmark.leaderboard.profiles import COLUMNS, correction_table
from benchmark.records import load_records


def _scores(base: float) -> dict:
    scores = {key: base + 0.01 * i for i, (key, _) in enumerate(COLUMNS)}
    return {**scores, "n_wells": 100}


def _fit_report(before: float, after: float) -> dict:
    return {"featuriser": "platebench-ssl", "train_seconds": 5.0,
            "correction_metrics": {"before": _scores(before), "after": _scores(after)}}


@pytest.fixture
def results(tmp_path):
    """ERM (no correction metrics) and two profile methods on 2 folds × 2 seeds of leave-source-out."""
    root = tmp_path / "results"
    for fold in (0, 1):
        for seed in (0, 1):
            fake(root, "erm", "source_out", fold, seed, 0.7, 0.9)
            fake(root, "profile_none", "source_out", fold, seed, 0.6, 0.8, access="controls",
                 fit_report=_fit_report(0.5 + 0.1 * fold, 0.5 + 0.1 * fold))
            fake(root, "profile_harmony", "source_out", fold, seed, 0.65, 0.8, access="transductive",
                 fit_report=_fit_report(0.5 + 0.1 * fold, 0.7 + 0.02 * seed))
    return root


def test_table_rows_are_means_over_folds_and_seeds(results):
    records = load_records(results).ok
    lines = correction_table(records, "source_out")
    assert lines[0].startswith("| profiles | silhouette batch | iLISI | kBET | batch removal |")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert set(rows) == {"uncorrected (`platebench-ssl` embeddings)", "`profile_none`", "`profile_harmony`"}
    # uncorrected: one block per (fold, seed), 0.5 and 0.6 → mean 0.55 (first column), 4 runs, not 8
    assert rows["uncorrected (`platebench-ssl` embeddings)"].split(" | ")[1] == "0.550 ± 0.058"
    assert rows["uncorrected (`platebench-ssl` embeddings)"].endswith("| 4 |")
    # harmony after: 0.70, 0.72, 0.70, 0.72 → 0.710; overall is the last score column (base + 0.07)
    cells = rows["`profile_harmony`"].strip("| ").split(" | ")
    assert cells[1] == "0.710 ± 0.012" and cells[len(COLUMNS)] == "0.780 ± 0.012"
    assert correction_table(records, "batch_out") == []  # no profile runs there


def test_section_only_with_profile_records_and_links_existing_figures(results, tmp_path):
    md = tmp_path / "LB.md"
    figures = tmp_path / "figures"  # the leaderboard's figures go next to its markdown
    figure = figures / "report" / "profile_harmony_source_out" / EMBEDDING_FIGURE
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    build_leaderboard(results, md)
    text = md.read_text()
    section = text[text.index("### Profile corrections"):]
    assert "#### leave-source-out" in section and "#### leave-batch-out" not in section.split("### Scenario")[0]
    assert "[`profile_harmony`](figures/report/profile_harmony_source_out/embeddings.png)" in section
    assert "[`profile_none`]" not in section  # no figure written for it: no dead link


def test_no_section_without_profile_records(tmp_path):
    root = tmp_path / "results"
    fake(root, "erm", "source_out", 0, 0, 0.7, 0.9)
    md = tmp_path / "LB.md"
    build_leaderboard(root, md, figures=False)
    assert "Profile corrections" not in md.read_text()
