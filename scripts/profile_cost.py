"""Measurement: what a profile method's whole run costs next to an ERM run, in the same process and on the same fold.

On one fold and seed of the default dataset, in a fresh models folder (so ERM trains and the
embedding cache starts empty), each method is fitted and scored out of domain and in domain
(the plain evaluation, no scenarios), one after the other: ERM (CPU default, trained), then every
profile method once in turn (its *first* run of the fold: it embeds what the methods before it
did not, e.g. ``profile_none`` every image, the per-plate corrections the target plates' DMSO
images), then every profile method again (*warm*: every embedding, and the uncorrected
correction metrics, read from the fold's cache, as for every later seed or scenario). The
libraries are imported first, as the sealed workers' forkserver imports them once (so no run
pays an import). Wall seconds and the ratio to ERM's run are printed as a markdown table with
the embedding cache's size. Only ratios compare across machines.

    python scripts/profile_cost.py [--split source_out] [--fold 0] [--seed 0] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

PROFILE_METHODS = ("profile_none", "profile_mad", "profile_sphering", "profile_harmony", "profile_combat")


def main() -> None:
    from benchmark.core.training.model_cache import FoldIdentity, fold_scope
    from benchmark.datasets import load_dataset
    from benchmark.protocol.evaluation import fit_and_evaluate
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
    importlib.import_module("benchmark.sealed.preload").preload()  # what the sealed workers' zygote imports, before any timing
    dataset = load_dataset("synthetic", progress=False)
    fold = make_folds(dataset.index, args.split, 0)[args.fold]
    seconds: dict[tuple[str, str], float] = {}
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="profile-cost-") as folder:
        identity = FoldIdentity(dataset.name, dataset.fingerprint, args.split, 0, args.fold, fold_digest(fold), folder)
        runs = [("erm", "trained")] + [(name, "first") for name in PROFILE_METHODS]
        runs += [(name, "warm") for name in PROFILE_METHODS]
        for name, when in runs:
            start = time.perf_counter()
            with fold_scope(identity):
                result = fit_and_evaluate(get_method(name)(device="cpu"), dataset, fold, args.seed)
            seconds[name, when] = time.perf_counter() - start
            accuracy[name] = result.metrics["out_of_domain"]["accuracy"]
            print(f"{name} ({when}): {seconds[name, when]:.1f} s, out-of-domain accuracy {accuracy[name]:.3f}",
                  flush=True)
        cache = sorted(Path(folder).glob("emb-*.npz"))
        cache_mb = sum(p.stat().st_size for p in cache) / 1e6
    erm = seconds["erm", "trained"]
    lines = [f"Fold {args.fold} of `{args.split}`, seed {args.seed}, dataset `{dataset.name}` `{dataset.fingerprint}`; "
             f"CPU {cpu_model()} ({usable_cpus()} usable cores); fit + plain evaluation, no scenarios.", "",
             "| method | first run of the fold, s | × ERM's run | warm run, s | × ERM's run | out-of-domain accuracy |",
             "|---|---|---|---|---|---|", f"| `erm` (trained) | {erm:.1f} | 1.000 | | | {accuracy['erm']:.3f} |"]
    lines += [f"| `{name}` | {seconds[name, 'first']:.1f} | {seconds[name, 'first'] / erm:.3f} | "
              f"{seconds[name, 'warm']:.1f} | {seconds[name, 'warm'] / erm:.3f} | {accuracy[name]:.3f} |"
              for name in PROFILE_METHODS]
    lines += ["", f"Embedding cache after the runs: {len(cache)} files, {cache_mb:.1f} MB."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
