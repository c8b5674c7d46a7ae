"""The plan of a sweep: which units of the grid are finished, which run, after what and in which order.

:func:`make_plan` checks every name and option before anything runs (an unknown method, split,
preset, fold, hyper-parameter or run keyword is one error naming the valid ones), opens the dataset
once for its fingerprint and folds, and asks the protocol's own resume check (the one
``run_protocol`` applies before each run) which units already have an ok record of the same config,
data fingerprint and split seed: those are skipped. The records stay the single source of what is
done. The rest is ordered longest first (:mod:`benchmark.sweep.schedule`), with run times taken
from earlier records of the same method, split and config where there are some (they also give the sweep's
expected wall time: :mod:`benchmark.sweep.clock`).
"""

from __future__ import annotations

import inspect
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import BenchError, UnknownNameError
from .grid import RunSettings, Unit, grid, prerequisites
from .schedule import order_units

SET_BY_SWEEP = frozenset({"method", "split", "dataset", "folds", "seeds", "split_seed", "device", "results_dir",
                          "quick", "force", "overrides", "preset", "time_limit_s", "memory_limit_gb", "scenarios",
                          "log", "verbose"})
"""``run_protocol`` keywords the sweep sets itself (each has its own option); the others pass through."""


@dataclass
class Plan:
    """What a sweep will do: ``todo`` in priority order, ``finished`` (skipped), and who waits for whom."""

    todo: list[Unit]
    finished: list[Unit]
    waits: dict[Unit, Unit] = field(default_factory=dict)
    estimates: dict[Unit, float | None] = field(default_factory=dict)
    dataset: str = ""
    fingerprint: str = ""
    scenarios: tuple[str, ...] = ()
    """The scenarios every unit scores (names that apply to the dataset)."""
    data: Any = field(default=None, repr=False, compare=False)
    """The opened dataset (to prepare what every unit shares before they start, e.g. severity twins)."""

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.finished)


def check_run_options(options: Mapping[str, Any]) -> None:
    """Every extra run keyword must be a keyword of ``run_protocol`` that the sweep does not set itself."""
    from ..protocol.loop import run_protocol

    accepted = set(inspect.signature(run_protocol).parameters) - SET_BY_SWEEP
    for key in options:
        if key in SET_BY_SWEEP:
            raise BenchError(f"--run-option {key}=... is set by bench sweep itself; use its own option "
                             f"(bench sweep --help)")
        if key not in accepted:
            raise UnknownNameError("run option", key, accepted)


def make_plan(methods: Sequence[str], splits: Sequence[str], folds: Sequence[int] | None, seeds: Sequence[int],
              settings: RunSettings) -> Plan:
    """Check the sweep's names and options, build its grid and sort it into finished and to-do units."""
    from ..datasets import load_dataset
    from ..method_info import method_info
    from ..protocol.presets import get_preset
    from ..protocol.loop import record_is_current, select_folds
    from ..records import FULL, QUICK, record_path
    from ..registry import method_entry
    from ..scenarios import parse_scenarios
    from ..splits import SPLITS, make_folds

    if not methods:
        raise BenchError("--methods is empty; give comma-separated method names (see `bench methods list`)")
    if not splits:
        raise BenchError("--splits is empty; give comma-separated splits, e.g. --splits batch_out,source_out")
    if not seeds:
        raise BenchError("--seeds is empty; give comma-separated integers, e.g. --seeds 0,1,2")
    methods = list(dict.fromkeys(methods))
    for name in methods:
        method_entry(name)  # unknown names list the valid ones (no plugin is imported)
    for split in splits:
        if split not in SPLITS:
            raise UnknownNameError("split", split, SPLITS)
    if settings.preset is not None:
        get_preset(settings.preset)
    check_run_options(dict(settings.run_options))
    infos = {}
    for name in methods:
        try:  # a plugin is described in a sandbox, never imported here
            infos[name] = method_info(name, dict(settings.overrides), settings.quick, settings.preset)
        except BenchError as exc:
            raise BenchError(f"{exc} (method {name})") from None
    configs = {name: info.config for name, info in infos.items()}
    dataset = load_dataset(settings.dataset)
    wanted = parse_scenarios(settings.scenarios, dataset)  # unknown or inapplicable names: an error now
    folds_by_split = {}
    for split in dict.fromkeys(splits):
        chosen = select_folds(make_folds(dataset.index, split, settings.split_seed), folds)
        folds_by_split[split] = [f.index for f in chosen]
    profile = QUICK if settings.quick else FULL
    # the unit's process imports a local class's module to register it; never a plugin's (it is found by name)
    units = [replace(u, module="" if infos[u.method].plugin else infos[u.method].module,
                     record=str(record_path(Path(settings.results_dir), dataset.name, dataset.fingerprint, u.method,
                                            u.split, u.fold, u.seed, profile)))
             for u in grid(methods, folds_by_split, seeds, settings)]
    # a record lacking a wanted scenario block is not finished; with further run keywords a record may need
    # more than the protocol's check knows: then every unit runs and run_protocol itself skips what is done
    check = not settings.force and not settings.run_options
    finished = [u for u in units if check and record_is_current(Path(u.record), configs[u.method], dataset.fingerprint,
                                                            settings.split_seed, wanted)[0]]
    done = set(finished)
    todo = [u for u in units if u not in done]
    waits = prerequisites(todo, {name: None if info.plugin else info.starts_from for name, info in infos.items()},
                          _seeds_share(infos))
    estimates = recorded_seconds(todo, Path(settings.results_dir), dataset.name, profile, configs)
    return Plan(order_units(todo, waits, estimates), finished, waits, estimates, dataset.name, dataset.fingerprint,
                tuple(wanted), dataset)


def _seeds_share(infos: Mapping[str, Any]) -> set[str]:
    """The built-in and local methods whose seeds share the fold's cached features (a plugin's claim is not read:
    it is never imported here)."""
    from ..registry import available_methods

    classes = available_methods()
    return {name for name, info in infos.items()
            if not info.plugin and name in classes and getattr(classes[name], "seeds_share_fold_work", False)}


def recorded_seconds(units: Sequence[Unit], results_dir: Path, dataset: str, profile: str,
                     configs: Mapping[str, Any] | None = None) -> dict[Unit, float | None]:
    """Each unit's expected run time: the median ``worker.wall_s`` (else ``timings.total_s``) of the ok records of
    its method and split (any data version of ``dataset``, the same profile) under ``results_dir``; None where there
    is none. With ``configs`` (method -> the config the sweep runs) only records of that config count: a record of
    another budget (3 epochs instead of training to the plateau) says nothing about this one's time."""
    suffix = ".quick.json" if profile == "quick" else ".json"
    medians: dict[tuple[str, str], float | None] = {}
    for method, split in {(u.method, u.split) for u in units}:
        times = []
        for path in results_dir.glob(f"{dataset}-*/{method}/{split}/fold*_seed*.json"):
            if path.name.startswith(".") or (suffix == ".json") == path.name.endswith(".quick.json"):
                continue
            try:
                data = json.loads(path.read_text())
                if data.get("status") != "ok":
                    continue
                if configs is not None and data.get("method", {}).get("config") != configs.get(method):
                    continue
                seconds = (data.get("worker") or {}).get("wall_s") or (data.get("timings") or {}).get("total_s")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(seconds, (int, float)) and seconds > 0:
                times.append(float(seconds))
        medians[(method, split)] = statistics.median(times) if times else None
    return {u: medians[(u.method, u.split)] for u in units}


__all__ = ["Plan", "SET_BY_SWEEP", "check_run_options", "make_plan", "recorded_seconds"]
