"""Measurement: what a profile method's whole run costs next to an ERM run, in the same process and on the same fold.

On one fold and seed of the default dataset, in a fresh models folder (so ERM trains and the
embedding cache starts empty), each method is fitted and scored out of domain and in domain
(the plain evaluation, no scenarios), one after the other: ERM (CPU default, trained), then
``profile_none`` twice (cold: every image embedded; warm: every embedding read from the cache),
then every other profile method (warm). The libraries are imported first, as the sealed workers'
forkserver imports them once (so no run pays an import). Wall seconds and the ratio to ERM's run are printed as
a markdown table with the embedding cache's size. Only ratios compare across machines.

    python scripts/profile_cost.py [--split source_out] [--fold 0] [--seed 0] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

PROFILE_METHODS = ("profile_mad", "profile_sphering", "profile_harmony", "profile_combat")


def main() -> None:
    from benchmark.core.source_cache import FoldIdentity, fold_scope
    from benchmark.datasets import load_dataset
    from benchmark.evaluation import fit_and_evaluate
    from benchmark.hardware import cpu_model, usable_cpus
    from benchmark.registry import get_method
    from benchmark.sealed.foldstore import fold_digest
    from benchmark.splits import make_folds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="source_out")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    importlib.import_module("benchmark.sealed.preload")  # what the sealed workers' forkserver imports, before any timing
    dataset = load_dataset("synthetic", progress=False)
    fold = make_folds(dataset.index, args.split, 0)[args.fold]
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="profile-cost-") as folder:
        identity = FoldIdentity(dataset.name, dataset.fingerprint, args.split, 0, args.fold, fold_digest(fold), folder)
        runs = [("erm", "trained"), ("profile_none", "cold cache"), ("profile_none", "warm cache")]
        runs += [(name, "warm cache") for name in PROFILE_METHODS]
        for name, note in runs:
            start = time.perf_counter()
            with fold_scope(identity):
                result = fit_and_evaluate(get_method(name)(device="cpu"), dataset, fold, args.seed)
            seconds = time.perf_counter() - start
            rows.append((name, seconds, result.metrics["out_of_domain"]["accuracy"], note))
            print(f"{name} ({note}): {seconds:.1f} s, out-of-domain accuracy {rows[-1][2]:.3f}", flush=True)
        cache = sorted(Path(folder).glob("emb-*.npz"))
        cache_mb = sum(p.stat().st_size for p in cache) / 1e6
    erm_seconds = rows[0][1]
    lines = [f"Fold {args.fold} of `{args.split}`, seed {args.seed}, dataset `{dataset.name}` `{dataset.fingerprint}`; "
             f"CPU {cpu_model()} ({usable_cpus()} usable cores); fit + plain evaluation, no scenarios.", "",
             "| run | cache | seconds | × ERM's run | out-of-domain accuracy |", "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {note} | {seconds:.1f} | {seconds / erm_seconds:.3f} | {acc:.3f} |"
              for name, seconds, acc, note in rows]
    lines += ["", f"Embedding cache after the runs: {len(cache)} files, {cache_mb:.1f} MB."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
