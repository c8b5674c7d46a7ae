"""Score a fitted method under every level of the requested scenarios (the labels stay here).

Called by :func:`benchmark.protocol.evaluation.evaluate` after the plain evaluation, on the same
host (the same fitted model, in the same sealed worker). For each level and each target
plate of the fold, every :class:`~benchmark.scenarios.base.PlateCase` becomes one
adapt/predict call on an ordinary :class:`PlateView`, by the plain evaluation's own plate loop
(:func:`benchmark.protocol.plate_scoring.score_plate`: treated images shuffled by
:func:`benchmark.protocol.orders.order_rng` under the run's order scheme, which also keys the
scenarios' cuts); the predictions are scored with :func:`benchmark.metrics.classification_metrics`.

A level's block says its ``status``: ``ok`` (scored), ``plain`` (the level is the plain
evaluation: its metrics are copied), ``unchanged`` (the scenario changes nothing the
method receives or is scored on, given its access level: the plain metrics again), or
``failed`` (the method raised, or declared a ``min_controls`` the level does not give:
the message is kept and the other levels go on). A sealed worker that dies fails the run.

**Re-selected levels.** A method of access ``none`` gets nothing of the plate in ``adapt`` and
must predict each image on its own (``bench methods check``'s ``access_level`` holds it to that),
so its probabilities for an image are the same at every level that shows it the same pixels.
Given the plain evaluation's out-of-domain probabilities (:class:`PlainPredictions`), a level
whose every case scores images of the evaluated dataset itself that the plain evaluation scored
(label shift; not severity, whose cases are re-rendered twins) takes those rows, by image id,
instead of calling the host: no inference, the shuffle and the probability check were the plain
evaluation's. The block is the re-run's (status ``ok``, metrics, ``n_calls``: the cases the level
defines, ``controls_per_call``, ``classes_per_plate``) plus ``reused_plain_predictions: true``;
its ``seconds`` are those of the re-selection. Assumed: ``predict`` is deterministic per image
(no dropout or sampling at test time) and independent of the other images of its call. Bit for
bit that holds where the arithmetic of one image does not depend on the batch; torch on CPU gives
a forward pass of a single image other kernels than a larger batch (ERM's probabilities then move
by ~1e-7), so a plate whose plain or level pass would leave one image alone in a chunk (its count
≡ 1 modulo ``eval_batch_size``) may differ from a re-run in the last bits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..constants import N_CLASSES
from ..datasets.dataset import Dataset
from ..errors import BenchError
from ..methods.base import AccessLevel
from ..metrics import classification_metrics
from ..protocol.method_calls import StageError
from ..protocol.orders import DEFAULT_ORDER_SCHEME, check_scheme, order_rng, scenario_purpose
from ..protocol.plate_scoring import MethodHost, score_plate
from ..splits import Fold
from . import get_scenario
from .base import PlateCase, Scenario
from .controls import Controls
from .label_shift import classes_present

BLOCK_FORMAT = 1


def target_plates(dataset: Dataset, fold: Fold) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(treated ids, DMSO ids) of every out-of-domain target plate of ``fold`` (plates sorted, ids sorted)."""
    rows = dataset.index[np.asarray(fold.target_ids, dtype=np.int64)].sort("image_id")
    out = {}
    for (plate,), group in rows.sort("plate").group_by("plate", maintain_order=True):
        control = group["is_control"].to_numpy()
        ids = group["image_id"].to_numpy().astype(np.int64)
        out[plate] = (ids[~control], ids[control])
    return out


@dataclass(frozen=True)
class PlainPredictions:
    """The plain evaluation's checked out-of-domain probabilities, by image id, and the dataset they were read from."""

    images: Dataset
    ids: np.ndarray    # sorted image ids
    probs: np.ndarray  # (len(ids), N_CLASSES) float64; row i belongs to ids[i]

    @classmethod
    def of(cls, images: Dataset, ids: np.ndarray, probs: np.ndarray) -> PlainPredictions:
        """From the plain evaluation's ids and probabilities (any order)."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        return cls(images, ids[order], np.asarray(probs, dtype=np.float64)[order])

    def select(self, case: PlateCase) -> np.ndarray | None:
        """The rows of ``case``'s treated images in its order; None unless the plain evaluation scored each of them
        on the same pixels (``case.images`` is the evaluated dataset)."""
        if case.images is not self.images:
            return None
        ids = np.asarray(case.treated_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        if len(ids) and (pos.max() >= len(self.ids) or not np.array_equal(self.ids[pos], ids)):
            return None
        return self.probs[pos]


def reselected(host: MethodHost, cases: Sequence[PlateCase], plain: PlainPredictions | None) -> list[np.ndarray] | None:
    """Each case's probabilities re-selected from ``plain`` (module docstring), or None when the level must be run:
    a method of another access level than ``none``, or a case the plain evaluation did not score."""
    if plain is None or host.access != AccessLevel.NONE:
        return None
    rows = [plain.select(case) for case in cases]
    return None if any(r is None for r in rows) else rows  # type: ignore[return-value]


def run_scenarios(host: MethodHost, dataset: Dataset, fold: Fold, seed: int, split_seed: int,
                  names: Sequence[str | Scenario], plain: dict[str, Any], fit_s: float, *,
                  order_scheme: str = DEFAULT_ORDER_SCHEME,
                  plain_predictions: PlainPredictions | None = None) -> dict[str, Any]:
    """One block per scenario (``{name: {description, levels: {level: block}}}``) for the fitted ``host``.

    ``names`` are registered scenarios or scenario objects (an experiment's own, e.g.
    ``scripts/label_shift_per_class.py``); ``plain`` is the plain evaluation's out-of-domain
    metrics (copied into ``plain`` and ``unchanged`` levels); ``fit_s`` the fit's seconds (each
    level reports its share of it). Every shuffle and cut is drawn under ``order_scheme``
    (:mod:`benchmark.protocol.orders`); a scenario object drawing under another scheme is refused.
    ``plain_predictions``: the plain evaluation's out-of-domain probabilities; with them, the levels a method of
    access ``none`` would score on images it was already scored on are re-selected, not run (module docstring).
    """
    check_scheme(order_scheme)
    plates = target_plates(dataset, fold)
    out: dict[str, Any] = {}
    for name in names:
        scenario = get_scenario(name, order_scheme) if isinstance(name, str) else name
        own = getattr(scenario, "order_scheme", order_scheme)
        if own != order_scheme:
            raise BenchError(f"scenario '{scenario.name}' draws its cuts under order scheme '{own}' but the run "
                             f"uses '{order_scheme}'; build it with order_scheme='{order_scheme}'")
        name = scenario.name
        levels = {}
        for level in scenario.levels:
            levels[level] = _level_block(host, dataset, fold, seed, split_seed, scenario, level, plates, plain, fit_s,
                                         order_scheme, plain_predictions)
        out[name] = {"format": BLOCK_FORMAT, "description": scenario.description,
                     "plain_level": scenario.plain_level(dataset), "levels": levels}
    return out


def scenario_block_current(name: str, block: Any) -> bool:
    """Whether a record's block of scenario ``name`` was made by this code's definition (format and levels)."""
    try:
        scenario = get_scenario(name)
    except KeyError:
        return False
    return (isinstance(block, dict) and block.get("format") == BLOCK_FORMAT
            and tuple(block.get("levels") or ()) == scenario.levels)


def _level_block(host: MethodHost, dataset: Dataset, fold: Fold, seed: int, split_seed: int, scenario: Scenario,
                 level: str, plates: dict[str, tuple[np.ndarray, np.ndarray]], plain: dict[str, Any],
                 fit_s: float, order_scheme: str, plain_predictions: PlainPredictions | None) -> dict[str, Any]:
    head = {"level": level, "what": scenario.describe_level(level)}
    if scenario.unchanged_for(host.access):
        return {**head, "status": "unchanged", "metrics": plain,
                "why": f"access '{host.access}': this scenario changes nothing the method receives"}
    if level == scenario.plain_level(dataset):
        return {**head, "status": "plain", "metrics": plain}
    refusal = _refusal(host, scenario, level)
    if refusal:
        return {**head, "status": "failed", "error": refusal}
    start = time.perf_counter()
    cases = [case for plate, (treated, controls) in plates.items()
             for case in scenario.cases(dataset, level, plate, treated, controls)]
    probs = reselected(host, cases, plain_predictions)
    reused = probs is not None
    if probs is None:
        rng = order_rng(dataset, fold, seed, split_seed, scenario_purpose(scenario.name, level), order_scheme)
        try:
            probs = [score_plate(host, case.images, case.plate, case.treated_ids, case.control_ids, rng).probs
                     for case in cases]
        except StageError as exc:
            return {**head, "status": "failed", "error": str(exc), "seconds": round(time.perf_counter() - start, 3)}
    ids = [case.treated_ids for case in cases]
    n_cases, n_controls = len(cases), [len(case.control_ids) for case in cases]
    all_ids = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    rows = dataset.index[all_ids]
    metrics = classification_metrics(rows["label"].to_numpy().astype(np.int64),
                                     np.concatenate(probs) if probs else np.empty((0, N_CLASSES)),
                                     rows["plate"].to_list())
    seconds = time.perf_counter() - start
    return {**head, "status": "ok", "metrics": metrics, "n_calls": n_cases,
            "controls_per_call": {"min": int(min(n_controls, default=0)), "max": int(max(n_controls, default=0))},
            "classes_per_plate": classes_present(dataset.index, all_ids),
            "seconds": round(seconds, 3), "share_of_fit": round(seconds / fit_s, 4) if fit_s > 0 else None,
            **({"reused_plain_predictions": True} if reused else {})}


def _refusal(host: MethodHost, scenario: Scenario, level: str) -> str | None:
    """Why the method cannot take this level (its declared ``min_controls`` above the level's budget)."""
    if not isinstance(scenario, Controls):
        return None
    budget, need = scenario.budget(level), int(getattr(host, "min_controls", 0) or 0)
    if budget is not None and budget < need:
        return (f"method '{host.name}' needs at least {need} DMSO images per plate (its min_controls); "
                f"this level gives {budget}")
    return None


__all__ = ["BLOCK_FORMAT", "PlainPredictions", "reselected", "run_scenarios", "scenario_block_current",
           "target_plates"]
