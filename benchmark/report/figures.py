"""The figures of ``bench report``: confusion matrix, accuracy per target plate, embeddings before and after.

Pure functions: arrays and polars frames in, a matplotlib figure out (drawn with the Agg backend,
saved by :func:`benchmark.leaderboard.figure.save_figure`). The tables they draw come from
:mod:`benchmark.report.tables`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from .tables import PlateGrid, group_spans, row_shares

DPI = 120
"""Resolution of every report figure."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(counts: np.ndarray, class_names: Sequence[str], title: str) -> Any:
    """The row-normalised confusion matrix of ``counts`` (row = true class) with each cell's share written in it."""
    plt = _pyplot()
    shares = row_shares(counts)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 * n + 2.5, 0.85 * n + 1.8))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), class_names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), [f"{c} (n={t})" for c, t in zip(class_names, counts.sum(axis=1))], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class's images")
    return fig


def plate_figure(grid: PlateGrid, title: str) -> Any:
    """Heatmap of :func:`plate_grid`: target plates grouped by source then batch (lines between groups), one
    column per seed and one for their mean, each cell's accuracy written in it."""
    plt = _pyplot()
    values = np.column_stack([grid.values, _row_means(grid.values)])
    columns = [f"seed {s}" for s in grid.seeds] + ["mean"]
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(0.8 * n_cols + 5.5, 0.32 * n_rows + 1.8))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.axvline(n_cols - 1.5, color="black", lw=1.5)
    ax.set_xticks(range(n_cols), columns, fontsize=8)
    ax.set_yticks(range(n_rows), [f"{p} (fold {f})" for p, f in grid.rows.select("plate", "fold").iter_rows()],
                  fontsize=7)
    _group_lines(ax, grid.rows, n_cols)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.25, label="accuracy on the plate's treated images")
    return fig


def _row_means(values: np.ndarray) -> np.ndarray:
    counts = np.isfinite(values).sum(axis=1)
    sums = np.where(np.isfinite(values), values, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(len(values), np.nan), where=counts > 0)


def _group_lines(ax: Any, rows: pl.DataFrame, n_cols: int) -> None:
    """Lines between batches (thin) and sources (thick), and each batch's ``source · batch`` on the right."""
    sources, batches = rows["source"].to_list(), rows["batch"].to_list()
    for _, first, _ in group_spans(list(zip(sources, batches)))[1:]:
        ax.axhline(first - 0.5, color="white", lw=1)
    for _, first, _ in group_spans(sources)[1:]:
        ax.axhline(first - 0.5, color="black", lw=2)
    for (source, batch), first, last in group_spans(list(zip(sources, batches))):
        ax.text(n_cols - 0.4, (first + last) / 2, f"{source} · {batch}", va="center", ha="left", fontsize=7,
                clip_on=False)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of ``x`` ``(n, 2)`` and their shares of the variance; signs fixed so
    each component's largest loading is positive (the same data always gives the same picture)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    largest = vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)]
    vt = vt[:k] * np.where(largest >= 0, 1.0, -1.0)[:, None]
    coords = np.zeros((len(x), 2))
    coords[:, :k] = centred @ vt.T
    variance = s**2
    shares = np.zeros(2)
    shares[:k] = variance[:k] / variance.sum() if variance.sum() > 0 else 0.0
    return coords, shares


def embedding_figure(meta: pl.DataFrame, before: np.ndarray, after: np.ndarray, class_names: Sequence[str],
                     title: str, after_label: str = "after correction") -> Any:
    """2 × 2 PCA scatter: before / after correction (each with its own PCA) × coloured by source / by class.

    ``meta`` has one row per image (``source, label, is_control, role``; role ``train`` or ``target``); target
    images are drawn on top as triangles with a black edge, DMSO images in grey under the treated ones.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 9.5))
    for row, (name, x) in enumerate((("before correction", before), (after_label, after))):
        coords, shares = pca_2d(x)
        _by_source(axes[row, 0], coords, meta, legend=row == 0)
        _by_class(axes[row, 1], coords, meta, class_names, legend=row == 0)
        for col, colour in enumerate(("source (lab)", "class")):
            ax = axes[row, col]
            ax.set_title(f"{name}, coloured by {colour}", fontsize=9)
            ax.set_xlabel(f"PC1 ({shares[0]:.0%})", fontsize=8)
            ax.set_ylabel(f"PC2 ({shares[1]:.0%})", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def _scatter(ax: Any, coords: np.ndarray, sel: np.ndarray, target: np.ndarray, colour: Any) -> None:
    """Training-plate images as small dots, target-plate images on top as triangles with a black edge."""
    for part, marker, size, edge in ((~target, "o", 7, "none"), (target, "^", 16, "black")):
        rows = sel & part
        if rows.any():
            ax.scatter(coords[rows, 0], coords[rows, 1], s=size, marker=marker, color=colour, edgecolors=edge,
                       linewidths=0.3, alpha=0.75)


def _legend(ax: Any, entries: Sequence[tuple[str, Any]]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="none", marker="o", color=c, label=name) for name, c in entries]
    handles += [Line2D([], [], ls="none", marker="o", color="dimgrey", markersize=4, label="training plates"),
                Line2D([], [], ls="none", marker="^", color="dimgrey", markeredgecolor="black",
                       label="target plates")]
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)


def _by_source(ax: Any, coords: np.ndarray, meta: pl.DataFrame, legend: bool) -> None:
    colours = _pyplot().get_cmap("tab10")
    source, target = meta["source"].to_numpy(), meta["role"].to_numpy() == "target"
    entries = []
    for k, name in enumerate(sorted(set(source))):
        _scatter(ax, coords, source == name, target, colours(k % 10))
        held_out = target[source == name].all()  # a lab only on target plates: the held-out lab of source_out
        entries.append((f"{name} (target lab)" if held_out else name, colours(k % 10)))
    if legend:
        _legend(ax, entries)


def class_colours(n: int) -> list[Any]:
    """``n`` class colours without grey (grey is DMSO's): tab10 less its grey, or evenly spaced hues beyond 9."""
    plt = _pyplot()
    if n <= 9:
        return [plt.get_cmap("tab10")(k) for k in (0, 1, 2, 3, 4, 5, 6, 8, 9)[:n]]
    return [plt.get_cmap("hsv")(k / n) for k in range(n)]


def _by_class(ax: Any, coords: np.ndarray, meta: pl.DataFrame, class_names: Sequence[str], legend: bool) -> None:
    colours = class_colours(len(class_names))
    label, control = meta["label"].to_numpy(), meta["is_control"].to_numpy()
    target = meta["role"].to_numpy() == "target"
    _scatter(ax, coords, control, target, "lightgrey")
    for k in range(len(class_names)):
        _scatter(ax, coords, ~control & (label == k), target, colours[k])
    if legend:
        _legend(ax, [("DMSO", "lightgrey")] + list(zip(class_names, colours)))
