"""Cell count per image as a frozen featuriser: the ``cell-count`` encoder backend of the profile pipeline.

Per image (``(5, H, W)`` uint8, channels in :data:`benchmark.constants.CHANNELS` order):

``nuclei``
    the number of nuclei :func:`~benchmark.core.cells.segmentation.segment_nuclei` finds on DNA;
``<channel>_area`` (only with the ``areas`` argument)
    the fraction of the image each channel's stain covers: pixels of the smoothed channel above
    the Otsu threshold of its logarithm (the same rule on every channel, no segmentation).

Specs: ``cell-count`` (the count alone, ``dim = 1``) and ``cell-count:areas`` (the count and the
five area fractions, ``dim = 6``). Nothing is learned: the features depend only on the pixels, the
parameters and this code, so :attr:`CellCountEncoder.weights_digest` (the embedding cache's key,
with the profile pipeline's own code digest) is a SHA-256 of the parameters, the source of this
module, of :mod:`~benchmark.core.cells.segmentation` and of :mod:`~benchmark.core.cells.featuriser`,
and the versions of numpy, scipy and scikit-image. Registered as an encoder backend by
:mod:`benchmark.core.encoders.cell_count` (``cells`` sits below ``encoders`` in core's layers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ...constants import CHANNELS
from ...errors import BenchError
from .featuriser import CellFeaturiser
from .segmentation import MIN_AREA, MIN_CONTRAST, MIN_DISTANCE, NUCLEI, SIGMA, segment_nuclei, skimage

NAME = "cell-count"
AREAS = "areas"
"""The backend's name and its one argument."""
AREA_SIGMA = 1.0
"""Gaussian smoothing (pixels) of a channel before its area fraction is thresholded."""


def feature_names(areas: bool = False) -> list[str]:
    """Column names: ``nuclei``, then (``areas``) ``RNA_area, ER_area, AGP_area, Mito_area, DNA_area``."""
    return ["nuclei"] + ([f"{channel}_area" for channel in CHANNELS] if areas else [])


def area_fraction(channel: np.ndarray, sigma: float = AREA_SIGMA) -> float:
    """The fraction of a 2-D channel above the Otsu threshold of its smoothed logarithm (0 for a flat channel)."""
    log = np.log1p(ndi.gaussian_filter(np.asarray(channel, dtype=np.float32), sigma))
    if float(log.max()) <= float(log.min()):
        return 0.0
    return float((log > skimage("filters").threshold_otsu(log)).mean())


def image_features(image: np.ndarray, areas: bool = False) -> np.ndarray:
    """The features of one image ``(5, H, W)`` in the order of :func:`feature_names` (float32)."""
    count = int(segment_nuclei(image[NUCLEI]).max())
    extra = [area_fraction(channel) for channel in image] if areas else []
    return np.asarray([count, *extra], dtype=np.float32)


def _skimage_version() -> str:
    from importlib.metadata import version

    skimage("filters")  # a clear error when it is missing
    return version("scikit-image")


class CellCountEncoder(CellFeaturiser):
    """Nuclei count (and area fractions) per image, an :class:`~benchmark.core.encoders.registry.Encoder`."""

    code = ("benchmark.core.cells.segmentation", "benchmark.core.cells.featuriser", "benchmark.core.cells.count")

    def __init__(self, areas: bool = False):
        self.areas = areas
        self.name = f"{NAME}:{AREAS}" if areas else NAME
        self.features = feature_names(areas)
        self.dim = len(self.features)

    def featurise(self, image: np.ndarray) -> np.ndarray:
        return image_features(image, self.areas)

    def digest_params(self) -> dict[str, Any]:
        """The parameters and the versions of numpy, scipy and scikit-image."""
        import scipy

        return {"features": self.features, "sigma": SIGMA, "min_distance": MIN_DISTANCE, "min_area": MIN_AREA,
                "min_contrast": MIN_CONTRAST, "area_sigma": AREA_SIGMA, "numpy": np.__version__,
                "scipy": scipy.__version__, "scikit-image": _skimage_version()}


def cell_count_encoder(argument: str | None, device: str) -> CellCountEncoder:
    """``cell-count`` or ``cell-count:areas`` (see the module docstring); runs on the CPU whatever ``device``."""
    if argument not in (None, AREAS):
        raise BenchError(f"encoder backend '{NAME}' takes no argument or '{AREAS}', got {argument!r}")
    return CellCountEncoder(areas=argument == AREAS)
