"""The protocol runner: every (fold, seed) of one method on one split, one record each.

``run_protocol`` resolves the method, its config and the device, builds the folds
(:func:`benchmark.splits.make_folds`), and for each fold and seed fits, evaluates
(:mod:`benchmark.protocol.evaluation`) and writes a record (:mod:`benchmark.records`; its header from
:func:`benchmark.protocol.record_header.record_header`). Every run's
method executes in a sealed worker process (:mod:`benchmark.sealed`) that sees only the
fold's training and validation labels; this process keeps the labels, scores and writes
the record. It is resumable: a run whose ok record already exists with the same config,
data fingerprint, split seed and profile is skipped (``force`` recomputes it); failed
records are retried. A method that fails, crashes, runs out of time or memory, or reaches
for what it may not, writes a failed record and the other runs go on.

Under torchrun (``WORLD_SIZE`` > 1, :mod:`benchmark.core.training.distributed`) every rank walks the same runs: rank 0
decides which are fitted and the others follow it; every rank's sealed worker trains its share of the model;
rank 0 alone evaluates and writes the record, the other ranks only fit and write nothing (docs/ddp.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_bounds import naming_method
from ..core.training.distributed import Coordinator, World, launch
from ..datasets import Dataset, load_dataset
from ..errors import BenchError, DataError, UnknownNameError
from .evaluation import evaluate, target_views
from .method_calls import StageError
from .orders import DEFAULT_ORDER_SCHEME, check_scheme, record_scheme
from .record_header import record_header
from ..results_folder import check_output_folder
from ..records import (DEFAULT_RESULTS, FULL, QUICK, RECORD_FORMAT, clean_temp_files, environment_info, read_record,
                      record_path, run_dir, verify_predictions, write_record)
from ..method_info import method_info, resolve_config
from ..scenarios import SCENARIO_NAMES, parse_scenarios
from ..scenarios.scoring import scenario_block_current
from ..scenarios.severity import prepare_twins
from ..sealed.executor import SealedHost
from ..sealed.runs import warm_up
from ..sealed.limits import DEFAULT_TIME_LIMIT_S, Limits
from ..sealed.runs import SealedRuns
from ..splits import SPLITS, Fold, make_folds

DEFAULT_SEEDS = (0, 1, 2)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one (fold, seed): ``ok``, ``skipped`` (already recorded) or ``failed``.

    On a rank other than 0 of a torchrun launch only failed fits are outcomes: rank 0 reports the runs."""

    method: str
    split: str
    fold: int
    seed: int
    status: str
    path: Path
    out_of_domain_accuracy: float | None = None
    in_domain_accuracy: float | None = None
    seconds: float = 0.0
    error: str | None = None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise BenchError(f"unknown device '{device}'. Valid devices: {', '.join(DEVICES)}.")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise BenchError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return "cpu"


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["lr=0.01", "epochs=3"]`` -> ``{"lr": "0.01", "epochs": "3"}`` (typed later by the config)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--set expects key=value, got '{pair}' (e.g. --set epochs=5)")
        out[key.strip()] = value.strip()
    return out


def select_folds(folds: list[Fold], wanted: Sequence[int] | None) -> list[Fold]:
    """The folds with the given indices (all when ``wanted`` is None); unknown indices list the valid ones."""
    if wanted is None:
        return folds
    valid = [f.index for f in folds]
    bad = [k for k in wanted if k not in valid]
    if bad:
        raise BenchError(f"fold(s) {', '.join(map(str, bad))} do not exist for split {folds[0].split}; "
                         f"valid folds: {', '.join(map(str, valid))}")
    return [f for f in folds if f.index in set(wanted)]


def _shipped_encoder_changed(data: dict) -> bool:
    """Whether the record's run embedded with the shipped ``platebench-ssl`` encoder and its weights were replaced since.

    The config names the encoder, not its weights (``fm_tvn``'s ``encoder``, a profile method's
    ``featuriser``), so the digest its fit report stores is compared with the shipped file's.
    """
    from ..core.encoders.loading import shipped_weights_digest
    from ..core.encoders.ssl import NAME

    config, report = data.get("method", {}).get("config") or {}, data.get("fit_report") or {}
    if NAME not in (config.get("encoder"), config.get("featuriser")):
        return False
    recorded = report.get("encoder_weights_sha256") or (report.get("featuriser_key") or {}).get("weights_sha256")
    return recorded is not None and recorded != shipped_weights_digest()


def record_is_current(path: Path, config: dict, fingerprint: str, split_seed: int,
                  scenarios: Sequence[str] = (), order_scheme: str | None = None) -> tuple[bool, str, tuple[str, ...]]:
    """Whether ``path`` holds an ok record of the same run with blocks of every one of ``scenarios``;
    else why not (for the log); and the scenario blocks the existing ok record holds (kept on a re-run).

    The record's order scheme (:mod:`benchmark.protocol.orders`) never makes it stale: a ``public-v0`` record stays
    current. A re-run that adds blocks redraws the whole record under the run's ``order_scheme`` (its plain
    part and every block, so no record mixes schemes); when that differs from the record's, ``why`` says so."""
    if not path.exists():
        return False, "", ()
    try:
        data = read_record(path)
    except DataError:
        return False, "unreadable record", ()
    checks = [(data.get("record_format") == RECORD_FORMAT, "older record format"),
              (data.get("status") == "ok", "previous run failed"),
              (data.get("method", {}).get("config") == config, "config changed"),
              (data.get("dataset", {}).get("fingerprint") == fingerprint, "data fingerprint changed"),
              (data.get("split", {}).get("split_seed") == split_seed, "split seed changed")]
    for ok, why in checks:
        if not ok:
            return False, why, ()
    if _shipped_encoder_changed(data):
        return False, "the shipped encoder's weights changed", ()
    problem = verify_predictions(path, data)
    if problem:
        return False, problem, ()
    held = tuple(name for name, block in (data.get("scenarios") or {}).items() if scenario_block_current(name, block))
    missing = [name for name in scenarios if name not in held]
    if missing:
        why = f"adding scenario block(s) {', '.join(missing)}"
        if order_scheme is not None and record_scheme(data) != order_scheme:
            why += f"; the whole record is redrawn under order scheme {order_scheme} (was {record_scheme(data)})"
        return False, why, held
    return True, "", held


def run_protocol(method: str, split: str, dataset: Dataset | str = "synthetic", *,
                 seeds: Sequence[int] = DEFAULT_SEEDS, folds: Sequence[int] | None = None, split_seed: int = 0,
                 device: str = "auto", results_dir: Path | str = DEFAULT_RESULTS, quick: bool = False,
                 force: bool = False, overrides: Mapping[str, Any] | None = None,
                 dataset_options: Mapping[str, Any] | None = None, verbose: bool = False,
                 log: Callable[[str], None] | None = None, preset: str | None = None,
                 time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
                 memory_limit_gb: float | None = None, scenarios: Sequence[str] | str | None = (),
                 order_scheme: str = DEFAULT_ORDER_SCHEME) -> list[RunOutcome]:
    """Run ``method`` on every selected fold and seed of ``split`` and write one record per run.

    Parameters
    ----------
    method, split
        Registered method name; ``source_out`` or ``batch_out``.
    dataset
        A dataset name or folder (opened with :func:`load_dataset` and ``dataset_options``), or an opened dataset.
    seeds, folds, split_seed
        Training seeds; fold indices (None = all); seed of the fold assignment.
    device
        ``auto``, ``cpu`` or ``cuda``.
    results_dir
        Where records go (see :mod:`benchmark.records` for the layout).
    quick
        Smoke profile: the method's ``quick_overrides``; records are marked ``profile: quick``.
    force
        Recompute runs that already have an ok record.
    overrides
        Hyper-parameter overrides (``--set key=value``), applied after ``quick_overrides``.
    log
        Called with one progress line per step (``None``: silent).
    preset
        A named preset of :mod:`benchmark.protocol.presets` (e.g. ``paper``), applied before ``quick`` and ``overrides``;
        its name goes into every record.
    time_limit_s, memory_limit_gb
        Per-run limits of the sealed worker: wall time in seconds (default 24 h) and data memory in GB
        (default none); a run past either fails alone.
    scenarios
        Scenarios scored on each fitted run besides the plain evaluation (:mod:`benchmark.scenarios`): names, a
        comma-separated string, ``"all"`` or None (every one that applies to the dataset), ``"none"`` or ``()``
        (default: none). An ok record that lacks a requested block is re-run to add it; the blocks it already
        holds are kept, and if the re-run fails the existing record stays as it was.
    order_scheme
        How target plates are shuffled and scenarios cut (:mod:`benchmark.protocol.orders`): ``keyed-v1`` (default: keyed
        by the full index, which the sealed worker never sees) or ``public-v0`` (the records made before it; what
        ``bench verify`` passes for them). Written to each record's ``orders``. A re-run that adds scenario blocks
        to an ok record recomputes the whole record under this scheme (never a mix of two schemes in one record).

    Returns
    -------
    list of RunOutcome, one per (fold, seed), in run order (on a rank other than 0 of a torchrun launch: one per
    failed fit; that rank evaluates and writes nothing).
    """
    say = log or (lambda _line: None)
    check_scheme(order_scheme)
    if time_limit_s is not None and time_limit_s <= 0:
        raise BenchError(f"the time limit must be positive, got {time_limit_s:g} s")
    if memory_limit_gb is not None and memory_limit_gb <= 0:
        raise BenchError(f"the memory limit must be positive, got {memory_limit_gb:g} GB")
    check_output_folder(results_dir)  # a file in the way fails now, not after the first run has trained
    warm_up()  # the sealed workers' zygote imports torch while this process does the same
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    with naming_method(method):  # a hyper-parameter out of range names the method
        info = method_info(method, overrides, quick, preset)  # a plugin is described in a sandbox, never imported here
    device = resolve_device(device)
    argument = dataset if isinstance(dataset, str) else dataset.name
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, **dict(dataset_options or {}))
    wanted = parse_scenarios(scenarios, dataset)
    all_folds = make_folds(dataset.index, split, split_seed)
    chosen = select_folds(all_folds, folds)
    profile = QUICK if quick else FULL
    results_dir = Path(results_dir)
    found = launch()  # torchrun: this process is one rank of a data-parallel training of every run
    coordinator = Coordinator(found, 2 * (time_limit_s or DEFAULT_TIME_LIMIT_S) + 3600) if found else None
    rank = found.rank if found else 0
    if rank == 0:
        clean_temp_files(run_dir(results_dir, dataset.name, dataset.fingerprint, method, split))
    env = environment_info()
    runs = SealedRuns(dataset, split_seed, Limits(time_limit_s, memory_limit_gb), log=say)
    outcomes = []
    for fold in chosen:
        for seed in seeds:
            path = record_path(results_dir, dataset.name, dataset.fingerprint, method, split, fold.index, seed, profile)
            tag = f"[{method} {split}] fold {fold.index} (held out {', '.join(fold.held_out)}) seed {seed}"
            done, why, held = (record_is_current(path, info.config, dataset.fingerprint, split_seed, wanted,
                                                 order_scheme) if rank == 0 else (False, "", ()))
            turn = coordinator.turn(tag, not done or force) if coordinator else None  # the others follow rank 0
            if not (turn.fit if turn is not None else not done or force):
                say(f"{tag}: skipped, already recorded in {path}")
                if rank == 0:
                    outcomes.append(RunOutcome(method, split, fold.index, seed, "skipped", path))
                continue
            if why:
                say(f"{tag}: recomputing ({why})")
            keep = tuple(n for n in SCENARIO_NAMES if n in set(wanted) | set(held))  # a re-run never drops a block
            if rank == 0 and "severity" in keep:
                prepare_twins(dataset)  # rendered (with progress) or opened before the run starts; once per process
            runs.store(fold)  # built (or found) once per fold, before its first worker starts
            say(f"{tag}: fitting on {len(fold.train_ids)} images, validating on {len(fold.val_ids)}")
            header = record_header(info, dataset, fold, seed, n_folds=len(all_folds), split_seed=split_seed,
                                   argument=argument, quick=quick, overrides=overrides, preset=preset, device=device,
                                   environment=env, order_scheme=order_scheme)
            with turn.environment() if turn else nullcontext():  # the worker's group is this run's
                host = runs.host(info, fold, device, verbose)
            if rank != 0:
                outcomes += _fit_only(host, dataset, fold, seed, split_seed, path, say, f"{tag} (rank {rank})",
                                      order_scheme)
                continue
            outcomes.append(_run_one(host, dataset, fold, seed, split_seed, header, path, say, tag, keep,
                                     replaces_ok=bool(held) or why.startswith("adding scenario"),
                                     order_scheme=order_scheme))
    return outcomes


def _run_one(host: SealedHost, dataset: Dataset, fold: Fold, seed: int, split_seed: int, header: dict,
             path: Path, say: Callable[[str], None], tag: str, scenarios: Sequence[str] = (),
             replaces_ok: bool = False, order_scheme: str = DEFAULT_ORDER_SCHEME) -> RunOutcome:
    """Fit, evaluate and write the record; a failed re-run of an ok record (``replaces_ok``) keeps the old one."""
    start = time.perf_counter()
    try:
        with host:
            result = evaluate(host, dataset, fold, seed, split_seed, scenarios, order_scheme=order_scheme)
    except (StageError, BenchError) as exc:
        seconds = time.perf_counter() - start
        if replaces_ok:
            say(f"{tag}: FAILED while adding scenario blocks, the existing record is kept: {exc}")
            return RunOutcome(host.name, fold.split, fold.index, seed, "failed", path, seconds=seconds,
                              error=f"{exc} (existing ok record kept)")
        trace = exc.traceback_text if isinstance(exc, StageError) else None
        write_record(path, {**header, "status": "failed", "error": str(exc), "traceback": trace,
                            "timings": {"total_s": seconds}, "worker": host.worker_info()}, None)
        say(f"{tag}: FAILED: {exc}")
        return RunOutcome(host.name, fold.split, fold.index, seed, "failed", path, seconds=seconds, error=str(exc))
    seconds = time.perf_counter() - start
    metrics = result.metrics
    write_record(path, {**header, "status": "ok", "error": None, "metrics": metrics,
                        "scenarios": result.scenarios,
                        "fit_report": _with_world(result.fit_report),
                        "timings": {**result.timings, "total_s": seconds}, "worker": host.worker_info()},
                 result.predictions)
    ood, ind = metrics["out_of_domain"]["accuracy"], metrics["in_domain"]["accuracy"]
    say(f"{tag}: out-of-domain accuracy {ood:.3f}, in-domain {ind:.3f} ({seconds:.1f} s)")
    return RunOutcome(host.name, fold.split, fold.index, seed, "ok", path, ood, ind, seconds)


def _with_world(report: dict[str, Any]) -> dict[str, Any]:
    """A fit report under torchrun says the world it trained in: one process unless it says otherwise (a method
    outside the shared training loop fits a copy of its own on every rank). Alone it is left as it is."""
    return report if launch() is None else {**World().report(), **report}


def _fit_only(host: SealedHost, dataset: Dataset, fold: Fold, seed: int, split_seed: int, path: Path,
              say: Callable[[str], None], tag: str, order_scheme: str = DEFAULT_ORDER_SCHEME) -> list[RunOutcome]:
    """A rank other than 0 of a data-parallel launch: fit (its share of the training), write nothing; the failure."""
    start = time.perf_counter()
    try:
        with host:
            host.fit(seed, target_views(dataset, fold, seed, split_seed, order_scheme=order_scheme)
                     if host.access.sees_targets_in_fit else [])
            host.fit_report()  # stops the worker
    except (StageError, BenchError) as exc:
        say(f"{tag}: FAILED: {exc}")
        return [RunOutcome(host.name, fold.split, fold.index, seed, "failed", path,
                           seconds=time.perf_counter() - start, error=str(exc))]
    say(f"{tag}: fitted; rank 0 evaluates it and writes the record")
    return []


__all__ = ["DEFAULT_RESULTS", "DEFAULT_SEEDS", "RunOutcome", "parse_overrides", "resolve_config",
           "resolve_device", "run_protocol", "select_folds"]
