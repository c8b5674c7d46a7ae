"""Preparation is resumable and fails cleanly: kills, lost manifest entries, full disks, bad inputs."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from _jump_mirror import build_mirror
from benchmark.datasets.dataset import open_dataset
from benchmark.datasets.jump import PrepareOptions, prepare_jump
from benchmark.datasets.jump import prepare as prepare_module
from benchmark.datasets.jump import units as units_module
from benchmark.datasets.jump.fetch import PathTraversalError, TransientError
from benchmark.datasets.jump.manifest import MANIFEST_FILE, DiskFullError, entry_path
from benchmark.errors import BenchError, DataError


@pytest.fixture(scope="module")
def small_mirror(tmp_path_factory):
    return build_mirror(tmp_path_factory.mktemp("jump-small"), sites=1, small=True)


def _options(mirror, out, **kw) -> PrepareOptions:
    return PrepareOptions(root=str(mirror.root), metadata=mirror.metadata, out=out, min_sites=0, crop=32,
                          workers=2, backoff_s=0.0, **kw)


def test_resume_after_max_plates_kill_and_lost_entry(small_mirror, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = prepare_jump(_options(small_mirror, out, max_plates=1))
    assert len(first.prepared) == 1 and first.meta is not None
    assert len(open_dataset(out).plate_table()) == 1

    # killed in the middle of the second plate (after its shard, before its manifest entry)
    real_write = units_module.write_plate

    def killed(*args, **kwargs):
        real_write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(units_module, "write_plate", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_jump(_options(small_mirror, out))
    monkeypatch.setattr(units_module, "write_plate", real_write)
    assert len(json.loads((out / MANIFEST_FILE).read_text())["plates"]) == 1  # the half-done plate is not recorded

    second = prepare_jump(_options(small_mirror, out))
    assert second.resumed == first.prepared and len(second.prepared) == 1
    fingerprint = second.meta.fingerprint

    # a lost manifest entry: that plate is redone, the result is identical
    lost = json.loads((out / MANIFEST_FILE).read_text())["plates"][0]["plate_id"]
    entry_path(out, lost).unlink()
    third = prepare_jump(_options(small_mirror, out))
    assert third.prepared == [lost] and third.meta.fingerprint == fingerprint

    # a truncated shard of a finished plate: detected by size, redone
    shard = out / open_dataset(out).meta.shards[0].file
    shard.write_bytes(shard.read_bytes()[:100])
    fourth = prepare_jump(_options(small_mirror, out))
    assert len(fourth.prepared) == 1 and fourth.meta.fingerprint == fingerprint
    open_dataset(out, verify="full")


def test_other_settings_in_the_same_folder_are_refused(small_mirror, tmp_path):
    out = tmp_path / "out"
    prepare_jump(_options(small_mirror, out, max_plates=1))
    with pytest.raises(DataError, match=r"was prepared with other settings \(crop differ\); pass another --out"):
        prepare_jump(PrepareOptions(root=str(small_mirror.root), metadata=small_mirror.metadata, out=out,
                                    min_sites=0, crop=16, backoff_s=0.0))


def test_full_disk_stops_cleanly_and_resumes(small_mirror, tmp_path, monkeypatch):
    from benchmark.datasets.jump import manifest as manifest_module

    real = manifest_module.write_shard
    calls = {"n": 0}

    def full_disk(root, plate, images):
        calls["n"] += 1
        if calls["n"] == 2:
            (root / "shards").mkdir(exist_ok=True)
            (root / "shards" / ".x.npy.tmp-1").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(root, plate, images)

    monkeypatch.setattr(manifest_module, "write_shard", full_disk)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=r"no space left on the device holding .*out; free some space .*"
                                            r"rerun the same command"):
        prepare_jump(_options(small_mirror, out))
    assert not list((out / "shards").glob(".*.tmp-*"))  # partial files removed
    monkeypatch.setattr(manifest_module, "write_shard", real)
    report = prepare_jump(_options(small_mirror, out))
    assert len(report.resumed) == 1 and len(report.prepared) == 1


def test_network_failure_stops_without_recording(small_mirror, tmp_path, monkeypatch):
    from benchmark.datasets.jump import plate as plate_module

    def offline(*args, **kwargs):
        raise TransientError("s3://cellpainting-gallery/k: connection reset")

    monkeypatch.setattr(plate_module, "fetch_image", offline)
    out = tmp_path / "out"
    with pytest.raises(BenchError, match=r"network error after 3 attempts: .*connection reset; check the connection "
                                         r"and rerun"):
        prepare_jump(_options(small_mirror, out))
    manifest = out / MANIFEST_FILE
    assert not manifest.exists() or json.loads(manifest.read_text())["plates"] == []


def test_confirmation_is_asked_above_the_threshold(small_mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CONFIRM_ABOVE_BYTES", 0)
    asked = []
    with pytest.raises(BenchError, match="not confirmed; nothing was downloaded"):
        prepare_jump(_options(small_mirror, tmp_path / "out"), confirm=lambda est: asked.append(est) or False)
    assert asked and asked[0].n_sites > 0 and not (tmp_path / "out" / MANIFEST_FILE).exists()


def test_escaping_url_in_load_data_is_refused_before_any_download(small_mirror, tmp_path):
    mirror_copy = tmp_path / "copy"
    shutil.copytree(small_mirror.root.parent, mirror_copy)
    plate = small_mirror.plates[0]
    ld = mirror_copy / "bucket" / small_mirror.load_data_path(plate).relative_to(small_mirror.root)
    text = ld.read_text()
    first_key = plate.image_keys[sorted(plate.layout)[0], 1, "RNA"]
    ld.write_text(text.replace(first_key, "cpg0016-jump/../../secret.tif", 1))
    options = PrepareOptions(root=str(mirror_copy / "bucket"), metadata=mirror_copy / "metadata",
                             out=tmp_path / "out", min_sites=0, crop=32, backoff_s=0.0)
    with pytest.raises(PathTraversalError, match=r"load_data.csv row 2 column RNA: refused "
                                                 r"'s3://cellpainting-gallery/cpg0016-jump/../../secret.tif'"):
        prepare_jump(options)


def test_load_data_without_channels_names_the_file(small_mirror, tmp_path):
    mirror_copy = tmp_path / "copy"
    shutil.copytree(small_mirror.root.parent, mirror_copy)
    ld = mirror_copy / "bucket" / small_mirror.load_data_path(small_mirror.plates[0]).relative_to(small_mirror.root)
    ld.write_text(ld.read_text().replace("URL_OrigDNA", "URL_OrigHoechst"))
    options = PrepareOptions(root=str(mirror_copy / "bucket"), metadata=mirror_copy / "metadata",
                             out=tmp_path / "out", min_sites=0, crop=32, backoff_s=0.0)
    with pytest.raises(DataError, match=r"1053601756/load_data.csv lacks column\(s\) URL_OrigDNA"):
        prepare_jump(options)


def test_filter_that_leaves_nothing_says_so(small_mirror, tmp_path):
    with pytest.raises(DataError, match=r"no poscon or DMSO site is left after the filter --min-sites 36"):
        prepare_jump(PrepareOptions(root=str(small_mirror.root), metadata=small_mirror.metadata,
                                    out=tmp_path / "out", min_sites=36, crop=32, backoff_s=0.0))
