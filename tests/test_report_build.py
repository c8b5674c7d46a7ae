"""`bench report`: the tables and figures on small prediction frames, the command end to end on the toy
dataset (profile_none's embedding figure included) and every error path."""

from __future__ import annotations

import dataclasses
import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.core.profiles.corrections import NoCorrection
from benchmark.methods._profile import ProfileConfig, ProfileMethod
from benchmark.leaderboard.figure import save_figure
from benchmark.methods.base import AccessLevel
from benchmark.records import RECORD_FORMAT, load_records, predictions_path, record_path, write_record
from benchmark.registry import register_method, unregister_method
from benchmark.report.tables import confusion_counts, group_spans, plate_accuracy, plate_grid, row_shares
from benchmark.report.figures import confusion_figure, embedding_figure, pca_2d, plate_figure
from benchmark.report.embeddings import sample_rows

runner = CliRunner()
CLASSES = [f"class{k}" for k in range(8)]
PLATES = [("labB", "labB_b2", "labB_b2_p1"), ("labA", "labA_b2", "labA_b2_p1"), ("labA", "labA_b1", "labA_b1_p2"),
          ("labA", "labA_b1", "labA_b1_p1")]


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


def predictions(seed: int = 0, n_per_plate: int = 16, hit: float = 0.75) -> pl.DataFrame:
    """A predictions table of four target plates and one in-domain plate: ``hit`` of the labels are right."""
    rng = np.random.default_rng(seed)
    rows = []
    for part, plates in (("out_of_domain", PLATES), ("in_domain", [("labC", "labC_b1", "labC_b1_p1")])):
        for source, batch, plate in plates:
            for _ in range(n_per_plate):
                label = int(rng.integers(8))
                predicted = label if rng.random() < hit else int((label + 1 + rng.integers(7)) % 8)
                rows.append(dict(plate=plate, source=source, batch=batch, well="A01", site=1, label=label,
                                 part=part, predicted=predicted))
    frame = pl.DataFrame(rows).with_row_index("image_id").with_columns(pl.col("image_id").cast(pl.Int64),
                                                                       pl.col(["label", "predicted"]).cast(pl.Int8))
    probs = np.eye(8, dtype=np.float32)[frame["predicted"].to_numpy()]
    return frame.with_columns(*[pl.Series(f"prob_{c}", probs[:, k]) for k, c in enumerate(CLASSES)])


def write_fake(results, method: str, fold: int, seed: int, frame: pl.DataFrame | None, status: str = "ok"):
    """A record of ``method`` on source_out of a dataset 'toyfake' holding ``frame`` as its predictions."""
    path = record_path(results, "toyfake", "f00d", method, "source_out", fold, seed)
    write_record(path, {"record_format": RECORD_FORMAT, "profile": "full", "status": status,
                        "error": None if status == "ok" else "boom",
                        "method": {"name": method, "config": {}}, "seed": seed,
                        "split": {"name": "source_out", "fold": fold, "held_out": ["labA"], "split_seed": 0},
                        "dataset": {"name": "toyfake", "fingerprint": "f00d", "argument": "toyfake"},
                        "class_names": CLASSES, "metrics": {}}, frame if status == "ok" else None)
    return path


# ----------------------------------------------------------------------------- tables and figures

def test_the_confusion_matrix_counts_true_rows_and_predicted_columns():
    counts = confusion_counts(np.array([0, 0, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 0, 2]), 3)
    assert counts.tolist() == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert np.allclose(row_shares(counts), [[2 / 3, 1 / 3, 0], [0, 1, 0], [0.5, 0, 0.5]])
    assert row_shares(np.zeros((2, 2), int)).tolist() == [[0, 0], [0, 0]]  # a class without images stays 0


def test_the_confusion_matrix_of_a_predictions_table_matches_a_direct_count():
    frame = predictions()
    target = frame.filter(pl.col("part") == "out_of_domain")
    counts = confusion_counts(target["label"].to_numpy(), target["predicted"].to_numpy(), 8)
    assert counts.sum() == len(target) == 64
    for i, j in [(0, 0), (3, 4), (7, 0)]:
        assert counts[i, j] == len(target.filter((pl.col("label") == i) & (pl.col("predicted") == j)))


def test_the_plate_grid_groups_by_source_then_batch_and_holds_each_plates_accuracy():
    frame = pl.concat([predictions(0).with_columns(fold=pl.lit(0), seed=pl.lit(0)),
                       predictions(1, hit=0.4).with_columns(fold=pl.lit(0), seed=pl.lit(2))])
    frame = frame.filter(~((pl.col("plate") == "labB_b2_p1") & (pl.col("seed") == 2)))  # one run lacks a plate
    grid = plate_grid(plate_accuracy(frame))
    assert grid.rows["plate"].to_list() == ["labA_b1_p1", "labA_b1_p2", "labA_b2_p1", "labB_b2_p1"]
    assert grid.rows["source"].to_list() == ["labA", "labA", "labA", "labB"] and grid.seeds == [0, 2]
    for i, plate in enumerate(grid.rows["plate"]):
        for j, seed in enumerate(grid.seeds):
            rows = frame.filter((pl.col("plate") == plate) & (pl.col("seed") == seed) & (pl.col("part") ==
                                                                                         "out_of_domain"))
            expected = (rows["label"] == rows["predicted"]).mean() if len(rows) else np.nan
            assert np.isclose(grid.values[i, j], expected, equal_nan=True), (plate, seed)
    assert np.isnan(grid.values[3, 1]) and "labC_b1_p1" not in grid.rows["plate"]  # in-domain plates are not shown
    assert group_spans(grid.rows["source"].to_list()) == [("labA", 0, 2), ("labB", 3, 3)]


def test_pca_gives_the_main_axis_first_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.zeros(200), rng.normal(0, 5, 200), rng.normal(0, 1, 200)])  # main axis: column 1
    coords, shares = pca_2d(x)
    assert coords.shape == (200, 2) and shares[0] > 0.9 and shares.sum() <= 1 + 1e-9
    assert np.corrcoef(coords[:, 0], x[:, 1])[0, 1] > 0.999  # the largest loading is positive
    again, _ = pca_2d(-x)
    assert np.allclose(again, -coords)  # the sign follows the loadings, not the SVD's whim
    assert pca_2d(np.ones((5, 1)))[0].shape == (5, 2)  # fewer than two dimensions


def test_the_subsample_draws_the_same_number_from_every_plate_and_kind():
    rows = pl.DataFrame({"image_id": range(100), "plate": ["p1"] * 60 + ["p2"] * 40,
                         "is_control": ([True] * 30 + [False] * 30) + ([True] * 5 + [False] * 35)})
    shown = sample_rows(rows, 40, seed=1)
    counts = dict(shown.group_by("plate", "is_control").len().select(pl.concat_str("plate", "is_control"), "len")
                  .iter_rows())
    assert counts == {"p1true": 10, "p1false": 10, "p2true": 5, "p2false": 10}
    assert shown["image_id"].is_sorted() and sample_rows(rows, 40, seed=1).equals(shown)


def test_the_figures_draw(tmp_path):
    frame = predictions().with_columns(fold=pl.lit(0), seed=pl.lit(0))
    counts = confusion_counts(frame["label"].to_numpy(), frame["predicted"].to_numpy(), 8)
    rng = np.random.default_rng(0)
    meta = pl.DataFrame({"source": ["a", "b", "c"] * 20, "label": [-1, 0, 7] * 20, "is_control": [True, False,
                         False] * 20, "role": ["train"] * 30 + ["target"] * 30})
    figures = [confusion_figure(counts, CLASSES, "t"), plate_figure(plate_grid(plate_accuracy(frame)), "t"),
               embedding_figure(meta, rng.normal(size=(60, 5)), rng.normal(size=(60, 4)), CLASSES, "t")]
    for k, fig in enumerate(figures):
        path = save_figure(fig, tmp_path / f"{k}.png", 60)
        assert path.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- the command end to end

@pytest.fixture(scope="module")
def profile_run(toy_dataset, tmp_path_factory):
    results = tmp_path_factory.mktemp("report") / "res"
    r = bench("run", "-m", "profile_none", "-s", "source_out", "--dataset", toy_dataset.root, "--results", results,
              "--device", "cpu", "--folds", "0", "--quick", "-q")
    assert r.exit_code == 0, r.output
    (record,) = load_records(results).quick
    return results, record


def test_profile_none_gets_all_three_figures_and_its_refit_reproduces_the_run(profile_run, toy_dataset, tmp_path):
    results, _ = profile_run
    r = bench("report", "-m", "profile_none", "-s", "source_out", "--results", results, "--dataset", toy_dataset.root,
              "--out", tmp_path / "out", "--max-images", "400")
    assert r.exit_code == 0, r.output
    assert "only --quick smoke records exist" in r.stdout
    for name in ("confusion.png", "plate_accuracy.png", "embeddings.png"):
        assert f"wrote {tmp_path / 'out' / name}" in r.stdout
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    assert "predicts 100.0% of the target plates' treated images as the record did" in r.stdout


def test_one_record_goes_to_its_own_default_folder(profile_run, tmp_path, monkeypatch):
    _, record = profile_run
    monkeypatch.chdir(tmp_path)
    r = bench("report", "--record", record.path, "--no-embeddings")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "leaderboard/figures/report/profile_none_source_out_fold0_seed0_quick"
    assert sorted(p.name for p in folder.iterdir()) == ["confusion.png", "plate_accuracy.png"]


def test_a_method_without_embeddings_gets_the_prediction_figures_and_a_note(tmp_path):
    for seed in (0, 1):
        write_fake(tmp_path / "res", "erm", 0, seed, predictions(seed))
    write_fake(tmp_path / "res", "erm", 0, 2, None, status="failed")
    r = bench("report", "-m", "erm", "-s", "source_out", "--results", tmp_path / "res", "--dataset", "toyfake",
              "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "note: erm source_out fold 0 seed 2 failed (boom); not shown" in r.stdout
    assert "note: erm is not a profile method (profile_*): it has no embeddings to correct" in r.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["confusion.png", "plate_accuracy.png"]


# ----------------------------------------------------------------------------- errors

@dataclasses.dataclass(frozen=True)
class _PluginConfig(ProfileConfig):
    """No hyper-parameters of its own."""


class _PluginProfile(ProfileMethod):
    """A profile method that is not platebench's own (registered from this test module)."""

    name = "_test_plugin_profile"
    access = AccessLevel.NONE
    description = "a profile method from outside platebench"
    Config = _PluginConfig

    def correction(self, seed: int):
        return NoCorrection()


@pytest.fixture
def plugin_profile():
    register_method(_PluginProfile)
    yield _PluginProfile.name
    unregister_method(_PluginProfile.name)


def test_a_plugin_profile_method_is_not_refitted_unsealed(tmp_path, plugin_profile):
    path = write_fake(tmp_path / "res", plugin_profile, 0, 0, predictions())
    r = bench("report", "--record", path, "--out", tmp_path / "out")
    assert r.exit_code == 1
    assert (f"error: method '{plugin_profile}' comes from the plugin 'test_report_build': drawing its embeddings would "
            "run it unsealed") in r.stderr and "rerun with --no-embeddings" in r.stderr
    assert bench("report", "--record", path, "--out", tmp_path / "out", "--no-embeddings").exit_code == 0


def _damaged(tmp_path, how: str):
    path = write_fake(tmp_path / "res", "erm", 0, 0, predictions())
    if how == "json":
        path.write_text("{not json")
    elif how == "parquet":
        predictions_path(path).write_bytes(b"PAR1 altered")
    elif how == "missing parquet":
        predictions_path(path).unlink()
    elif how == "field":
        data = json.loads(path.read_text())
        del data["class_names"]
        path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("how, message", [
    ("json", "error: cannot read run record {path}"),
    ("parquet", "error: record {path} is corrupt: its predictions file fold0_seed0.predictions.parquet does not "
                "match the SHA-256 in the record; restore it from git or recompute it with `bench run`"),
    ("missing parquet", "error: record {path} is corrupt: its predictions file fold0_seed0.predictions.parquet is "
                        "missing"),
    ("field", "error: record {path} is corrupt: it lacks field 'class_names'"),
])
def test_a_damaged_record_is_named(tmp_path, how, message):
    path = _damaged(tmp_path, how)
    r = bench("report", "--record", path)
    assert r.exit_code == 1 and message.format(path=path) in r.stderr, r.output


def test_a_damaged_record_among_many_is_named_with_the_command_that_recomputes_it(tmp_path):
    path = _damaged(tmp_path, "parquet")
    r = bench("report", "-m", "erm", "-s", "source_out", "--results", tmp_path / "res", "--dataset", "toyfake")
    assert r.exit_code == 1
    assert f"error: record {path} is damaged (its predictions file" in r.stderr
    assert f"`bench run -m erm -s source_out --dataset toyfake --results {tmp_path / 'res'}`" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["-m", "erm", "-s", "source_out"],
     "error: no run records of method 'erm' on split 'source_out' in {res}/toyfake-<fingerprint>/erm/source_out; "
     "make them with `bench run -m erm -s source_out --dataset toyfake --results {res}`"),
    (["-m", "ermm", "-s", "source_out"], "error: unknown method 'ermm'. Valid methods: "),
    (["-m", "erm", "-s", "lab_out"], "error: unknown split 'lab_out'. Valid splits: batch_out, source_out."),
    ([], "error: say what to draw: --method M --split S"),
    (["--record", "x.json", "-m", "erm"], "error: give --record PATH or --method and --split, not both"),
    (["--record", "{res}/none.json"], "error: record {res}/none.json does not exist; give the JSON file of a run"),
])
def test_usage_errors_exit_1_with_a_message(tmp_path, args, message):
    res = tmp_path / "res"
    r = bench("report", *[a.format(res=res) for a in args], "--results", res, "--dataset", "toyfake")
    assert r.exit_code == 1, r.output
    assert message.format(res=res) in r.stderr


def test_a_failed_record_and_a_missing_fold_are_refused(tmp_path):
    failed = write_fake(tmp_path / "res", "erm", 0, 1, None, status="failed")
    r = bench("report", "--record", failed)
    assert r.exit_code == 1 and f"error: record {failed} is a failed run (erm source_out fold 0 seed 1: boom)" in r.stderr
    write_fake(tmp_path / "res", "erm", 0, 0, predictions())
    r = bench("report", "-m", "erm", "-s", "source_out", "--results", tmp_path / "res", "--dataset", "toyfake",
              "--fold", "3", "--out", tmp_path / "out")
    assert r.exit_code == 1
    assert "error: no record of erm on source_out for fold 3; the records are: fold 0 seed 0" in r.stderr
