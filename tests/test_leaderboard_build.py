"""The leaderboard from hand-made records: aggregates, pairing, exclusions, reproducibility."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.leaderboard.build import NoRecordsError, build_leaderboard, paired_difference
from benchmark.records import RECORD_FORMAT, load_records, record_path, write_record

runner = CliRunner()


def fake(root, method, split, fold, seed, ood, ind, fp="fp1", access="none", status="ok", profile="full",
         fmt=RECORD_FORMAT, held_out=None, n_folds=None, name="synthetic", commit="c" * 40, tree="clean", fit_report=None):
    data = {
        "fit_report": fit_report or {},
        "environment": {"platebench": "0.1.0", "git_commit": commit, "git_tree": tree, "torch": "2.14.1"},
        "record_format": fmt, "profile": profile, "status": status, "seed": seed,
        "error": None if status == "ok" else "fit raised RuntimeError: boom",
        "method": {"name": method, "access": access, "config": {"image_size": 32, "lr": 0.001},
                   "overrides": {}},
        "split": {"name": split, "fold": fold, "split_seed": 0,
                  "n_folds": n_folds or (2 if split == "source_out" else 5),
                  "held_out": held_out or [f"s{fold}" if split == "source_out" else f"b{fold}"]},
        "dataset": {"name": name, "argument": name, "version": "1", "fingerprint": fp,
                    "image_shape": [5, 32, 32]},
        "metrics": {"out_of_domain": {"accuracy": ood, "balanced_accuracy": ood, "macro_f1": ood,
                                      "worst_plate_accuracy": ood - 0.1, "ece": 0.05},
                    "in_domain": {"accuracy": ind, "balanced_accuracy": ind, "macro_f1": ind,
                                  "worst_plate_accuracy": ind, "ece": 0.02}},
    }
    path = record_path(root, name, fp, method, split, fold, seed, profile)
    pred = None if status != "ok" else pl.DataFrame({"image_id": np.arange(4)})
    write_record(path, data, pred)
    return path


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    erm_so = {(0, 0): 0.5, (0, 1): 0.6, (1, 0): 0.7, (1, 1): 0.8}
    for (fold, seed), acc in erm_so.items():
        fake(root, "erm", "source_out", fold, seed, acc, 0.9)
        fake(root, "cs_arm_bn", "source_out", fold, seed, acc + 0.1, 0.92, access="unlabeled")
    fake(root, "erm", "batch_out", 0, 0, 0.7, 0.9)
    fake(root, "cs_arm_bn", "batch_out", 0, 0, 0.75, 0.92, access="unlabeled")
    return root


def section(md, start, stop="\n## "):
    i = md.index(start)
    j = md.find(stop, i + 1)
    return md[i:j if j > 0 else None]


def row(md, method):
    return next(line for line in md.splitlines() if line.startswith(f"| `{method}` |"))


def test_main_table_by_hand(results, tmp_path):
    out = tmp_path / "lb" / "LEADERBOARD.md"
    res = build_leaderboard(results, out, figures=False)
    md = out.read_text()
    assert res.n_records == 10 and not res.warnings
    erm = row(md, "erm").split(" | ")
    # in-domain pools both splits; source-out: mean of 0.5..0.8, sample std sqrt(0.05/3)
    assert erm[1:6] == ["none", "0.900 ± 0.000", "0.700 ± 0.000", "0.650 ± 0.129", "+0.250"]
    cs = row(md, "cs_arm_bn").split(" | ")
    assert cs[1] == "unlabeled" and cs[4] == "0.750 ± 0.129"
    assert cs[6] == "+0.050 [no CI: 1 fold] (n=1, 1 fold)" and cs[7] == "+0.100 [+0.100, +0.100] (n=4, 2 folds)"
    assert cs[8] == "5 (1 + 4)" and cs[9].startswith("1")
    assert "`synthetic` = a simulator, not real data" in md
    assert "fingerprint `fp1`" in md and "Seeds: 0, 1." in md
    assert "Model / input (from the records' configs): `erm`: image_size=32" in md
    # rows are ordered by access level, ERM first
    assert md.index("| `erm` |") < md.index("| `cs_arm_bn` |")


def test_per_source_reported_rows_and_commands(results, tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(results, out, figures=False)
    md = out.read_text()
    per_source = section(md, "### Leave-source-out accuracy per held-out source", "\n### ")
    assert "| `erm` | 0.550 ± 0.071 | 0.750 ± 0.071 |" in per_source
    reported = section(md, "## JUMP-CP — reported by the reference study, not reproduced here")
    assert "| ERM (reported, not reproduced here) | none | 0.939 ± 0.005 | 0.862 ± 0.060 |" in reported
    assert "| ARM-BN (reported, not reproduced here) | unlabeled | – | 0.935 ± 0.018 |" in reported
    cmds = section(md, "### Commands that regenerate these numbers", "```\n\n")
    assert f"bench run --method erm --split source_out --dataset synthetic --seeds 0,1 --results {results}" in cmds
    assert f"bench run --method erm --split batch_out --dataset synthetic --seeds 0 --folds 0 --results {results}" \
        in cmds
    assert f"bench leaderboard --results {results} --out {out}" in cmds


def test_paired_difference_pairs_only_shared_fold_and_seed(results):
    recs = load_records(results).ok
    assert paired_difference(recs, "cs_arm_bn", "source_out") == pytest.approx((0.1, 0.1, 0.1, 4, 2))
    fake(results, "cs_arm_bn", "source_out", 1, 7, 0.0, 0.9, access="unlabeled")  # no ERM partner
    recs = load_records(results).ok
    assert paired_difference(recs, "cs_arm_bn", "source_out")[3] == 4


def ci_of(cell):
    """The ``(low, high)`` numbers of a ``[low, high]`` table cell."""
    inside = cell[cell.index("[") + 1:cell.index("]")]
    return tuple(float(v) for v in inside.split(", "))


@pytest.fixture
def far_folds(tmp_path):
    """2 held-out sources x 3 seeds: the seeds of a fold nearly agree, the folds do not."""
    root = tmp_path / "results"
    for fold, (erm, gain) in enumerate([(0.5, 0.0), (0.9, 0.2)]):
        for seed, jitter in enumerate((-0.001, 0.0, 0.001)):
            fake(root, "erm", "source_out", fold, seed, erm + jitter, 0.95)
            fake(root, "cs_arm_bn", "source_out", fold, seed, erm + gain + 2 * jitter, 0.95, access="unlabeled")
    fake(root, "erm", "batch_out", 0, 0, 0.7, 0.9)
    fake(root, "erm", "batch_out", 0, 1, 0.72, 0.9)
    return root


def details_row(md: str, method: str, setting: str) -> str:
    """The line of ``method`` and ``setting`` in the leaderboard's details table."""
    details = section(md, "### Details", "\n### ")
    return next(line for line in details.splitlines() if line.startswith(f"| `{method}` | {setting} |"))


def test_confidence_intervals_resample_folds_not_seeds(far_folds, tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(far_folds, out, figures=False)
    md = out.read_text()
    erm_so = details_row(md, "erm", "leave-source-out")
    # two folds span [fold 0, fold 1]; the run-level bootstrap of the 6 runs gave about [0.566, 0.834]
    assert ci_of(erm_so.split(" | ")[4]) == pytest.approx((0.5, 0.9), abs=0.002)
    delta = row(md, "cs_arm_bn").split(" | ")[7]  # the paired difference resamples folds too: +0.0 and +0.2
    assert ci_of(delta) == pytest.approx((0.0, 0.2), abs=0.002)  # run-level: about [+0.033, +0.167]
    assert delta.startswith("+0.100 [") and delta.endswith("(n=6, 2 folds)")
    mean, lo, hi, n, n_folds = paired_difference(load_records(far_folds).ok, "cs_arm_bn", "source_out")
    assert (lo, hi) == pytest.approx((0.0, 0.2), abs=0.002) and (n, n_folds) == (6, 2)


def test_a_single_fold_gets_no_confidence_interval(far_folds, tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(far_folds, out, figures=False)
    md = out.read_text()
    erm_bo = details_row(md, "erm", "leave-batch-out")
    assert erm_bo.split(" | ")[2:5] == ["2", "0.710 ± 0.014", "[no CI: 1 fold]"]  # two seeds of one fold
    assert all(np.isnan(paired_difference(load_records(far_folds).ok, "erm", "batch_out")[1:3]))
    assert "then the seeds within each drawn fold" in md and "a single fold gives no CI" in md
    per_source = section(md, "### Leave-source-out accuracy per held-out source", "\n### ")
    assert "Each column is a single fold, so it has no CI" in per_source


def test_confidence_intervals_are_reproducible(far_folds, tmp_path):
    recs = load_records(far_folds).ok
    assert paired_difference(recs, "cs_arm_bn", "source_out") == paired_difference(recs, "cs_arm_bn", "source_out")
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(far_folds, out, figures=False)
    first = out.read_text()
    build_leaderboard(far_folds, out, figures=False)
    assert out.read_text() == first


def test_mixed_fingerprints_are_never_averaged(results, tmp_path):
    fake(results, "erm", "source_out", 0, 0, 0.1, 0.2, fp="fp2")
    out = tmp_path / "LEADERBOARD.md"
    res = build_leaderboard(results, out, figures=False)
    md = out.read_text()
    fp1 = section(md, "## Dataset `synthetic` — version 1, fingerprint `fp1`")
    fp2 = section(md, "## Dataset `synthetic` — version 1, fingerprint `fp2`")
    assert "0.650 ± 0.129" in row(fp1, "erm")
    assert row(fp2, "erm").split(" | ")[4] == "0.100 ± 0.000"
    assert "also exist for fingerprint(s) `fp2`" in fp1 and "never averaged" in fp1
    assert any("has records of 2 data versions (fp1, fp2)" in w for w in res.warnings)


def test_failed_quick_and_older_records_are_reported_not_mixed(results, tmp_path):
    fake(results, "erm", "source_out", 0, 5, 0.0, 0.0, status="failed")
    fake(results, "erm", "source_out", 0, 6, 0.0, 0.0, profile="quick")
    old = fake(results, "erm", "source_out", 0, 8, 0.0, 0.0, fmt=0)
    out = tmp_path / "LEADERBOARD.md"
    res = build_leaderboard(results, out, figures=False)
    md = out.read_text()
    assert "0.650 ± 0.129" in row(md, "erm")  # none of the three changes the numbers
    assert "**Not included: 1 failed run(s)**" in md
    assert "- erm source_out fold 0 seed 5: fit raised RuntimeError: boom" in md
    assert "- 1 record(s) of the `--quick` smoke profile are excluded." in md
    assert "1 record(s) of an older record format (format 0; this version reads 1) are not included" in md
    assert f"`{old.relative_to(results).as_posix()}`" in md
    assert any(w.startswith("1 failed run record(s) are not included") for w in res.warnings)
    assert any(w.startswith("1 record(s) of an older format are not included") for w in res.warnings)
    with_quick = build_leaderboard(results, out, figures=False, include_quick=True)
    assert with_quick.n_records == 11


def test_rebuild_is_reproducible_and_draws_the_figure(results, tmp_path):
    out = tmp_path / "board" / "LEADERBOARD.md"
    res = build_leaderboard(results, out)
    first = out.read_text()
    (fig,) = res.figures
    assert fig == tmp_path / "board" / "figures" / "accuracy_synthetic-fp1.png"
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy by method and split](figures/accuracy_synthetic-fp1.png)" in first
    fig_bytes = fig.read_bytes()
    build_leaderboard(results, out)
    assert out.read_text() == first and fig.read_bytes() == fig_bytes


COMMITTED = "| `erm` | none | 0.839 ± 0.026 | ... |\n"  # stands for a committed, non-empty table


@pytest.mark.parametrize("case, reason", [
    ("missing", "no run records: the results folder {results} does not exist; check --results"),
    ("empty", "no run records under {results} (no fold*_seed*.json file); run `bench run --method erm"),
    ("failed_and_quick", "no usable run records under {results}: 1 failed, 1 of the --quick profile (add "
                         "--include-quick to count them)"),
    ("rejected_and_older", "no usable run records under {results}: 1 rejected (method not installed, or data "
                           "version not in the repository), 1 of an older record format"),
])
def test_no_usable_records_is_an_error_and_writes_nothing(tmp_path, case, reason):
    results = tmp_path / "results"
    if case != "missing":
        results.mkdir()
    if case == "failed_and_quick":
        fake(results, "erm", "source_out", 0, 0, 0.5, 0.9, status="failed")
        fake(results, "erm", "source_out", 0, 1, 0.5, 0.9, profile="quick")
    if case == "rejected_and_older":
        fake(results, "not_installed_method", "source_out", 0, 0, 0.5, 0.9)
        fake(results, "erm", "source_out", 0, 0, 0.5, 0.9, fmt=0)
    out = tmp_path / "board" / "LEADERBOARD.md"
    out.parent.mkdir()
    out.write_text(COMMITTED)
    result = runner.invoke(app, ["leaderboard", "--results", str(results), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert reason.format(results=results) in result.stderr
    assert result.stderr.rstrip().endswith(f"{out} was not written")
    assert out.read_text() == COMMITTED and sorted(p.name for p in out.parent.iterdir()) == ["LEADERBOARD.md"]


def test_quick_records_alone_make_a_board_when_asked(tmp_path):
    results = tmp_path / "results"
    fake(results, "erm", "source_out", 0, 0, 0.5, 0.9, profile="quick")
    with pytest.raises(NoRecordsError, match="1 of the --quick profile"):
        build_leaderboard(results, tmp_path / "LEADERBOARD.md", figures=False)
    assert build_leaderboard(results, tmp_path / "LEADERBOARD.md", figures=False, include_quick=True).n_records == 1


def test_hardware_section_names_cpu_models_and_says_how_exactly_reruns_reproduce(results, tmp_path):
    path = fake(results, "arm_bn", "source_out", 0, 0, 0.6, 0.9, access="unlabeled")
    data = json.loads(path.read_text())
    data["environment"].update(cpu={"model": "AMD EPYC", "isa": ["avx2"]}, torch_build={"cpu_capability": "AVX2"})
    path.write_text(json.dumps(data))
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(results, out, figures=False)
    section_text = section(out.read_text(), "### Hardware and reproducibility", "\n### ")
    assert "Reruns are exact on the same hardware and thread settings" in section_text
    assert "reruns there are statistical: the means agree within their 95% CIs" in section_text
    assert "- `erm`: CPU not recorded (5 runs)" in section_text  # records from before the field
    assert "- `arm_bn`: AMD EPYC (torch kernels AVX2) (1 runs)" in section_text


def test_provenance_names_the_commit_and_counts_runs_from_modified_source(results, tmp_path):
    fake(results, "arm_bn", "source_out", 0, 0, 0.6, 0.9, access="unlabeled", commit="a" * 40)
    fake(results, "arm_bn", "source_out", 1, 0, 0.6, 0.9, access="unlabeled", commit="a" * 40, tree="modified")
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(results, out, figures=False)
    code = section(out.read_text(), "### Code that produced the records", "\n### ")
    assert "- `erm`: platebench 0.1.0 at commit `cccccccccccc`, torch 2.14.1 (5 runs)" in code
    assert "- `arm_bn`: platebench 0.1.0 at commit `aaaaaaaaaaaa`, torch 2.14.1 (2 runs; 1 from uncommitted source " \
           "changes)" in code


def test_model_line_names_the_frozen_encoders_weights(results, tmp_path):
    fake(results, "fm_tvn", "source_out", 0, 0, 0.6, 0.9, access="controls",
         fit_report={"encoder_weights_sha256": "ab" * 32})
    out = tmp_path / "LEADERBOARD.md"
    build_leaderboard(results, out, figures=False)
    assert "`fm_tvn`: encoder_sha256=abababababab…, image_size=32" in out.read_text()
