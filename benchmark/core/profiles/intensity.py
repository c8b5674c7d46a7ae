"""Whole-image intensity statistics per channel, and their standardisation by a plate's DMSO images.

The features are deliberately simple: they describe each channel's grey-level
distribution and nothing of where the pixels lie, so they measure how far a task can
be solved without morphology. Two users: the ``intensity_stats`` baseline method
(a linear classifier of the MoA on these features) and the calibration probe that
predicts the lab of an image from them.

Per image and channel, in this order (:data:`STATISTICS`), in grey levels of the uint8
image unless said otherwise:

``mean``, ``std``
    mean and (population) standard deviation of the pixel values;
``q10``, ``q50``, ``q90``, ``q99``
    the 10/50/90/99 % quantiles: the smallest grey level ``v`` with at least that share
    of the pixels ``<= v`` (``np.quantile(..., method="inverted_cdf")``);
``saturated_pct``
    percentage (0-100) of pixels at 255 (clipped by the camera).

No share of near-zero ("background") pixels: with a fixed grey-level threshold it
measures each microscope's offset more than the cells. On the simulator it is exactly 0
on every DMSO image of some labs and not of others, so its DMSO-standardised value
explodes (|z| up to ~180 against the floor) and a classifier trained on it fails on a
held-out lab (on sim-2, source_out with lab4 held out: chance level with it, 0.41
without); on sim-1.5 it also lowered held-out accuracy slightly.

Features are grouped by channel: column ``c * len(STATISTICS) + s`` is statistic ``s``
of channel ``c`` (names from :func:`feature_names`). Everything comes from one 256-bin
histogram per image and channel, so the result is exact, and images are processed
in chunks of ``chunk`` images to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...constants import CHANNELS

STATISTICS: tuple[str, ...] = ("mean", "std", "q10", "q50", "q90", "q99", "saturated_pct")
"""The statistics computed for every channel, in column order."""
QUANTILES: tuple[int, ...] = (10, 50, 90, 99)
"""Levels (percent) of the ``q10 ... q99`` statistics."""
MIN_STD = 0.5
"""Default floor on the DMSO standard deviation: half a grey level (half a percentage point for
``saturated_pct``), about the resolution of the integer-valued quantiles."""
CHUNK_VALUES = 1 << 23
"""Default working set of :func:`channel_statistics`: pixel values per chunk (32 MB of int32 codes)."""
_LEVELS = np.arange(256, dtype=np.float64)


def feature_names(channels: Sequence[str] = CHANNELS) -> list[str]:
    """Column names of :func:`channel_statistics`, e.g. ``RNA_mean, RNA_std, ..., DNA_saturated_pct``."""
    return [f"{channel}_{stat}" for channel in channels for stat in STATISTICS]


def _histogram_statistics(hist: np.ndarray) -> np.ndarray:
    """(M, 256) pixel counts per grey level -> (M, len(STATISTICS)) statistics."""
    n = hist.sum(axis=1, keepdims=True).astype(np.float64)
    mean = hist @ _LEVELS / n[:, 0]
    std = np.sqrt(np.einsum("mv,mv->m", hist, (_LEVELS[None] - mean[:, None]) ** 2) / n[:, 0])
    cdf = np.cumsum(hist, axis=1)
    quantiles = [np.argmax(100 * cdf >= q * n, axis=1) for q in QUANTILES]  # integers: exact
    saturated = 100.0 * hist[:, 255] / n[:, 0]
    return np.stack([mean, std, *quantiles, saturated], axis=1)


def channel_statistics(images: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Intensity statistics of every channel of every image (see the module docstring).

    Parameters
    ----------
    images : array-like, shape (N, C, H, W), uint8
        Images (a numpy array or anything that slices into one, such as a plate view's images).
    chunk : int, optional
        Images processed at once (default: as many as hold :data:`CHUNK_VALUES` pixel values);
        working memory is about ``4 * chunk * C * H * W`` bytes.

    Returns
    -------
    numpy.ndarray, shape (N, C * len(STATISTICS)), float32
        Grouped by channel, in the order of :func:`feature_names`.

    Examples
    --------
    >>> x = np.zeros((1, 1, 2, 2), dtype=np.uint8); x[0, 0, 0, 0] = 255
    >>> dict(zip(feature_names(["A"]), channel_statistics(x)[0].tolist()))["A_saturated_pct"]
    25.0
    """
    n = len(images)
    shape = (n, *np.shape(images[:0])[1:])
    if len(shape) != 4:
        raise ValueError(f"channel_statistics expects images of shape (N, C, H, W), got {shape}")
    channels = shape[1]
    if chunk is None:
        chunk = max(1, CHUNK_VALUES // max(1, int(np.prod(shape[1:]))))
    out = np.empty((n, channels * len(STATISTICS)), dtype=np.float32)
    for start in range(0, n, chunk):
        x = np.asarray(images[start:start + chunk])
        if x.dtype != np.uint8:
            raise ValueError(f"channel_statistics expects uint8 images, got {x.dtype}")
        m = x.shape[0] * channels
        code_type = np.int32 if 256 * m < 2**31 else np.int64
        codes = x.reshape(m, -1).astype(code_type) + 256 * np.arange(m, dtype=code_type)[:, None]
        hist = np.bincount(codes.ravel(), minlength=256 * m).reshape(m, 256)
        out[start:start + len(x)] = _histogram_statistics(hist).reshape(len(x), -1)
    return out


def standardise_by_controls(features: np.ndarray, control_features: np.ndarray,
                            min_std: float | np.ndarray = MIN_STD) -> np.ndarray:
    """Standardise ``features`` with the mean and standard deviation of ``control_features``.

    Parameters
    ----------
    features : numpy.ndarray, shape (N, F)
        Features of one plate's images.
    control_features : numpy.ndarray, shape (M, F)
        The same features of that plate's DMSO images (``M >= 2``).
    min_std : float or numpy.ndarray of shape (F,)
        Floor on the DMSO standard deviation (population), so that a feature constant
        over the controls (e.g. ``saturated_pct`` = 0) does not blow up.

    Returns
    -------
    numpy.ndarray, shape (N, F), float32
        ``(features - mean) / max(std, min_std)``; the controls themselves get mean 0 and
        standard deviation 1 in every feature whose std is above the floor.
    """
    controls = np.asarray(control_features, dtype=np.float64)
    if controls.ndim != 2 or len(controls) < 2:
        raise ValueError(f"standardise_by_controls needs at least 2 control rows of shape (M, F), "
                         f"got {controls.shape}")
    scale = np.maximum(controls.std(axis=0), min_std)
    return ((np.asarray(features, dtype=np.float64) - controls.mean(axis=0)) / scale).astype(np.float32)
