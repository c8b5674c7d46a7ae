"""The label-shift probe's fits: a method fitted once per source_out fold, scored on full and cut target plates.

Each fold is fitted in this process (:class:`benchmark.protocol.evaluation.LocalHost`, built-in
methods only) with seed 0 and scored by :func:`benchmark.protocol.evaluation.evaluate` twice, from
the same fitted model: on the fold's target plates as they are, then on the same plates cut
to the treated images of two classes each (:func:`benchmark.calibration.label_shift_cut.cut_plates`; the
plate's DMSO images stay). Each fold's scores are kept in
``<results>/<dataset>-<fingerprint>/calibration/label_shift_<method>_fold<k>_seed0[.quick].json``
with the config they came from, so a rerun reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..protocol.evaluation import LocalHost, evaluate
from .label_shift_cut import cut_plates
from ..protocol.loop import resolve_config, resolve_device, select_folds
from ..records import json_safe, write_text_atomic
from ..registry import get_method
from ..splits import Fold, make_folds
from .settings import PanelSettings

if TYPE_CHECKING:
    from ..datasets import Dataset
    from ..methods.base import Method, MethodConfig

SEED = 0
N_CLASSES_KEPT = 2
CUT_SEED = 0
FORMAT = 1


@dataclass(frozen=True)
class LabelShift:
    """Accuracy on full and on cut target plates (means over folds) and the loss, full − cut."""

    method: str
    full: float
    cut: float
    n_folds: int
    folds: list[dict[str, Any]]

    @property
    def loss(self) -> float:
        return self.full - self.cut


def label_shift(dataset: Dataset, settings: PanelSettings, method: str, log: Callable[[str], None],
                counts: Counter[str]) -> LabelShift:
    """``method`` on every source_out fold of the panel (seed 0), fitted or reused (``counts`` says which)."""
    folds = select_folds(make_folds(dataset.index, "source_out", settings.split_seed), settings.folds)
    scores = [_fold_scores(dataset, settings, method, fold, log, counts) for fold in folds]
    return LabelShift(method, float(np.mean([f["full_accuracy"] for f in scores])),
                      float(np.mean([f["cut_accuracy"] for f in scores])), len(scores), scores)


def score_fold(method_cls: type[Method], config: MethodConfig, dataset: Dataset, fold: Fold, seed: int = SEED,
               split_seed: int = 0, device: str = "cpu", n_classes: int = N_CLASSES_KEPT,
               cut_seed: int = CUT_SEED) -> dict[str, Any]:
    """Fit ``method_cls(config)`` on ``fold`` in this process and score it on the full and on the cut target plates.

    Returns
    -------
    dict
        ``full_accuracy`` and ``cut_accuracy`` (pooled over the fold's target plates), ``n_full`` and
        ``n_cut`` (treated images scored), ``classes`` (the two kept per plate), ``fit_s``.
    """
    method = method_cls(config, device=device)
    cut_ids, classes = cut_plates(dataset.index, fold.target_ids, n_classes, cut_seed)
    none = np.empty(0, dtype=np.int64)
    full_fold = dataclasses.replace(fold, in_domain_ids=none)
    cut_fold = dataclasses.replace(fold, in_domain_ids=none, target_ids=cut_ids)
    full = evaluate(LocalHost(method, dataset, full_fold), dataset, full_fold, seed, split_seed)
    with warnings.catch_warnings():  # macro-F1 of a cut plate: predicted classes the plate does not hold, by design
        warnings.simplefilter("ignore", UserWarning)
        cut = evaluate(LocalHost(method, dataset, cut_fold, fitted=True), dataset, cut_fold, seed, split_seed)
    full_m, cut_m = full.metrics["out_of_domain"], cut.metrics["out_of_domain"]
    return {"fold": fold.index, "held_out": list(fold.held_out), "full_accuracy": full_m["accuracy"],
            "cut_accuracy": cut_m["accuracy"], "n_full": full_m["n_images"], "n_cut": cut_m["n_images"],
            "classes": classes, "fit_s": full.timings["fit_s"]}


def _fold_scores(dataset: Dataset, s: PanelSettings, method: str, fold: Fold, say: Callable[[str], None],
                 counts: Counter[str]) -> dict[str, Any]:
    method_cls = get_method(method)
    config = resolve_config(method_cls, quick=s.smoke)
    device = resolve_device(s.device)
    key = json_safe({"format": FORMAT, "method": method, "config": config.to_dict(),
                     "fingerprint": dataset.fingerprint, "split": "source_out", "split_seed": s.split_seed,
                     "fold": fold.index, "seed": SEED, "n_classes": N_CLASSES_KEPT, "cut_seed": CUT_SEED})
    path = _path(s.results, dataset, method, fold.index, s.smoke)
    kept = _read(path)
    tag = f"[label shift {method}] fold {fold.index} (held out {', '.join(fold.held_out)}) seed {SEED}"
    if kept is not None and kept.get("key") == key:
        say(f"{tag}: reused {path}")
        counts["label_shift_reused"] += 1
        return kept["scores"]
    say(f"{tag}: fitting in this process on {len(fold.train_ids)} images")
    scores = score_fold(method_cls, config, dataset, fold, SEED, s.split_seed, device)
    counts["label_shift_fitted"] += 1
    say(f"{tag}: full plates {scores['full_accuracy']:.3f}, cut plates {scores['cut_accuracy']:.3f} "
               f"({scores['fit_s']:.1f} s fit)")
    _write(path, {"key": key, "scores": json_safe(scores)})
    return json_safe(scores)


def _path(results: Path, dataset: Dataset, method: str, fold: int, smoke: bool) -> Path:
    suffix = ".quick" if smoke else ""
    return (Path(results) / f"{dataset.name}-{dataset.fingerprint}" / "calibration"
            / f"label_shift_{method}_fold{fold}_seed{SEED}{suffix}.json")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, content: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(content, indent=1, allow_nan=False) + "\n")
