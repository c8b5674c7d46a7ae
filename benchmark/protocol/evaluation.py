"""Fit a method on one fold and score it, plate by plate; the labels never leave this module.

For every evaluated plate the method gets a label-free :class:`PlateView` cut to its
access level (:mod:`benchmark.protocol.access`; ``none``: nothing; ``controls``: the plate's DMSO
images; ``unlabeled`` and ``transductive``: its treated images in a shuffled order plus its DMSO
images), then ``predict`` on the plate's treated images; the evaluator un-shuffles the
probabilities and scores them (:func:`benchmark.protocol.plate_scoring.score_plate`, the plate
loop the scenarios share). Out of domain = every target plate of the fold; in domain = the held-out
wells of each training plate, with that plate's DMSO images as context. A method of
access ``transductive`` also gets, in ``fit``, label-free views of the out-of-domain
target plates (``train.targets``).

The method runs behind a *host*: :class:`LocalHost` calls it in this process (tests,
conformance checks); :class:`benchmark.sealed.executor.SealedHost` runs it in a sealed
worker process (``bench run``). :func:`evaluate` drives either the same way, so both give
the same predictions, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..constants import N_CLASSES
from ..datasets.dataset import Dataset, PlateView
from ..errors import DataError
from ..metrics import accuracy, classification_metrics
from ..methods.base import AccessLevel, Method
from ..splits import Fold
from .access import handed
from .method_calls import StageError
from .orders import DEFAULT_ORDER_SCHEME, EVALUATION, TARGET_VIEWS, order_rng
from .plate_scoring import MethodHost, score_plate

PARTS = ("out_of_domain", "in_domain")
@dataclass
class Evaluation:
    """What one fitted and evaluated run produced."""

    predictions: pl.DataFrame
    metrics: dict[str, Any]
    timings: dict[str, Any]
    fit_report: dict[str, Any]
    scenarios: dict[str, Any] = field(default_factory=dict)


def needs_controls(access: AccessLevel) -> bool:
    """Whether a method of this access level sees the DMSO images of a target plate."""
    return access.sees_controls


def check_controls(dataset: Dataset, plates: list[str], method: type[Method] | Method | MethodHost) -> None:
    """Raise :class:`DataError` naming the first plate without DMSO images, if the method needs them."""
    if not needs_controls(method.access):
        return
    counts = dict(dataset.plate_table().select("plate", "n_controls").iter_rows())
    for plate in plates:
        if counts.get(plate, 0) == 0:
            raise DataError(f"plate {plate} has no DMSO images, but method '{method.name}' (access "
                            f"{method.access}) needs each evaluated plate's DMSO controls; use a method "
                            "with access 'none' or a dataset whose plates carry DMSO wells")


def view_for(method: Method, full: PlateView, dataset: Dataset) -> PlateView:
    """The part of a plate view the method's access level allows (:func:`benchmark.protocol.access.handed`);
    a part it may not see is an empty :class:`ImageArray` of ``dataset``."""
    empty = dataset.image_array(np.empty(0, dtype=np.int64))
    return PlateView(full.plate, *handed(method.access, full.treated, full.controls, lambda _part: empty))


class LocalHost:
    """A method called in this process, on the full dataset's :class:`LabelledImages` (not sealed)."""

    def __init__(self, method: Method, dataset: Dataset, fold: Fold, fitted: bool = False):
        self.method, self.dataset, self.fold, self.fitted = method, dataset, fold, fitted
        self.name, self.access, self.min_controls = method.name, method.access, method.min_controls

    def fit(self, seed: int, targets: Sequence[PlateView]) -> None:
        if self.fitted:
            return
        train = self.dataset.labelled(self.dataset.index[self.fold.train_ids], targets)
        val = self.dataset.labelled(self.dataset.index[self.fold.val_ids])
        try:
            self.method.fit(train, val, seed)
        except Exception as exc:  # noqa: BLE001 - any failure of a method becomes a failed record
            raise StageError("fit", None, exc) from exc

    def adapt_predict(self, full: PlateView) -> Any:
        try:
            self.method.adapt(view_for(self.method, full, self.dataset))
        except Exception as exc:  # noqa: BLE001
            raise StageError("adapt", full.plate, exc) from exc
        try:
            return self.method.predict(full.treated[:])
        except Exception as exc:  # noqa: BLE001
            raise StageError("predict", full.plate, exc) from exc

    def fit_report(self) -> dict[str, Any]:
        return dict(self.method.fit_report())


def _controls_of(dataset: Dataset, plate: str) -> np.ndarray:
    """The ids of every DMSO image of ``plate`` (index order)."""
    return dataset.index.filter((pl.col("plate") == plate) & pl.col("is_control"))["image_id"].to_numpy()


def _plates_of(dataset: Dataset, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Treated image ids grouped by plate (plates sorted)."""
    rows = dataset.index[np.asarray(ids, dtype=np.int64)].filter(~pl.col("is_control"))
    return {p: g["image_id"].to_numpy() for (p,), g in rows.group_by("plate", maintain_order=True)} \
        if len(rows) else {}


def target_views(dataset: Dataset, fold: Fold, seed: int, split_seed: int = 0, *,
                 order_scheme: str = DEFAULT_ORDER_SCHEME) -> list[PlateView]:
    """Label-free views of the fold's out-of-domain target plates, for a transductive ``fit``.

    Plates sorted; treated images shuffled by their own generator (not the one of the
    evaluation's views; :func:`benchmark.protocol.orders.order_rng` under ``order_scheme``), plus each plate's DMSO images.
    """
    rng = order_rng(dataset, fold, seed, split_seed, TARGET_VIEWS, order_scheme)
    plates = _plates_of(dataset, fold.target_ids)
    return [dataset.plate_view(p, plates[p], rng)[0] for p in sorted(plates)]


def fit_and_evaluate(method: Method, dataset: Dataset, fold: Fold, seed: int, split_seed: int = 0,
                     scenarios: Sequence[str] = (), *, order_scheme: str = DEFAULT_ORDER_SCHEME) -> Evaluation:
    """Fit ``method`` in this process on ``fold`` with ``seed`` and score it out of domain and in domain.

    Raises :class:`StageError` when the method fails, :class:`DataError` when an
    evaluated plate lacks the DMSO images the method needs.
    """
    return evaluate(LocalHost(method, dataset, fold), dataset, fold, seed, split_seed, scenarios,
                    order_scheme=order_scheme)


def evaluate(host: MethodHost, dataset: Dataset, fold: Fold, seed: int, split_seed: int = 0,
             scenarios: Sequence[str] = (), *, order_scheme: str = DEFAULT_ORDER_SCHEME) -> Evaluation:
    """Fit the method behind ``host`` on ``fold`` and score it; the labels stay in this process.

    Every target plate's view is drawn here, in plate order, from one generator,
    :func:`benchmark.protocol.orders.order_rng` under ``order_scheme`` (``keyed-v1``: keyed by the full index, which the
    worker never sees; ``public-v0``: ``default_rng([split_seed, fold.index, seed, 7])``, for old records),
    whatever the host. Then, on the same fitted method, every level of each of ``scenarios``
    (:mod:`benchmark.scenarios`), drawn under the same scheme; a method of access ``none`` is not called again for
    a level that scores images it was scored on here (its probabilities are re-selected:
    :mod:`benchmark.scenarios.scoring`).
    """
    parts = {"out_of_domain": _plates_of(dataset, fold.target_ids),
             "in_domain": _plates_of(dataset, fold.in_domain_ids)}
    check_controls(dataset, sorted({p for plates in parts.values() for p in plates}), host)
    targets = (target_views(dataset, fold, seed, split_seed, order_scheme=order_scheme)
               if host.access.sees_targets_in_fit else [])
    start = time.perf_counter()
    host.fit(seed, targets)
    fit_s = time.perf_counter() - start
    rng = order_rng(dataset, fold, seed, split_seed, EVALUATION, order_scheme)
    ids_all, probs_all, part_all, plate_time = [], [], [], {}
    for part, plates in parts.items():
        for plate in sorted(plates):
            scored = score_plate(host, dataset, plate, plates[plate], _controls_of(dataset, plate), rng)
            probs_all.append(scored.probs)
            plate_time[plate] = scored.seconds
            ids_all.append(plates[plate])
            part_all += [part] * len(plates[plate])
    ids = np.concatenate(ids_all) if ids_all else np.empty(0, dtype=np.int64)
    probs = np.concatenate(probs_all) if probs_all else np.empty((0, N_CLASSES))
    predictions = _predictions_table(dataset, ids, probs, part_all)
    metrics = score(predictions, plate_time)
    evaluate_s = time.perf_counter() - start - fit_s
    blocks: dict[str, Any] = {}
    timings = {"fit_s": fit_s, "adapt_predict_s": sum(plate_time.values()), "evaluate_s": evaluate_s}
    if scenarios:
        from ..scenarios.scoring import PlainPredictions, run_scenarios

        t0 = time.perf_counter()
        target = np.asarray(part_all, dtype=str) == "out_of_domain"
        blocks = run_scenarios(host, dataset, fold, seed, split_seed, scenarios, metrics["out_of_domain"], fit_s,
                               order_scheme=order_scheme,
                               plain_predictions=PlainPredictions.of(dataset, ids[target], probs[target]))
        timings["scenarios_s"] = time.perf_counter() - t0
    return Evaluation(predictions=predictions, metrics=metrics, timings=timings, fit_report=host.fit_report(),
                      scenarios=blocks)


def _predictions_table(dataset: Dataset, ids: np.ndarray, probs: np.ndarray, parts: list[str]) -> pl.DataFrame:
    names = dataset.meta.class_names
    meta = dataset.index[ids].select("image_id", "plate", "source", "batch", "well", "site", "label")
    return meta.with_columns(
        pl.Series("part", parts, dtype=pl.Utf8),
        pl.Series("predicted", probs.argmax(axis=1) if len(probs) else [], dtype=pl.Int8),
        *[pl.Series(f"prob_{name}", probs[:, k], dtype=pl.Float32) for k, name in enumerate(names)],
    ).with_columns(pl.col("label").cast(pl.Int8))


def score(predictions: pl.DataFrame, plate_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Metrics of a predictions table: per part (out of domain, in domain), per plate, per source."""
    prob_cols = [c for c in predictions.columns if c.startswith("prob_")]
    out: dict[str, Any] = {"per_plate": [], "per_source": {}}
    for part in PARTS:
        rows = predictions.filter(pl.col("part") == part)
        labels = rows["label"].to_numpy().astype(np.int64)
        probs = rows.select(prob_cols).to_numpy().astype(np.float64) if len(rows) else np.empty((0, len(prob_cols)))
        out[part] = classification_metrics(labels, probs, rows["plate"].to_list())
        out["per_source"][part] = {
            src: accuracy(g["label"].to_numpy(), g["predicted"].to_numpy())
            for (src,), g in rows.sort("source").group_by("source", maintain_order=True)}
        for (plate, source, batch), g in rows.sort("plate").group_by("plate", "source", "batch",
                                                                      maintain_order=True):
            out["per_plate"].append({
                "plate": plate, "source": source, "batch": batch, "part": part, "n_images": len(g),
                "accuracy": accuracy(g["label"].to_numpy(), g["predicted"].to_numpy()),
                "adapt_predict_s": (plate_seconds or {}).get(plate)})
    return out
