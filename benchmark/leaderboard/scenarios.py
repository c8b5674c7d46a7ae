"""The leaderboard's scenario sections: accuracy of every method at every level of each scenario.

Pure functions over ok records (those that hold the scenario's block): per scenario, per split,
a table of accuracy (mean ± std over folds × seeds) by method and level, a table of the paired
difference to the baseline at each level (same split, fold and seed; 95% two-stage bootstrap
CI over folds, then seeds), and a line plot with CI bands (:func:`scenario_figure`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .figure import save_figure
from .tables import SPLIT_LABELS, _by_fold, _ci_text, _fmt, _finite, method_order
from ..metrics import bootstrap_ci, mean_std
from ..records import Record
from ..scenarios import SCENARIO_NAMES, get_scenario

SPLITS = ("batch_out", "source_out")


def level_value(record: Record, scenario: str, level: str, metric: str = "accuracy") -> float:
    """The level's metric in ``record`` (nan when the block, the level or the metric is missing or failed)."""
    block = ((record.data.get("scenarios") or {}).get(scenario) or {}).get("levels", {}).get(level) or {}
    value = (block.get("metrics") or {}).get(metric) if block.get("status") in ("ok", "plain", "unchanged") else None
    return float("nan") if value is None else float(value)


def level_failures(records: list[Record], scenario: str) -> dict[tuple[str, str], list[str]]:
    """``(method, level) -> error messages`` of the failed levels."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        for level, block in (((r.data.get("scenarios") or {}).get(scenario) or {}).get("levels") or {}).items():
            if block.get("status") == "failed":
                out[(r.method, level)].append(str(block.get("error")))
    return dict(out)


def with_block(records: list[Record], scenario: str) -> list[Record]:
    """The records that hold a block of ``scenario``."""
    return [r for r in records if scenario in (r.data.get("scenarios") or {})]


def paired_level_difference(records: list[Record], method: str, split: str, scenario: str, level: str,
                            baseline: str, metric: str = "accuracy") -> tuple[float, float, float, int]:
    """Mean ``method − baseline`` at ``level`` over shared (fold, seed) runs, its 95% CI, and the number of pairs."""
    runs = {(r.method, r.fold, r.seed): level_value(r, scenario, level, metric) for r in records if r.split == split}
    diffs = _by_fold([(f, v - runs[(baseline, f, s)]) for (m, f, s), v in runs.items()
                      if m == method and (baseline, f, s) in runs])
    values = [d for fold in diffs.values() for d in fold]
    if not values:
        return float("nan"), float("nan"), float("nan"), 0
    lo, hi = bootstrap_ci(diffs)
    return float(np.mean(values)), lo, hi, len(values)


def _level_label(scenario: str, level: str) -> str:
    return {"label_shift": f"α = {level}", "controls": f"{level} DMSO", "support": f"n = {level}",
            "severity": f"severity {level}"}.get(scenario, level)


def accuracy_table(records: list[Record], scenario: str, split: str, baseline: str,
                   metric: str = "accuracy") -> list[str]:
    """Method × level: ``metric`` mean ± std over the runs of ``split`` whose level is scored (runs counted)."""
    levels = get_scenario(scenario).levels
    failures = level_failures(records, scenario)
    header = ["method", "access", *[_level_label(scenario, lv) for lv in levels], "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    split_records = [r for r in records if r.split == split]
    for method in method_order(split_records, baseline):
        rs = [r for r in split_records if r.method == method]
        cells = [f"`{method}`", rs[0].data["method"]["access"]]
        for level in levels:
            values = _finite([level_value(r, scenario, level, metric) for r in rs])
            if values:
                cells.append(_fmt(*mean_std(values)) + ("" if len(values) == len(rs) else f" ({len(values)} runs)"))
            else:
                cells.append(f"failed ({len(failures.get((method, level), []))})" if (method, level) in failures
                             else "–")
        cells.append(str(len(rs)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def delta_table(records: list[Record], scenario: str, split: str, baseline: str) -> list[str]:
    """Method × level: paired accuracy difference to ``baseline`` with its 95% CI."""
    levels = get_scenario(scenario).levels
    header = ["method", *[_level_label(scenario, lv) for lv in levels]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    split_records = [r for r in records if r.split == split]
    for method in method_order(split_records, baseline):
        if method == baseline:
            continue
        cells = [f"`{method}`"]
        for level in levels:
            mean, lo, hi, n = paired_level_difference(split_records, method, split, scenario, level, baseline)
            cells.append("–" if n == 0 else f"{mean:+.3f} {_ci_text(lo, hi, signed=True)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cost_table(records: list[Record], scenario: str, baseline: str) -> list[str]:
    """Per method: mean seconds of a scored level and its share of the model's training time (median over runs).

    The training time is the fit report's ``train_seconds`` (kept when the model came from the
    model cache) or, for a method without one, the run's ``fit_s``.
    """
    header = ["method", "scored levels per run", "seconds per level (mean)", "share of training time (median)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in method_order(records, baseline):
        seconds, shares, counts = [], [], []
        for r in (r for r in records if r.method == method):
            levels = [b for b in r.data["scenarios"][scenario]["levels"].values() if b.get("status") == "ok"]
            train = r.data.get("fit_report", {}).get("train_seconds") or r.data.get("timings", {}).get("fit_s")
            counts.append(len(levels))
            for b in levels:
                seconds.append(float(b.get("seconds") or 0.0))
                if train:
                    shares.append(float(b.get("seconds") or 0.0) / float(train))
        if not seconds:
            lines.append(f"| `{method}` | 0 | – | – |")
            continue
        lines.append(f"| `{method}` | {np.mean(counts):.0f} | {np.mean(seconds):.2f} | "
                     f"{100 * np.median(shares):.1f} % |" if shares else f"| `{method}` | {np.mean(counts):.0f} | "
                     f"{np.mean(seconds):.2f} | – |")
    return lines


def curve_table(records: list[Record], scenario: str) -> list[dict[str, Any]]:
    """Rows (method, split, level index, level, mean, CI low, CI high) for the figure."""
    rows = []
    levels = get_scenario(scenario).levels
    for split in SPLITS:
        split_records = [r for r in records if r.split == split]
        for method in sorted({r.method for r in split_records}):
            rs = [r for r in split_records if r.method == method]
            for k, level in enumerate(levels):
                by_fold = _by_fold([(r.fold, level_value(r, scenario, level)) for r in rs])
                values = [v for vs in by_fold.values() for v in vs]
                if not values:
                    continue
                lo, hi = bootstrap_ci(by_fold)
                rows.append({"method": method, "split": split, "k": k, "level": level, "mean": float(np.mean(values)),
                             "lo": lo, "hi": hi})
    return rows


def scenario_figure(records: list[Record], scenario: str, path: Path, order: list[str]) -> Path:
    """Accuracy vs level, one line per method, 95% CI bands, one panel per split (PNG, no timestamp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = curve_table(records, scenario)
    levels = get_scenario(scenario).levels
    colours = dict(zip(order, sns.color_palette("tab20", len(order))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, split in zip(axes, SPLITS):
        if not any(r["split"] == split for r in rows):
            ax.text(0.5, 0.5, "no run of this split holds this block yet", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="grey")
        for method in order:
            pts = sorted((r for r in rows if r["method"] == method and r["split"] == split), key=lambda r: r["k"])
            if not pts:
                continue
            x = [p["k"] for p in pts]
            ax.plot(x, [p["mean"] for p in pts], marker="o", ms=3, lw=1.4, color=colours[method], label=method)
            lo = [p["lo"] if not np.isnan(p["lo"]) else p["mean"] for p in pts]
            hi = [p["hi"] if not np.isnan(p["hi"]) else p["mean"] for p in pts]
            ax.fill_between(x, lo, hi, color=colours[method], alpha=0.12, lw=0)
        ax.set_xticks(range(len(levels)), [_level_label(scenario, lv) for lv in levels], fontsize=8)
        ax.set_title(SPLIT_LABELS[split], fontsize=10)
        ax.axhline(1 / 8, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("out-of-domain accuracy (95% CI band)")
    axes[1].legend(loc="lower left", fontsize=7, ncol=2)
    fig.suptitle(f"scenario {scenario}", fontsize=10)
    return save_figure(fig, path, dpi=110)


TRANSDUCTIVE = "transductive"
TRANSDUCTIVE_NOTE = (
    "Methods of access `transductive` saw the target plates in their fit as the plain evaluation has them; a "
    "scenario changes only what `adapt` and `predict` receive, so their rows measure target plates that changed "
    "after the fit (under `severity`: fitted with the severity-1 rendering, scored on another).")
"""Said under every scenario that holds a transductive method's runs."""


def scenario_sections(records: list[Record], baseline: str, figure_path: Any = None) -> list[str]:
    """Markdown of every scenario some record holds; ``figure_path(name)`` -> (file, link) draws its figure."""
    lines: list[str] = []
    for name in SCENARIO_NAMES:
        rs = with_block(records, name)
        if not rs:
            continue
        scenario = get_scenario(name)
        lines += [f"### Scenario `{name}`", "",
                  f"{scenario.description[0].upper()}{scenario.description[1:]}. One fit per run scored at every "
                  "level (`benchmark/scenarios/`); the cut of each target plate is seeded by scenario, level and "
                  f"plate only, identical for every method. {len(rs)} of {len(records)} runs hold this block.",
                  ""]
        plain = rs[0].data["scenarios"][name].get("plain_level")
        if plain:
            lines += [f"Level `{plain}` is the plain evaluation (the main table's numbers).", ""]
        if any(r.data["method"]["access"] == TRANSDUCTIVE for r in rs):
            lines += [TRANSDUCTIVE_NOTE, ""]
        if figure_path is not None:
            file, link = figure_path(name)
            scenario_figure(rs, name, file, method_order(rs, baseline))
            lines += [f"![{name}: accuracy by level]({link})", ""]
        metrics = ("accuracy", "balanced_accuracy") if name == "label_shift" else ("accuracy",)
        for split in SPLITS:
            if not any(r.split == split for r in rs):
                continue
            for metric in metrics:
                lines += [f"**{SPLIT_LABELS[split]}, {metric.replace('_', ' ')}** (mean ± std over folds × seeds)",
                          ""] + accuracy_table(rs, name, split, baseline, metric) + [""]
            if any(r.method == baseline and r.split == split for r in rs):
                lines += [f"**{SPLIT_LABELS[split]}, Δ accuracy vs `{baseline}`** [95% CI]", ""]
                lines += delta_table(rs, name, split, baseline) + [""]
        lines += ["**Cost** of the scenario's scored levels (levels marked `plain` or `unchanged` cost nothing). "
                  "A scored level is one adapt/predict call per target plate (or per group, under `support`), "
                  "whatever the training budget: its share of the training time falls as the budget grows.",
                  ""] + cost_table(rs, name, baseline) + [""]
        failures = level_failures(rs, name)
        if failures:
            lines += ["Failed levels (the method's message):", ""]
            lines += [f"- `{m}` at {_level_label(name, lv)}: {len(msgs)} run(s), e.g. {msgs[0]}"
                      for (m, lv), msgs in sorted(failures.items())] + [""]
    return lines


__all__ = ["accuracy_table", "cost_table", "curve_table", "delta_table", "level_value", "paired_level_difference",
           "scenario_figure", "scenario_sections", "with_block"]
