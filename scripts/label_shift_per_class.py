"""Experiment: under label shift, which compounds does each BN method lose — the strong phenotypes or the subtle?

For each leave-source-out fold (seed 0) each method's model of the committed run is loaded from the model cache
(trained again where the cache lacks it) and scored on *one-compound* target plates: for every class c, each
target plate is cut to its treated images of class c (as many as the plate's rarest class has, the
``label_shift`` scenario's n) plus all its DMSO images, and adapted and predicted on its own. The accuracy at c is
then c's recall on a one-compound plate (α → 0 of ``label_shift``, class by class). Next to it: c's recall on the
plain, balanced target plates, from the committed run's predictions. Training is never changed.

    python scripts/label_shift_per_class.py [--folds 0,1] [--methods cs_arm_bn,arm_bn,adabn,ben,erm] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl


class OneCompound:
    """A scenario whose level ``c`` cuts every target plate to its treated images of class ``c`` (and its DMSO)."""

    name = "one_compound"
    description = "every target plate cut to the treated images of one class (the rarest class's count) + its DMSO"

    def __init__(self, classes: list[int]):
        self.levels = tuple(str(c) for c in classes)

    def not_applicable(self, dataset):
        return None

    def plain_level(self, dataset):
        return None

    def unchanged_for(self, access):
        return False

    def describe_level(self, level):
        return f"class {level} alone on every target plate"

    def cases(self, dataset, level, plate, treated_ids, control_ids):
        from benchmark.scenarios.base import PlateCase

        labels = dataset.index[np.asarray(treated_ids, dtype=np.int64)]["label"].to_numpy()
        n = int(np.unique(labels, return_counts=True)[1].min())
        ids = np.sort(np.asarray(treated_ids)[labels == int(level)][:n]).astype(np.int64)
        return [PlateCase(plate, ids, np.asarray(control_ids, dtype=np.int64), dataset)]


def balanced_recall(results: Path, dataset, method: str, fold: int, seed: int) -> dict[int, float]:
    """Per-class recall of the committed run on the plain (balanced) target plates, from its predictions."""
    from benchmark.records import predictions_path, record_path

    path = record_path(results, dataset.name, dataset.fingerprint, method, "source_out", fold, seed)
    table = pl.read_parquet(predictions_path(path)).filter((pl.col("part") == "out_of_domain") & (pl.col("label") >= 0))
    labels, predicted = table["label"].to_numpy(), table["predicted"].to_numpy()
    return {int(c): float((predicted[labels == c] == c).mean()) for c in np.unique(labels)}


def main() -> None:
    from benchmark.constants import CLASS_NAMES
    from benchmark.core.training.model_cache import fold_scope
    from benchmark.datasets import load_dataset, open_dataset
    from benchmark.protocol.evaluation import LocalHost
    from benchmark.registry import get_method
    from benchmark.scenarios.scoring import run_scenarios
    from benchmark.sealed.foldstore import ensure_sealed_fold
    from benchmark.sealed.worker import fold_identity
    from benchmark.splits import make_folds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1")
    parser.add_argument("--methods", default="cs_arm_bn,arm_bn,adabn,ben,erm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("leaderboard/results"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dataset = load_dataset("synthetic", progress=False)
    folds = make_folds(dataset.index, "source_out", 0)
    classes = sorted(int(c) for c in dataset.index.filter(~pl.col("is_control"))["label"].unique())
    scenario = OneCompound(classes)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    alone: dict[str, dict[int, list[float]]] = {m: {c: [] for c in classes} for m in methods}
    mixed: dict[str, dict[int, list[float]]] = {m: {c: [] for c in classes} for m in methods}
    for k in (int(f) for f in args.folds.split(",")):
        fold = folds[k]
        store = ensure_sealed_fold(dataset, fold, 0)
        identity = fold_identity(dict(open_dataset(store.root).meta.settings), str(store.root))
        train, val = dataset.labelled(dataset.index[fold.train_ids]), dataset.labelled(dataset.index[fold.val_ids])
        for name in methods:
            method = get_method(name)(device="cpu")
            start = time.perf_counter()
            with fold_scope(identity):
                method.fit(train, val, args.seed)
            levels = run_scenarios(LocalHost(method, dataset, fold, fitted=True), dataset, fold, args.seed, 0,
                                   [scenario], {}, 1.0)[scenario.name]["levels"]
            recall = balanced_recall(args.results, dataset, name, k, args.seed)
            for c in classes:
                alone[name][c].append(levels[str(c)]["metrics"]["accuracy"])
                mixed[name][c].append(recall[c])
            print(f"fold {k} {name} ({time.perf_counter() - start:.0f} s): " +
                  "  ".join(f"{CLASS_NAMES[c]} {mixed[name][c][-1]:.2f}->{alone[name][c][-1]:.2f}" for c in classes),
                  flush=True)
    lines = [f"Recall of each compound on the balanced target plates → on one-compound plates (its treated images "
             f"alone + the plate's DMSO); source_out folds {args.folds}, seed {args.seed}, mean over folds; "
             f"dataset `{dataset.name}` `{dataset.fingerprint}`", "",
             "| compound | " + " | ".join(f"`{m}`" for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for c in classes:
        lines.append(f"| {CLASS_NAMES[c]} | " + " | ".join(
            f"{np.mean(mixed[m][c]):.2f} → {np.mean(alone[m][c]):.2f}" for m in methods) + " |")
    lines.append("| mean | " + " | ".join(
        f"{np.mean([np.mean(mixed[m][c]) for c in classes]):.2f} → {np.mean([np.mean(alone[m][c]) for c in classes]):.2f}"
        for m in methods) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
