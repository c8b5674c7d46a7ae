"""Learning curves of the ResNet methods (issue 26): train each (method, fold, seed) once with per-epoch scoring.

Resumable: every curve is one JSON file under ``--out``; an existing file is kept, so rerunning the same
command finishes a grid. ``--plot`` redraws the figure and prints the summary table from the files alone.

    python scripts/learning_curves.py --methods erm,cs_arm_bn --splits source_out,batch_out --folds 0,1 \\
        --seeds 0,1,2 --set schedule=plateau --set max_epochs=60 --tag plateau
    python scripts/learning_curves.py --plot [--figure docs/learning_curves.png]

Overrides are ``--set key=value`` (config fields; values parsed as JSON when they parse, else strings).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    from benchmark.datasets import load_dataset
    from benchmark.report.learning_curves import CurveSpec, curves_figure, load_curves, run_curve, summary_table
    from benchmark.splits import make_folds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="erm")
    parser.add_argument("--splits", default="source_out")
    parser.add_argument("--folds", default="0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--tag", default="", help="names the overrides in file names and tables")
    parser.add_argument("--out", type=Path, default=Path("leaderboard/learning_curves"))
    parser.add_argument("--plot", action="store_true", help="only redraw the figure and print the table")
    parser.add_argument("--figure", type=Path, default=Path("docs/learning_curves.png"))
    parser.add_argument("--plot-tags", default="", help="comma-separated recipe tags to draw (default: all)")
    args = parser.parse_args()
    if not args.plot:
        overrides = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)}
        dataset = load_dataset("synthetic", progress=False)
        for split in args.splits.split(","):
            folds = make_folds(dataset.index, split, 0)
            for fold in (int(f) for f in args.folds.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    for method in args.methods.split(","):
                        spec = CurveSpec(method, split, fold, seed, overrides, args.tag)
                        start = time.perf_counter()
                        path = run_curve(spec, dataset, folds[fold], args.out)
                        data = json.loads(path.read_text())
                        print(f"{path.name}: {json.dumps(data['selected'])} ({time.perf_counter() - start:.0f} s)",
                              file=sys.stderr, flush=True)
    curves = load_curves(args.out)
    print("\n".join(summary_table(curves)))
    if args.plot_tags:
        import polars as pl

        curves = curves.filter(pl.col("tag").is_in(args.plot_tags.split(",")))
    print(f"figure: {curves_figure(curves, args.figure)}")


if __name__ == "__main__":
    main()
