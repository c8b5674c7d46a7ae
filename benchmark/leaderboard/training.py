"""The leaderboard's training table: how long each network trained, and whether it stopped on a plateau.

A row per method whose records report epochs (the ResNet methods; those that start from ERM's cached model
report ERM's training): epochs run and the best epoch (mean and range over the runs), the cap, and how many runs
*converged*, i.e. selected an epoch before the cap (a run whose validation loss still fell at the cap was cut
off by the budget, and its row measures the budget as much as the method), plus the mean training time.
"""

from __future__ import annotations

import numpy as np

from ..records import Record
from .tables import method_order


def _epochs(record: Record) -> tuple[int, int, int] | None:
    """``(epochs run, best epoch, cap)`` of a record's training, or None when it reports none."""
    report = record.data.get("fit_report") or {}
    run, best = report.get("epochs_run"), report.get("best_epoch")
    cap = report.get("max_epochs", record.data["method"]["config"].get("max_epochs"))
    if not all(isinstance(v, int) for v in (run, best, cap)):
        return None
    return run, best, cap


def _span(values: list[int]) -> str:
    return f"{np.mean(values):.1f} ({min(values)}–{max(values)})"


def training_table(records: list[Record]) -> list[str]:
    """Markdown rows (header included); empty when no record reports its epochs."""
    lines = []
    for method in method_order(records):
        runs = [(r, e) for r in records if r.method == method and (e := _epochs(r)) is not None]
        if not runs:
            continue
        run, best, cap = ([e[i] for _, e in runs] for i in range(3))
        converged = sum(b < c for b, c in zip(best, cap))
        seconds = [s for r, _ in runs if isinstance(s := (r.data.get("fit_report") or {}).get("train_seconds"),
                                                    (int, float))]
        mean_seconds = f"{np.mean(seconds):.0f}" if seconds else "–"
        lines.append(f"| `{method}` | {len(runs)} | {_span(run)} | {_span(best)} | "
                     f"{', '.join(str(c) for c in sorted(set(cap)))} | {converged} of {len(runs)} | {mean_seconds} |")
    if not lines:
        return []
    return ["| method | runs | epochs run | best epoch | cap | converged (best < cap) | train s (mean) |",
            "|---|---|---|---|---|---|---|", *lines]
