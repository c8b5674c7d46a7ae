"""``bench verify``: re-run committed records and say how far the re-runs land from them.

A record stores everything a run was made from: method, config, preset, profile, data
fingerprint, split, split seed, fold and seed. :func:`verify_records` re-runs each record
through the protocol (:func:`benchmark.protocol.loop.run_protocol`, so through the same sealed
worker) into a separate results folder, never over the committed record, and compares:

- per run, every headline metric: the numbers of each top-level part of the record's
  ``metrics`` (``out_of_domain``, ``in_domain``, ...) and any top-level number, as
  ``re-run - committed``; a difference beyond the tolerance fails the verification;
- per method and split, whether the re-run mean (the leaderboard mean with the re-runs in
  place of their records, :class:`CICheck`) lies inside the committed leaderboard's 95% CI
  (the same two-stage bootstrap over the same records as
  :func:`benchmark.leaderboard.tables.details_table`); this informs, it does not fail.

Default tolerance :data:`DEFAULT_TOLERANCE` (1e-6): on the same CPU model, instruction
sets, torch build and thread settings a re-run is bit for bit identical (docs/protocol.md,
"How exactly the numbers reproduce"), and JSON stores floats exactly, so any difference at
all means another machine, other code or an edited record. Re-running on other hardware
moves single runs by up to a few points; pass ``--tolerance 0.05`` there and read the
CI column.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BenchError, DataError
from ..leaderboard.tables import _by_fold, _num
from ..metrics import bootstrap_ci
from ..records import DEFAULT_RESULTS, QUICK, Record, json_safe, load_ok_record, load_records, read_record

if TYPE_CHECKING:  # the protocol imports torch: loaded only when something is re-run
    from ..datasets import Dataset

DEFAULT_TOLERANCE = 1e-6
"""Largest ``|re-run - committed|`` of any headline metric that still passes (see the module docstring)."""
CI_METRICS = ("out_of_domain.accuracy", "in_domain.accuracy")
"""The metrics whose re-run mean is checked against the committed 95% CI."""
CI_SLACK = 1e-9
"""Rounding slack of the CI check: a bootstrap mean of equal values may land a few ulps beside them."""


# ----------------------------------------------------------------------------- metrics

def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a record's ``metrics``: ``part.name`` for each number of a top-level part, ``name`` for a
    top-level number. Lists (``per_plate``) and deeper tables (``per_source``) are left out; so are booleans.

    Examples
    --------
    >>> headline_metrics({"out_of_domain": {"accuracy": 0.5, "worst_plate": "p1"}, "x": 2, "per_plate": []})
    {'out_of_domain.accuracy': 0.5, 'x': 2.0}
    """
    out: dict[str, float] = {}

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                if number(inner):
                    out[f"{key}.{sub}"] = _num(inner)
        elif number(value):
            out[key] = _num(value)
    return out


@dataclass(frozen=True)
class MetricDiff:
    """One metric of one run: the committed value and the re-run's (nan where a side lacks it)."""

    name: str
    committed: float
    rerun: float

    @property
    def diff(self) -> float:
        """``re-run - committed``; 0 where both are nan (a metric undefined on both sides), nan where one is."""
        if self.committed != self.committed and self.rerun != self.rerun:
            return 0.0
        return self.rerun - self.committed

    def exceeds(self, tolerance: float) -> bool:
        """Whether the difference is beyond ``tolerance`` (a value present on one side only always is)."""
        d = self.diff
        return d != d or abs(d) > tolerance


def compare_metrics(committed: Mapping[str, Any], rerun: Mapping[str, Any]) -> list[MetricDiff]:
    """Every headline metric of either record, committed against re-run (sorted by name, accuracies first)."""
    a, b = headline_metrics(committed), headline_metrics(rerun)
    names = sorted(set(a) | set(b), key=lambda n: (n not in CI_METRICS, n))
    return [MetricDiff(n, a.get(n, float("nan")), b.get(n, float("nan"))) for n in names]


# ----------------------------------------------------------------------------- choosing records

def load_verifiable(path: Path | str) -> Record:
    """The ok record at ``path``; :class:`DataError` saying why it cannot be verified otherwise.

    Refused (:func:`~benchmark.records.load_ok_record`): a missing path or a folder, an unreadable or
    older-format record, one lacking the fields a re-run needs, a failed run (nothing to compare) and
    one whose predictions file is missing or does not match its SHA-256.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give record files (fold<k>_seed<s>.json), "
                        f"or --sample N --results {path} to pick some of its records")
    return load_ok_record(path, "verify", lambda data: (data["method"]["config"], data["split"]["split_seed"],
                                                        data["metrics"]["out_of_domain"],
                                                        data["metrics"]["in_domain"], data["predictions"]["sha256"]))


def fit_seconds(record: Record) -> float:
    """The run's recorded fit time (``timings.fit_s``, else its total time; inf when neither is recorded)."""
    timings = record.data.get("timings") or {}
    value = timings.get("fit_s", timings.get("total_s"))
    return float(value) if isinstance(value, (int, float)) else float("inf")


def cheap_methods(records: Sequence[Record], at_least: int = 1) -> list[str]:
    """The cheaper half of the methods of ``records`` by median recorded fit time, widened (cheapest next) until
    their runs number ``at_least``."""
    times: dict[str, list[float]] = defaultdict(list)
    for r in records:
        times[r.method].append(fit_seconds(r))
    order = sorted(times, key=lambda m: (statistics.median(times[m]), m))
    chosen = order[: max(1, (len(order) + 1) // 2)]
    for method in order[len(chosen):]:
        if sum(len(times[m]) for m in chosen) >= at_least:
            break
        chosen.append(method)
    return chosen


def sample_records(results_dir: Path | str, n: int, seed: int = 0, cheap: bool = False) -> list[Record]:
    """``n`` ok (full-profile) records of ``results_dir`` drawn at random with ``seed`` (of the cheaper methods
    only with ``cheap``: :func:`cheap_methods`); in record-path order."""
    if n < 1:
        raise BenchError(f"--sample takes a number of records >= 1, got {n}")
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"results folder {results_dir} does not exist; give --results (default {DEFAULT_RESULTS})")
    pool = load_records(results_dir).ok
    if not pool:
        raise DataError(f"no ok run records under {results_dir} to sample from (failed, --quick, damaged and "
                        "older-format records are not sampled; give such a record by its path to see why)")
    if cheap:
        keep = set(cheap_methods(pool, at_least=n))
        pool = [r for r in pool if r.method in keep]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    return sorted(chosen, key=lambda r: str(r.path))


# ----------------------------------------------------------------------------- re-running

def rerun_settings(record: Record) -> tuple[dict[str, Any], list[str]]:
    """The ``--set`` overrides that rebuild the record's config, and notes on what had to change.

    First as ``bench run`` made it (the record's preset, profile and overrides on today's defaults);
    where today's defaults differ from the stored config, the stored values are added as overrides.
    """
    from ..method_info import method_info

    stored = record.data["method"]["config"]
    overrides = dict(record.data["method"].get("overrides") or {})
    preset = record.data["method"].get("preset")
    resolved = method_info(record.method, overrides, record.profile == QUICK, preset).config  # plugin: in a sandbox
    if resolved == stored:
        return overrides, []
    unknown = sorted(set(stored) - set(resolved))
    if unknown:
        raise BenchError(f"record {record.path}: method {record.method} has no hyper-parameter(s) "
                         f"{', '.join(unknown)} any more; verify it at the record's commit "
                         f"{_commit(record)} (git checkout it in a separate worktree)")
    changed = sorted(k for k in stored if resolved.get(k) != stored[k])
    overrides.update({k: stored[k] for k in changed})
    return overrides, [f"today's defaults differ in {', '.join(changed)}; used the record's values"]


def _commit(record: Record) -> str:
    commit = str((record.data.get("environment") or {}).get("git_commit", "unknown"))
    return commit[:12] if len(commit) == 40 else commit


ENVIRONMENT_KEYS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("code commit", lambda e: e.get("git_commit")),
    ("code tree", lambda e: e.get("git_tree")),
    ("torch", lambda e: e.get("torch")),
    ("CPU model", lambda e: (e.get("cpu") or {}).get("model")),
    ("instruction sets", lambda e: (e.get("cpu") or {}).get("isa")),
    ("torch kernels", lambda e: (e.get("torch_build") or {}).get("cpu_capability")),
    ("torch threads", lambda e: (e.get("torch_threads") or {}).get("intra_op")),
)
"""What has to agree between a record and its re-run for a bit-for-bit identical result."""


def environment_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``what: recorded -> current`` for each of :data:`ENVIRONMENT_KEYS` that differs (unrecorded ones are skipped)."""
    out = []
    for what, get in ENVIRONMENT_KEYS:
        before, now = get(recorded), get(current)
        if before is not None and before != now:
            fmt = (lambda v: ",".join(v) if isinstance(v, list) else str(v)[:12] if what == "code commit" else str(v))
            out.append(f"{what}: {fmt(before)} -> {fmt(now)}")
    return out


def check_fingerprint(record: Record, dataset: Dataset, argument: str) -> None:
    """Raise :class:`DataError` (naming both fingerprints and what to do) unless ``dataset`` is the record's data."""
    if dataset.fingerprint == record.fingerprint and dataset.name == record.dataset:
        return
    raise DataError(
        f"record {record.path} was computed on {record.dataset} fingerprint {record.fingerprint} "
        f"({record.data['dataset'].get('version')}), but the dataset opened from '{argument}' is {dataset.name} "
        f"fingerprint {dataset.fingerprint} ({dataset.meta.version}): a re-run would not compare like with like. "
        f"Point --dataset at a prepared folder of {record.dataset}-{record.fingerprint}, or regenerate that data "
        f"version at the record's commit {_commit(record)}; nothing was re-run")


def open_datasets(records: Sequence[Record], dataset: str | None = None) -> dict[Path, tuple[Dataset, str]]:
    """The dataset of every record (``dataset``, else the name or folder the record was run on), checked against
    its fingerprint before anything runs; opened once per name or folder."""
    from ..datasets import load_dataset

    opened: dict[str, Dataset] = {}
    out = {}
    for r in records:
        argument = dataset or str(r.data["dataset"].get("argument") or r.dataset)
        if argument not in opened:
            try:
                opened[argument] = load_dataset(argument)
            except BenchError as exc:
                raise DataError(f"record {r.path} was computed on dataset '{argument}', which can not be opened "
                                f"here ({exc}); pass --dataset NAME|FOLDER holding {r.dataset}-{r.fingerprint}"
                                ) from None
        check_fingerprint(r, opened[argument], argument)
        out[r.path] = (opened[argument], argument)
    return out


@dataclass
class RunCheck:
    """One record and its re-run."""

    record: Record
    rerun: Record | None = None
    error: str | None = None
    diffs: list[MetricDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def predictions_identical(self) -> bool | None:
        """Whether the re-run's predictions file has the committed one's SHA-256 (None without a re-run)."""
        if self.rerun is None:
            return None
        return self.rerun.data["predictions"]["sha256"] == self.record.data["predictions"]["sha256"]

    def exceeding(self, tolerance: float) -> list[MetricDiff]:
        return [d for d in self.diffs if d.exceeds(tolerance)]

    def passed(self, tolerance: float) -> bool:
        return self.error is None and self.rerun is not None and not self.exceeding(tolerance)

    def to_json(self, tolerance: float) -> dict[str, Any]:
        return json_safe({
            "record": str(self.record.path), "method": self.record.method, "split": self.record.split,
            "fold": self.record.fold, "seed": self.record.seed, "fingerprint": self.record.fingerprint,
            "rerun_record": str(self.rerun.path) if self.rerun else None, "error": self.error,
            "passed": self.passed(tolerance), "predictions_identical": self.predictions_identical,
            "exceeding": [d.name for d in self.exceeding(tolerance)], "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "metrics": {d.name: {"committed": d.committed, "rerun": d.rerun, "diff": d.diff} for d in self.diffs}})


def rerun_record(record: Record, dataset: Dataset, results_dir: Path, device: str | None = None,
                 log: Callable[[str], None] | None = None, verbose: bool = False,
                 settings: tuple[dict[str, Any], list[str]] | None = None) -> RunCheck:
    """Re-run ``record`` (same method, config, preset, profile, split, split seed, fold, seed and order scheme:
    its ``orders.scheme``, ``public-v0`` when absent) into ``results_dir`` through
    :func:`~benchmark.protocol.loop.run_protocol` and compare it with the record.

    ``settings``: the record's :func:`rerun_settings` (computed here when not given).
    """
    from .orders import record_scheme
    from .loop import run_protocol
    from ..sealed.limits import DEFAULT_TIME_LIMIT_S

    overrides, notes = settings if settings is not None else rerun_settings(record)
    notes = list(notes)
    worker = record.data.get("worker") or {}
    limits = {"time_limit_s": DEFAULT_TIME_LIMIT_S, "memory_limit_gb": None,
              **{k: worker[k] for k in ("time_limit_s", "memory_limit_gb") if worker.get(k) is not None}}
    (outcome,) = run_protocol(
        record.method, record.split, dataset, seeds=[record.seed], folds=[record.fold],
        split_seed=int(record.data["split"]["split_seed"]), device=device or record.data.get("device", "auto"),
        results_dir=results_dir, quick=record.profile == QUICK, force=True, overrides=overrides, log=log,
        verbose=verbose, preset=record.data["method"].get("preset"),
        time_limit_s=limits.get("time_limit_s"), memory_limit_gb=limits.get("memory_limit_gb"),
        order_scheme=record_scheme(record.data))
    check = RunCheck(record, notes=notes, seconds=outcome.seconds)
    if outcome.status != "ok":
        check.error = f"the re-run failed: {outcome.error}"
        return check
    check.rerun = Record(outcome.path, read_record(outcome.path))
    check.diffs = compare_metrics(record.data["metrics"], check.rerun.data["metrics"])
    if check.rerun.data["split"].get("held_out") != record.data["split"].get("held_out"):
        check.notes.append(f"the fold holds out {check.rerun.data['split'].get('held_out')} now, the record "
                           f"{record.data['split'].get('held_out')}")
    check.notes += environment_differences(record.data.get("environment") or {}, check.rerun.data["environment"])
    return check


# ----------------------------------------------------------------------------- the committed CI

@dataclass(frozen=True)
class CICheck:
    """Whether the re-runs of one method and split keep one metric's leaderboard mean inside its committed 95% CI.

    The *re-run mean* is the leaderboard mean with the re-run values in place of the committed ones of the same
    (fold, seed): the mean of the re-runs themselves when every run was re-run, and still meaningful for a sample
    (the mean of 3 runs drawn from 27 spreads far wider than the CI of the mean of all 27).
    """

    dataset: str
    fingerprint: str
    method: str
    split: str
    metric: str
    committed_mean: float
    ci_low: float
    ci_high: float
    n_committed: int
    n_folds: int
    rerun_mean: float
    n_reruns: int
    these_committed: float
    """Mean of the committed values of the re-run (fold, seed)s."""
    these_rerun: float
    """Mean of their re-runs."""

    @property
    def inside(self) -> bool | None:
        """True or False; None where the committed records give no CI (fewer than two folds)."""
        if self.ci_low != self.ci_low or self.rerun_mean != self.rerun_mean:
            return None
        return self.ci_low - CI_SLACK <= self.rerun_mean <= self.ci_high + CI_SLACK

    def to_json(self) -> dict[str, Any]:
        return json_safe({**{k: getattr(self, k) for k in self.__dataclass_fields__}, "inside": self.inside})


def _value(record: Record, metric: str) -> float:
    part, _, name = metric.partition(".")
    return _num((record.data["metrics"].get(part) or {}).get(name))


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.fmean(finite) if finite else float("nan")


def ci_checks(checks: Sequence[RunCheck], committed: Iterable[Record]) -> list[CICheck]:
    """One :class:`CICheck` per (data version, method, split, profile) of the re-runs and metric of :data:`CI_METRICS`;
    the CI is computed from the ``committed`` records of that group as the leaderboard computes it."""
    committed = list(committed)
    groups: dict[tuple[str, str, str, str, str], list[RunCheck]] = defaultdict(list)
    for c in checks:
        if c.rerun is not None:
            r = c.record
            groups[(r.dataset, r.fingerprint, r.method, r.split, r.profile)].append(c)
    out = []
    for key, members in sorted(groups.items()):
        same = {(r.fold, r.seed): r for r in committed
                if (r.dataset, r.fingerprint, r.method, r.split, r.profile) == key}
        for metric in CI_METRICS:
            folds = _by_fold([(f, _value(r, metric)) for (f, _), r in same.items()])
            lo, hi = bootstrap_ci(folds) if folds else (float("nan"), float("nan"))
            rerun = {(c.record.fold, c.record.seed): _value(c.rerun, metric) for c in members}  # type: ignore[arg-type]
            substituted = {**{k: _value(r, metric) for k, r in same.items()}, **rerun}
            out.append(CICheck(*key[:4], metric, _mean(v for vs in folds.values() for v in vs), lo, hi,
                               sum(map(len, folds.values())), len(folds), _mean(substituted.values()),
                               sum(v == v for v in rerun.values()),
                               _mean(_value(c.record, metric) for c in members), _mean(rerun.values())))
    return out


def committed_records(checks: Sequence[RunCheck], results_dir: Path | None = None) -> list[Record]:
    """The committed records the CIs come from: ok and quick records of ``results_dir``, else of each record's
    results folder (``<results>/<dataset>-<fingerprint>/<method>/<split>/<file>``)."""
    roots = {Path(results_dir)} if results_dir is not None else {c.record.path.parents[3] for c in checks}
    out: dict[Path, Record] = {}
    for root in sorted(roots):
        found = load_records(root)
        out.update({r.path.resolve(): r for r in found.ok + found.quick})
    return list(out.values())


# ----------------------------------------------------------------------------- the whole verification

@dataclass
class Verification:
    """The outcome of ``bench verify``: one :class:`RunCheck` per record, the CI checks, the tolerance."""

    runs: list[RunCheck]
    cis: list[CICheck]
    tolerance: float

    @property
    def passed(self) -> bool:
        """Every record re-ran and no metric differs beyond the tolerance (the CI checks inform, they do not fail)."""
        return all(c.passed(self.tolerance) for c in self.runs)

    def failures(self) -> list[str]:
        """One line per run that did not pass: what failed, naming the metrics and their differences."""
        lines = []
        for c in self.runs:
            if c.error:
                lines.append(f"{c.record.label()}: {c.error}")
            elif over := c.exceeding(self.tolerance):
                lines.append(f"{c.record.label()}: " + ", ".join(f"{d.name} {d.committed:.6g} -> {d.rerun:.6g} "
                                                                 f"(diff {d.diff:+.3g})" for d in over))
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "passed": self.passed,
                "runs": [c.to_json(self.tolerance) for c in self.runs], "ci": [c.to_json() for c in self.cis]}


@contextlib.contextmanager
def _results_folder(keep: Path | None, records: Sequence[Record]) -> Iterator[Path]:
    """``keep`` (refused where a committed record lies under it: its re-run would replace it), else a temp folder."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="platebench-verify-") as tmp:
            yield Path(tmp)
        return
    keep = Path(keep).resolve()
    for r in records:
        if r.path.resolve().is_relative_to(keep):
            raise BenchError(f"--keep {keep} holds the committed record {r.path}: its re-run would overwrite it; "
                             "give a folder outside the committed results")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


def verify_records(records: Sequence[Record], *, tolerance: float = DEFAULT_TOLERANCE, dataset: str | None = None,
                   device: str | None = None, results_dir: Path | None = None, keep: Path | None = None,
                   log: Callable[[str], None] | None = None, verbose: bool = False) -> Verification:
    """Re-run ``records`` and compare them (see the module docstring).

    Parameters
    ----------
    records
        Ok records (:func:`load_verifiable`, :func:`sample_records`).
    tolerance
        Largest ``|re-run - committed|`` of a headline metric that passes.
    dataset
        Name or folder of the data to re-run on (default: what each record was run on); its fingerprint must
        be the record's (checked for every record before anything runs).
    device
        ``cpu``, ``cuda`` or ``auto`` (default: the record's device).
    results_dir
        Where the committed records of the CIs are (default: each record's results folder).
    keep
        Keep the re-runs' records in this folder (default: a temporary folder, removed afterwards).
    log
        Called with progress lines (``None``: silent); ``verbose`` also shows the workers' training progress.
    """
    if tolerance < 0:
        raise BenchError(f"--tolerance must be >= 0, got {tolerance:g}")
    if not records:
        raise BenchError("nothing to verify: give record files or --sample N")
    say = log or (lambda _line: None)
    datasets = open_datasets(records, dataset)
    settings = {r.path: rerun_settings(r) for r in records}  # an unknown method or field stops here, before any run
    runs = []
    with _results_folder(keep, records) as folder:
        for i, record in enumerate(records, 1):
            say(f"[{i}/{len(records)}] re-running {record.label()} (recorded {fit_seconds(record):.0f} s of fit)")
            check = rerun_record(record, datasets[record.path][0], folder, device, log if verbose else None, verbose,
                                 settings[record.path])
            runs.append(check)
    return Verification(runs, ci_checks(runs, committed_records(runs, results_dir)), tolerance)


__all__ = ["CICheck", "DEFAULT_TOLERANCE", "MetricDiff", "RunCheck", "Verification", "cheap_methods",
           "check_fingerprint", "compare_metrics", "environment_differences", "headline_metrics", "load_verifiable",
           "open_datasets", "rerun_record", "sample_records", "verify_records"]
