"""Learning curves: a ResNet method trained once, scored after every epoch (in domain and out of domain).

A diagnostic of the training budget (issue 26), not a benchmark run: the method is fitted in this process
through the protocol's own evaluation (:func:`benchmark.protocol.evaluation.evaluate`, the same plates, views
and scores as a record's), and after every epoch's validation the network of that epoch is scored on the
fold's in-domain wells and target plates. Nothing the curve measures on target plates feeds back into the
training: the run's early stopping and learning-rate decays use the training-domain validation loss alone,
exactly as in ``bench run``; the curve only *watches*. Each epoch's scoring works on a copy of the weights'
state, which it puts back, so a test-time method (TENT adapts weights) leaves the training untouched.

One curve = one (method, split, fold, seed, overrides); :func:`run_curve` writes it as a JSON file of epoch
rows, atomically, and skips a curve whose file exists (a later call resumes a grid).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..datasets.dataset import Dataset
from ..errors import BenchError
from ..protocol.evaluation import LocalHost, evaluate
from ..registry import get_method
from ..splits import Fold


@dataclass(frozen=True)
class CurveSpec:
    """One learning curve: which method, fold and seed, with which config overrides (a tag names them)."""

    method: str
    split: str
    fold: int
    seed: int
    overrides: Mapping[str, Any]
    tag: str = ""

    def file_name(self) -> str:
        tag = self.tag or hashlib.sha256(json.dumps(dict(self.overrides), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.method}-{self.split}-f{self.fold}-s{self.seed}-{tag}.json"


def _score_epoch(method: Any, dataset: Dataset, fold: Fold, seed: int) -> dict[str, float]:
    """Accuracy of the method's current network in domain and out of domain; its weights and statistics are
    restored afterwards."""
    state = {k: v.detach().clone() for k, v in method.model_.state_dict().items()}
    try:
        metrics = evaluate(LocalHost(method, dataset, fold, fitted=True), dataset, fold, seed).metrics
    finally:
        method.model_.load_state_dict(state)
        method.model_.eval()
    return {part: float(metrics[part]["accuracy"]) for part in ("in_domain", "out_of_domain")}


def run_curve(spec: CurveSpec, dataset: Dataset, fold: Fold, out_dir: Path) -> Path:
    """Train ``spec``'s method on ``fold``, scoring it after every epoch; write ``out_dir/<spec.file_name()>``.

    An existing file is kept (resume); a failed run writes nothing.
    """
    path = out_dir / spec.file_name()
    if path.exists():
        return path
    cls = get_method(spec.method)
    method = cls(cls.Config(**dict(spec.overrides)), device="cpu")
    if not hasattr(method, "on_epoch"):
        raise BenchError(f"method '{spec.method}' trains no network epoch by epoch: a learning curve needs a "
                         "ResNet method (ConvNetMethod)")
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def on_epoch(epoch: int, losses: dict[str, float]) -> None:
        trained = time.perf_counter() - start
        rows.append({"epoch": epoch, **losses, **_score_epoch(method, dataset, fold, spec.seed),
                     "train_seconds": round(trained - sum(r.get("score_seconds", 0) for r in rows), 2),
                     "score_seconds": round(time.perf_counter() - start - trained, 2)})

    method.on_epoch = on_epoch
    final = evaluate(LocalHost(method, dataset, fold), dataset, fold, spec.seed)
    report = final.fit_report
    payload = {"spec": {"method": spec.method, "split": spec.split, "fold": spec.fold, "seed": spec.seed,
                        "overrides": dict(spec.overrides), "tag": spec.tag},
               "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
               "config": {k: v for k, v in vars(method.config).items()},
               "selected": {"best_epoch": report.get("best_epoch"), "epochs_run": report.get("epochs_run"),
                            "converged": report.get("converged"),
                            **{part: float(final.metrics[part]["accuracy"]) for part in ("in_domain", "out_of_domain")}},
               "epochs": rows, "seconds": round(time.perf_counter() - start, 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
    return path


def load_curves(out_dir: Path) -> pl.DataFrame:
    """Every epoch row of every curve file under ``out_dir``, one row per (curve, epoch)."""
    rows = []
    for path in sorted(out_dir.glob("*.json")):
        data = json.loads(path.read_text())
        spec = data["spec"]
        best = data["selected"]["best_epoch"]
        for row in data["epochs"]:
            rows.append({"method": spec["method"], "split": spec["split"], "fold": spec["fold"], "seed": spec["seed"],
                         "tag": spec["tag"] or path.stem.rsplit("-", 1)[-1], "best_epoch": best, **row})
    if not rows:
        raise BenchError(f"no learning-curve files under {out_dir.as_posix()}; run scripts/learning_curves.py first")
    return pl.DataFrame(rows)


def summary_table(curves: pl.DataFrame) -> list[str]:
    """Markdown: per (method, split, tag) the mean selected epoch and accuracies at the selected epoch."""
    selected = curves.filter(pl.col("epoch") == pl.col("best_epoch"))
    last = curves.group_by("method", "split", "fold", "seed", "tag").agg(pl.col("epoch").max().alias("epochs_run"))
    table = (selected.join(last, on=["method", "split", "fold", "seed", "tag"])
             .group_by("method", "split", "tag")
             .agg(pl.len().alias("runs"), pl.col("best_epoch").mean(), pl.col("epochs_run").mean(),
                  pl.col("val_loss").mean(), pl.col("in_domain").mean(), pl.col("out_of_domain").mean(),
                  pl.col("in_domain").std().alias("in_sd"), pl.col("out_of_domain").std().alias("out_sd"))
             .sort("method", "split", "tag"))
    lines = ["| method | split | recipe | runs | best epoch | epochs run | val loss | in-domain | out-of-domain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.iter_rows(named=True):
        sd = (lambda v: "" if v is None or np.isnan(v) else f" ± {v:.3f}")
        lines.append(f"| {r['method']} | {r['split']} | {r['tag']} | {r['runs']} | {r['best_epoch']:.1f} | "
                     f"{r['epochs_run']:.1f} | {r['val_loss']:.3f} | {r['in_domain']:.3f}{sd(r['in_sd'])} | "
                     f"{r['out_of_domain']:.3f}{sd(r['out_sd'])} |")
    return lines


def curves_figure(curves: pl.DataFrame, path: Path) -> Path:
    """Validation loss, in-domain and out-of-domain accuracy against the epoch: one panel row per split, one
    line per (method, recipe) (mean over folds and seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted(curves["split"].unique().to_list())
    fig, axes = plt.subplots(len(splits), 3, figsize=(13, 3.4 * len(splits)), squeeze=False)
    for row, split in zip(axes, splits):
        part = curves.filter(pl.col("split") == split)
        for (method, tag), group in sorted(part.group_by("method", "tag"), key=lambda g: g[0]):
            mean = group.group_by("epoch").agg(pl.col("val_loss", "in_domain", "out_of_domain").mean()).sort("epoch")
            for ax, column in zip(row, ("val_loss", "in_domain", "out_of_domain")):
                ax.plot(mean["epoch"], mean[column], label=f"{method} ({tag})")
        row[0].set_yscale("log")  # a first epoch's loss can be 100x the plateau's
        for ax, title in zip(row, ("validation loss (training domain, log)", "in-domain accuracy",
                                   "out-of-domain accuracy")):
            ax.set_title(f"{split}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
