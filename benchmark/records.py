"""Run records: one JSON file (+ a predictions parquet) per (method, split, fold, seed).

Layout::

    <results>/<dataset>-<fingerprint>/<method>/<split>/fold<k>_seed<s>.json
    <results>/<dataset>-<fingerprint>/<method>/<split>/fold<k>_seed<s>.predictions.parquet

(``fold<k>_seed<s>.quick.json`` for runs of the ``--quick`` smoke profile, so a smoke
run never replaces a full one.)

A record is written atomically: the previous JSON is removed first, then the parquet
and last the JSON go through temp file + fsync + ``os.replace``. The JSON is the
completion marker and stores the parquet's SHA-256, so a run killed at any moment
leaves either a complete record or none. JSON and parquet only, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from . import __version__
from .errors import DataError
from .hardware import hardware_info

DEFAULT_RESULTS = Path("leaderboard") / "results"
"""Where ``bench run`` writes records and ``bench leaderboard`` reads them by default."""
RECORD_FORMAT = 1
"""Version of the record layout; records of another version are reported, never mixed in."""
QUICK = "quick"
FULL = "full"
_TMP_MARK = ".tmp-"


# ----------------------------------------------------------------------------- paths

def run_dir(results_dir: Path, dataset: str, fingerprint: str, method: str, split: str) -> Path:
    """Folder holding the records of one method and split on one dataset version."""
    return Path(results_dir) / f"{dataset}-{fingerprint}" / method / split


def record_path(results_dir: Path, dataset: str, fingerprint: str, method: str, split: str,
                fold: int, seed: int, profile: str = FULL) -> Path:
    """Path of the JSON record of one run (its predictions sit next to it)."""
    suffix = ".quick" if profile == QUICK else ""
    return run_dir(results_dir, dataset, fingerprint, method, split) / f"fold{fold}_seed{seed}{suffix}.json"


def predictions_path(json_path: Path) -> Path:
    """The predictions parquet belonging to a JSON record."""
    return json_path.with_name(json_path.name[: -len(".json")] + ".predictions.parquet")


# ----------------------------------------------------------------------------- provenance

PACKAGE_DIR = Path(__file__).parent


def _git(args: list[str], folder: Path) -> str | None:
    """Standard output of ``git args`` run in ``folder``, or None when git fails or is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(folder: Path = PACKAGE_DIR) -> str:
    """Commit of the git checkout holding ``folder`` (this package), or ``"unknown"``."""
    commit = (_git(["rev-parse", "HEAD"], folder) or "").strip()
    return commit if len(commit) == 40 else "unknown"


def git_tree_state(folder: Path = PACKAGE_DIR) -> str:
    """``"clean"`` when the tracked files under ``folder`` match the commit, ``"modified"`` when
    they carry uncommitted changes (the commit alone does not reproduce the run), else ``"unknown"``.

    Markdown files (data cards, docs) do not count: they change no result.
    """
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)*.md"], folder)
    if status is None:
        return "unknown"
    return "modified" if status.strip() else "clean"


def code_version() -> dict[str, str]:
    """The git commit of this package and whether its source differs from it."""
    return {"git_commit": git_commit(), "git_tree": git_tree_state()}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_info() -> dict[str, Any]:
    """Package version, git commit (and whether the package source differs from it), Python and
    library versions, platform; then the hardware (:func:`benchmark.hardware.hardware_info`): CPU
    model and kernel-relevant instruction sets, torch's thread settings and BLAS / oneDNN build."""
    return {
        "platebench": __version__, **code_version(), "python": platform.python_version(),
        **{lib: _version(lib) for lib in ("torch", "numpy", "timm", "polars", "scikit-learn")},
        "platform": platform.platform(), **hardware_info(),
    }


# ----------------------------------------------------------------------------- writing

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{_TMP_MARK}{os.getpid()}-{os.urandom(3).hex()}")


def _commit(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file, fsync and ``os.replace``: a killed writer leaves the
    old file or the new one, never a part."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` like :func:`write_text_atomic`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        tmp.write_bytes(data)
        _commit(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_safe(value: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, tuples -> lists, numpy scalars -> Python (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_record(json_path: Path, record: Mapping[str, Any], predictions: pl.DataFrame | None) -> dict[str, Any]:
    """Write one run record atomically and return the JSON content written.

    The old JSON (if any) is removed first, then ``predictions`` goes to the parquet
    and the record, with the parquet's SHA-256, to ``json_path`` last. A failed run
    passes ``predictions=None`` (its stale parquet is removed).
    """
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    parquet = predictions_path(json_path)
    if json_path.exists():
        json_path.unlink()
        _fsync_dir(json_path.parent)
    content = dict(record)
    tmp_files: list[Path] = []
    try:
        if predictions is not None:
            tmp = _temp_path(parquet)
            tmp_files.append(tmp)
            predictions.write_parquet(tmp)
            content["predictions"] = {"file": parquet.name, "sha256": _sha256(tmp), "n_rows": len(predictions)}
            _commit(tmp, parquet)
        else:
            content["predictions"] = None
            parquet.unlink(missing_ok=True)
        content = json_safe(content)
        tmp = _temp_path(json_path)
        tmp_files.append(tmp)
        tmp.write_text(json.dumps(content, indent=1, allow_nan=False) + "\n")
        _commit(tmp, json_path)
    finally:
        for tmp in tmp_files:
            tmp.unlink(missing_ok=True)
    return content


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temp files of writers that are no longer running (e.g. a killed run); return them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(f".*{_TMP_MARK}*"):
        pid = tmp.name.rsplit(_TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class Record:
    """A loaded run record: its path and its JSON content."""

    path: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def method(self) -> str:
        return self.data["method"]["name"]

    @property
    def split(self) -> str:
        return self.data["split"]["name"]

    @property
    def fold(self) -> int:
        return int(self.data["split"]["fold"])

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def dataset(self) -> str:
        return self.data["dataset"]["name"]

    @property
    def fingerprint(self) -> str:
        return self.data["dataset"]["fingerprint"]

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def profile(self) -> str:
        return self.data.get("profile", FULL)

    def label(self) -> str:
        return f"{self.method} {self.split} fold {self.fold} seed {self.seed}"


@dataclass
class RecordSet:
    """Everything found under a results folder, sorted into what may and may not be used."""

    ok: list[Record] = field(default_factory=list)
    failed: list[Record] = field(default_factory=list)
    quick: list[Record] = field(default_factory=list)
    outdated: list[tuple[Path, Any]] = field(default_factory=list)  # (path, its record format)
    invalid: list[tuple[Path, str]] = field(default_factory=list)   # (path, why)


def read_record(json_path: Path) -> dict[str, Any]:
    """Parse one JSON record; :class:`DataError` if it is not a readable record."""
    try:
        data = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read run record {json_path}: {exc}") from None
    if not isinstance(data, dict) or "record_format" not in data:
        raise DataError(f"{json_path} is not a platebench run record (no record_format)")
    return data


def verify_predictions(path: Path, data: dict) -> str | None:
    """Why the predictions parquet of record ``path`` can not be trusted, or None if it matches."""
    info = data.get("predictions") or {}
    parquet = path.with_name(info.get("file", predictions_path(path).name))
    if not parquet.is_file():
        return f"its predictions file {parquet.name} is missing"
    if _sha256(parquet) != info.get("sha256"):
        return f"its predictions file {parquet.name} does not match the SHA-256 in the record"
    return None


def load_ok_record(path: Path | str, use: str, fields: Callable[[dict[str, Any]], Any] | None = None) -> Record:
    """The ok record at ``path`` with an intact predictions file; :class:`DataError` saying what is wrong otherwise.

    ``use`` is what the caller does with it, for the messages ("verify", "draw"); ``fields`` reads
    the further fields the caller needs (a missing one: the record is corrupt). Refused: a missing
    path or a folder, an unreadable or older-format record, one lacking its identifying fields, a
    failed run and one whose predictions file is missing or does not match its SHA-256.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"record {path} does not exist; give the JSON file of a run "
                        "(<results>/<dataset>-<fingerprint>/<method>/<split>/fold<k>_seed<s>.json)")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give record files (fold<k>_seed<s>.json)")
    data = read_record(path)
    if data.get("record_format") != RECORD_FORMAT:
        raise DataError(f"record {path} has record format {data.get('record_format')}, this version reads "
                        f"{RECORD_FORMAT}; {use} it with the platebench version that wrote it")
    record = Record(path, data)
    try:
        record.method, record.split, record.fold, record.seed, record.fingerprint, record.status  # noqa: B018
        data["dataset"]["name"]  # noqa: B018
        if record.status == "ok" and fields is not None:
            fields(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"record {path} is corrupt: it lacks field {exc}; restore it from git or recompute it "
                        "with `bench run`") from None
    if record.status != "ok":
        raise DataError(f"record {path} is a failed run ({record.label()}: {data.get('error')}); there is nothing "
                        f"to {use}; rerun it with `bench run` (its command is in LEADERBOARD.md)")
    problem = verify_predictions(path, data)
    if problem:
        raise DataError(f"record {path} is corrupt: {problem}; restore it from git or recompute it with `bench run`")
    return record


def iter_record_files(results_dir: Path) -> Iterable[Path]:
    """JSON record files under ``results_dir`` (temp files are skipped)."""
    return sorted(p for p in Path(results_dir).rglob("fold*_seed*.json") if not p.name.startswith("."))


def load_records(results_dir: Path, verify: bool = True) -> RecordSet:
    """Load every record under ``results_dir`` and sort it into ok / failed / quick / outdated / invalid.

    Only complete records exist as JSON files; with ``verify`` an ok record whose
    predictions parquet is missing or altered is ``invalid``.
    """
    out = RecordSet()
    for path in iter_record_files(results_dir):
        try:
            data = read_record(path)
        except DataError as exc:
            out.invalid.append((path, str(exc)))
            continue
        if data.get("record_format") != RECORD_FORMAT:
            out.outdated.append((path, data.get("record_format")))
            continue
        rec = Record(path, data)
        try:
            rec.method, rec.split, rec.fold, rec.seed, rec.fingerprint, rec.status  # noqa: B018
        except (KeyError, TypeError, ValueError) as exc:
            out.invalid.append((path, f"lacks field {exc}"))
            continue
        if rec.status != "ok":
            out.failed.append(rec)
            continue
        problem = verify_predictions(path, data) if verify else None
        if problem:
            out.invalid.append((path, problem))
        elif rec.profile == QUICK:
            out.quick.append(rec)
        else:
            out.ok.append(rec)
    return out


def read_predictions(record: Record) -> pl.DataFrame:
    """The per-image predictions table of an ok record."""
    info = record.data.get("predictions")
    if not info:
        raise DataError(f"record {record.path} has no predictions (status {record.status})")
    return pl.read_parquet(record.path.with_name(info["file"]))
