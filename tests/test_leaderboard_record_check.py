"""`bench leaderboard` recomputes every metric from the predictions and refuses records that disagree."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from benchmark import registry
from benchmark.cli import app
from benchmark.leaderboard.build import DEFAULT_OUT
from benchmark.leaderboard.record_check import check_record, compare, recompute
from benchmark.records import load_records, predictions_path, read_record, write_record

pytestmark = pytest.mark.usefixtures("toy_methods")
runner = CliRunner()
METHODS = ("_test_centroid", "_test_plate_std")


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(toy_dataset, tmp_path_factory):
    """Real records of two toy methods (source_out fold 0, seeds 0 and 1, every scenario that applies)."""
    root = tmp_path_factory.mktemp("made") / "res"
    for method in METHODS:
        r = bench("run", "-m", method, "-s", "source_out", "--dataset", toy_dataset.root, "--results", root,
                  "--device", "cpu", "--folds", "0", "--seeds", "0,1", "-q")
        assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def res(made, tmp_path, monkeypatch):
    """A fresh copy of the records; the toy methods count as the repository's reference methods."""
    for name in METHODS:
        monkeypatch.setitem(registry._ORIGINS, name, "platebench")
    monkeypatch.setenv("PLATEBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "res"
    shutil.copytree(made, root)
    return root


def record_of(root, method, seed=0):
    return next(r for r in load_records(root).ok if r.method == method and r.seed == seed)


def edit(path, change):
    data = json.loads(Path(path).read_text())
    change(data)
    Path(path).write_text(json.dumps(data, indent=1))


def leaderboard(root, tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    r = bench("leaderboard", "--results", root, "--out", out, "--baseline", "_test_centroid", "--no-figures")
    return r, (out.read_text() if out.exists() else "")


def test_real_records_pass_every_check(res, tmp_path):
    for rec in load_records(res).ok:
        assert check_record(rec.path) == [], rec.path
        assert set(rec.data["scenarios"]) >= {"label_shift", "controls", "support"}
    r, md = leaderboard(res, tmp_path)
    assert r.exit_code == 0, r.output
    assert "refused" not in r.stderr and "Refused records" not in md
    assert "labels of the records of toy" not in r.stderr  # the run's dataset folder is there: labels checked
    assert f"from {len(METHODS) * 2} run records" in r.stdout


def test_a_record_whose_metrics_were_rewritten_is_refused_and_the_others_still_appear(res, tmp_path):
    cheat = record_of(res, "_test_centroid", seed=1)
    truth = cheat.data["metrics"]["out_of_domain"]
    assert truth["accuracy"] < 0.5

    def rewrite(data):  # what a fit report that rewrites the run's metrics dict leaves behind
        data["metrics"]["out_of_domain"].update(accuracy=1.0, balanced_accuracy=1.0, worst_plate_accuracy=1.0)

    edit(cheat.path, rewrite)
    r, md = leaderboard(res, tmp_path)
    assert r.exit_code == 0, r.output
    (line,) = [x for x in r.stderr.splitlines() if "refused" in x]
    assert line == (f"warning: record {cheat.path.as_posix()} refused: metrics.out_of_domain.accuracy: the record "
                    f"says 1.0, its predictions give {truth['accuracy']!r}; metrics.out_of_domain.balanced_accuracy: "
                    f"the record says 1.0, its predictions give {truth['balanced_accuracy']!r}; "
                    "metrics.out_of_domain.worst_plate_accuracy: the record says 1.0, its predictions give "
                    f"{truth['worst_plate_accuracy']!r}")
    assert f"from {len(METHODS) * 2 - 1} run records" in r.stdout
    refused = md[md.index("## Refused records"):]
    assert "/_test_centroid/source_out/fold0_seed1.json`: metrics.out_of_domain.accuracy: the record says 1.0" \
        in refused
    rows = {}
    for x in md.splitlines():  # the main table is the first
        if x.startswith("| `_test_"):
            rows.setdefault(x.split(" | ")[0], x.split(" | "))
    assert rows["| `_test_centroid`"][-2] == "1 (0 + 1)"  # its honest run is still counted
    assert rows["| `_test_plate_std`"][-2] == "2 (0 + 2)"


@pytest.mark.parametrize("field, value, expected", [
    (("metrics", "in_domain", "accuracy"), "0.9", "metrics.in_domain.accuracy is the string '0.9', not a number"),
    (("metrics", "out_of_domain", "n_images"), 12.0,
     "metrics.out_of_domain.n_images is 12.0 (a float), not an integer"),
    (("metrics", "per_source"), [], "metrics.per_source is [] (a list), not a JSON object"),
    (("scenarios", "controls", "levels", "2", "metrics", "accuracy"), "0.9",
     "scenarios.controls.levels.2.metrics.accuracy is the string '0.9', not a number"),
    (("split", "fold"), "0", "split.fold is the string '0', not an integer"),
    (("method", "access"), "everything", "method.access 'everything' is not an access level"),
    (("fit_report", "train_seconds"), "fast", "fit_report.train_seconds is the string 'fast', not a number"),
])
def test_a_field_of_the_wrong_type_is_refused_naming_the_field(res, tmp_path, field, value, expected):
    rec = record_of(res, "_test_plate_std")

    def put(data):
        target = data
        for key in field[:-1]:
            target = target.setdefault(key, {})
        target[field[-1]] = value

    edit(rec.path, put)
    r, md = leaderboard(res, tmp_path)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    (line,) = [x for x in r.stderr.splitlines() if "refused" in x]
    assert line.startswith(f"warning: record {rec.path.as_posix()} refused: ") and expected in line
    assert expected in md[md.index("## Refused records"):]


def test_scenario_levels_that_copy_the_plain_metrics_must_equal_them(res):
    rec = record_of(res, "_test_plate_std")  # access unlabeled: controls level "all" is the plain evaluation
    assert rec.data["scenarios"]["controls"]["levels"]["all"]["status"] == "plain"
    edit(rec.path, lambda d: d["scenarios"]["controls"]["levels"]["all"]["metrics"].update(accuracy=0.99))
    assert check_record(rec.path)[0].startswith("scenarios.controls.levels.all.metrics.accuracy: the record says 0.99")

    def relabel(data):  # a scored level passed off as the plain evaluation
        level = data["scenarios"]["controls"]["levels"]["2"]
        level.update(status="plain")
    edit(rec.path, lambda d: d["scenarios"]["controls"]["levels"]["all"]["metrics"].update(
        accuracy=rec.data["metrics"]["out_of_domain"]["accuracy"]))
    edit(rec.path, relabel)
    assert check_record(rec.path) == ["scenarios.controls.levels.2.status is 'plain', but this level changes what "
                                      "the method is scored on"]
    centroid = record_of(res, "_test_centroid")  # access none: no support level changes what it gets
    edit(centroid.path, lambda d: d["scenarios"]["support"]["levels"]["8"].update(status="ok"))
    assert check_record(centroid.path) == ["scenarios.support.levels.8.status is 'ok', but this level must be "
                                           "'unchanged' (its metrics are the plain evaluation's)"]


def test_per_plate_and_per_source_are_recomputed(res):
    rec = record_of(res, "_test_centroid")
    edit(rec.path, lambda d: d["metrics"]["per_plate"][0].update(accuracy=1.0))
    assert check_record(rec.path)[0].startswith("metrics.per_plate[0].accuracy: the record says 1.0")
    honest = rec.data["metrics"]["per_plate"][0]["accuracy"]
    edit(rec.path, lambda d: d["metrics"]["per_plate"][0].update(accuracy=honest, adapt_predict_s="slow"))
    assert check_record(rec.path) == ["metrics.per_plate[0].adapt_predict_s is the string 'slow', not a number"]
    edit(rec.path, lambda d: d["metrics"]["per_source"]["out_of_domain"].update(src9=1.0))
    assert "metrics.per_source.out_of_domain has field(s) no recomputation gives: src9" in check_record(rec.path)


def test_tolerance_is_tight():
    assert compare("m", {"a": 0.5 * (1 + 1e-12), "n": 3}, {"a": 0.5, "n": 3}) == []
    assert compare("m", {"a": 0.5 * (1 + 1e-7)}, {"a": 0.5}) == [
        f"m.a: the record says {0.5 * (1 + 1e-7)!r}, its predictions give 0.5"]
    assert compare("m", {"a": None}, {"a": None}) == []  # NaN is stored as null
    assert compare("m", {"a": 0.5}, {"a": None}) == ["m.a: the record says 0.5, its predictions give None"]
    assert compare("m", {"w": "p2"}, {"w": "p1"}) == ["m.w: the record says 'p2', its predictions give 'p1'"]


def test_a_self_consistent_forgery_is_caught_by_the_dataset_labels(res, tmp_path):
    """Labels rewritten to the predictions and metrics recomputed to match: only the dataset can tell."""
    rec = record_of(res, "_test_centroid")
    data = read_record(rec.path)
    forged = pl.read_parquet(predictions_path(rec.path)).with_columns(pl.col("predicted").alias("label"))
    data["metrics"] = recompute(forged)["metrics"]
    data.pop("scenarios")
    write_record(rec.path, data, forged)
    assert check_record(rec.path) == []  # consistent with itself ...
    problems = check_record(rec.path, index=pl.read_parquet(Path(data["dataset"]["argument"]) / "index.parquet"))
    assert len(problems) == 1 and problems[0].startswith("its predictions' label differs from the dataset's for ")
    r, md = leaderboard(res, tmp_path)  # ... the leaderboard finds the dataset from the record's folder
    assert f"warning: record {rec.path.as_posix()} refused: its predictions' label differs" in r.stderr
    assert "## Refused records" in md


def test_a_predictions_file_without_the_needed_columns_is_refused(res, tmp_path):
    rec = record_of(res, "_test_plate_std")
    data = read_record(rec.path)
    write_record(rec.path, data, pl.read_parquet(predictions_path(rec.path)).drop("part"))
    assert check_record(rec.path) == ["its predictions file lacks column(s) part"]
    r, _ = leaderboard(res, tmp_path)
    assert "refused: its predictions file lacks column(s) part" in r.stderr


def test_when_every_record_is_refused_nothing_is_written(res, tmp_path):
    for rec in load_records(res).ok:
        edit(rec.path, lambda d: d["metrics"]["in_domain"].update(accuracy=0.123))
    r, md = leaderboard(res, tmp_path)
    assert r.exit_code == 1 and md == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: no usable run records under {res.as_posix()}: {len(METHODS) * 2} refused (first: "
                           "record ") and "refused: metrics.in_domain.accuracy: the record says 0.123" in line
    assert line.endswith(f"; {(tmp_path / 'LEADERBOARD.md').as_posix()} was not written")


def test_the_committed_leaderboard_rebuilds_byte_for_byte_with_every_check(tmp_path, monkeypatch):
    """`bench leaderboard` itself (metrics recomputed for all committed records) gives the committed file."""
    repo = Path(__file__).resolve().parents[1] / "leaderboard"
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "results").symlink_to(repo / "results")
    (tmp_path / "leaderboard" / "figures").mkdir()
    (tmp_path / "leaderboard" / "figures" / "report").symlink_to(repo / "figures" / "report")
    monkeypatch.chdir(tmp_path)
    r = bench("leaderboard")
    assert r.exit_code == 0, r.output
    assert "refused" not in r.stderr
    assert (tmp_path / DEFAULT_OUT).read_text() == (repo / "LEADERBOARD.md").read_text()
    figures = sorted((tmp_path / "leaderboard" / "figures").glob("*.png"))
    assert {f.name for f in figures} == {f.name for f in (repo / "figures").glob("*.png")}
    for figure in figures:
        assert figure.read_bytes() == (repo / "figures" / figure.name).read_bytes(), figure.name
