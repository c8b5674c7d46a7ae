"""Check an ok run record against its own predictions (and its dataset's labels) before the leaderboard uses it.

A record's ``metrics`` are written by the evaluator, but nothing stops a damaged or doctored
JSON from claiming more than its predictions show. :func:`record_problems` therefore

1. checks the type of every field the leaderboard reads (a metric that is the string ``"0.9"``,
   a fold that is not an integer, an access level that does not exist: refused, field named);
2. checks the predictions table: its columns, its row count (``predictions.n_rows``), one
   probability column per class name, and ``predicted`` = the arg-max of the probabilities
   (rows whose top probability is tied are left out of that check);
3. recomputes the metrics from the predictions with the evaluator's own
   :func:`benchmark.protocol.evaluation.score` and compares them with ``metrics``: every field of
   ``out_of_domain`` and ``in_domain`` (accuracy, balanced accuracy, macro-F1, ECE, mean and
   worst plate accuracy, worst plate, counts), ``per_plate`` and ``per_source``, the same keys
   and the same values — numbers to :data:`REL_TOL` relative, counts and names exactly. A
   plate's ``adapt_predict_s`` is a timing, not derivable: only its type is checked;
4. checks the scenario blocks as far as the stored data allows. Derivable: which levels are
   ``unchanged`` (all of them when the scenario changes nothing the method's access level
   receives) and which one is ``plain`` (the scenario's plain level, from the record's dataset
   settings), and those levels' metrics, which must equal the recomputed out-of-domain ones.
   Not derivable: the metrics of a scored (``ok``) level, since the predictions of a scenario's
   subsamples are not stored; for those only the types and ranges are checked (rates in [0, 1],
   counts non-negative integers);
5. when the dataset the record names (name + fingerprint) is already on this machine — the
   folder the run was given, or a dataset in the cache (:func:`benchmark.paths.cache_dir`), found
   through its ``dataset.json`` and never generated — checks that every predicted image exists
   there with the same label, plate, source and batch (:class:`DatasetLabels`). Without the
   dataset the labels cannot be checked; :meth:`DatasetLabels.missing` says which were not.

Not checked: the fit report's correction metrics (computed in ``fit`` on training-plate
profiles that no file keeps; their types are checked) and timings.

:func:`check_records` runs this for many records. Scoring costs about 40 ms per record (scikit-learn's
checks, mostly), so what is derived from a predictions file alone is cached by the SHA-256 of that
file and of the scoring code (:class:`ScoreCache`, ``$PLATEBENCH_CACHE/record-checks``): a rebuild
rescores only new or changed predictions.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..constants import N_CLASSES
from ..protocol.evaluation import PARTS
from ..paths import cache_dir
from ..records import Record, json_safe, write_text_atomic

REL_TOL = 1e-9
"""Relative tolerance of a recomputed metric (counts and names must match exactly)."""
PREDICTION_COLUMNS = ("image_id", "plate", "source", "batch", "label", "part", "predicted")
"""Columns of a predictions table besides the ``prob_<class>`` ones."""
CHECKED_INDEX_COLUMNS = ("label", "plate", "source", "batch")
"""Columns of the predictions compared with the dataset's index, image by image."""
RATES = ("accuracy", "balanced_accuracy", "macro_f1", "ece", "mean_plate_accuracy", "worst_plate_accuracy")
"""Metrics of a part that are rates in [0, 1]."""
COUNTS = ("n_images", "n_plates")
LEVEL_STATUSES = ("ok", "plain", "unchanged", "failed")
CACHE_FOLDER = "record-checks"
MAX_SHOWN = 3
"""Problems named in a refusal's one line (the others are counted)."""


# ----------------------------------------------------------------------------- values

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {_show(value)}"
    return f"{_show(value)} (a {type(value).__name__})"


def type_problem(where: str, value: Any, expected: str, optional: bool = False) -> str | None:
    """Why ``value`` at ``where`` is not of the ``expected`` JSON kind (None if it is).

    ``expected``: ``number`` (finite int or float, not a bool), ``int``, ``str``, ``list``, ``dict``, ``bool``.
    ``optional``: null is allowed.
    """
    if value is None and optional:
        return None
    ok = {"number": lambda v: _is_number(v) and math.isfinite(v),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str), "list": lambda v: isinstance(v, list),
          "dict": lambda v: isinstance(v, dict), "bool": lambda v: isinstance(v, bool)}[expected](value)
    if ok:
        return None
    article = "an" if expected == "int" else "a"
    noun = {"int": "integer", "str": "string", "dict": "JSON object", "list": "list"}.get(expected, expected)
    return f"{where} is {'missing' if value is None else _kind(value)}, not {article} {noun}"


def compare(where: str, stored: Any, recomputed: Any, skip: Sequence[str] = ()) -> list[str]:
    """Differences between a stored JSON value and the recomputed one (both JSON-safe: NaN is None).

    Dicts must have the same keys, lists the same length; numbers agree to :data:`REL_TOL`
    relative (integers exactly); anything else exactly. Keys in ``skip`` are left out.
    """
    if isinstance(recomputed, dict):
        if not isinstance(stored, dict):
            return [f"{where} is {_kind(stored)}, not a JSON object"]
        out = []
        missing = [k for k in recomputed if k not in stored and k not in skip]
        extra = [k for k in stored if k not in recomputed and k not in skip]
        if missing:
            out.append(f"{where} lacks {', '.join(map(str, missing))}")
        if extra:
            out.append(f"{where} has field(s) no recomputation gives: {', '.join(map(str, extra))}")
        for key, value in recomputed.items():
            if key in stored and key not in skip:
                out += compare(f"{where}.{key}", stored[key], value, skip)
        return out
    if isinstance(recomputed, list):
        if not isinstance(stored, list):
            return [f"{where} is {_kind(stored)}, not a list"]
        if len(stored) != len(recomputed):
            return [f"{where} has {len(stored)} entries, its predictions give {len(recomputed)}"]
        return [p for i, (s, r) in enumerate(zip(stored, recomputed)) for p in compare(f"{where}[{i}]", s, r, skip)]
    if _is_number(recomputed):
        if not _is_number(stored):
            return [f"{where} is {_kind(stored)}, not a number"]
        if isinstance(recomputed, int) and not isinstance(stored, int):
            return [f"{where} is {_kind(stored)}, not an integer"]
        if math.isclose(stored, recomputed, rel_tol=REL_TOL, abs_tol=0.0):
            return []
    elif stored == recomputed and type(stored) is type(recomputed):
        return []
    return [f"{where}: the record says {_show(stored)}, its predictions give {_show(recomputed)}"]


# ----------------------------------------------------------------------------- header

def header_problems(data: Mapping[str, Any]) -> list[str]:
    """Wrong types among the fields the leaderboard reads, besides the metrics (compared in full)."""
    from ..methods.base import AccessLevel
    from ..records import FULL, QUICK

    def get(*keys: str) -> Any:
        value: Any = data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    checks = [("method", "dict", False), ("method.name", "str", False), ("method.access", "str", False),
              ("method.config", "dict", False), ("method.overrides", "dict", True),
              ("split", "dict", False), ("split.name", "str", False), ("split.fold", "int", False),
              ("split.n_folds", "int", True), ("split.split_seed", "int", True), ("split.held_out", "list", False),
              ("seed", "int", False), ("dataset", "dict", False), ("dataset.name", "str", False),
              ("dataset.fingerprint", "str", False), ("dataset.argument", "str", True),
              ("dataset.image_shape", "list", True), ("class_names", "list", False), ("metrics", "dict", False),
              ("scenarios", "dict", True), ("fit_report", "dict", True), ("fit_report.train_seconds", "number", True),
              ("fit_report.encoder_weights_sha256", "str", True), ("timings", "dict", True),
              ("timings.fit_s", "number", True), ("environment", "dict", True),
              ("predictions", "dict", False), ("predictions.n_rows", "int", False)]
    out = [p for name, kind, optional in checks if (p := type_problem(name, get(*name.split(".")), kind, optional))]
    if isinstance(get("method", "access"), str) and get("method", "access") not in {a.value for a in AccessLevel}:
        out.append(f"method.access {_show(get('method', 'access'))} is not an access level "
                   f"({', '.join(a.value for a in AccessLevel)})")
    if data.get("profile", FULL) not in (FULL, QUICK):
        out.append(f"profile is {_kind(data.get('profile'))}, not '{FULL}' or '{QUICK}'")
    for name in ("split.held_out", "class_names"):
        values = get(*name.split("."))
        if isinstance(values, list) and not all(isinstance(v, str) for v in values):
            out.append(f"{name} holds a value that is not a string")
    shape = get("dataset", "image_shape")
    if isinstance(shape, list) and not all(type(v) is int for v in shape):
        out.append("dataset.image_shape holds a value that is not an integer")
    version = get("dataset", "version")
    if not isinstance(version, (str, int)) or isinstance(version, bool):
        out.append(f"dataset.version is {'missing' if version is None else _kind(version)}, not a string")
    out += _correction_problems(get("fit_report", "correction_metrics"))
    return out


def _correction_problems(block: Any) -> list[str]:
    """Types of the fit report's correction metrics (values the leaderboard averages; not derivable)."""
    if not (isinstance(block, dict) and "before" in block and "after" in block):
        return []
    out = []
    for side in ("before", "after"):
        scores = block[side]
        if not isinstance(scores, dict):
            out.append(f"fit_report.correction_metrics.{side} is {_kind(scores)}, not a JSON object")
            continue
        out += [p for key, value in scores.items()
                if (p := type_problem(f"fit_report.correction_metrics.{side}.{key}", value, "number", True))]
    return out


# ----------------------------------------------------------------------------- predictions

def table_facts(predictions: pl.DataFrame) -> dict[str, Any]:
    """What the checks need of a predictions table besides its metrics (JSON; cached with them)."""
    facts: dict[str, Any] = {"columns": list(predictions.columns), "n_rows": len(predictions)}
    if any(c not in predictions.columns for c in PREDICTION_COLUMNS):
        return facts
    probs = predictions.select([c for c in predictions.columns if c.startswith("prob_")]).to_numpy()
    wrong = 0
    if probs.shape[0] and probs.shape[1] >= 2:
        top = np.sort(probs, axis=1)
        clear = top[:, -1] > top[:, -2]
        wrong = int((probs.argmax(axis=1) != predictions["predicted"].to_numpy())[clear].sum())
    return {**facts, "parts": sorted(map(str, predictions["part"].unique().to_list())),
            "duplicate_ids": predictions["image_id"].n_unique() != len(predictions), "wrong_predicted": wrong}


def column_problems(data: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """Missing columns, or probability columns other than one per class name (nothing can be scored then)."""
    columns = facts["columns"]
    missing = [c for c in PREDICTION_COLUMNS if c not in columns]
    if missing:
        return [f"its predictions file lacks column(s) {', '.join(missing)}"]
    names = data.get("class_names") if isinstance(data.get("class_names"), list) else []
    probs = [c for c in columns if c.startswith("prob_")]
    if probs != [f"prob_{n}" for n in names] or len(probs) != N_CLASSES:
        return [f"its predictions' probability columns ({', '.join(probs) or 'none'}) are not one per class of "
                f"class_names ({N_CLASSES} expected)"]
    return []


def row_problems(data: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """Row count, parts, repeated images and ``predicted`` = arg-max of the probabilities (:func:`table_facts`)."""
    out = []
    n_rows = (data.get("predictions") or {}).get("n_rows")
    if n_rows != facts["n_rows"]:
        out.append(f"predictions.n_rows: the record says {_show(n_rows)}, its predictions file has "
                   f"{facts['n_rows']} rows")
    other = sorted(set(facts["parts"]) - set(PARTS))
    if other:
        out.append(f"its predictions name part(s) {', '.join(other)}, not {' or '.join(PARTS)}")
    if facts["duplicate_ids"]:
        out.append("its predictions list an image more than once")
    if facts["wrong_predicted"]:
        out.append(f"predicted: {facts['wrong_predicted']} image(s) whose predicted class is not their most "
                   "probable one")
    return out


# ----------------------------------------------------------------------------- scenarios

class _Settings:
    """Stands in for a dataset where a scenario only reads ``dataset.meta.settings`` (its plain level)."""

    def __init__(self, settings: Any):
        self.meta = self  # dataset.meta.settings
        self.settings = settings if isinstance(settings, dict) else {}


def scenario_problems(data: Mapping[str, Any], plain: Mapping[str, Any]) -> list[str]:
    """Problems of the scenario blocks the leaderboard reads; ``plain``: the recomputed out-of-domain metrics."""
    from ..methods.base import AccessLevel
    from ..scenarios import SCENARIO_NAMES, get_scenario

    blocks = data.get("scenarios") or {}
    if not isinstance(blocks, dict):
        return []  # reported by header_problems
    try:
        access = AccessLevel((data.get("method") or {}).get("access"))
    except ValueError:
        return []  # reported by header_problems
    out = []
    for name in SCENARIO_NAMES:
        if name not in blocks:
            continue
        where, block = f"scenarios.{name}", blocks[name]
        if not isinstance(block, dict) or not isinstance(block.get("levels"), dict):
            out.append(f"{where} is not a JSON object with levels")
            continue
        scenario = get_scenario(name)
        try:
            expected_plain = scenario.plain_level(_Settings((data.get("dataset") or {}).get("settings")))
        except (KeyError, TypeError, ValueError):
            expected_plain = None
        if block.get("plain_level") != expected_plain:
            out.append(f"{where}.plain_level: the record says {_show(block.get('plain_level'))}, the scenario's "
                       f"plain level on this dataset is {_show(expected_plain)}")
        unchanged = scenario.unchanged_for(access)
        for level, entry in block["levels"].items():
            out += _level_problems(f"{where}.levels.{level}", entry, plain,
                                   "unchanged" if unchanged else "plain" if level == expected_plain else None)
    return out


def _level_problems(where: str, entry: Any, plain: Mapping[str, Any], copied: str | None) -> list[str]:
    """One level: ``copied`` is the status it must have when its metrics are the plain ones (else ok/failed)."""
    if not isinstance(entry, dict):
        return [f"{where} is {_kind(entry)}, not a JSON object"]
    status = entry.get("status")
    if status not in LEVEL_STATUSES:
        return [f"{where}.status is {_kind(status)}, not one of {', '.join(LEVEL_STATUSES)}"]
    if copied is not None and status != copied:
        return [f"{where}.status is '{status}', but this level must be '{copied}' (its metrics are the plain "
                "evaluation's)"]
    if copied is None and status in ("plain", "unchanged"):
        return [f"{where}.status is '{status}', but this level changes what the method is scored on"]
    out = [p for key in ("seconds", "share_of_fit")
           if (p := type_problem(f"{where}.{key}", entry.get(key), "number", optional=True))]
    if status in ("plain", "unchanged"):
        return out + compare(f"{where}.metrics", entry.get("metrics"), dict(plain))
    if status == "ok":
        metrics = entry.get("metrics")
        if not isinstance(metrics, dict):
            return out + [f"{where}.metrics is {_kind(metrics)}, not a JSON object"]
        for key in RATES:
            value = metrics.get(key)
            problem = type_problem(f"{where}.metrics.{key}", value, "number", optional=True)
            if problem is None and value is not None and not 0.0 <= value <= 1.0:
                problem = f"{where}.metrics.{key} is {value!r}, outside [0, 1]"
            out += [problem] if problem else []
        for key in COUNTS:
            value = metrics.get(key)
            problem = type_problem(f"{where}.metrics.{key}", value, "int")
            if problem is None and value < 0:
                problem = f"{where}.metrics.{key} is negative"
            out += [problem] if problem else []
    return out


# ----------------------------------------------------------------------------- dataset labels

@dataclass
class DatasetLabels:
    """The index of each dataset version already on this machine, found without generating anything.

    Looked for: every ``dataset.json`` one or two levels under the cache folder (``synthetic/<key>/``,
    ``jump/``), then the folder a record's run was given (``dataset.argument``, when it is a folder).
    A folder counts when its name and fingerprint match the record's and its index
    hashes to that fingerprint (:func:`benchmark.datasets.dataset.compute_fingerprint`, without
    reading the image shards).
    """

    roots: Sequence[Path] | None = None
    _index: dict[tuple[str, str], pl.DataFrame | None] = field(default_factory=dict)
    _metas: list[tuple[Path, Any]] | None = None
    missing: set[tuple[str, str]] = field(default_factory=set)
    """Dataset versions some record named that were not found (their labels were not checked)."""

    def _candidates(self) -> list[tuple[Path, Any]]:
        from ..datasets.dataset import META_FILE, DatasetMeta

        if self._metas is None:
            self._metas = []
            for root in self.roots if self.roots is not None else [cache_dir()]:
                for meta_file in sorted([*Path(root).glob(f"*/{META_FILE}"), *Path(root).glob(f"*/*/{META_FILE}")]):
                    meta = _read_meta(meta_file, DatasetMeta)
                    if meta is not None:
                        self._metas.append((meta_file.parent, meta))
        return self._metas

    def index(self, data: Mapping[str, Any]) -> pl.DataFrame | None:
        """The index of the record's dataset version, or None when it is not on this machine."""
        from ..datasets.dataset import META_FILE, DatasetMeta

        ds = data.get("dataset") or {}
        key = (str(ds.get("name")), str(ds.get("fingerprint")))
        if key not in self._index:
            argument = ds.get("argument")
            given = Path(argument) if isinstance(argument, str) and Path(argument).is_dir() else None
            candidates = self._candidates() + ([(given, m)] if given is not None and (
                m := _read_meta(given / META_FILE, DatasetMeta)) else [])  # the cache first
            self._index[key] = next((ix for root, meta in candidates if (meta.name, meta.fingerprint) == key
                                     and (ix := _verified_index(root, meta)) is not None), None)
            if self._index[key] is None:
                self.missing.add(key)
        return self._index[key]


def _read_meta(meta_file: Path, meta_cls: Any) -> Any:
    try:
        return meta_cls.from_json(json.loads(meta_file.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _verified_index(root: Path, meta: Any) -> pl.DataFrame | None:
    """The folder's index when it hashes to the folder's fingerprint, else None."""
    from ..datasets.dataset import INDEX_FILE, compute_fingerprint, validate_index
    from ..errors import DataError

    try:
        index = validate_index(pl.read_parquet(root / INDEX_FILE), str(root / INDEX_FILE))
    except (OSError, DataError, pl.exceptions.PolarsError):
        return None
    return index if compute_fingerprint(meta.settings, index, meta.shards) == meta.fingerprint else None


def label_problems(predictions: pl.DataFrame, index: pl.DataFrame) -> list[str]:
    """Images of ``predictions`` missing from the dataset's ``index`` or disagreeing with it (label, plate...)."""
    ids = predictions["image_id"].to_numpy()
    if len(ids) and (ids.min() < 0 or ids.max() >= len(index)):
        return [f"its predictions name image ids outside the dataset (0..{len(index) - 1})"]
    rows = index[ids]
    out = []
    for column in CHECKED_INDEX_COLUMNS:
        differ = predictions[column].cast(index[column].dtype).to_numpy() != rows[column].to_numpy()
        if differ.any():
            first = int(np.argmax(differ))
            out.append(f"its predictions' {column} differs from the dataset's for {int(differ.sum())} image(s) "
                       f"(first: image {int(ids[first])}: {_show(predictions[column][first])}, dataset "
                       f"{_show(rows[column][first])})")
    return out


# ----------------------------------------------------------------------------- one record

def recompute(predictions: pl.DataFrame) -> dict[str, Any]:
    """What is derived from a predictions table alone: ``facts`` (:func:`table_facts`) and, when its columns
    allow, ``metrics`` (the evaluator's :func:`benchmark.protocol.evaluation.score`), JSON-safe."""
    import sklearn

    from ..protocol.evaluation import score

    facts = table_facts(predictions)
    if not ("parts" in facts and set(facts["parts"]) <= set(PARTS)):
        return {"facts": facts, "metrics": None}
    with sklearn.config_context(skip_parameter_validation=True):  # the same numbers, a quarter faster
        return {"facts": facts, "metrics": json_safe(score(predictions))}


def record_problems(data: Mapping[str, Any], predictions: pl.DataFrame | None, index: pl.DataFrame | None = None,
                    derived: Mapping[str, Any] | None = None) -> list[str]:
    """Every way the record ``data`` disagrees with its ``predictions`` (and the dataset ``index``); [] if none.

    ``derived``: :func:`recompute` of ``predictions`` when already known (cached); ``predictions`` may
    then be None unless ``index`` is given.
    """
    out = header_problems(data)
    if not (isinstance(data.get("metrics"), dict) and isinstance(data.get("class_names"), list)):
        return out  # header_problems said which
    ours = dict(derived) if derived is not None else recompute(predictions)
    columns = column_problems(data, ours["facts"])
    if columns:
        return out + columns
    out += row_problems(data, ours["facts"])
    if ours["metrics"] is None:  # rows of an unknown part: nothing was scored
        return out
    if index is not None and predictions is not None:
        out += label_problems(predictions, index)
    out += compare("metrics", data["metrics"], ours["metrics"], skip=("adapt_predict_s",))
    for i, plate in enumerate(data["metrics"].get("per_plate") or []):
        if isinstance(plate, dict):
            where = f"metrics.per_plate[{i}].adapt_predict_s"
            out += [p for p in [type_problem(where, plate.get("adapt_predict_s"), "number", True)] if p]
    return out + scenario_problems(data, ours["metrics"]["out_of_domain"])


def summary(problems: Sequence[str]) -> str:
    """The first :data:`MAX_SHOWN` problems on one line, and how many more there are."""
    more = f" (and {len(problems) - MAX_SHOWN} more)" if len(problems) > MAX_SHOWN else ""
    return "; ".join(problems[:MAX_SHOWN]) + more


def refusal(path: Path, problems: Sequence[str]) -> str:
    """One line: the record file and what disagrees."""
    return f"record {path.as_posix()} refused: {summary(problems)}"


def check_record(json_path: Path | str, index: pl.DataFrame | None = None) -> list[str]:
    """:func:`record_problems` of the record file ``json_path`` and its predictions parquet (nothing cached)."""
    from ..errors import DataError
    from ..records import read_record, verify_predictions

    json_path = Path(json_path)
    try:
        data = read_record(json_path)
    except DataError as exc:
        return [str(exc)]
    problem = verify_predictions(json_path, data) if isinstance(data.get("predictions"), dict) else \
        "it has no predictions file"
    if problem:
        return [problem]
    predictions = _read_table(json_path.with_name(data["predictions"]["file"]))
    if isinstance(predictions, str):
        return [predictions]
    return record_problems(data, predictions, index)


# ----------------------------------------------------------------------------- many records

def scoring_digest() -> str:
    """SHA-256 of this module and the code that computes metrics: a cache entry of other code is never used."""
    from ..protocol import evaluation
    from .. import metrics

    h = hashlib.sha256()
    for file in (__file__, evaluation.__file__, metrics.__file__):
        h.update(Path(file).read_bytes())
    return h.hexdigest()


def _predictions_file(record: Record) -> Path:
    return record.path.with_name(str((record.data.get("predictions") or {}).get("file")))


def _read_table(path: Path) -> pl.DataFrame | str:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable table refuses its record
        return f"its predictions file {path.name} cannot be read ({type(exc).__name__}: {exc})"


def _recompute_file(path: Path) -> dict[str, Any] | str:
    """:func:`recompute` of one predictions file, or why it could not be."""
    table = _read_table(path)
    if isinstance(table, str):
        return table
    try:
        return recompute(table)
    except Exception as exc:  # noqa: BLE001 - a malformed table refuses its record
        return f"its predictions file {path.name} cannot be scored ({type(exc).__name__}: {exc})"


class ScoreCache:
    """:func:`recompute` results by predictions SHA-256 and :func:`scoring_digest`, one JSON file each.

    Only saves time: an entry is what :func:`recompute` returned for the file of that digest.
    ``folder=None``: no cache.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.code = scoring_digest() if folder is not None else ""

    def _file(self, sha256: Any) -> Path | None:
        if self.folder is None or not isinstance(sha256, str) or len(sha256) != 64:
            return None
        return self.folder / f"{hashlib.sha256(f'{self.code}|{sha256}'.encode()).hexdigest()[:40]}.json"

    def get(self, sha256: Any) -> dict[str, Any] | None:
        file = self._file(sha256)
        try:
            entry = json.loads(file.read_text()) if file is not None and file.is_file() else None
        except (OSError, ValueError):
            return None
        ok = isinstance(entry, dict) and entry.get("predictions_sha256") == sha256 and entry.get("code") == self.code
        return entry["derived"] if ok and isinstance(entry.get("derived"), dict) else None

    def put(self, sha256: Any, derived: dict[str, Any]) -> None:
        file = self._file(sha256)
        if file is None:
            return
        try:
            write_text_atomic(file, json.dumps({"predictions_sha256": sha256, "code": self.code, "derived": derived}))
        except OSError:
            pass  # a read-only cache only costs time


def recompute_all(records: Sequence[Record], cache: ScoreCache) -> dict[Path, dict[str, Any] | str]:
    """:func:`recompute` (or why it failed) per record path: from the cache, else from the predictions file."""
    out: dict[Path, dict[str, Any] | str] = {}
    for r in records:
        sha256 = (r.data.get("predictions") or {}).get("sha256")
        hit = cache.get(sha256)
        if hit is None:
            hit = _recompute_file(_predictions_file(r))
            if isinstance(hit, dict):
                cache.put(sha256, hit)
        out[r.path] = hit
    return out


@dataclass
class CheckResult:
    """What :func:`check_records` found: the records that passed and the refused ones with their line."""

    passed: list[Record] = field(default_factory=list)
    refused: list[tuple[Record, list[str]]] = field(default_factory=list)
    unchecked_labels: set[tuple[str, str]] = field(default_factory=set)
    """Dataset versions (name, fingerprint) not on this machine: their records' labels were not checked."""


def check_records(records: Iterable[Record], *, cache: bool = True, datasets: DatasetLabels | None = None
                  ) -> CheckResult:
    """Check ok records whose predictions match their SHA-256 (:func:`benchmark.records.load_records` verified it).

    A refused record comes with its problems (:func:`refusal` makes them one line naming its file).
    ``cache``: reuse and store recomputed metrics (:class:`ScoreCache`); ``datasets``: where labels are looked up.
    """
    records = list(records)
    datasets = datasets if datasets is not None else DatasetLabels()
    derived = recompute_all(records, ScoreCache(cache_dir() / CACHE_FOLDER if cache else None))
    result = CheckResult()
    for r in records:
        ours = derived[r.path]
        index = datasets.index(r.data) if not isinstance(ours, str) else None
        table = _read_table(_predictions_file(r)) if index is not None else None
        if isinstance(table, str):
            ours = table
        problems = [ours] if isinstance(ours, str) else record_problems(r.data, table, index, ours)
        if problems:
            result.refused.append((r, problems))
        else:
            result.passed.append(r)
    result.unchecked_labels = set(datasets.missing)
    return result


__all__ = ["CheckResult", "DatasetLabels", "ScoreCache", "check_record", "check_records", "compare",
           "column_problems", "header_problems", "label_problems", "recompute", "record_problems", "refusal",
           "row_problems", "scenario_problems", "summary", "table_facts", "type_problem"]
