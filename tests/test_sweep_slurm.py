"""`bench sweep --executor slurm` against a fake SLURM: `sbatch`, `sacct`, `scontrol`, `scancel` and `srun`
executables on PATH, as submitit's own tests fake SLURM (they patch its subprocess calls; these are programs).

The fake `sbatch` keeps the submitted script, answers ``Submitted batch job N`` and starts a background
runner that, once the job's dependency has ended, runs every array task the way SLURM would: the script
under bash with ``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID`` and friends set, its ``srun`` line
executing ``python -m submitit.core._submit FOLDER`` (submitit's ``process_job``). The fake ``sacct``
reports the tasks' states from the runner's files. With ``FAKE_SLURM_HOLD`` set, jobs stay PENDING
until the first ``sacct`` call.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

submitit = pytest.importorskip("submitit")

from benchmark.cli import app  # noqa: E402
from benchmark.errors import BenchError  # noqa: E402
from benchmark.records import load_records  # noqa: E402
from benchmark.slurm import jobs as slurm_jobs  # noqa: E402
from benchmark.sweep import slurm as sweep_slurm  # noqa: E402
from benchmark.sweep.grid import RunSettings, Unit  # noqa: E402
from benchmark.sweep.plan import Plan, make_plan  # noqa: E402
from benchmark.sweep.progress import SweepProgress  # noqa: E402
from benchmark.slurm.config import SlurmConfig, slurm_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("toy_methods_in_workers")  # the fake SLURM's jobs import _toy_methods
runner = CliRunner()
TESTS = Path(__file__).parent

SBATCH = """
import os, re, subprocess, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
text = Path(sys.argv[-1]).read_text()
counter = state / "counter"
jid = int(counter.read_text()) if counter.exists() else 12
counter.write_text(str(jid + 1))
array = re.search(r"--array=0-(\\d+)%(\\d+)", text)
n = int(array.group(1)) + 1 if array else 1
deps = re.search(r"--dependency=afterany:([\\d:]+)", text)
(state / "scripts").mkdir(exist_ok=True)
(state / "scripts" / f"{jid}.sh").write_text(text)
(state / "jobs").mkdir(exist_ok=True)
for task in ([f"{jid}_{i}" for i in range(n)] if array else [str(jid)]):
    (state / "jobs" / task).write_text("PENDING")
with open(state / f"runner-{jid}.log", "w") as log:
    subprocess.Popen([sys.executable, str(state / "runner.py"), str(jid), str(n if array else 0),
                      deps.group(1) if deps else ""],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
print(f"Submitted batch job {jid}")
"""

RUNNER = """
import os, subprocess, sys, time
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
jid, n, deps = sys.argv[1], int(sys.argv[2]), [d for d in sys.argv[3].split(":") if d]  # n = 0: not an array
deadline = time.time() + 300
def ended(task):
    return task.read_text() in ("COMPLETED", "FAILED")
def tasks(job):
    return [t for t in (state / "jobs").iterdir() if t.name == job or t.name.startswith(f"{job}_")]
while time.time() < deadline and (
        (os.environ.get("FAKE_SLURM_HOLD") and not (state / "released").exists())
        or not all(ended(t) for d in deps for t in tasks(d))):
    time.sleep(0.1)
base = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node1"}
runs = ([(f"{jid}_{i}", {"SLURM_JOB_ID": str(1000 + i), "SLURM_ARRAY_JOB_ID": jid, "SLURM_ARRAY_TASK_ID": str(i)})
         for i in range(n)] if n else [(jid, {"SLURM_JOB_ID": jid})])
for name, ids in runs:
    task = state / "jobs" / name
    task.write_text("RUNNING")
    code = subprocess.call(["bash", str(state / "scripts" / f"{jid}.sh")], env={**os.environ, **base, **ids})
    task.write_text("COMPLETED" if code == 0 else "FAILED")
"""

SACCT = """
import os, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
(state / "released").touch()
ids = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"]
print("JobID|State|NodeList")
for jid in ids:
    for task in sorted((state / "jobs").iterdir()):
        if task.name == jid or task.name.startswith(f"{jid}_"):
            print(f"{task.name}|{task.read_text()}|node1")
"""

LOGGER = """
import os, sys
from pathlib import Path
with open(Path(os.environ["FAKE_SLURM_DIR"]) / "commands.log", "a") as fh:
    fh.write(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\\n")
"""

SRUN = r"""#!/usr/bin/env bash
# srun [--unbuffered] --output OUT [--error ERR] COMMAND...: COMMAND with its output where srun would put it
out=/dev/null; err=/dev/null
while [[ $# -gt 0 ]]; do
  case "$1" in
    --unbuffered) shift ;;
    --output) out=$2; shift 2 ;;
    --error) err=$2; shift 2 ;;
    --*) shift ;;
    *) break ;;
  esac
done
sub() { local p=$1; p=${p//%A/$SLURM_ARRAY_JOB_ID}; p=${p//%a/$SLURM_ARRAY_TASK_ID}; p=${p//%j/$SLURM_JOB_ID}; echo "${p//%t/0}"; }
exec "$@" >>"$(sub "$out")" 2>>"$(sub "$err")"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A fake SLURM on PATH; its state folder (scripts, job states, command log)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in (("sbatch", SBATCH), ("sacct", SACCT), ("scontrol", LOGGER), ("scancel", LOGGER)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}")
    (state / "runner.py").write_text(RUNNER)
    (bin_dir / "srun").write_text(SRUN)
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PLATEBENCH_CACHE", os.environ.get("PLATEBENCH_CACHE", str(tmp_path / "cache")))
    yield state
    submitit.SlurmJob.watcher.clear()


def _settings(tmp_path, dataset) -> RunSettings:
    return RunSettings.build(results_dir=tmp_path / "res", dataset=str(dataset.root), device="cpu")


def _config(tmp_path, **values) -> SlurmConfig:
    return SlurmConfig(folder=str(tmp_path / "submitit"), poll_s=1.0, **values)


# -- the settings -------------------------------------------------------------------------------------------

def test_settings_come_from_defaults_then_the_file_then_the_command_line(tmp_path):
    path = tmp_path / "slurm.toml"
    path.write_text(textwrap.dedent("""
        partition = "gpu"
        time_min = 240
        gpus_per_node = 1
        mem_gb = 7.5
        setup = ["module load cuda", "source .venv/bin/activate"]
        [sbatch]
        exclude = "node13"
    """))
    config = slurm_config(path, time_min=90, cpus_per_task=None)
    assert (config.partition, config.time_min, config.gpus_per_node, config.cpus_per_task) == ("gpu", 90, 1, 2)
    assert config.setup == ("module load cuda", "source .venv/bin/activate") and config.max_retries == 3
    assert config.executor_parameters() == {
        "time": 90, "cpus_per_task": 2, "array_parallelism": 32, "job_name": "platebench", "gpus_per_node": 1,
        "mem": "7680MB", "partition": "gpu", "setup": ["module load cuda", "source .venv/bin/activate"],
        "additional_parameters": {"exclude": "node13"}}
    assert slurm_config().executor_parameters()["time"] == 24 * 60


@pytest.mark.parametrize("text, overrides, message", [
    ('partiton = "gpu"', {}, "unknown SLURM setting(s) partiton in {path}; valid: partition, time_min, "),
    ("time_min = '2h'", {}, "SLURM setting time_min = '2h' in {path} must be an integer"),
    ("gpus_per_node = true", {}, "SLURM setting gpus_per_node = True in {path} must be an integer"),
    ("setup = 'module load x'", {}, "SLURM setting setup = 'module load x' in {path} must be a list of strings"),
    ("array_parallelism = 0", {}, "SLURM setting array_parallelism = 0 in {path} must be positive"),
    ("time_min = [", {}, "SLURM settings file {path} is not valid TOML: "),
    ("", {"max_retries": -1}, "SLURM setting max_retries = -1 in the command line must be zero or more"),
])
def test_bad_settings_name_the_file_the_key_and_what_is_valid(tmp_path, text, overrides, message):
    path = tmp_path / "slurm.toml"
    path.write_text(text)
    with pytest.raises(BenchError) as err:
        slurm_config(path if text else None, **overrides)
    assert str(err.value).startswith(message.format(path=path)), str(err.value)


def test_a_missing_settings_file_says_how_to_write_one(tmp_path):
    with pytest.raises(BenchError, match=r"SLURM settings file .*nope.toml does not exist; write one "
                                         r"\(docs/cluster.md has an example\) or leave out --slurm-config"):
        slurm_config(tmp_path / "nope.toml")


# -- submitting and following -----------------------------------------------------------------------------------

def test_units_run_as_job_arrays_the_dependent_one_after_and_records_land_with_the_results(
        fake_slurm, toy_dataset, tmp_path):
    methods = ["_test_centroid", "_test_plate_std"]
    plan = make_plan(methods, ["source_out"], [0], [0], _settings(tmp_path, toy_dataset))
    centroid, plate = plan.todo
    plan.waits[plate] = centroid  # as AdaBN waits for ERM
    config = _config(tmp_path, partition="gpu", time_min=90, gpus_per_node=1, mem_gb=4, setup=("echo setting up",))
    console = Console(record=True, width=200)
    progress = SweepProgress(plan.total, plan.finished, console)
    results, jobs = sweep_slurm.run_slurm(plan, progress, config, tmp_path / "logs")
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    assert [r.unit for r in results] == [centroid, plate]
    assert {u: j.job_id for u, j in jobs.items()} == {centroid: "12", plate: "13"}  # one unit: a plain job
    script = (fake_slurm / "scripts" / "12.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=4GB",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --job-name=platebench",
                 "#SBATCH --signal=USR2@90", "echo setting up", "-m submitit.core._submit"):
        assert line in script, line
    assert "--dependency" not in script
    assert "#SBATCH --dependency=afterany:12" in (fake_slurm / "scripts" / "13.sh").read_text()
    assert slurm_jobs.read_jobs(tmp_path / "submitit") == {sweep_slurm.job_key(u): j.job_id for u, j in jobs.items()}
    # the records are where bench run puts them (that a unit's record equals an in-process run's is
    # tests/test_sweep_local.py's: both executors run a unit through the same run_unit)
    ours = {r.method: r for r in load_records(tmp_path / "res").ok}
    assert sorted(ours) == sorted(methods) and str(ours["_test_centroid"].path) == centroid.record
    text = console.export_text()
    assert "submitted 2 unit(s) as SLURM job array(s) 12, 13; scripts and logs in" in text
    assert "ok      _test_centroid source_out fold 0 seed 0: out-of-domain" in text
    job_log = (tmp_path / "submitit" / "12_0_log.out").read_text()
    assert "bench sweep unit _test_centroid source_out fold 0 seed 0 (attempt 1 of at most 4)" in job_log
    assert (tmp_path / "submitit" / ".gitignore").read_text() == "*\n"


def test_cli_submits_without_waiting_then_a_rerun_follows_the_queued_jobs(fake_slurm, toy_dataset, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # jobs stay PENDING until the sweep looks at them (sacct)
    settings = tmp_path / "slurm.toml"
    settings.write_text("poll_s = 1\narray_parallelism = 1\n")
    args = ["sweep", "--methods", "_test_centroid", "--executor", "slurm", "--dataset", str(toy_dataset.root),
            "--results", str(tmp_path / "res"), "--device", "cpu", "--folds", "0,1", "--seeds", "0",
            "--splits", "source_out", "--logs", str(tmp_path / "logs"), "--partition", "cpu", "--slurm-time", "30",
            "--slurm-config", str(settings), "--scenarios", "none"]
    r = runner.invoke(app, [*args, "--no-wait"])
    assert r.exit_code == 0, r.output
    assert "submitted 2 unit(s) as SLURM job array(s) 12; scripts and logs in" in r.stdout
    assert "2 unit(s) queued or running on SLURM; follow them with squeue or sacct, or rerun" in r.stdout
    jobs = slurm_jobs.read_jobs(tmp_path / "logs" / "slurm")
    assert sorted(jobs.values()) == ["12_0", "12_1"]
    script = (fake_slurm / "scripts" / "12.sh").read_text()
    assert "#SBATCH --array=0-1%1" in script and "#SBATCH --partition=cpu" in script and "--time=30" in script
    assert not (tmp_path / "res").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "following 2 unit(s) already queued or running on SLURM" in again.stdout
    assert "submitted" not in again.stdout  # nothing submitted twice
    assert "2 done, 0 skipped (already recorded), 0 failed, of 2 units" in again.stdout
    assert sorted(r.fold for r in load_records(tmp_path / "res").ok) == [0, 1]
    last = runner.invoke(app, args)
    assert last.exit_code == 0 and "0 done, 2 skipped (already recorded), 0 failed, of 2 units" in last.stdout


def test_a_job_that_fails_is_reported_with_its_reason_and_log(fake_slurm, toy_dataset, tmp_path):
    s = _settings(tmp_path, toy_dataset)
    broken = Unit("_test_centroid", "source_out", 0, 0, s, record=str(tmp_path / "r.json"), module="no_such_module")
    console = Console(record=True, width=300)
    progress = SweepProgress(1, [], console)
    (result,), _ = sweep_slurm.run_slurm(Plan([broken], []), progress, _config(tmp_path), tmp_path / "logs")
    assert result.status == "failed"
    assert result.error == "SLURM job 12: ModuleNotFoundError: No module named 'no_such_module'"
    assert result.log == str(tmp_path / "submitit" / "12_0_log.err")


# -- preemption and retries -----------------------------------------------------------------------------------------

def test_a_preempted_unit_is_requeued_until_max_retries_then_reported(fake_slurm, tmp_path, monkeypatch):
    """SLURM's warning signal, through submitit's own handler: checkpoint, requeue (scontrol), give up at the limit."""
    from submitit.core import job_environment, utils

    unit = Unit("erm", "source_out", 0, 0, RunSettings(results_dir=str(tmp_path)))
    folder = tmp_path / "submitit"
    folder.mkdir()
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "1000", "SLURM_ARRAY_JOB_ID": "12",
                       "SLURM_ARRAY_TASK_ID": "0", "SUBMITIT_FOLDER": str(folder)}.items():
        monkeypatch.setenv(key, value)
    env = job_environment.JobEnvironment()
    paths = env.paths
    delayed = utils.DelayedSubmission(sweep_slurm.UnitTask(max_retries=1), unit)
    delayed.set_timeout(timeout_min=60, max_num_timeout=1)
    delayed.dump(paths.submitted_pickle)
    handler = job_environment.SignalHandler(env, paths, delayed)
    with pytest.raises(SystemExit):
        handler.checkpoint_and_try_requeue(signal.SIGUSR2)  # preempted: requeued with one attempt more
    assert (fake_slurm / "commands.log").read_text() == "scontrol requeue 12_0\n"
    requeued = utils.DelayedSubmission.load(paths.submitted_pickle)
    assert isinstance(requeued.function, sweep_slurm.UnitTask) and requeued.function.attempt == 1
    assert requeued.args == (unit,)
    with pytest.raises(slurm_jobs.RetriesExhausted, match=r"erm source_out fold 0 seed 0 was preempted or ran out "
                                                            r"of time 2 times \(max_retries = 1\)"):
        job_environment.SignalHandler(env, paths, requeued).checkpoint_and_try_requeue(signal.SIGUSR2)
    assert (fake_slurm / "commands.log").read_text().count("requeue") == 1


def test_failure_reasons_are_the_jobs_exception_line():
    trace = ("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent "
             "call last):\n  File \"x.py\", line 1, in f\n    raise X\nbenchmark.slurm.jobs.RetriesExhausted: erm "
             "was preempted\n----------------------\nYou can check full logs with 'job.stderr(0)'")
    assert slurm_jobs.failure_reason(trace) == "benchmark.slurm.jobs.RetriesExhausted: erm was preempted"
    assert slurm_jobs.failure_reason("Job 12_0 (task: 0) with path /x\nhas not produced any output (state: "
                                      "NODE_FAIL)\nNo output") == \
        "Job 12_0 (task: 0) with path /x has not produced any output (state: NODE_FAIL)"


# -- errors ------------------------------------------------------------------------------------------------------------

def test_no_slurm_here_is_a_clear_error(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    plan = make_plan(["_test_centroid"], ["source_out"], [0], [0], _settings(tmp_path, toy_dataset))
    with pytest.raises(BenchError, match=r"--executor slurm found no SLURM here \(Could not detect \"srun\".*\); run "
                                         r"the command on a login node of the cluster, or use --executor local"):
        sweep_slurm.run_slurm(plan, SweepProgress(1, []), _config(tmp_path), tmp_path / "logs")


def test_without_submitit_the_error_says_what_to_install(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    r = runner.invoke(app, ["sweep", "--methods", "_test_centroid", "--executor", "slurm", "--dataset",
                            str(toy_dataset.root), "--results", str(tmp_path / "res"), "--folds", "0", "--seeds", "0",
                            "--splits", "source_out", "--scenarios", "none"])
    assert r.exit_code == 1
    assert r.stderr == ("error: --executor slurm needs submitit: pip install 'submitit>=1.5' (or use --executor "
                        "local)\n")


def test_a_corrupt_jobs_file_says_what_to_do(tmp_path):
    (tmp_path / "jobs.json").write_text("{")
    with pytest.raises(BenchError, match=r"jobs.json is not valid JSON; delete it and rerun"):
        slurm_jobs.read_jobs(tmp_path)


def test_a_job_is_known_by_its_units_record_and_settings(tmp_path):
    plain = Unit("erm", "source_out", 0, 0, RunSettings(results_dir=str(tmp_path)), record="res/x.json")
    other = Unit("erm", "source_out", 0, 0, RunSettings.build(results_dir=tmp_path, overrides={"lr": "0.1"}),
                 record="res/x.json")
    assert sweep_slurm.job_key(plain).startswith(str(Path("res/x.json").absolute()) + "#")
    assert sweep_slurm.job_key(plain) != sweep_slurm.job_key(other)
    slurm_jobs.write_jobs(tmp_path, {sweep_slurm.job_key(plain): "12_0"})
    slurm_jobs.write_jobs(tmp_path, {sweep_slurm.job_key(other): "13"})
    assert slurm_jobs.read_jobs(tmp_path) == {sweep_slurm.job_key(plain): "12_0", sweep_slurm.job_key(other): "13"}


def test_a_unit_waiting_for_a_job_of_an_earlier_sweep_is_submitted_after_that_job(tmp_path, monkeypatch):
    """ERM still running from an earlier sweep: AdaBN, submitted now, gets --dependency on ERM's array."""
    s = RunSettings(results_dir=str(tmp_path))
    erm, adabn, ben = (Unit(m, "source_out", 0, 0, s, record=f"{m}.json") for m in ("erm", "adabn", "ben"))
    calls = []

    class Job:
        def __init__(self, job_id):
            self.job_id = job_id

    class Executor:
        dependency = None

        def update_parameters(self, **params):
            self.dependency = params["dependency"]

        def map_array(self, task, units):
            calls.append(([u.method for u in units], self.dependency, task.max_retries))
            return [Job(f"{50 + len(calls)}_{i}") for i in range(len(units))]

    monkeypatch.setattr(sweep_slurm, "make_executor", lambda config, folder: Executor())
    plan = Plan([adabn, ben], [], waits={adabn: erm})
    jobs = sweep_slurm.submit(plan, [adabn, ben], SlurmConfig(max_retries=2), tmp_path, running={erm: Job("40_3")})
    assert calls == [(["ben"], None, 2), (["adabn"], "afterany:40", 2)]
    assert {u.method: j.job_id for u, j in jobs.items()} == {"ben": "51_0", "adabn": "52_0"}
