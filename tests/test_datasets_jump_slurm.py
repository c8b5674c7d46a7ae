"""`bench data prepare jump --executor slurm` against the fake SLURM of the sweep's tests (``sbatch``, ``sacct``,
``srun`` programs on PATH running each array task through submitit): one array task per plate still to do, the
plates landing in the manifest, ``--no-wait`` then a rerun that follows the queued jobs, requeues on preemption."""

from __future__ import annotations

import json

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

submitit = pytest.importorskip("submitit")

from _jump_mirror import needs_real_metadata  # noqa: E402

from test_datasets_jump_executors import IDS, _args, mirror, options_for, reference, same_dataset  # noqa: E402,F401
from test_sweep_slurm import fake_slurm  # noqa: E402,F401  (the fixture: a fake SLURM on PATH)

from benchmark.datasets.dataset import META_FILE  # noqa: E402
from benchmark.datasets.jump import PrepareOptions, prepare_jump  # noqa: E402
from benchmark.datasets.jump.executors import ExecutorOptions  # noqa: E402
from benchmark.datasets.jump.manifest import MANIFEST_FILE  # noqa: E402
from benchmark.datasets.jump.slurm import PlateTask, job_key  # noqa: E402
from benchmark.datasets.jump.units import PlateUnit  # noqa: E402
from benchmark.slurm.jobs import RetriesExhausted, read_jobs  # noqa: E402
from benchmark.slurm.config import SlurmConfig  # noqa: E402

runner = CliRunner()
pytestmark = needs_real_metadata


def test_one_array_task_per_plate_still_to_do_and_the_results_land_in_the_manifest(fake_slurm, mirror, reference,
                                                                                   tmp_path):
    out = tmp_path / "out"
    first = prepare_jump(options_for(mirror, out, max_plates=1)).prepared
    config = SlurmConfig(folder=str(tmp_path / "submitit"), poll_s=0.5, partition="cpu", mem_gb=2)
    console = Console(record=True, width=250)
    report = prepare_jump(options_for(mirror, out), console=console, runner=ExecutorOptions("slurm", slurm=config))
    script = (fake_slurm / "scripts" / "12.sh").read_text()
    assert "#SBATCH --array=0-2%3\n" in script  # three plates to do: three tasks (all at once)
    assert "#SBATCH --partition=cpu" in script and "#SBATCH --mem=2GB" in script
    assert report.resumed == first and sorted(report.prepared) == sorted(set(IDS) - set(first))
    assert not report.failed and not report.pending
    same_dataset(out, reference)
    assert sorted(p["plate_id"] for p in json.loads((out / MANIFEST_FILE).read_text())["plates"]) == sorted(IDS)
    text = console.export_text()
    assert "submitted 3 plate(s) as SLURM job array 12 (one task per plate); scripts and logs in" in text
    assert sum(f"ok      {p}: " in text for p in report.prepared) == 3
    jobs = read_jobs(tmp_path / "submitit")
    assert sorted(jobs.values()) == ["12_0", "12_1", "12_2"]
    log = (tmp_path / "submitit" / "12_0_0_log.out").read_text()
    assert "bench data prepare jump: plate source_" in log and "(attempt 1 of at most 4)" in log


def test_no_wait_submits_and_a_rerun_follows_the_queued_plates_instead_of_submitting_them(
        fake_slurm, prepare_app, mirror, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # jobs stay PENDING until someone looks at them (sacct)
    out = tmp_path / "out"
    args = _args(mirror, out, "--executor", "slurm", "--slurm-folder", str(tmp_path / "submitit"), "--partition",
                 "cpu", "--slurm-time", "30")
    (tmp_path / "slurm.toml").write_text("poll_s = 0.5\n")
    args += ["--slurm-config", str(tmp_path / "slurm.toml")]
    submitted = runner.invoke(prepare_app, [*args, "--no-wait"])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 4 plate(s) as SLURM job array 12" in submitted.stdout
    assert "4 plate(s) queued or running on SLURM; follow them with squeue or sacct" in submitted.stdout
    assert not (out / META_FILE).exists()
    assert "#SBATCH --time=30" in (fake_slurm / "scripts" / "12.sh").read_text()
    followed = runner.invoke(prepare_app, args)
    assert followed.exit_code == 0, followed.output
    assert "following 4 plate(s) already queued or running on SLURM" in followed.stdout
    assert "submitted" not in followed.stdout  # nothing submitted twice
    assert "prepared 4 plate(s) in this run" in followed.stdout
    same_dataset(out, reference)


def test_a_preempted_plate_is_requeued_until_max_retries_then_reported():
    unit = PlateUnit("source_8_J1_A1170385", PrepareOptions(), pl.DataFrame())
    again = PlateTask(max_retries=1).checkpoint(unit)
    assert isinstance(again.function, PlateTask) and again.function.attempt == 1 and again.args == (unit,)
    with pytest.raises(RetriesExhausted, match=r"plate source_8_J1_A1170385 was preempted or ran out of time 2 times "
                                               r"\(max_retries = 1\); raise time_min or max_retries in the SLURM "
                                               r"settings, then rerun bench data prepare jump"):
        again.function.checkpoint(unit)


def test_a_job_is_known_by_its_plate_entry_and_the_data_settings(tmp_path):
    plain = PlateUnit("p", PrepareOptions(out=tmp_path), pl.DataFrame())
    faster = PlateUnit("p", PrepareOptions(out=tmp_path, workers=64), pl.DataFrame())
    smaller = PlateUnit("p", PrepareOptions(out=tmp_path, crop=256), pl.DataFrame())
    assert job_key(plain).startswith(str(tmp_path / "manifest.d"))
    assert job_key(plain) == job_key(faster) != job_key(smaller)
