"""Typical Variation Normalization (TVN) of embeddings, as pure functions.

Arrays in, arrays out; the DMSO reference population is always an explicit argument.

1. :func:`fit_tvn` (training plates' DMSO embeddings): standardise with the DMSO mean
   and std; fit PCA on the standardised DMSO embeddings; standardise each training
   plate in PCA space with its own DMSO mean/std and pool their covariance
   (+ ridge), whose square root re-colours every plate.
2. :func:`plate_tvn` (one plate's DMSO embeddings only): that plate's DMSO mean/std
   in PCA space and its covariance (+ ridge) to the power -1/2.
3. :func:`apply_tvn`: ``t = ((P(z(x)) - m_p) / s_p) C_p^{-1/2} C_pool^{1/2}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import MethodError


@dataclass(frozen=True)
class TVNReference:
    """TVN state learned from the training plates' DMSO embeddings."""

    mean: np.ndarray        # (d,) DMSO mean of the raw embeddings
    scale: np.ndarray       # (d,) DMSO std of the raw embeddings
    components: np.ndarray  # (k, d) PCA axes fitted on standardised DMSO embeddings
    pca_mean: np.ndarray    # (d,) mean removed before projecting
    recolour: np.ndarray    # (k, k) pooled plate-standardised DMSO covariance (+ ridge) ^ (+1/2)
    ridge: float


@dataclass(frozen=True)
class PlateTVN:
    """TVN state of one plate, from that plate's DMSO embeddings only."""

    mean: np.ndarray     # (k,) plate DMSO mean in PCA space
    scale: np.ndarray    # (k,) plate DMSO std in PCA space
    whiten: np.ndarray   # (k, k) plate-standardised DMSO covariance (+ ridge) ^ (-1/2)


def _matrix_power(cov: np.ndarray, power: float) -> np.ndarray:
    """Symmetric matrix power via eigendecomposition (eigenvalues clipped at a tiny floor)."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    values = np.clip(values, 1e-12, None)
    return (vectors * values ** power) @ vectors.T


def _standardise_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    return mean, np.maximum(x.std(axis=0), 1e-8)


def _covariance(x: np.ndarray, ridge: float) -> np.ndarray:
    centred = x - x.mean(axis=0)
    return centred.T @ centred / max(len(x) - 1, 1) + ridge * np.eye(x.shape[1])


def _project(ref: TVNReference, embeddings: np.ndarray) -> np.ndarray:
    z = (np.asarray(embeddings, dtype=np.float64) - ref.mean) / ref.scale
    return (z - ref.pca_mean) @ ref.components.T


def fit_tvn(controls: np.ndarray, plates: Sequence[str] | np.ndarray, n_components: int = 0,
            ridge: float = 0.5) -> TVNReference:
    """Fit TVN on the DMSO embeddings of the training plates.

    Parameters
    ----------
    controls : ``(n, d)`` DMSO embeddings of all training plates.
    plates : ``(n,)`` plate of each row of ``controls``.
    n_components : PCA components kept; 0 keeps all (at most ``min(n, d)``).
    ridge : added to the diagonal of every covariance (the reference uses 0.5).
    """
    controls = np.asarray(controls, dtype=np.float64)
    plates = np.asarray(plates)
    if controls.ndim != 2 or len(controls) < 2:
        raise MethodError(f"TVN needs at least 2 DMSO embeddings as an (n, d) array, got shape {controls.shape}")
    mean, scale = _standardise_stats(controls)
    z = (controls - mean) / scale
    pca_mean = z.mean(axis=0)
    _, _, vt = np.linalg.svd(z - pca_mean, full_matrices=False)
    k = vt.shape[0] if n_components <= 0 else min(n_components, vt.shape[0])
    partial = TVNReference(mean, scale, vt[:k], pca_mean, np.eye(k), ridge)
    y = _project(partial, controls)
    standardised = [_plate_standardise(y[plates == p]) for p in np.unique(plates)]
    pooled = _covariance(np.concatenate(standardised), ridge)
    return TVNReference(mean, scale, vt[:k], pca_mean, _matrix_power(pooled, 0.5), ridge)


def _plate_standardise(y: np.ndarray) -> np.ndarray:
    if len(y) < 2:
        raise MethodError(f"TVN needs at least 2 DMSO embeddings per plate, got {len(y)}")
    mean, scale = _standardise_stats(y)
    return (y - mean) / scale


def plate_tvn(ref: TVNReference, plate_controls: np.ndarray) -> PlateTVN:
    """The TVN transform of one plate, from that plate's DMSO embeddings ``(m, d)`` only."""
    plate_controls = np.asarray(plate_controls)
    if plate_controls.ndim != 2 or len(plate_controls) < 2:
        raise MethodError(f"TVN needs at least 2 DMSO embeddings of the plate, got shape {plate_controls.shape}")
    y = _project(ref, plate_controls)
    mean, scale = _standardise_stats(y)
    return PlateTVN(mean, scale, _matrix_power(_covariance((y - mean) / scale, ref.ridge), -0.5))


def apply_tvn(ref: TVNReference, plate: PlateTVN, embeddings: np.ndarray) -> np.ndarray:
    """TVN-transformed embeddings ``(n, k)`` of images of the plate described by ``plate``."""
    y = (_project(ref, embeddings) - plate.mean) / plate.scale
    return (y @ plate.whiten @ ref.recolour).astype(np.float32)
