"""JUMP preparation at scale: the plan on the real cpg0016 metadata, ``--plan-only``, one unit per plate on the
``local`` and ``debug`` executors, and the manifest's entry files under concurrency, kills and failures.

The mirror holds the real plate and well tables (``tests/fixtures/jump-metadata``, a copy of
``../shared/jump-metadata``) and fake load data + TIFFs for four real plates (two batches of each source).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import polars as pl
import pytest
from typer.testing import CliRunner

from _jump_mirror import build_real_mirror, needs_real_metadata, real_metadata
from benchmark.constants import DMSO_ID, POSCONS
from benchmark.datasets.dataset import META_FILE, open_dataset
from benchmark.datasets.jump import PrepareOptions, plan_jump, prepare_jump
from benchmark.datasets.jump import fetch as fetch_module
from benchmark.datasets.jump import plate as plate_module
from benchmark.datasets.jump import units as units_module
from benchmark.datasets.jump.executors import ExecutorOptions
from benchmark.datasets.jump.manifest import ENTRIES_DIR, MANIFEST_FILE, Manifest, entry_path
from benchmark.datasets.jump.metadata import REFERENCE_DROPPED_BATCHES, load_metadata, select_plates
from benchmark.datasets.jump.units import run_plate_unit
from benchmark.errors import BenchError, DataError, UnknownNameError

pytestmark = needs_real_metadata

CROP = 16
PLATES = [("source_3", "CP59", "BR5867a3"), ("source_3", "CP60", "BR5872a3"),
          ("source_8", "J1", "A1170385"), ("source_8", "J2", "A1170437")]
IDS = [f"{s}_{b}_{p}" for s, b, p in PLATES]
runner = CliRunner()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_real_mirror(tmp_path_factory.mktemp("jump-real"), PLATES, sites=1)


def options_for(mirror, out, **kw) -> PrepareOptions:
    return PrepareOptions(root=str(mirror.root), metadata=mirror.metadata, out=out, min_sites=0, crop=CROP,
                          workers=2, backoff_s=0.0, **kw)


def _dataset(out) -> tuple:
    """What must not depend on the executor: the fingerprint, the index and every shard's checksum."""
    ds = open_dataset(out, verify="full")
    return ds.fingerprint, ds.index, [(s.file, s.n_bytes, s.sha256) for s in ds.meta.shards]


def same_dataset(out, reference) -> None:
    fingerprint, index, shards = _dataset(out)
    assert fingerprint == reference[0] and shards == reference[2] and index.equals(reference[1])


@pytest.fixture(scope="module")
def reference(mirror, tmp_path_factory):
    """The in-process preparation (the default path) of the four plates."""
    out = tmp_path_factory.mktemp("reference") / "out"
    report = prepare_jump(options_for(mirror, out))
    assert sorted(report.prepared) == sorted(IDS) and report.meta is not None
    return _dataset(out)


def _args(mirror, out, *extra) -> list[str]:
    return ["prepare", "jump", "--root", str(mirror.root), "--metadata", str(mirror.metadata), "--out", str(out),
            "--min-sites", "0", "--crop", str(CROP), "--workers", "2", *extra]


# -- (a) the plan on the real metadata ------------------------------------------------------------------------

def test_real_metadata_selects_the_reference_plates(tmp_path):
    meta = load_metadata(real_metadata(tmp_path / "meta"))
    defaults = PrepareOptions()
    assert defaults.dropped_batches == REFERENCE_DROPPED_BATCHES
    plates = select_plates(meta, defaults.sources, defaults.dropped_batches)
    counts = plates.group_by("source").agg(n=pl.len(), batches=pl.col("batch").n_unique()).sort("source")
    assert counts.rows() == [("source_3", 172, 9), ("source_8", 199, 4)]
    assert not plates["batch"].is_in(list(REFERENCE_DROPPED_BATCHES["source_3"])).any()
    with_wells = meta.wells.select("Metadata_Source", "Metadata_Plate").unique()
    assert len(plates.join(with_wells, left_on=["source", "plate"], right_on=["Metadata_Source", "Metadata_Plate"],
                           how="anti")) == 0  # every selected plate has its layout in the well table


# -- (b) --plan-only -------------------------------------------------------------------------------------------

@pytest.fixture
def image_reads(monkeypatch):
    """Every key read through a local root that is not a load-data table (i.e. an image)."""
    reads: list[str] = []
    real = fetch_module.LocalRoot.read

    def counting(self, key):
        if "/load_data_csv/" not in key:
            reads.append(key)
        return real(self, key)

    monkeypatch.setattr(fetch_module.LocalRoot, "read", counting)
    return reads


def _expected_sites(mirror, source: str) -> tuple[int, int]:
    """(poscon sites, DMSO sites) of the mirror's plates of ``source`` (one site per well)."""
    poscons = {jcp for _, _, jcp, _, _ in POSCONS}
    layouts = [p.layout for p in mirror.plates if p.source == source]
    return (sum(c in poscons for lay in layouts for c in lay.values()),
            sum(c == DMSO_ID for lay in layouts for c in lay.values()))


def test_plan_only_prints_plates_sites_and_bytes_per_source_without_fetching_an_image(prepare_app, mirror, tmp_path,
                                                                                      image_reads):
    out = tmp_path / "out"
    result = runner.invoke(prepare_app, _args(mirror, out, "--plan-only", "--json"))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert image_reads == [] and not out.exists()  # no image read, nothing written
    for source, plates, batches in (("source_3", 172, 9), ("source_8", 199, 4)):
        s = plan["sources"][source]
        poscon, dmso = _expected_sites(mirror, source)
        tiff = next(mirror.path(k).stat().st_size for p in mirror.plates if p.source == source
                    for k in p.image_keys.values())
        assert (s["plates"], s["batches"], s["with_load_data"], s["planned"], s["done"]) == (plates, batches, 2, 2, 0)
        assert (s["sites"], s["poscon_sites"], s["dmso_sites"]) == (poscon + dmso, poscon, dmso)
        assert s["todo"]["sampled"] and s["todo"]["tiff_bytes"] == tiff
        assert s["todo"]["download_bytes"] == (poscon + dmso) * 5 * tiff
        assert s["todo"]["disk_bytes"] == (poscon + dmso) * (5 * CROP * CROP + 64)
    assert plan["total"]["plates"] == 371 and len(plan["missing_load_data"]) == 367
    assert "without reading an image" in plan["how_tiff_size"] and plan["warnings"] == []

    text = runner.invoke(prepare_app, _args(mirror, out, "--plan-only"))
    assert text.exit_code == 0, text.output
    rows = {line.split()[0]: line.split() for line in text.stdout.splitlines() if line.startswith("source_")}
    assert rows["source_3"][1:5] == ["172", "9", "2", "2"] and rows["source_8"][1:5] == ["199", "4", "2", "2"]
    assert "(sampled)" in rows["source_3"][-1] and "367 selected plate(s) have no load data" in text.stdout
    assert image_reads == [] and not out.exists()
    filtered = runner.invoke(prepare_app, _args(mirror, out, "--plan-only", "--min-sites", "36"))  # 2 sites per well position
    assert filtered.exit_code == 0 and ("warning: no poscon or DMSO site is left after the filter --min-sites 36 "
                                        "(256 sites before it); lower --min-sites") in filtered.stdout


def test_plan_only_counts_what_is_done_and_falls_back_to_typical_tiff_sizes(mirror, reference, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "out"
    prepare_jump(options_for(mirror, out, max_plates=1))
    monkeypatch.setattr(fetch_module.LocalRoot, "size", lambda self, key: None)  # a root that tells no sizes
    plan = plan_jump(options_for(mirror, out))
    by_source = {s.source: s for s in plan.sources}
    assert (by_source["source_3"].done, by_source["source_8"].done) == (1, 0)
    assert not by_source["source_8"].todo.sampled and by_source["source_8"].todo.tiff_bytes == 2_100_000
    assert by_source["source_3"].todo.n_plates == 1  # only the plate still to do is estimated


# -- (c) the executors make the same dataset as the in-process path ---------------------------------------------

@pytest.mark.parametrize("run", [ExecutorOptions("local", jobs=2), ExecutorOptions("debug")],
                         ids=["local", "debug"])
def test_executors_make_exactly_the_dataset_of_the_in_process_path(mirror, reference, tmp_path, run):
    out = tmp_path / "out"
    report = prepare_jump(options_for(mirror, out), runner=run)
    assert sorted(report.prepared) == sorted(IDS) and not report.failed and not report.pending
    same_dataset(out, reference)
    assert sorted(p["plate_id"] for p in json.loads((out / MANIFEST_FILE).read_text())["plates"]) == sorted(IDS)
    assert len(list((out / ENTRIES_DIR).glob("*.json"))) == 4
    again = prepare_jump(options_for(mirror, out), runner=run)
    assert again.prepared == [] and sorted(again.resumed) == sorted(IDS)


# -- (d) the manifest under concurrency and kills ----------------------------------------------------------------

@dataclass
class Recorder:
    """A runner that only collects the units (as if submitted elsewhere, still running)."""

    executor: str = "debug"
    units: list = field(default_factory=list)

    def run(self, units, out, console):
        self.units.extend(units)
        return []


def test_units_finishing_at_the_same_time_both_land_in_the_manifest(mirror, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    recorder = Recorder()
    report = prepare_jump(options_for(mirror, out), runner=recorder)
    assert sorted(report.pending) == sorted(IDS) and report.meta is None and not (out / META_FILE).exists()
    barrier = threading.Barrier(2, timeout=30)
    real_write = units_module.write_entry

    def together(*args, **kwargs):
        barrier.wait()  # both units write their entry at the same moment
        return real_write(*args, **kwargs)

    monkeypatch.setattr(units_module, "write_entry", together)
    first, second = recorder.units[:2]
    outcomes: dict = {}
    threads = [threading.Thread(target=lambda u=u: outcomes.update({u.plate_id: run_plate_unit(u)}))
               for u in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o.status == "ok" for o in outcomes.values()), outcomes
    # two coordinators folding at once: each writes the manifest whole; neither loses an entry
    manifests = [Manifest.open(out, options_for(mirror, out).settings()) for _ in range(2)]
    folds = [threading.Thread(target=m.fold) for m in manifests]
    for t in folds:
        t.start()
    for t in folds:
        t.join()
    folded = {p["plate_id"] for p in json.loads((out / MANIFEST_FILE).read_text())["plates"]}
    assert folded == {first.plate_id, second.plate_id}
    monkeypatch.setattr(units_module, "write_entry", real_write)
    final = prepare_jump(options_for(mirror, out))
    assert sorted(final.resumed) == sorted([first.plate_id, second.plate_id]) and len(final.prepared) == 2
    same_dataset(out, reference)


KILLED_UNIT = """
import os, pickle, signal, sys
from benchmark.datasets.jump import units
unit = pickle.loads(open(sys.argv[1], "rb").read())
units.write_entry = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # killed right before its entry
units.run_plate_unit(unit)
"""


def test_a_unit_killed_mid_plate_leaves_no_entry_and_is_redone(mirror, reference, tmp_path):
    out = tmp_path / "out"
    recorder = Recorder()
    prepare_jump(options_for(mirror, out), runner=recorder)
    unit = recorder.units[0]
    (tmp_path / "unit.pkl").write_bytes(pickle.dumps(unit))
    killed = subprocess.run([sys.executable, "-c", KILLED_UNIT, str(tmp_path / "unit.pkl")], capture_output=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert list((out / "shards").glob("*.npy")) and not entry_path(out, unit.plate_id).exists()
    report = prepare_jump(options_for(mirror, out), runner=ExecutorOptions("debug"))
    assert unit.plate_id in report.prepared and report.resumed == []
    same_dataset(out, reference)


def test_a_format_1_manifest_is_kept_and_moved_into_entry_files(mirror, reference, tmp_path):
    out = tmp_path / "out"
    prepare_jump(options_for(mirror, out))
    body = json.loads((out / MANIFEST_FILE).read_text())
    (out / MANIFEST_FILE).write_text(json.dumps({"manifest_version": 1, "settings": body["settings"],
                                                 "plates": body["plates"]}))
    for entry in (out / ENTRIES_DIR).glob("*.json"):
        entry.unlink()
    report = prepare_jump(options_for(mirror, out))
    assert report.prepared == [] and sorted(report.resumed) == sorted(IDS)
    assert len(list((out / ENTRIES_DIR).glob("*.json"))) == 4
    same_dataset(out, reference)


def test_entries_of_other_settings_are_refused_even_without_the_manifest_file(mirror, tmp_path):
    out = tmp_path / "out"
    prepare_jump(options_for(mirror, out, max_plates=1))
    (out / MANIFEST_FILE).unlink()  # derived from the entries: they alone still say how the folder was prepared
    with pytest.raises(DataError, match=r"was prepared with other settings \(crop differ\); pass another --out or "
                                        r"delete .*prepare-manifest.json and .*manifest.d to start over"):
        prepare_jump(PrepareOptions(root=str(mirror.root), metadata=mirror.metadata, out=out, min_sites=0, crop=8))
    report = prepare_jump(options_for(mirror, out, max_plates=1))
    assert report.prepared == [] and len(report.resumed) == 1 and (out / MANIFEST_FILE).is_file()


# -- (f) error paths ---------------------------------------------------------------------------------------------

def test_a_failing_plate_is_named_the_index_is_not_written_and_a_rerun_retries_it(prepare_app, mirror, reference, tmp_path,
                                                                                 monkeypatch):
    out = tmp_path / "out"
    broken = IDS[2]
    real_fetch = plate_module.fetch_image

    def offline_for_one_plate(root, key, *args, **kwargs):
        if key in set(mirror.plate(broken).image_keys.values()):
            raise fetch_module.TransientError(f"s3://cellpainting-gallery/{key}: connection reset")
        return real_fetch(root, key, *args, **kwargs)

    monkeypatch.setattr(plate_module, "fetch_image", offline_for_one_plate)
    result = runner.invoke(prepare_app, _args(mirror, out, "--executor", "debug", "--yes"))
    assert result.exit_code == 1
    assert f"FAILED  {broken}: network error after 3 attempts" in result.stdout
    assert (f"error: 1 of 4 plate(s) failed (first: {broken}: network error after 3 attempts: "
            "s3://cellpainting-gallery/") in result.stderr
    assert ("the dataset index was not written, as it would lack them. Rerun the same command to retry them "
            "(the 3 finished plate(s) are kept)") in result.stderr
    assert not (out / META_FILE).exists() and not entry_path(out, broken).exists()
    monkeypatch.setattr(plate_module, "fetch_image", real_fetch)
    again = runner.invoke(prepare_app, _args(mirror, out, "--executor", "debug"))
    assert again.exit_code == 0, again.output
    assert "3 of 4 plates already prepared" in again.stdout and f"ok      {broken}: " in again.stdout
    same_dataset(out, reference)


@pytest.mark.parametrize("extra, message", [
    (["--executor", "lokal"], "error: unknown executor 'lokal'. Valid executors: debug, local, slurm. "
                              "Did you mean 'local'?"),
    (["--executor", "local", "--jobs", "0"], "error: --jobs must be at least 1, got 0"),
    (["--partition", "cpu"], "error: the SLURM options (partition) apply to --executor slurm only; drop them or "
                             "add --executor slurm"),
    (["--executor", "local", "--no-wait"], "error: the SLURM options (no_wait) apply to --executor slurm only"),
    (["--jobs", "2"], "error: --jobs applies to --executor local; add --executor local (or drop --jobs)"),
    (["--json"], "error: --json applies to --plan-only; add --plan-only (or drop --json)"),
])
def test_bad_executor_options_are_one_line_errors(prepare_app, mirror, tmp_path, extra, message):
    result = runner.invoke(prepare_app, _args(mirror, tmp_path / "out", *extra))
    assert result.exit_code == 1 and result.stderr.startswith(message), result.output
    assert not (tmp_path / "out").exists()


def test_executor_options_check_their_names():
    with pytest.raises(UnknownNameError, match="unknown executor 'slrum'.*Did you mean 'slurm'"):
        ExecutorOptions("slrum")
    with pytest.raises(BenchError, match="--jobs must be at least 1"):
        ExecutorOptions("local", jobs=0)


def test_help_documents_the_newoptions_for(prepare_app, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("TERMINAL_WIDTH", "300")
    result = runner.invoke(prepare_app, ["prepare", "jump", "--help"])
    assert result.exit_code == 0
    for word in ("--plan-only", "--json", "--executor", "--jobs", "--slurm-config", "--partition", "--slurm-time",
                 "--array-parallelism", "--max-retries", "--slurm-folder", "--no-wait"):
        assert word in result.output, word
