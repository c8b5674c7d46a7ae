"""The resumable plate writer: one shard + one rows table per finished plate, recorded in a manifest.

``<out>/prepare-manifest.json`` lists every finished plate with its shard
(size, SHA-256), its rows table (checksum) and the sites it skipped. A plate
enters the manifest only after both of its files are written atomically, so a
plate interrupted half-way has no entry and is redone on the next run; its
partial files are never used. Every write is atomic (temporary file + rename);
a full disk raises :class:`DiskFullError`.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ...errors import BenchError, DataError
from ..store import ShardInfo, file_sha256, shard_filename, write_shard

MANIFEST_FILE = "prepare-manifest.json"
ROWS_DIR = "rows"
MANIFEST_VERSION = 1


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
    for folder in (out, out / "shards", out / ROWS_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)


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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Manifest:
    """The finished plates of one output folder, bound to the settings that produced them."""

    def __init__(self, out: Path, settings: Mapping, plates: dict[str, PlateRecord] | None = None):
        self.out, self.settings = Path(out), dict(settings)
        self.plates: dict[str, PlateRecord] = dict(plates or {})

    @property
    def path(self) -> Path:
        return self.out / MANIFEST_FILE

    @classmethod
    def open(cls, out: Path, settings: Mapping) -> Manifest:
        """The manifest of ``out``, or a new one; :class:`DataError` if ``out`` was prepared differently."""
        path = Path(out) / MANIFEST_FILE
        if not path.is_file():
            return cls(out, settings)
        try:
            d = json.loads(path.read_text())
            plates = {p["plate_id"]: PlateRecord.from_json(p) for p in d["plates"]}
            stored = d["settings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is malformed ({exc}); delete it to prepare {out} from scratch") from None
        current = json.loads(json.dumps(dict(settings)))
        if current != stored:
            diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
            raise DataError(f"{out} was prepared with other settings ({', '.join(diff)} differ); pass another --out "
                            f"or delete {path} to start over")
        return cls(out, settings, plates)

    def save(self) -> None:
        body = {"manifest_version": MANIFEST_VERSION, "settings": self.settings,
                "plates": [p.to_json() for p in self.plates.values()]}
        with disk_full_guard(self.out):
            _atomic_write_text(self.path, json.dumps(body, indent=1))

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
        self.plates[record.plate_id] = record
        self.save()

    def forget(self, plate_id: str) -> None:
        if self.plates.pop(plate_id, None) is not None:
            self.save()


def write_plate(out: Path, plate_id: str, images: np.ndarray, rows: pl.DataFrame,
                skipped: tuple[SkippedSite, ...]) -> PlateRecord:
    """Write a plate's shard (if it has images) and rows table atomically; return its manifest record.

    ``rows`` (one per image, in shard order) keeps well, site, compound, label,
    is_control and the plate's identifiers.
    """
    out = Path(out)
    rows_rel = f"{ROWS_DIR}/{Path(shard_filename(plate_id)).stem}.parquet"
    rows_path = out / rows_rel
    with disk_full_guard(out):
        shard = write_shard(out, plate_id, images) if len(images) else None
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = rows_path.with_name(f".{rows_path.name}.tmp-{os.getpid()}")
        rows.write_parquet(tmp)
        os.replace(tmp, rows_path)
    return PlateRecord(plate_id, len(rows), shard, rows_rel, file_sha256(rows_path), skipped)
