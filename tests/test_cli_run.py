"""`bench run` and `bench leaderboard` through typer's CliRunner: every error path and its message."""

import json

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.records import load_records

pytestmark = pytest.mark.usefixtures("toy_methods")
runner = CliRunner()


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def base(toy_dataset, tmp_path):
    return ["--dataset", toy_dataset.root, "--results", tmp_path / "res", "--device", "cpu", "--folds", "0"]


def test_run_then_resume_then_force(base, tmp_path):
    first = bench("run", "-m", "_test_plate_std", "-s", "source_out", *base, "--seeds", "0,1")
    assert first.exit_code == 0, first.output
    assert "fold 0 (held out src0) seed 0: out-of-domain accuracy 1.000" in first.stdout
    assert "2 done, 0 skipped (already recorded), 0 failed" in first.stdout
    again = bench("run", "-m", "_test_plate_std", "-s", "source_out", *base, "--seeds", "0,1")
    assert again.exit_code == 0 and "0 done, 2 skipped (already recorded), 0 failed" in again.stdout
    forced = bench("run", "-m", "_test_plate_std", "-s", "source_out", *base, "--seeds", "0", "--force")
    assert forced.exit_code == 0 and "1 done, 0 skipped" in forced.stdout
    assert len(load_records(tmp_path / "res").ok) == 2


def test_set_overrides_reach_the_record(base, tmp_path):
    r = bench("run", "-m", "_test_centroid", "-s", "batch_out", *base, "--seeds", "0", "--set", "temperature=0.5",
              "-q")
    assert r.exit_code == 0, r.output
    (rec,) = load_records(tmp_path / "res").ok
    assert rec.data["method"]["config"]["temperature"] == 0.5
    assert rec.data["method"]["overrides"] == {"temperature": "0.5"}


def test_quick_runs_seed_zero_with_quick_settings(base, tmp_path):
    r = bench("run", "-m", "_test_centroid", "-s", "source_out", *base, "--quick", "-q")
    assert r.exit_code == 0, r.output
    found = load_records(tmp_path / "res")
    assert not found.ok and [q.seed for q in found.quick] == [0]
    assert found.quick[0].data["profile"] == "quick"
    assert not found.quick[0].data.get("scenarios"), "a quick run scores no scenario unless asked to"
    asked = bench("run", "-m", "_test_centroid", "-s", "source_out", *base, "--quick", "-q", "--force",
                  "--scenarios", "label_shift")
    assert asked.exit_code == 0, asked.output
    assert list(load_records(tmp_path / "res").quick[0].data["scenarios"]) == ["label_shift"]


def test_failing_method_records_the_failure_goes_on_and_exits_1(base, tmp_path):
    r = bench("run", "-m", "_test_seed_fail", "-s", "source_out", *base, "--seeds", "0,1,2")
    assert r.exit_code == 1
    assert "2 done, 0 skipped (already recorded), 1 failed" in r.stdout
    assert ("error: 1 of 3 runs failed (first: fold 0 seed 1: fit raised RuntimeError: seed 1 is cursed); "
            "their records say why, rerun the same command to retry") in r.stderr
    (failed,) = load_records(tmp_path / "res").failed
    assert failed.seed == 1 and "seed 1 is cursed" in failed.data["error"]


def test_nan_loss_stops_that_run_with_a_clear_message(base):
    r = bench("run", "-m", "_test_nan_loss", "-s", "source_out", *base, "--seeds", "0")
    assert r.exit_code == 1
    assert "fit: training loss became NaN at epoch 2; lower the learning rate" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["-m", "nope", "-s", "source_out"], "error: unknown method 'nope'. Valid methods: "),
    (["-m", "_test_centroid", "-s", "lab_out"], "error: unknown split 'lab_out'. Valid splits: batch_out, source_out."),
    (["-m", "_test_centroid", "-s", "source_out", "--seeds", "a,b"],
     "error: --seeds expects comma-separated integers (e.g. --seeds 0,1,2), got 'a,b'"),
    (["-m", "_test_centroid", "-s", "source_out", "--folds", "7"],
     "error: fold(s) 7 do not exist for split source_out; valid folds: 0, 1, 2, 3"),
    (["-m", "_test_centroid", "-s", "source_out", "--set", "lr=1"],
     "error: unknown hyper-parameter(s) lr for CentroidConfig; valid: temperature, epochs"),
    (["-m", "_test_centroid", "-s", "source_out", "--set", "epochs=many"],
     "error: hyper-parameter epochs='many' is not a valid int"),
    (["-m", "erm", "-s", "source_out", "--set", "schedule=cosine"],
     "error: unknown learning-rate schedule 'cosine'; choose one of constant, onecycle"),
    (["-m", "_test_centroid", "-s", "source_out", "--device", "tpu"],
     "error: unknown device 'tpu'. Valid devices: auto, cpu, cuda."),
])
def test_bad_input_is_one_line_on_stderr(toy_dataset, tmp_path, args, message):
    r = bench("run", *args, "--dataset", toy_dataset.root, "--results", tmp_path / "res")
    assert r.exit_code == 1
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "res").exists() or not load_records(tmp_path / "res").ok


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    r = bench("run", "-m", "_test_centroid", "-s", "source_out", "--dataset", "nosuch", "--results", tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith("error: unknown dataset 'nosuch'. Valid datasets: ")


def test_leaderboard_command_reports_old_formats_and_mixed_fingerprints(base, tmp_path, monkeypatch):
    from benchmark import registry

    # the toy methods stand in for the repository's reference methods, whose records define
    # which data versions the leaderboard accepts
    for name in ("_test_centroid", "_test_plate_std"):
        monkeypatch.setitem(registry._ORIGINS, name, "platebench")
    assert bench("run", "-m", "_test_centroid", "-s", "source_out", *base, "--seeds", "0", "-q").exit_code == 0
    assert bench("run", "-m", "_test_plate_std", "-s", "source_out", *base, "--seeds", "0", "-q").exit_code == 0
    res = tmp_path / "res"
    (rec,) = [r for r in load_records(res).ok if r.method == "_test_centroid"]
    # an older-format record and a copy of a record under another data fingerprint
    old = json.loads(rec.path.read_text())
    old["record_format"] = 0
    other = res / "toy-000000000000" / "_test_centroid" / "source_out"
    other.mkdir(parents=True)
    (other / "fold1_seed0.json").write_text(json.dumps(old))
    moved = json.loads(rec.path.read_text())
    moved["dataset"]["fingerprint"] = "fffffffffff0"
    mdir = res / "toy-fffffffffff0" / "_test_centroid" / "source_out"
    mdir.mkdir(parents=True)
    (mdir / rec.path.name).write_text(json.dumps(moved))
    (mdir / "fold0_seed0.predictions.parquet").write_bytes(
        rec.path.with_name("fold0_seed0.predictions.parquet").read_bytes())
    out = tmp_path / "LEADERBOARD.md"
    r = bench("leaderboard", "--results", res, "--out", out, "--baseline", "_test_centroid", "--no-figures")
    assert r.exit_code == 0, r.output
    assert f"wrote {out} from 3 run records" in r.stdout
    assert "warning: 1 record(s) of an older format are not included" in r.stderr
    assert "warning: dataset 'toy' has records of 2 data versions" in r.stderr
    md = out.read_text()
    assert md.count("## Dataset `toy`") == 2
    assert "Δ vs `_test_centroid` source-out" in md
    assert "| `_test_plate_std` | unlabeled |" in md


def test_cuda_without_gpu_is_a_clear_error(base):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    r = bench("run", "-m", "_test_centroid", "-s", "source_out", *base[:-4], "--device", "cuda")
    assert r.exit_code == 1
    assert r.stderr == "error: --device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto\n"
