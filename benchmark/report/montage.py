"""A montage to look at a dataset: one row per source, one column per compound plus DMSO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ..constants import CHANNELS, CLASS_NAMES, DMSO_LABEL
from ..datasets.dataset import Dataset

# Cell Painting false colour: each channel gets a hue, contributions add up.
CHANNEL_COLOURS: dict[str, tuple[float, float, float]] = {
    "DNA": (0.0, 0.3, 1.0),   # blue
    "ER": (0.0, 1.0, 0.0),    # green
    "RNA": (1.0, 1.0, 0.0),   # yellow
    "AGP": (1.0, 0.0, 0.0),   # red
    "Mito": (1.0, 0.0, 1.0),  # magenta
}


def false_colour(image: np.ndarray, channels: tuple[str, ...] = CHANNELS) -> np.ndarray:
    """Map a ``(C, H, W)`` uint8 Cell Painting image to ``(H, W, 3)`` RGB floats in [0, 1]."""
    x = image.astype(np.float32) / 255.0
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float32)
    for c, name in enumerate(channels):
        rgb += x[c, :, :, None] * np.asarray(CHANNEL_COLOURS[name], dtype=np.float32) * 0.6
    return np.clip(rgb, 0.0, 1.0)


def _tile(images: np.ndarray, channels: tuple[str, ...]) -> np.ndarray:
    """2x2 tile of up to four images in false colour (missing ones black)."""
    h, w = images.shape[2:]
    tile = np.zeros((2 * h + 1, 2 * w + 1, 3), dtype=np.float32)
    for k, img in enumerate(images[:4]):
        r, c = divmod(k, 2)
        tile[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = false_colour(img, channels)
    return tile


def montage_image_ids(dataset: Dataset, seed: int = 0, per_cell: int = 4) -> dict[tuple[str, int], np.ndarray]:
    """Example image ids per (source, label), from different plates and wells where possible."""
    rng = np.random.default_rng(seed)
    out: dict[tuple[str, int], np.ndarray] = {}
    first_sites = dataset.index.filter(pl.col("site") == pl.col("site").min().over("plate", "well"))
    for (source, label), group in first_sites.group_by("source", "label", maintain_order=True):
        ids = group["image_id"].to_numpy()
        out[(source, int(label))] = np.sort(rng.choice(ids, size=min(per_cell, len(ids)), replace=False))
    return out


def write_montage(dataset: Dataset, out: Path, seed: int = 0) -> Path:
    """Write the montage PNG to ``out`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = montage_image_ids(dataset, seed)
    sources = sorted({s for s, _ in chosen})
    labels = list(range(len(CLASS_NAMES))) + [DMSO_LABEL]
    titles = list(CLASS_NAMES) + ["DMSO"]
    fig, axes = plt.subplots(len(sources), len(labels), figsize=(1.6 * len(labels), 1.7 * len(sources) + 0.6),
                             squeeze=False)
    for r, source in enumerate(sources):
        for c, label in enumerate(labels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ids = chosen.get((source, label))
            if ids is not None:
                ax.imshow(_tile(dataset.read(ids), dataset.meta.channels), interpolation="nearest")
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(source, fontsize=8)
    legend = "  ".join(f"{ch}={name}" for ch, name in
                       (("DNA", "blue"), ("ER", "green"), ("RNA", "yellow"), ("AGP", "red"), ("Mito", "magenta")))
    fig.suptitle(f"{dataset.name} {dataset.meta.version} ({dataset.fingerprint}) — rows: sources; "
                 f"columns: compounds; 4 sites each.  {legend}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
