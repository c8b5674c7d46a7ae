"""Correction metrics of profiles: how well batches mix and how much biology is kept (scIB-style).

As in Arevalo et al. 2024 (Nat Commun 15:6516), after scIB (Luecken et al. 2022), every
score lies in [0, 1], higher is better:

batch removal (computed on treated wells only: DMSO excluded)
    ``silhouette_batch``  per class, the mean of ``1 - |s|`` over its wells, ``s`` the silhouette
                          of the well with the batches as clusters; averaged over classes.
    ``ilisi``             median local inverse Simpson's index of the batches (harmonypy's
                          ``compute_lisi``, perplexity 30), scaled to ``(LISI - 1) / (B - 1)``.
    ``kbet``              per class, the share of wells whose ``k0`` nearest neighbours' batch mix
                          passes kBET's chi-squared test against the class's batch mix (α = 0.05,
                          ``k0`` a quarter of the mean batch size, at least 3); averaged over classes.
biology
    ``silhouette_label``  ``(s + 1) / 2`` with the classes as clusters (treated wells).
    ``map``               mean over compounds of the mean average precision of retrieving a
                          well's replicate wells (the same compound) against the DMSO wells of its
                          own plate (copairs, cosine similarity); ``fraction_retrieved`` is the share
                          of compounds whose mAP beats copairs' null at corrected p < 0.05.

``overall = 0.4 × batch + 0.6 × biology``, each the mean of its scores. A score that cannot be
computed (one batch only, too few wells) is None and left out of its mean.

Pure functions: arrays in, numbers out, on scikit-learn, scipy, harmonypy and copairs. The
neighbour searches use scipy's tree: scikit-learn's load native code through ctypes at run time
(threadpoolctl), which a sealed worker refuses. scib-metrics is not used: it pulls JAX, numba
and scanpy (about 770 MB, a minute to install), takes 15-50 s to import, compiles each score on
its first call (kBET: about 100 s) and loads native code through ctypes while it runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import MethodError

BATCH_WEIGHT, BIO_WEIGHT = 0.4, 0.6
BATCH_SCORES = ("silhouette_batch", "ilisi", "kbet")
BIO_SCORES = ("silhouette_label", "map")
ALPHA = 0.05
PERPLEXITY = 30.0


def _groups(label: np.ndarray, batch: np.ndarray) -> list[np.ndarray]:
    """Row indices of every label whose rows span at least 2 batches."""
    return [np.flatnonzero(label == v) for v in np.unique(label)
            if len(np.unique(batch[label == v])) >= 2]


def silhouette_batch(x: np.ndarray, batch: np.ndarray, label: np.ndarray) -> float | None:
    """scIB's batch silhouette: per label, mean of ``1 - |silhouette|`` with batches as clusters; mean over labels."""
    from sklearn.metrics import silhouette_samples

    x, batch, label = np.asarray(x, dtype=np.float64), np.asarray(batch), np.asarray(label)
    scores = []
    for rows in _groups(label, batch):
        if len(rows) <= len(np.unique(batch[rows])):
            continue  # silhouette needs more rows than clusters
        scores.append(float(np.mean(1.0 - np.abs(silhouette_samples(x[rows], batch[rows])))))
    return float(np.mean(scores)) if scores else None


def ilisi(x: np.ndarray, batch: np.ndarray, perplexity: float = PERPLEXITY) -> float | None:
    """Median batch LISI (harmonypy), scaled to [0, 1]: 0 = one batch around every well, 1 = all batches evenly."""
    from .corrections import require

    x, batch = np.asarray(x, dtype=np.float64), np.asarray(batch)
    n_batches = len(np.unique(batch))
    if n_batches < 2 or len(x) < 4:
        return None
    harmonypy = require("harmonypy", "harmonypy>=2.0", "the iLISI metric")
    perplexity = float(min(perplexity, (len(x) - 1) // 3))
    lisi = harmonypy.compute_lisi(x, {"batch": batch}, ["batch"], perplexity=perplexity)[:, 0]
    return float((np.median(lisi) - 1.0) / (n_batches - 1))


def kbet(x: np.ndarray, batch: np.ndarray, label: np.ndarray, alpha: float = ALPHA) -> float | None:
    """kBET acceptance rate per label (chi-squared test of the neighbourhood's batch mix), averaged over labels."""
    from scipy.spatial import cKDTree
    from scipy.stats import chi2

    x, batch, label = np.asarray(x, dtype=np.float64), np.asarray(batch), np.asarray(label)
    scores = []
    for rows in _groups(label, batch):
        names, codes = np.unique(batch[rows], return_inverse=True)
        sizes = np.bincount(codes)
        k0 = int(min(max(3, math.floor(sizes.mean() / 4)), len(rows) - 1))
        if k0 < 2:
            continue
        _, idx = cKDTree(x[rows]).query(x[rows], k=k0 + 1)
        neighbours = codes[idx[:, 1:]]  # the k0 nearest other wells
        observed = np.stack([(neighbours == b).sum(axis=1) for b in range(len(names))], axis=1)
        expected = k0 * sizes / sizes.sum()
        stat = ((observed - expected) ** 2 / expected).sum(axis=1)
        scores.append(float(np.mean(chi2.sf(stat, len(names) - 1) >= alpha)))
    return float(np.mean(scores)) if scores else None


def silhouette_label(x: np.ndarray, label: np.ndarray) -> float | None:
    """``(silhouette + 1) / 2`` with the labels as clusters."""
    from sklearn.metrics import silhouette_score

    x, label = np.asarray(x, dtype=np.float64), np.asarray(label)
    n_labels = len(np.unique(label))
    if n_labels < 2 or len(x) <= n_labels:
        return None
    return float((silhouette_score(x, label) + 1.0) / 2.0)


def replicate_map(x: np.ndarray, compound: np.ndarray, plate: np.ndarray, is_control: np.ndarray,
                  null_size: int = 1000, seed: int = 0) -> dict[str, float | None]:
    """mAP of each compound's replicate wells against same-plate DMSO wells (copairs); mean over compounds.

    Returns ``{"map": ..., "fraction_retrieved": ...}`` (None when no compound has a replicate and a DMSO well).
    """
    import pandas as pd

    from .corrections import require

    copairs_map = require("copairs.map", "copairs>=0.5", "the mAP metric")
    matching = require("copairs.matching", "copairs>=0.5", "the mAP metric")
    meta = pd.DataFrame({"compound": np.asarray(compound).astype(str), "plate": np.asarray(plate).astype(str),
                         "negcon": np.asarray(is_control, dtype=bool)})
    if meta["negcon"].all() or not meta["negcon"].any():
        return {"map": None, "fraction_retrieved": None}
    meta = matching.assign_reference_index(meta, "negcon", reference_col="reference")
    try:
        ap = copairs_map.average_precision(meta, np.asarray(x, dtype=np.float64), pos_sameby=["compound", "reference"],
                                           pos_diffby=[], neg_sameby=["plate"], neg_diffby=["compound", "reference"],
                                           progress_bar=False)
    except matching.UnpairedException:
        return {"map": None, "fraction_retrieved": None}
    ap = ap[~ap["negcon"]].dropna(subset=["average_precision"])
    if ap.empty:
        return {"map": None, "fraction_retrieved": None}
    per_compound = copairs_map.mean_average_precision(ap, ["compound"], null_size=null_size, threshold=ALPHA,
                                                      seed=seed, progress_bar=False, max_workers=1)
    return {"map": float(per_compound["mean_average_precision"].mean()),
            "fraction_retrieved": float(per_compound["below_corrected_p"].mean())}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def correction_scores(x: np.ndarray, batch: np.ndarray, label: np.ndarray, plate: np.ndarray,
                      is_control: np.ndarray, seed: int = 0, null_size: int = 1000) -> dict[str, Any]:
    """Every score of the module docstring for profiles ``x`` ``(n, d)`` (wells, DMSO included).

    Parameters
    ----------
    batch : the batch of every row (e.g. its source) for the batch-removal scores.
    label : the class of every row (its compound); ignored for DMSO rows.
    plate : the plate of every row (mAP's negatives are DMSO wells of the query's plate).
    is_control : True for DMSO rows.
    """
    x = np.asarray(x, dtype=np.float64)
    batch, label, plate = np.asarray(batch), np.asarray(label), np.asarray(plate)
    is_control = np.asarray(is_control, dtype=bool)
    if x.ndim != 2 or not (len(x) == len(batch) == len(label) == len(plate) == len(is_control)):
        raise MethodError(f"correction metrics need profiles (n, d) and n batches, labels, plates and control flags; "
                          f"got {x.shape}, {len(batch)}, {len(label)}, {len(plate)}, {len(is_control)}")
    treated = ~is_control
    xt, bt, lt = x[treated], batch[treated], label[treated]
    scores: dict[str, Any] = {
        "silhouette_batch": silhouette_batch(xt, bt, lt),
        "ilisi": ilisi(xt, bt),
        "kbet": kbet(xt, bt, lt),
        "silhouette_label": silhouette_label(xt, lt),
    }
    scores.update(replicate_map(x, np.where(is_control, "DMSO", label.astype(str)), plate, is_control,
                                null_size, seed))
    batch_score = _mean([scores[k] for k in BATCH_SCORES])
    bio_score = _mean([scores[k] for k in BIO_SCORES])
    overall = (BATCH_WEIGHT * batch_score + BIO_WEIGHT * bio_score
               if batch_score is not None and bio_score is not None else None)
    return {**scores, "batch": batch_score, "bio": bio_score, "overall": overall,
            "n_wells": int(len(x)), "n_treated_wells": int(treated.sum()), "n_batches": int(len(np.unique(bt)))}
