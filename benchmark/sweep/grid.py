"""The sweep's grid: methods × splits × folds × seeds as independent units, one sealed run each.

A :class:`Unit` is one (method, split, fold, seed) together with the settings every unit of a
sweep shares (:class:`RunSettings`); :meth:`Unit.run_kwargs` are the keyword arguments of
:func:`benchmark.protocol.loop.run_protocol` for that single run, extra run keywords
(``RunSettings.run_options``) passed through untouched. The grid itself is plain data: which
units there are, the record path each one writes, and which units must wait for another
(:func:`prerequisites`). Which units are already finished and in which order the rest runs is
:mod:`benchmark.sweep.plan`'s job.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sealed.limits import DEFAULT_TIME_LIMIT_S

DEFAULT_METHODS: tuple[str, ...] = ("ben", "cs_arm_bn", "arm_bn", "deep_coral", "dann", "erm", "adabn", "tent",
                                    "deyo", "roid", "fm_tvn", "profile_harmony", "profile_combat", "profile_sphering",
                                    "profile_mad", "profile_none", "intensity_stats", "cell_count")
"""The methods of the default leaderboard (``bench sweep`` without ``--methods``, ``scripts/run_leaderboard.sh``).

Longest runs first on the CPU defaults (CS-ARM-BN: 96 images per step, BEN: 64), so that parallel
workers finish together when no earlier records tell run times. ``arm_cml`` is left out of the CPU
default: its context network makes one run ~3 min (``--methods ...,arm_cml`` adds it)."""

DEFAULT_SPLITS: tuple[str, ...] = ("batch_out", "source_out")
"""Both splits (batch_out has 5 folds on the simulator, source_out 4)."""


@dataclass(frozen=True)
class RunSettings:
    """What every unit of one sweep shares: the keyword arguments of ``run_protocol`` besides method,
    split, fold and seed (``scenarios`` as ``bench run --scenarios`` takes it: names, ``all`` or ``none``).
    ``run_options`` are further ``run_protocol`` keywords, passed through as given."""

    results_dir: str
    dataset: str = "synthetic"
    split_seed: int = 0
    device: str = "auto"
    quick: bool = False
    force: bool = False
    preset: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S
    memory_limit_gb: float | None = None
    scenarios: str = "none"
    run_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def build(cls, *, overrides: Mapping[str, str] | None = None, run_options: Mapping[str, Any] | None = None,
              results_dir: Path | str, **values: Any) -> RunSettings:
        """Settings from plain mappings (stored as sorted pairs, so settings stay hashable and picklable)."""
        return cls(overrides=tuple(sorted((overrides or {}).items())),
                   run_options=tuple(sorted((run_options or {}).items())), results_dir=str(results_dir), **values)


@dataclass(frozen=True)
class Unit:
    """One run of the grid: ``method`` on fold ``fold`` of ``split`` with training seed ``seed``.

    ``record`` is where its JSON record goes (:func:`benchmark.records.record_path`); ``module`` is the
    module that registers the method, imported first wherever the unit runs (a method registered by a
    module the unit's process has not imported is found that way, as the sealed worker finds it).
    """

    method: str
    split: str
    fold: int
    seed: int
    settings: RunSettings = field(compare=False)
    record: str = field(default="", compare=False)
    module: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        """``erm source_out fold 0 seed 1``: how tables and logs name the unit."""
        return f"{self.method} {self.split} fold {self.fold} seed {self.seed}"

    @property
    def slug(self) -> str:
        """``erm-source_out-fold0-seed1``: the unit's name in file names."""
        return f"{self.method}-{self.split}-fold{self.fold}-seed{self.seed}"

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`benchmark.protocol.loop.run_protocol` for exactly this run."""
        s = self.settings
        return {"method": self.method, "split": self.split, "dataset": s.dataset, "folds": [self.fold],
                "seeds": [self.seed], "split_seed": s.split_seed, "device": s.device, "results_dir": s.results_dir,
                "quick": s.quick, "force": s.force, "overrides": dict(s.overrides), "preset": s.preset,
                "time_limit_s": s.time_limit_s, "memory_limit_gb": s.memory_limit_gb, "scenarios": s.scenarios,
                **dict(s.run_options)}


def grid(methods: Sequence[str], folds_by_split: Mapping[str, Sequence[int]], seeds: Sequence[int],
         settings: RunSettings) -> list[Unit]:
    """Every (method, split, fold, seed), in method order, then split, fold and seed (records not set yet)."""
    return [Unit(m, split, k, s, settings) for m in methods for split, folds in folds_by_split.items()
            for k in folds for s in seeds]


def prerequisites(units: Sequence[Unit], starts_from: Mapping[str, object],
                  seeds_share: Collection[str] = ()) -> dict[Unit, Unit]:
    """For each unit that should wait, the unit it waits for.

    Methods with the same ``starts_from`` (the config class of a model they all train exactly alike:
    ERM, AdaBN, TENT, DeYO, ROID) share one cached source model per (split, fold, seed)
    (:mod:`benchmark.core.training.model_cache`). The first of them in ``units`` (``erm`` in the default
    order) trains and caches it; the others of that (split, fold, seed) run after it and load it,
    instead of training the same model at the same time. ``starts_from`` maps a method to its
    ``starts_from`` (None or absent: no shared model). The methods in ``seeds_share`` (whose fit caches
    per-image features per fold, the same for every seed: ``Method.seeds_share_fold_work``) run the first
    seed of a (split, fold) before its other seeds, which then read the cache.
    """
    first: dict[tuple[object, ...], Unit] = {}
    waits: dict[Unit, Unit] = {}
    for unit in units:
        shared = starts_from.get(unit.method)
        if shared is None and unit.method not in seeds_share:
            continue
        key = ((shared, unit.split, unit.fold, unit.seed) if shared is not None
               else ("seeds of", unit.method, unit.split, unit.fold))
        if key in first:
            waits[unit] = first[key]
        else:
            first[key] = unit
    return waits


__all__ = ["DEFAULT_METHODS", "DEFAULT_SPLITS", "RunSettings", "Unit", "grid", "prerequisites"]
