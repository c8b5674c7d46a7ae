"""Experiment: does the simulator's phenotype strength explain why CS-ARM-BN loses so much under label shift?

The hypothesis left open by ``label_shift_per_class.py`` and ``label_shift_training.py``: sim-2's
compounds move a plate's image statistics (what a BN layer normalises away) further than real
compounds do, so a one-compound plate's statistics carry the compound and normalising them
removes its signal. The reference study reports CS-ARM-BN at 0.894 under Dirichlet α = 0.01
(0.939 balanced) on real JUMP plates.

For each ``phenotype_strength`` of the simulator (the global multiplier of every compound's
effect; sim-2's default is 2.5) the dataset is generated with everything else unchanged (same
seed, cells, wells and technical effects; cached like the default dataset), and:

* **Input-statistics probe** (no network): per plate and channel, the mean log intensity of
  each compound's treated images minus the plate's DMSO images (*compound shift*), against the
  DMSO mean of one plate minus another lab's plate (*lab shift*). The ratio of their RMS says how
  far a one-compound plate moves the image statistics, in units of a change of lab.
* **Label shift**: ERM, AdaBN and CS-ARM-BN (CPU defaults) are fitted on leave-source-out
  folds ``--folds`` with ``--seed`` and scored with the ``label_shift`` scenario (α = ∞, 1, 0.1,
  0.01), in process. *Kept* is the share of the balanced plate's above-chance accuracy that
  remains at α = 0.01: (acc(0.01) − 1/8) / (acc(∞) − 1/8). Weaker phenotypes also lower the
  balanced accuracy, so *kept* (not the raw accuracy) is what compares across strengths.

Training is never changed; only the generated dataset is. Wall time on 2 CPU cores: about 2 min to
generate each variant and 2 min per fold and strength.

    python scripts/label_shift_strength.py [--strengths 2.5,1.25,0.6] [--folds 0,1] [--seed 0] [--out FILE.md]
    python scripts/label_shift_strength.py --strengths 2.5 --set backbone=resnet18   # a bigger network
    python scripts/label_shift_strength.py --probe-only jump   # the input-statistics probe of any dataset (NAME|PATH)

The probe of a real dataset is the yardstick the simulator's ratio needs: run it on the prepared
JUMP sources (docs/jump.md) before calling sim-2's phenotypes too strong or too weak.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

METHODS = ("erm", "adabn", "cs_arm_bn")
CHANCE = 1 / 8


def strength_dataset(strength: float):
    """The default synthetic dataset generated with ``phenotype_strength`` = ``strength`` (cached)."""
    from benchmark.datasets import load_dataset, open_dataset
    from benchmark.datasets.synthetic.config import BiologyParams, SimulatorConfig
    from benchmark.datasets.synthetic.generate import generate_synthetic
    from benchmark.datasets.synthetic.loader import cache_path

    if strength == BiologyParams().phenotype_strength:
        return load_dataset("synthetic", progress=False)
    config = SimulatorConfig(biology=replace(BiologyParams(), phenotype_strength=strength))
    folder = cache_path(config)
    if not folder.is_dir():
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        generate_synthetic(config, tmp, progress=False)
        os.replace(tmp, folder)
    return open_dataset(folder, verify="size")


def image_log_means(dataset, ids: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Per image and channel, the mean of log(1 + pixel); read ``chunk`` images at a time (real plates are large)."""
    images = dataset.image_array(ids)
    return np.concatenate([np.log1p(np.asarray(images[i:i + chunk], dtype=np.float32)).mean(axis=(2, 3), dtype=np.float64)
                           for i in range(0, len(ids), chunk)])


def input_shifts(dataset) -> dict[str, float]:
    """RMS compound, lab and null shift of per-plate, per-channel mean log intensity (see the module docstring).

    The *null* shift is the probe's noise floor: the mean of as many DMSO wells as a compound has on
    the plate (drawn at random, seeded) minus the mean of the plate's other DMSO wells.
    """
    index = dataset.index
    rng = np.random.default_rng(0)  # plates in order of their first image: the same draw in every run
    dmso = int(index.filter(pl.col("is_control"))["label"][0])
    compound, null, dmso_mean, source_of = [], [], {}, {}
    for (plate,), rows in index.sort("image_id").group_by(["plate"], maintain_order=True):
        image_means = image_log_means(dataset, rows["image_id"].to_numpy())
        labels, wells = rows["label"].to_numpy(), rows["well"].to_numpy()
        control = labels == dmso
        dmso_mean[plate], source_of[plate] = image_means[control].mean(axis=0), rows["source"][0]
        compound += [image_means[labels == c].mean(axis=0) - dmso_mean[plate] for c in np.unique(labels[~control])]
        n_wells = int(np.median([len(np.unique(wells[labels == c])) for c in np.unique(labels[~control])]))
        picked = np.isin(wells, rng.choice(np.unique(wells[control]), n_wells, replace=False)) & control
        null.append(image_means[picked].mean(axis=0) - image_means[control & ~picked].mean(axis=0))
    plates = sorted(source_of)
    lab = [dmso_mean[p] - dmso_mean[q] for i, p in enumerate(plates) for q in plates[i + 1:]
           if source_of[p] != source_of[q]]
    rms = lambda diffs: float(np.sqrt(np.mean(np.square(np.stack(diffs)))))  # noqa: E731
    return {"compound": rms(compound), "lab": rms(lab), "null": rms(null)}


def label_shift_accuracy(dataset, folds: list[int], seed: int,
                         overrides: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """Accuracy per method and ``label_shift`` level (one value per fold); ``overrides`` go into every config."""
    from benchmark.core.training.model_cache import fold_scope
    from benchmark.datasets import open_dataset
    from benchmark.protocol.evaluation import LocalHost, evaluate
    from benchmark.protocol.loop import resolve_config
    from benchmark.registry import get_method
    from benchmark.sealed.foldstore import ensure_sealed_fold
    from benchmark.sealed.worker import fold_identity
    from benchmark.splits import make_folds

    out: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    all_folds = make_folds(dataset.index, "source_out", 0)
    for k in folds:
        fold = all_folds[k]
        store = ensure_sealed_fold(dataset, fold, 0)
        identity = fold_identity(dict(open_dataset(store.root).meta.settings), str(store.root))
        for name in METHODS:
            start = time.perf_counter()
            with fold_scope(identity):
                cls = get_method(name)
                method = cls(resolve_config(cls, overrides), device="cpu")
                result = evaluate(LocalHost(method, dataset, fold), dataset, fold, seed, 0, ["label_shift"])
            levels = result.scenarios["label_shift"]["levels"]
            for level, block in levels.items():
                out[name].setdefault(level, []).append(block["metrics"]["accuracy"])
            print(f"  fold {k} {name} ({time.perf_counter() - start:.0f} s): "
                  + "  ".join(f"α={lv} {b['metrics']['accuracy']:.3f}" for lv, b in levels.items()), flush=True)
    return out


def kept(balanced: float, shifted: float) -> float:
    """Share of the balanced plate's above-chance accuracy kept under the shift."""
    return (shifted - CHANCE) / (balanced - CHANCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", default="2.5,1.25,0.6")
    parser.add_argument("--folds", default="0,1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of every method (e.g. backbone=resnet18); repeatable")
    parser.add_argument("--probe-only", metavar="DATASET", default=None,
                        help="only the input-statistics probe, of this dataset (a name or a prepared folder)")
    args = parser.parse_args()
    if args.probe_only:
        from benchmark.datasets import load_dataset

        dataset = load_dataset(args.probe_only)
        shifts = input_shifts(dataset)
        print(f"{dataset.name} {dataset.fingerprint}: " + ", ".join(f"{k} shift {v:.4f}" for k, v in shifts.items())
              + f"; compound / lab {shifts['compound'] / shifts['lab']:.3f}, null / lab {shifts['null'] / shifts['lab']:.3f}")
        return
    from benchmark.protocol.loop import parse_overrides

    folds = [int(f) for f in args.folds.split(",")]
    overrides = parse_overrides(args.overrides)
    rows = []
    for strength in (float(s) for s in args.strengths.split(",")):
        start = time.perf_counter()
        dataset = strength_dataset(strength)
        shifts = input_shifts(dataset)
        print(f"phenotype_strength {strength}: dataset {dataset.fingerprint} ({time.perf_counter() - start:.0f} s); "
              + ", ".join(f"{k} shift {v:.4f}" for k, v in shifts.items()), flush=True)
        rows.append((strength, dataset.fingerprint, shifts, label_shift_accuracy(dataset, folds, args.seed, overrides)))
    setting = "CPU defaults" + (f" with {', '.join(args.overrides)}" if overrides else "")
    lines = [f"Leave-source-out folds {args.folds}, seed {args.seed}, {setting}; the default synthetic dataset "
             "generated at each `phenotype_strength` (sim-2 default 2.5), everything else unchanged. Accuracy on "
             "the balanced target plates (α = ∞) and at Dirichlet α = 0.01 (`label_shift` scenario), mean over "
             "folds; *kept* = (acc(0.01) − 1/8) / (acc(∞) − 1/8). Compound / lab shift: RMS of per-plate, per-"
             "channel mean log intensity, compound minus DMSO of its plate, over DMSO of one plate minus another "
             "lab's; null / lab: as many random DMSO wells as a compound has, minus the plate's other DMSO wells "
             "(the probe's noise floor).", "",
             "| strength | dataset | compound / lab shift | null / lab | " + " | ".join(
                 f"`{m}` α=∞ → 0.01 (kept)" for m in METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    for strength, fingerprint, shifts, accuracy in rows:
        cells = []
        for m in METHODS:
            balanced, shifted = np.mean(accuracy[m]["inf"]), np.mean(accuracy[m]["0.01"])
            cells.append(f"{balanced:.3f} → {shifted:.3f} ({kept(balanced, shifted):.2f})")
        lines.append(f"| {strength:g} | `{fingerprint}` | {shifts['compound'] / shifts['lab']:.3f} | "
                     f"{shifts['null'] / shifts['lab']:.3f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
