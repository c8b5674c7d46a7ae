"""The leaderboard's table of profile-correction metrics (``fit_report.correction_metrics`` of the profile methods).

Pure functions: records in, markdown lines out (see :mod:`benchmark.leaderboard.build`). The metrics
themselves are defined in :mod:`benchmark.core.profiles.metrics`; a profile method computes them in
its ``fit`` on the well profiles of the training and validation plates, before and after its
correction (:mod:`benchmark.core.profiles.pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable

from .tables import SPLIT_LABELS, _fmt, method_order
from ..metrics import mean_std
from ..records import Record

COLUMNS: tuple[tuple[str, str], ...] = (
    ("silhouette_batch", "silhouette batch"), ("ilisi", "iLISI"), ("kbet", "kBET"), ("batch", "batch removal"),
    ("silhouette_label", "silhouette label"), ("map", "mAP"), ("bio", "biology"), ("overall", "overall"))
"""(score key, column title), batch-removal scores first, then biology, then 0.4 × batch + 0.6 × biology."""

NOTE = (
    "Scores in [0, 1], higher is better (scIB-style, as in Arevalo et al. 2024): batch removal = mean of "
    "silhouette batch, iLISI and kBET with the source (lab) as the batch, DMSO wells excluded; biology = mean of "
    "silhouette label and the mAP of each compound's replicate wells against DMSO wells of the same plate "
    "(copairs); overall = 0.4 × batch + 0.6 × biology. Computed by each profile method in its fit on the "
    "well profiles (mean over sites) of the fold's training and validation plates, before and after its "
    "correction; target plates are left out (a method never learns their wells). Mean ± std over folds × seeds. "
    "`uncorrected` is the featuriser's embeddings before any correction (the same for every method of that "
    "featuriser).")


def correction_blocks(record: Record) -> dict | None:
    """The record's correction metrics (``before``/``after``) or None when it has none."""
    block = (record.data.get("fit_report") or {}).get("correction_metrics")
    return block if isinstance(block, dict) and "before" in block and "after" in block else None


def _featuriser(record: Record) -> str:
    return str((record.data.get("fit_report") or {}).get("featuriser", "?"))


def _row(label: str, blocks: list[dict]) -> str:
    cells = [label]
    for key, _ in COLUMNS:
        values = [float(b[key]) for b in blocks if b.get(key) is not None]
        cells.append(_fmt(*mean_std(values)) if values else "–")
    cells.append(str(len(blocks)))
    return "| " + " | ".join(cells) + " |"


def correction_table(records: list[Record], split: str) -> list[str]:
    """One row of uncorrected scores per featuriser, then one row per profile method (after its correction)."""
    runs = [r for r in records if r.split == split and correction_blocks(r) is not None]
    if not runs:
        return []
    lines = ["| profiles | " + " | ".join(title for _, title in COLUMNS) + " | runs |",
             "|" + "---|" * (len(COLUMNS) + 2)]
    for featuriser in sorted({_featuriser(r) for r in runs}):
        unique: dict[tuple[int, int], dict] = {}  # one uncorrected block per (fold, seed): every method has the same
        for r in runs:
            if _featuriser(r) == featuriser:
                unique.setdefault((r.fold, r.seed), correction_blocks(r)["before"])
        lines.append(_row(f"uncorrected (`{featuriser}` embeddings)", list(unique.values())))
    for method in method_order(runs):
        mine = [r for r in runs if r.method == method]
        lines.append(_row(f"`{method}`", [correction_blocks(r)["after"] for r in mine]))
    return lines


def correction_sections(records: list[Record], figure_link: Callable[[str, str], str | None] | None = None) -> list[str]:
    """The leaderboard section of correction metrics per split (empty without profile records).

    ``figure_link(method, split)`` gives the relative path of a method's embedding figure
    (``bench report``) or None; each one found is linked under its split's table.
    """
    lines: list[str] = []
    for split in ("batch_out", "source_out"):
        table = correction_table(records, split)
        if not table:
            continue
        if not lines:
            lines += ["### Profile corrections: batch removal and biology kept", "", NOTE, ""]
        lines += [f"#### {SPLIT_LABELS[split]}", ""] + table + [""]
        methods = sorted({r.method for r in records if r.split == split and correction_blocks(r) is not None})
        links = [(m, figure_link(m, split)) for m in methods] if figure_link is not None else []
        links = [(m, path) for m, path in links if path]
        if links:
            lines += ["Embeddings before and after correction (PCA; `bench report`): "
                      + ", ".join(f"[`{m}`]({path})" for m, path in links) + ".", ""]
    return lines


__all__ = ["COLUMNS", "correction_blocks", "correction_sections", "correction_table"]
