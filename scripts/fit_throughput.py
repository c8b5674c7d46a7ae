"""Measurement: the ResNet methods' fit throughput, side by side with another checkout of the code.

Each measurement is one fresh process that fits one method on one fold and seed of the default
dataset (in process, no model cache) and reports the fit's training throughput
(``fit_report.images_per_second``: training images, DMSO context included, over the whole
training time, validation included), the arithmetic of one training image (forward + backward,
torch's FlopCounterMode on the fitted network at the training crop), and the float32 matmul rate
(1024², the process's torch threads) measured in the same process just before and after the fit.
The arithmetic rate of the fit over the matmul rate is the "matmul fraction".

With ``--baseline-python`` (the interpreter of an environment where another checkout is installed,
e.g. a worktree of an older commit) the two codes alternate process by process, round after round,
so that both see the same load; the table gives medians and the ratio new / baseline.

    python scripts/fit_throughput.py --methods erm,cs_arm_bn --rounds 2 \\
        --baseline-python /path/to/baseline/venv/bin/python [--out FILE.md]

Only ratios measured in one run compare: the machines are shared and differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _throughput_module():
    """benchmark/throughput.py of this checkout, loaded by path: a baseline checkout may predate it."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmark" / "throughput.py"
    spec = importlib.util.spec_from_file_location("_fit_throughput_arithmetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(method_name: str, split: str, fold_index: int, seed: int) -> None:
    """Fit one method in this process and print one JSON line of measurements."""
    import torch
    from benchmark.datasets import load_dataset
    from benchmark.registry import get_method
    from benchmark.splits import make_folds

    dataset = load_dataset("synthetic", progress=False)
    fold = make_folds(dataset.index, split, 0)[fold_index]
    method = get_method(method_name)(device="cpu")
    targets = []
    if str(getattr(method.access, "value", method.access)) == "transductive":
        try:
            from benchmark.protocol.evaluation import target_views
        except ImportError:  # the layout before the harness was grouped by job
            from benchmark.evaluation import target_views
        targets = target_views(dataset, fold, seed)
    train = dataset.labelled(dataset.index[fold.train_ids], targets)
    val = dataset.labelled(dataset.index[fold.val_ids])
    torch.set_num_threads(method.config.threads or torch.get_num_threads())
    arithmetic = _throughput_module()
    before = arithmetic.matmul_gflops()
    start = time.perf_counter()
    method.fit(train, val, seed)
    wall = time.perf_counter() - start
    after = arithmetic.matmul_gflops()
    report = method.fit_report_
    flops = arithmetic.training_flops_per_image(method.model_, 5, report["crop"])
    print(json.dumps({"method": method_name, "images_per_second": report["images_per_second"],
                      "train_seconds": report["train_seconds"], "fit_wall_seconds": round(wall, 2),
                      "epochs": report["epochs_run"], "data_wait_fraction": report.get("data_wait_fraction"),
                      "gflop_per_image": flops / 1e9, "matmul_gflops": (before + after) / 2,
                      "threads": torch.get_num_threads()}))


def measure(python: str, method: str, args: argparse.Namespace) -> dict:
    """One child process of ``python``; its JSON line."""
    cmd = [python, str(Path(__file__).resolve()), "--child", method, "--split", args.split,
           "--fold", str(args.fold), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False)
    if out.returncode != 0:
        sys.exit(f"{python} {method}: failed\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="erm,cs_arm_bn")
    parser.add_argument("--split", default="source_out")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-python", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.split, args.fold, args.seed)
        return
    codes = {"new": sys.executable}
    if args.baseline_python:
        codes = {"baseline": args.baseline_python, **codes}
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.rounds):
        for method in args.methods.split(","):
            for code, python in codes.items():
                result = measure(python, method, args)
                runs.setdefault((method, code), []).append(result)
                print(f"round {round_ + 1} {method} {code}: {result['images_per_second']} img/s, "
                      f"fit {result['fit_wall_seconds']} s, matmul {result['matmul_gflops']:.1f} GFLOP/s", flush=True)
    from benchmark.hardware import cpu_model, usable_cpus
    lines = [f"`{args.split}` fold {args.fold} seed {args.seed}, default dataset, CPU {cpu_model()} "
             f"({usable_cpus()} usable cores); medians of {args.rounds} alternating rounds.", "",
             "| method | code | img/s | fit s | GFLOP / image | GFLOP/s | matmul GFLOP/s | matmul fraction | × baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in args.methods.split(","):
        base = None
        for code in codes:
            rows = runs[method, code]
            ips = statistics.median(r["images_per_second"] for r in rows)
            rate = statistics.median(r["images_per_second"] * r["gflop_per_image"] for r in rows)
            mm = statistics.median(r["matmul_gflops"] for r in rows)
            fit = statistics.median(r["fit_wall_seconds"] for r in rows)
            base = ips if code == "baseline" else base
            ratio = f"{ips / base:.2f}×" if base and code != "baseline" else ""
            lines.append(f"| `{method}` | {code} | {ips:.0f} | {fit:.1f} | {rows[0]['gflop_per_image']:.4f} | "
                         f"{rate:.1f} | {mm:.1f} | {rate / mm:.0%} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
