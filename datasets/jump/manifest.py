"""The resumable plate writer: one shard + one rows table per finished plate, recorded in a manifest.

A finished plate is recorded in its own **entry file** ``<out>/manifest.d/<plate>.json``
(its shard's size and SHA-256, its rows table's checksum, the sites it skipped), written
atomically by whoever prepared the plate (this process, a local worker, a SLURM task on
another machine) *after* both of the plate's files are in place. Entry files are the
durable record: each unit writes only its own, so units finishing at the same time,
anywhere on a shared file system, never touch one another's entry. ``prepare-manifest.json``
is their fold, rewritten atomically by the coordinating command (at its start, after each
plate it prepares itself, after its units end); it is derived, so two folds racing can only
leave it one fold behind, never lose an entry. A plate interrupted half-way has no entry and
is redone on the next run; its partial files are never used. Every write is atomic
(temporary file + rename); a full disk raises :class:`DiskFullError`. Manifests of format 1
(records in ``prepare-manifest.json`` only) are read as well and moved into entry files at
the first fold.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ...errors import BenchError, DataError
from ...records import write_text_atomic
from ..store import ShardInfo, file_sha256, shard_filename, write_shard

MANIFEST_FILE = "prepare-manifest.json"
ENTRIES_DIR = "manifest.d"
ROWS_DIR = "rows"
MANIFEST_VERSION = 2


class DiskFullError(BenchError):
    """No space left on the output device."""


@contextmanager
def disk_full_guard(out: Path) -> Iterator[None]:
    """Turn ENOSPC into a :class:`DiskFullError` that says how to resume."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        remove_partial_files(out)
        raise DiskFullError(f"no space left on the device holding {out}; free some space (or pass another --out) "
                            "and rerun the same command: finished plates are kept and the run resumes") from None


def remove_partial_files(out: Path) -> None:
    """Delete temporary files left by an interrupted write."""
    for folder in (out, out / "shards", out / ROWS_DIR, out / ENTRIES_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)


def remove_plate_partials(out: Path, plate_id: str) -> None:
    """Delete the temporary files an interrupted preparation of ``plate_id`` left (and no other plate's)."""
    out = Path(out)
    for final in (out / shard_filename(plate_id), out / rows_file(plate_id), entry_path(out, plate_id)):
        if final.parent.is_dir():
            for tmp in final.parent.glob(f".{final.name}.tmp-*"):
                tmp.unlink(missing_ok=True)


def rows_file(plate_id: str) -> str:
    """The rows table of ``plate_id``, relative to the output folder."""
    return f"{ROWS_DIR}/{Path(shard_filename(plate_id)).stem}.parquet"


@dataclass(frozen=True)
class SkippedSite:
    """A site left out of a plate, and why."""

    well: str
    site: int
    key: str
    reason: str


@dataclass(frozen=True)
class PlateRecord:
    """Manifest entry of one finished plate."""

    plate_id: str
    n_sites: int
    shard: ShardInfo | None  # None when no site of the plate could be read
    rows_file: str
    rows_sha256: str
    skipped: tuple[SkippedSite, ...] = field(default=())

    def to_json(self) -> dict:
        return {"plate_id": self.plate_id, "n_sites": self.n_sites,
                "shard": self.shard.to_json() if self.shard else None,
                "rows_file": self.rows_file, "rows_sha256": self.rows_sha256,
                "skipped": [asdict(s) for s in self.skipped]}

    @classmethod
    def from_json(cls, d: dict) -> PlateRecord:
        return cls(d["plate_id"], int(d["n_sites"]), ShardInfo.from_json(d["shard"]) if d["shard"] else None,
                   d["rows_file"], d["rows_sha256"], tuple(SkippedSite(**s) for s in d["skipped"]))


def entry_path(out: Path, plate_id: str) -> Path:
    """The entry file of ``plate_id``: ``<out>/manifest.d/<shard name>.json`` (file-system safe)."""
    return Path(out) / ENTRIES_DIR / f"{Path(shard_filename(plate_id)).stem}.json"


def write_entry(out: Path, settings: Mapping, record: PlateRecord) -> Path:
    """Record a finished plate in its own entry file, atomically; call it after the plate's files are written."""
    path = entry_path(out, record.plate_id)
    body = {"manifest_version": MANIFEST_VERSION, "settings": dict(settings), "plate": record.to_json()}
    with disk_full_guard(Path(out)):
        write_text_atomic(path, json.dumps(body, indent=1))
    return path


def _check_settings(stored: Mapping, settings: Mapping, out: Path) -> None:
    current = json.loads(json.dumps(dict(settings)))
    if current != stored:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise DataError(f"{out} was prepared with other settings ({', '.join(diff)} differ); pass another --out "
                        f"or delete {out / MANIFEST_FILE} and {out / ENTRIES_DIR} to start over")


def _read_manifest_file(out: Path) -> tuple[dict, dict[str, PlateRecord]]:
    """The settings ``prepare-manifest.json`` holds and, for format 1, its records (format 2: derived, unused)."""
    path = out / MANIFEST_FILE
    try:
        d = json.loads(path.read_text())
        legacy = {}
        if int(d.get("manifest_version", 1)) < MANIFEST_VERSION:
            legacy = {p["plate_id"]: PlateRecord.from_json(p) for p in d["plates"]}
        return d["settings"], legacy
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is malformed ({exc}); delete it (the plates recorded in {out / ENTRIES_DIR} are "
                        "kept, the others are redone)") from None


def read_entries(out: Path, settings: Mapping) -> dict[str, PlateRecord]:
    """The plates recorded in ``<out>/manifest.d``; an entry of other settings is a :class:`DataError`.

    An unreadable entry (which an atomic write never leaves) counts as absent: its plate is redone.
    """
    folder = Path(out) / ENTRIES_DIR
    plates: dict[str, PlateRecord] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            d = json.loads(path.read_text())
            record = PlateRecord.from_json(d["plate"])
            stored = d["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        _check_settings(stored, settings, Path(out))
        plates[record.plate_id] = record
    return plates


class Manifest:
    """The finished plates of one output folder, bound to the settings that produced them."""

    def __init__(self, out: Path, settings: Mapping, plates: dict[str, PlateRecord] | None = None,
                 legacy: dict[str, PlateRecord] | None = None):
        self.out, self.settings = Path(out), dict(settings)
        self.plates: dict[str, PlateRecord] = dict(plates or {})
        self._legacy = dict(legacy or {})  # format-1 records that have no entry file yet

    @property
    def path(self) -> Path:
        return self.out / MANIFEST_FILE

    @classmethod
    def open(cls, out: Path, settings: Mapping) -> Manifest:
        """The manifest of ``out`` (its entries), or a new one; :class:`DataError` if ``out`` was prepared
        differently. Reads only: nothing is written until :meth:`fold`, :meth:`record` or :meth:`forget`."""
        out = Path(out)
        legacy: dict[str, PlateRecord] = {}
        if (out / MANIFEST_FILE).is_file():
            stored, legacy = _read_manifest_file(out)
            _check_settings(stored, settings, out)
        entries = read_entries(out, settings)
        legacy = {k: v for k, v in legacy.items() if k not in entries}
        return cls(out, settings, {**legacy, **entries}, legacy)

    def fold(self, returned: Iterable[PlateRecord] = ()) -> None:
        """Re-read the entry files (written meanwhile by units anywhere) and rewrite ``prepare-manifest.json``.

        ``returned`` are records that units handed back; one whose entry file this machine does not
        see yet (a lagging network file system) is written here as well (same content, atomically).
        """
        for record in self._legacy.values():
            write_entry(self.out, self.settings, record)
        self._legacy = {}
        self.plates = read_entries(self.out, self.settings)
        for record in returned:
            if record.plate_id not in self.plates:
                write_entry(self.out, self.settings, record)
                self.plates[record.plate_id] = record
        self.save()

    def save(self) -> None:
        """Write the fold of the entries, ``prepare-manifest.json``, atomically (when it changes)."""
        body = json.loads(json.dumps({"manifest_version": MANIFEST_VERSION, "settings": self.settings,
                                      "entries": ENTRIES_DIR, "plates": [p.to_json() for p in self.plates.values()]}))
        if not self.path.is_file() and not self.plates:
            return
        try:
            if self.path.is_file() and json.loads(self.path.read_text()) == body:
                return
        except (OSError, ValueError):
            pass
        with disk_full_guard(self.out):
            write_text_atomic(self.path, json.dumps(body, indent=1))

    def is_complete(self, plate_id: str, full: bool = False) -> bool:
        """True if ``plate_id`` is recorded and its files are present with the recorded size (or checksum)."""
        record = self.plates.get(plate_id)
        if record is None:
            return False
        rows = self.out / record.rows_file
        if not rows.is_file() or (full and file_sha256(rows) != record.rows_sha256):
            return False
        if record.shard is None:
            return True
        shard = self.out / record.shard.file
        if not shard.is_file() or shard.stat().st_size != record.shard.n_bytes:
            return False
        return not full or file_sha256(shard) == record.shard.sha256

    def record(self, record: PlateRecord) -> None:
        """Record a plate prepared by this process: its entry file, then the fold."""
        write_entry(self.out, self.settings, record)
        self.plates[record.plate_id] = record
        self.save()

    def forget(self, plate_id: str) -> None:
        """Drop a plate whose files no longer match its record (its entry file too): it is redone."""
        self._legacy.pop(plate_id, None)
        if self.plates.pop(plate_id, None) is not None:
            entry_path(self.out, plate_id).unlink(missing_ok=True)
            self.save()


def write_plate(out: Path, plate_id: str, images: np.ndarray, rows: pl.DataFrame,
                skipped: tuple[SkippedSite, ...]) -> PlateRecord:
    """Write a plate's shard (if it has images) and rows table atomically; return its manifest record.

    ``rows`` (one per image, in shard order) keeps well, site, compound, label,
    is_control and the plate's identifiers.
    """
    out = Path(out)
    rows_rel = rows_file(plate_id)
    rows_path = out / rows_rel
    with disk_full_guard(out):
        shard = write_shard(out, plate_id, images) if len(images) else None
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = rows_path.with_name(f".{rows_path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        rows.write_parquet(tmp)
        os.replace(tmp, rows_path)
    return PlateRecord(plate_id, len(rows), shard, rows_rel, file_sha256(rows_path), skipped)
