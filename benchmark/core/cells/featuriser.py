"""What the per-image cell featurisers share as encoders: the input check, the loop over images and the digest.

A cell featuriser (:mod:`~benchmark.core.cells.count`, :mod:`~benchmark.core.cells.cellprofiler`)
computes the features of one image from its pixels alone; nothing is learned. :class:`CellFeaturiser`
turns one into an :class:`~benchmark.core.encoders.registry.Encoder`: :meth:`~CellFeaturiser.embed`
checks the images and featurises them one after the other, and
:attr:`~CellFeaturiser.weights_digest` (the embedding cache's key) is a SHA-256 of the featuriser's
parameters and of the source of the modules that compute its features.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ...constants import CHANNELS
from ...errors import BenchError
from ...source_digest import source_digest


class CellFeaturiser(ABC):
    """Per-image features of the pixels alone, as an encoder.

    A subclass sets ``name``, ``features`` (the column names), ``dim`` and ``code`` (the modules
    whose source shapes the features), and defines :meth:`featurise` and :meth:`digest_params`.
    """

    name: str
    features: list[str]
    dim: int
    code: tuple[str, ...]

    @abstractmethod
    def featurise(self, image: np.ndarray) -> np.ndarray:
        """The ``dim`` features (float32) of one uint8 image ``(5, H, W)``."""

    @abstractmethod
    def digest_params(self) -> dict[str, Any]:
        """What besides the source of ``code`` shapes the features: parameters, libraries' versions."""

    @functools.cached_property
    def weights_digest(self) -> str:
        """SHA-256 of :meth:`digest_params` and the source of ``code``."""
        return source_digest(self.code, self.digest_params())

    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Features ``(N, dim)`` float32 of uint8 images ``(N, 5, H, W)`` (``batch_size`` is not used)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != len(CHANNELS) or images.dtype != np.uint8:
            raise BenchError(f"encoder {self.name} takes uint8 images (N, {len(CHANNELS)}, H, W) in the channel "
                             f"order {CHANNELS}, got {images.dtype} {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self.featurise(image)
        return out
