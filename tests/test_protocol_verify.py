"""`bench verify`: re-runs of records on the toy dataset, edited and refused records, sampling and the CI check."""

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.errors import BenchError, DataError
from benchmark.leaderboard.tables import details_table
from benchmark.records import Record, load_records, predictions_path
from benchmark.protocol.verify import (DEFAULT_TOLERANCE, MetricDiff, cheap_methods, ci_checks, compare_metrics,
                              environment_differences, headline_metrics, load_verifiable, rerun_settings,
                              sample_records)

pytestmark = pytest.mark.usefixtures("toy_methods")
runner = CliRunner()


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(toy_dataset, tmp_path_factory):
    """Records of the toy dataset: `_test_centroid` fold 0 seeds 0, 1 and `_test_plate_std` fold 0 seed 0 (ok),
    `_test_seed_fail` seed 1 (failed)."""
    res = tmp_path_factory.mktemp("made") / "res"
    base = ["--dataset", toy_dataset.root, "--results", res, "--device", "cpu", "--folds", "0", "-q"]
    assert bench("run", "-m", "_test_centroid", "-s", "source_out", *base, "--seeds", "0,1").exit_code == 0
    assert bench("run", "-m", "_test_plate_std", "-s", "source_out", *base, "--seeds", "0").exit_code == 0
    assert bench("run", "-m", "_test_seed_fail", "-s", "source_out", *base, "--seeds", "1").exit_code == 1
    return res


@pytest.fixture
def res(made, tmp_path):
    """A private copy of the made records (tests edit them)."""
    return shutil.copytree(made, tmp_path / "res")


def centroid(res, seed=0):
    (rec,) = [r for r in load_records(res).ok if r.method == "_test_centroid" and r.seed == seed]
    return rec.path


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_an_untouched_record_verifies_and_is_left_alone(res):
    path = centroid(res)
    before = path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())
    r = bench("verify", path)
    assert r.exit_code == 0, r.output
    assert "1 of 1 runs within tolerance 1e-06 (1 with bit-identical predictions)" in r.stdout
    assert "identical" in r.stdout and "_test_centroid source_out fold 0 seed 0" in r.stdout
    assert "leaderboard mean with the re-runs in place of their records vs the committed 95% CI" in r.stdout
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())) == before


def test_json_output_holds_every_headline_metric_with_zero_difference(res):
    r = bench("verify", centroid(res), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["passed"] is True and out["tolerance"] == DEFAULT_TOLERANCE
    (run,) = out["runs"]
    assert run["predictions_identical"] is True and run["exceeding"] == []
    assert {"out_of_domain.accuracy", "in_domain.accuracy", "out_of_domain.macro_f1", "in_domain.ece"} <= set(
        run["metrics"])
    assert all(m["diff"] == 0 for m in run["metrics"].values())
    assert [c["metric"] for c in out["ci"]] == ["out_of_domain.accuracy", "in_domain.accuracy"]
    assert out["ci"][0]["n_committed"] == 2 and out["ci"][0]["inside"] is None  # one fold: no CI


def test_an_edited_metric_fails_naming_it_and_passes_a_wide_tolerance(res):
    path = centroid(res)
    edit(path, lambda d: d["metrics"]["out_of_domain"].update(accuracy=d["metrics"]["out_of_domain"]["accuracy"] - 0.1))
    r = bench("verify", path)
    assert r.exit_code == 1
    assert "DIFFERS: out_of_domain.accuracy" in r.stdout
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: 1 of 1 runs did not reproduce within tolerance 1e-06: _test_centroid "
                           "source_out fold 0 seed 0: out_of_domain.accuracy ")
    assert line.endswith("(diff +0.1)") and "in_domain" not in line
    assert bench("verify", path, "--tolerance", "0.2").exit_code == 0


def test_a_fingerprint_mismatch_is_refused_naming_both(res, toy_dataset):
    path = centroid(res)
    edit(path, lambda d: d["dataset"].update(fingerprint="fffffffffff0"))
    r = bench("verify", path)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert (f"was computed on toy fingerprint fffffffffff0 (test), but the dataset opened from '{toy_dataset.root}' "
            f"is toy fingerprint {toy_dataset.fingerprint} (test)") in r.stderr
    assert "Point --dataset at a prepared folder of toy-fffffffffff0" in r.stderr
    assert r.stderr.rstrip().endswith("nothing was re-run")


def test_a_record_whose_dataset_is_gone_says_to_pass_dataset(res, toy_dataset):
    path = centroid(res)
    edit(path, lambda d: d["dataset"].update(argument="/nonexistent/toy"))
    r = bench("verify", path)
    assert r.exit_code == 1
    assert "was computed on dataset '/nonexistent/toy', which can not be opened here" in r.stderr
    assert bench("verify", path, "--dataset", toy_dataset.root).exit_code == 0


def test_a_failed_record_is_refused(res):
    (failed,) = load_records(res).failed
    r = bench("verify", failed.path)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"error: record {failed.path} is a failed run (_test_seed_fail source_out fold 0 "
                               "seed 1: fit raised RuntimeError: seed 1 is cursed); there is nothing to verify")


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "does not exist; give the JSON file of a run"),
    (lambda p: p.write_text("{not json"), "cannot read run record"),
    (lambda p: edit(p, lambda d: d.update(record_format=0)), "has record format 0, this version reads 1"),
    (lambda p: edit(p, lambda d: d.pop("seed")), "is corrupt: it lacks field 'seed'"),
    (lambda p: edit(p, lambda d: d["metrics"].pop("in_domain")), "is corrupt: it lacks field 'in_domain'"),
    (lambda p: predictions_path(p).write_bytes(b"x"), "is corrupt: its predictions file fold0_seed0.predictions"
                                                       ".parquet does not match the SHA-256 in the record"),
])
def test_missing_and_corrupt_records_are_refused(res, damage, message):
    path = centroid(res)
    damage(path)
    r = bench("verify", path)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [
    ([], "error: nothing to verify: give record files"),
    (["--cheap"], "error: nothing to verify"),
    (["--sample", "1", "--cheap", "X"], "error: give record files or --sample N, not both"),
    (["--sample", "0"], "error: --sample takes a number of records >= 1, got 0"),
    (["--sample", "1", "--results", "/nonexistent"], "error: results folder /nonexistent does not exist"),
])
def test_bad_arguments_are_one_line(args, message):
    r = bench("verify", *args)
    assert r.exit_code == 1 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr


def test_a_folder_and_keep_over_the_committed_records_are_refused(res):
    path = centroid(res)
    assert "is a folder; give record files" in bench("verify", path.parent).stderr
    r = bench("verify", path, "--keep", res, "--tolerance", "-1")
    assert r.exit_code == 1 and "--tolerance must be >= 0" in r.stderr
    r = bench("verify", path, "--keep", res)
    assert r.exit_code == 1 and "its re-run would overwrite it" in r.stderr


def test_sample_is_seeded_and_keep_holds_the_reruns(res, tmp_path):
    first = [r.path for r in sample_records(res, 2, seed=3)]
    assert first == [r.path for r in sample_records(res, 2, seed=3)] and len(set(first)) == 2
    assert all(p.suffix == ".json" and "_test_seed_fail" not in str(p) for p in first)  # ok records only
    assert len(sample_records(res, 10)) == 3
    r = bench("verify", "--sample", "1", "--results", res, "--keep", tmp_path / "kept", "--dry-run")
    assert r.exit_code == 0 and "1 record(s)" in r.stdout and "nothing was re-run" in r.stdout
    assert not (tmp_path / "kept").exists()
    r = bench("verify", "--sample", "1", "--results", res, "--keep", tmp_path / "kept", "--seed-of-sample", "1")
    assert r.exit_code == 0, r.output
    assert len(load_records(tmp_path / "kept").ok) == 1


def _fake(method, fold, seed, fit_s, ood=0.5, ind=0.6, split="source_out"):
    return Record(f"/r/{method}/{split}/fold{fold}_seed{seed}.json", {
        "method": {"name": method, "access": "none", "config": {}}, "split": {"name": split, "fold": fold},
        "seed": seed, "dataset": {"name": "toy", "fingerprint": "abc"}, "status": "ok", "profile": "full",
        "timings": {"fit_s": fit_s}, "metrics": {"out_of_domain": {"accuracy": ood}, "in_domain": {"accuracy": ind}}})


def test_cheap_methods_are_the_cheaper_half_widened_to_enough_runs():
    records = ([_fake("slow", 0, s, 100.0) for s in range(3)] + [_fake("mid", 0, s, 10.0) for s in range(3)]
               + [_fake("fast", 0, 0, 1.0)])
    assert cheap_methods(records) == ["fast", "mid"]
    assert cheap_methods(records[3:]) == ["fast"]
    assert cheap_methods(records[3:], at_least=3) == ["fast", "mid"]


def test_the_ci_check_uses_the_leaderboards_interval():
    from benchmark.protocol.verify import RunCheck

    committed = [_fake("m", f, s, 1.0, ood=0.6 + 0.05 * f + 0.01 * s) for f in range(4) for s in range(3)]
    same = [RunCheck(r, rerun=r) for r in committed[:2]]  # two runs re-run bit for bit
    (ood, ind) = ci_checks(same, committed)
    assert (ood.metric, ood.n_committed, ood.n_folds, ood.n_reruns) == ("out_of_domain.accuracy", 12, 4, 2)
    row = next(line for line in details_table(committed) if "leave-source-out" in line)
    assert f"[{ood.ci_low:.3f}, {ood.ci_high:.3f}]" in row  # the very interval the leaderboard prints
    assert ood.rerun_mean == pytest.approx(ood.committed_mean) and ood.inside is True
    assert ood.these_committed == ood.these_rerun == pytest.approx(0.605)  # fold 0, seeds 0 and 1
    assert ind.inside is True and ind.ci_low == ind.ci_high == pytest.approx(0.6)  # equal values: a one-point CI
    moved = [RunCheck(committed[0], rerun=_fake("m", 0, 0, 1.0, ood=0.99))]
    (ood,) = [c for c in ci_checks(moved, committed) if c.metric == "out_of_domain.accuracy"]
    assert ood.rerun_mean == pytest.approx(ood.committed_mean + (0.99 - 0.6) / 12) and ood.inside is True
    everything = [RunCheck(r, rerun=_fake("m", r.fold, r.seed, 1.0, ood=0.99)) for r in committed]
    (ood,) = [c for c in ci_checks(everything, committed) if c.metric == "out_of_domain.accuracy"]
    assert ood.rerun_mean == pytest.approx(0.99) and ood.inside is False


def test_headline_metrics_and_differences():
    metrics = {"out_of_domain": {"accuracy": 0.5, "ece": None, "worst_plate": "p", "flag": True},
               "per_plate": [{"accuracy": 1.0}], "per_source": {"out_of_domain": {"lab1": 0.5}}, "n": 3}
    got = headline_metrics(metrics)
    assert set(got) == {"out_of_domain.accuracy", "out_of_domain.ece", "n"} and math.isnan(got["out_of_domain.ece"])
    diffs = {d.name: d for d in compare_metrics(metrics, {"out_of_domain": {"accuracy": 0.75, "ece": None}})}
    assert diffs["out_of_domain.accuracy"].diff == 0.25 and not diffs["out_of_domain.ece"].exceeds(0)
    assert diffs["n"].exceeds(1e9)  # present on one side only
    assert MetricDiff("x", 0.5, 0.5 + 1e-7).exceeds(DEFAULT_TOLERANCE) is False


def test_rerun_settings_rebuild_a_config_whose_defaults_moved(res):
    path = centroid(res)
    edit(path, lambda d: d["method"]["config"].update(temperature=0.5))
    assert rerun_settings(load_verifiable(path)) == (
        {"temperature": 0.5}, ["today's defaults differ in temperature; used the record's values"])
    edit(path, lambda d: d["method"]["config"].update(gone=1))
    with pytest.raises(BenchError, match="method _test_centroid has no hyper-parameter.s. gone any more"):
        rerun_settings(load_verifiable(path))


def test_environment_differences_name_what_breaks_bit_identity():
    recorded = {"git_commit": "a" * 40, "torch": "2.1", "cpu": {"model": "AMD EPYC", "isa": ["avx2"]},
                "torch_threads": {"intra_op": 2}}
    current = {"git_commit": "b" * 40, "torch": "2.1", "cpu": {"model": "Xeon", "isa": ["avx2", "avx512f"]},
               "torch_threads": {"intra_op": 2}}
    assert environment_differences(recorded, current) == [
        "code commit: aaaaaaaaaaaa -> bbbbbbbbbbbb", "CPU model: AMD EPYC -> Xeon",
        "instruction sets: avx2 -> avx2,avx512f"]
    assert environment_differences({}, current) == []


def test_load_verifiable_raises_data_errors(res):
    with pytest.raises(DataError, match="does not exist"):
        load_verifiable(res / "nope.json")
