"""The reference preprocessing of one site (JUMP.md): ×½ nearest, 99.99th-percentile clip, uint8.

Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CLIP_QUANTILE = 0.9999
"""Per-image clip: the smallest of the image's top 0.01 % pixel values."""
PREPROCESSING_VERSION = "half-nearest/p99.99-clip/uint8/centre-crop v1"


def downsample_half(image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour ×½ downsampling: every second row and column, starting at the first."""
    return image[::2, ::2]


def clip_value(image: np.ndarray, quantile: float = CLIP_QUANTILE) -> float:
    """The smallest of the top ``1 - quantile`` share of pixel values (at least one pixel)."""
    flat = image.ravel()
    k = max(1, math.ceil(flat.size * (1.0 - quantile) - 1e-9))
    return float(np.partition(flat, flat.size - k)[flat.size - k])


def to_uint8(image: np.ndarray, clip: float) -> np.ndarray:
    """Map ``[0, clip]`` linearly to ``[0, 255]`` (values above ``clip`` saturate)."""
    if clip <= 0:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = np.minimum(image.astype(np.float32), clip) * np.float32(255.0 / clip)
    return np.rint(np.maximum(scaled, 0)).astype(np.uint8)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size × size`` window; ``ValueError`` if the image is smaller."""
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"image is {h}x{w} after downsampling, smaller than the crop {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size]


def preprocess_channel(image: np.ndarray, crop: int) -> np.ndarray:
    """One raw 16-bit channel image -> ``(crop, crop)`` uint8, following JUMP.md.

    The clip value is computed on the whole downsampled image, before the crop.
    """
    small = downsample_half(image)
    return centre_crop(to_uint8(small, clip_value(small)), crop)


def preprocess_site(channels: Sequence[np.ndarray], crop: int) -> np.ndarray:
    """Raw channel images in the order RNA, ER, AGP, Mito, DNA -> ``(5, crop, crop)`` uint8."""
    return np.stack([preprocess_channel(c, crop) for c in channels])
