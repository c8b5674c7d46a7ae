"""Experiment: does CS-ARM-BN's robustness to label shift come from the share of DMSO images in its BN context?

For each leave-source-out fold (seed 0) the CS-ARM-BN model of the committed run is loaded from the model cache
(trained with 32 treated + 64 DMSO per context; it is trained again where the cache lacks it) and scored under
the ``label_shift`` scenario with the *test-time* context changed: ``n_controls`` DMSO images per chunk of the
target plate's treated images (0 = ARM-BN's test on CS-ARM-BN's model). Training is never changed, so the only
thing that varies is how much of each BN context the plate's class mix fills.

    python scripts/label_shift_composition.py [--folds 0,1,2,3] [--controls 0,32,64,128,192] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from benchmark.core.training.model_cache import fold_scope
    from benchmark.datasets import load_dataset, open_dataset
    from benchmark.protocol.evaluation import LocalHost
    from benchmark.registry import get_method
    from benchmark.scenarios.label_shift import LEVELS
    from benchmark.scenarios.scoring import run_scenarios
    from benchmark.sealed.foldstore import ensure_sealed_fold
    from benchmark.sealed.worker import fold_identity
    from benchmark.splits import make_folds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--controls", default="0,32,64,128,192")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dataset = load_dataset("synthetic", progress=False)
    folds = make_folds(dataset.index, "source_out", 0)
    variants = [int(c) for c in args.controls.split(",")]
    table: dict[int, dict[str, list[float]]] = {c: {lv: [] for lv in LEVELS} for c in variants}
    for k in (int(f) for f in args.folds.split(",")):
        fold = folds[k]
        store = ensure_sealed_fold(dataset, fold, 0)
        identity = fold_identity(dict(open_dataset(store.root).meta.settings), str(store.root))
        method = get_method("cs_arm_bn")(device="cpu")
        start = time.perf_counter()
        with fold_scope(identity):
            method.fit(dataset.labelled(dataset.index[fold.train_ids]), dataset.labelled(dataset.index[fold.val_ids]),
                       args.seed)
        cached = method.fit_report()["source_model"]["cached"]
        print(f"fold {k}: model {'from the cache' if cached else 'trained'} in {time.perf_counter() - start:.0f} s")
        trained = method.config
        for n_controls in variants:
            method.config = dataclasses.replace(trained, n_controls=n_controls)
            blocks = run_scenarios(LocalHost(method, dataset, fold, fitted=True), dataset, fold, args.seed, 0,
                                   ["label_shift"], {}, 1.0)["label_shift"]["levels"]
            for level in LEVELS:
                table[n_controls][level].append(blocks[level]["metrics"]["accuracy"])
            print(f"  {n_controls:>3} DMSO per context: " +
                  "  ".join(f"α={lv} {blocks[lv]['metrics']['accuracy']:.3f}" for lv in LEVELS), flush=True)
        method.config = trained
    lines = [f"CS-ARM-BN (trained 32 treated + 64 DMSO), test-time DMSO per BN context, label_shift accuracy; "
             f"source_out folds {args.folds}, seed {args.seed}; mean ± std over folds", "",
             "| DMSO per context (test) | " + " | ".join(f"α = {lv}" for lv in LEVELS) + " | α=inf − α=0.01 |",
             "|---|" + "---|" * (len(LEVELS) + 1)]
    for c in variants:
        cells = [f"{np.mean(table[c][lv]):.3f} ± {np.std(table[c][lv], ddof=1) if len(table[c][lv]) > 1 else 0:.3f}"
                 for lv in LEVELS]
        drop = np.mean(table[c]["inf"]) - np.mean(table[c]["0.01"])
        lines.append(f"| {c}{' (trained)' if c == trained.n_controls else ''} | " + " | ".join(cells) +
                     f" | {drop:+.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
