"""CellProfiler features per image: segment, measure every cell with ``cp_measure``, take the median over cells.

Per image ``(5, H, W)`` uint8 (channels in :data:`benchmark.constants.CHANNELS` order):

1. **Objects**: nuclei on DNA and cells grown from them on RNA
   (:func:`benchmark.core.cells.segmentation.segment`); the **cytoplasm** of a cell is the cell
   without its nucleus (CellProfiler's IdentifyTertiaryObjects).
2. **Measurements** of every object by ``cp_measure`` (Munoz et al. 2025, the CellProfiler
   team's library of CellProfiler's measurement modules), grouped into families
   (:data:`FAMILIES`); which compartments and channels each family measures is in
   :data:`COMPARTMENTS` and the family's function below:

   ``intensity``    MeasureObjectIntensity, every channel, nuclei / cells / cytoplasm;
   ``sizeshape``    MeasureObjectSizeShape (with Zernike shape moments and Feret diameters),
                    nuclei / cells / cytoplasm;
   ``texture``      MeasureTexture (Haralick), every channel, nuclei / cells;
   ``granularity``  MeasureGranularity, every channel, cells;
   ``radial``       MeasureObjectIntensityDistribution (fraction and mean fraction of the
                    intensity and radial CV in 4 rings), every channel, cells;
   ``correlation``  MeasureColocalization (Pearson, slope, Manders, RWC) of every channel pair,
                    cells.

3. **Aggregation**: the median over the image's objects of every feature (NaN objects left
   out), as pycytominer's ``aggregate`` does by default (``operation="median"``); an image
   without nuclei gets 0 everywhere.

Features are named as CellProfiler names them, ``<Compartment>_<Category>_<Feature>_<Channel>[_<params>]``
(``Cells_Intensity_MeanIntensity_DNA``, ``Nuclei_AreaShape_Area``, ``Cells_Correlation_Pearson_DNA_ER``),
so pycytominer reads them as features. Left out: object positions (``Location_*``, ``Center_*``,
bounding-box corners, spatial moments: where a cell lies in the image is not morphology) and
Costes colocalisation.

**Specs** (the ``featuriser`` option): ``cellprofiler`` measures :data:`DEFAULT_FAMILIES`
(intensity, radial distribution, colocalisation), ``cellprofiler:all`` every family,
``cellprofiler:<family>,<family>,...`` those named.

**Cost, and why the default leaves three families out.** A profile method measures every image of
a fold (~9,200 on the default dataset), and ``cp_measure`` loops over objects in Python, so the cost
is per cell. On the default synthetic images (64 px, ~14 cells an image), CPU milliseconds per image
(``time.process_time``, 60 images, a 2-core machine shared with other jobs; wall time was ~1.8x):
segmentation 5, intensity 45, sizeshape 67, texture 100, granularity 91, radial 42, correlation 48:
~400 in all, ~140 for the default (~21 CPU minutes per fold instead of ~60). Left-one-lab-out
accuracy of the pipeline (per-plate mad_robustize, feature_select, logistic regression) on a sample
of the same dataset (12 DMSO and 40 treated images per plate, 24 plates, 4 folds): every family
0.924, the default three 0.920, each family alone intensity 0.85, correlation 0.85, radial 0.83,
texture 0.82, granularity 0.73, sizeshape 0.57, and leaving any one family out of all six costs at
most 0.02 (within the sample's noise): the families are redundant on this data and the three left
out cost ~2/3 of the time. Segmentation is ~1 % of the cost, so making it parallel would not pay;
nothing here starts a process (a sealed worker refuses it), and two threads gained ~15 % on the
busy machine (``cp_measure`` holds the GIL in its per-object loops), so images are measured one
after the other and each distinct image once per process.

**Deviations from CellProfiler's settings** (:class:`Settings`): Costes colocalisation is left
out (~1.2 s an image) and Haralick texture uses 16 grey levels, averaged over the 4 directions
(256 levels, CellProfiler 3's, cost ~4 s an image: a 256 x 256 co-occurrence matrix per object,
channel and direction); granularity runs without subsampling on a spectrum suited to 64 px images
(CellProfiler's 0.25 subsampling would leave 16 px).

Nothing is learned: :attr:`CellProfilerEncoder.weights_digest` (the embedding cache's key) is a
SHA-256 of the settings, the feature names, the source of this module, of the segmentation and of
:mod:`~benchmark.core.cells.featuriser`, and the versions of cp_measure and its numerics libraries.
Registered as the ``cellprofiler`` encoder backend by :mod:`benchmark.core.encoders.cellprofiler`
(``cells`` sits below ``encoders``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import itertools
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ...constants import CHANNELS
from ...errors import BenchError
from .featuriser import CellFeaturiser
from .segmentation import Segmentation, segment

NAME = "cellprofiler"
FAMILIES = ("intensity", "sizeshape", "texture", "granularity", "radial", "correlation")
"""The measurement families, in column order."""
DEFAULT_FAMILIES = ("intensity", "radial", "correlation")
"""The families of the ``cellprofiler`` spec without an argument (see "Cost" in the module docstring)."""
ALL = "all"
"""The spec argument for every family."""
COMPARTMENTS = {"intensity": ("Nuclei", "Cells", "Cytoplasm"), "sizeshape": ("Nuclei", "Cells", "Cytoplasm"),
                "texture": ("Nuclei", "Cells"), "granularity": ("Cells",), "radial": ("Cells",),
                "correlation": ("Cells",)}
"""The compartments each family measures."""
DROPPED = ("Location_", "Center_", "BoundingBoxMinimum_", "BoundingBoxMaximum_", "SpatialMoment_")
"""cp_measure outputs left out (prefixes): positions in the image, not morphology."""
_LIBRARIES = ("cp_measure", "centrosome", "mahotas", "scikit-image", "scipy", "numpy")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Measurement settings (CellProfiler's defaults where they suit 64 px images; deviations noted)."""

    families: tuple[str, ...] = DEFAULT_FAMILIES
    texture_scale: int = 3             # pixels between the pixel pairs of the co-occurrence matrix (CellProfiler's 3)
    texture_gray_levels: int = 16      # CellProfiler 3+: 256 (25x slower here), CellProfiler 2: 8
    granularity_subsample: float = 1.0  # CellProfiler's 0.25 leaves 16 px of a 64 px image
    granularity_background_sample: float = 0.5
    granularity_element_size: int = 5  # background structuring element radius (after subsampling); cells are ~8 px
    granularity_spectrum: int = 8      # erosion steps of 1 px (CellProfiler's 16); cells are ~8 px in radius
    radial_bins: int = 4               # CellProfiler's default
    correlation_threshold: int = 15    # percent of the object's maximum intensity (Manders, RWC), CellProfiler's 15

    def __post_init__(self):
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families or len(set(self.families)) != len(self.families):
            raise BenchError(f"cellprofiler families {list(self.families)} are not a non-empty list of distinct "
                             f"families from {', '.join(FAMILIES)}")
        object.__setattr__(self, "families", tuple(f for f in FAMILIES if f in self.families))


# ----------------------------------------------------------------------------- objects

def compartments(seg: Segmentation) -> dict[str, np.ndarray]:
    """The label images of the nuclei, the cells and the cytoplasm (cell minus nucleus) of one segmentation."""
    cells = np.asarray(seg.cells, dtype=np.int32)
    return {"Nuclei": np.asarray(seg.nuclei, dtype=np.int32), "Cells": cells,
            "Cytoplasm": np.where(seg.nuclei > 0, 0, cells).astype(np.int32)}


# ----------------------------------------------------------------------------- families
# Each family maps (labels of the compartments, pixels (5, H, W) in [0, 1], settings)
# to {feature name: per-object values} for every compartment it measures.

Measured = dict[str, np.ndarray]


@functools.lru_cache(maxsize=1)
def _cp() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """cp_measure's core and correlation measurement functions (imported here: ~0.3 s past scipy)."""
    try:
        from cp_measure.bulk import get_core_measurements, get_correlation_measurements
    except ImportError as exc:
        raise BenchError(f"the cellprofiler featuriser needs cp_measure ({exc}); install it: "
                         "pip install 'cp_measure>=0.3' (or pip install -e '.[cellprofiler]')") from None
    return get_core_measurements(), get_correlation_measurements()


def _usable(key: str) -> bool:
    return not any(key.startswith(p) or f"_{p}" in key for p in DROPPED)


def _per_channel(family: str, function: str, objects: dict[str, np.ndarray], pixels: np.ndarray,
                 **options: Any) -> Iterator[tuple[str, str, Measured]]:
    """``(compartment, channel, measured)``: cp_measure's core ``function`` with ``options`` on every channel of
    every compartment that ``family`` measures (compartments first, channels in :data:`CHANNELS` order)."""
    core = _cp()[0]
    for comp in COMPARTMENTS[family]:
        for c, channel in enumerate(CHANNELS):
            yield comp, channel, core[function](objects[comp], pixels[c], **options)


def _intensity(objects: dict[str, np.ndarray], pixels: np.ndarray, s: Settings) -> Measured:
    return {f"{comp}_{key}_{channel}": values
            for comp, channel, measured in _per_channel("intensity", "intensity", objects, pixels)
            for key, values in measured.items() if _usable(key)}


def _sizeshape(objects: dict[str, np.ndarray], pixels: np.ndarray, s: Settings) -> Measured:
    core, out = _cp()[0], {}
    for comp in COMPARTMENTS["sizeshape"]:
        for function in ("sizeshape", "zernike", "feret"):
            for key, values in core[function](objects[comp], None).items():
                if _usable(key):
                    out[f"{comp}_AreaShape_{key}"] = values
    return out


def _texture(objects: dict[str, np.ndarray], pixels: np.ndarray, s: Settings) -> Measured:
    """Haralick features averaged over the 4 directions: ``<comp>_Texture_<feature>_<channel>_<scale>_<levels>``."""
    out = {}
    for comp, channel, measured in _per_channel("texture", "texture", objects, pixels, scale=s.texture_scale,
                                                gray_levels=s.texture_gray_levels):
        by_feature: dict[str, list[np.ndarray]] = {}
        for key, values in measured.items():
            by_feature.setdefault(key.split("_")[0], []).append(np.asarray(values, dtype=np.float64))
        for feature, directions in by_feature.items():
            out[f"{comp}_Texture_{feature}_{channel}_{s.texture_scale}_{s.texture_gray_levels}"] = \
                np.mean(directions, axis=0)
    return out


def _granularity(objects: dict[str, np.ndarray], pixels: np.ndarray, s: Settings) -> Measured:
    measured = _per_channel("granularity", "granularity", objects, pixels, subsample_size=s.granularity_subsample,
                            image_sample_size=s.granularity_background_sample,
                            element_size=s.granularity_element_size, granular_spectrum_length=s.granularity_spectrum)
    return {f"{comp}_{key}_{channel}": values  # Granularity_<k>
            for comp, channel, by_key in measured for key, values in by_key.items()}


def _radial(objects: dict[str, np.ndarray], pixels: np.ndarray, s: Settings) -> Measured:
    out = {}
    for comp, channel, measured in _per_channel("radial", "radial_distribution", objects, pixels,
                                                bin_count=s.radial_bins):
        for key, values in measured.items():
            category, feature, ring = key.split("_")  # RadialDistribution_FracAtD_1of4
            out[f"{comp}_{category}_{feature}_{channel}_{ring}"] = values
    return out


def _correlation(objects: dict[str, np.ndarray], pixels: np.ndarray, s: Settings) -> Measured:
    """Pearson and slope of each channel pair; Manders and RWC in both directions (``_1``: first channel's share)."""
    corr, out = _cp()[1], {}
    for comp in COMPARTMENTS["correlation"]:
        labels = objects[comp]
        for i, j in itertools.combinations(range(len(CHANNELS)), 2):
            a, b = CHANNELS[i], CHANNELS[j]
            for key, values in corr["pearson"](pixels[i], pixels[j], labels).items():  # Correlation_Pearson, _Slope
                out[f"{comp}_{key}_{a}_{b}"] = values
            for function in ("manders_fold", "rwc"):
                for key, values in corr[function](pixels[i], pixels[j], labels, thr=s.correlation_threshold).items():
                    stem, side = key.rsplit("_", 1)  # Correlation_Manders_1: a's share overlapping b
                    out[f"{comp}_{stem}_{a}_{b}" if side == "1" else f"{comp}_{stem}_{b}_{a}"] = values
    return out


_FAMILY: dict[str, Callable[..., Measured]] = {"intensity": _intensity, "sizeshape": _sizeshape,
                                               "texture": _texture, "granularity": _granularity,
                                               "radial": _radial, "correlation": _correlation}


# ----------------------------------------------------------------------------- per image

def measure_objects(image: np.ndarray, seg: Segmentation, settings: Settings = Settings(),
                    timings: dict[str, float] | None = None) -> Measured:
    """Per-object values of every feature of one image ``(5, H, W)`` uint8, by feature name (see the module docstring).

    ``timings`` (optional) accumulates the seconds each family took.
    """
    objects = compartments(seg)
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    out: Measured = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # empty or flat objects: NaN, left out later
        warnings.simplefilter("ignore")
        for family in settings.families:
            start = time.perf_counter()
            out.update(_FAMILY[family](objects, pixels, settings))
            if timings is not None:
                timings[family] = timings.get(family, 0.0) + time.perf_counter() - start
    return out


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else 0.0


@functools.lru_cache(maxsize=None)
def feature_names(settings: Settings = Settings()) -> tuple[str, ...]:
    """The feature names for ``settings``, in column order (measured on a small made-up image of two cells)."""
    yy, xx = np.mgrid[:32, :32]
    nuclei = np.zeros((32, 32), np.int32)
    cells = np.zeros((32, 32), np.int32)
    for label, (cy, cx) in enumerate(((9, 9), (22, 21)), start=1):
        r = np.hypot(yy - cy, xx - cx)
        cells[r < 7] = label
        nuclei[r < 3] = label
    rng = np.random.default_rng(0)
    image = (rng.random((len(CHANNELS), 32, 32)) * 200 * (cells > 0) + 20).astype(np.uint8)
    return tuple(measure_objects(image, Segmentation(nuclei, cells), settings))


def image_features(image: np.ndarray, settings: Settings = Settings(),
                   timings: dict[str, float] | None = None) -> np.ndarray:
    """The features of one image ``(5, H, W)`` uint8 in the order of :func:`feature_names` (float32).

    ``timings`` (optional) accumulates the seconds of ``segment`` and of each family.
    """
    start = time.perf_counter()
    seg = segment(image)
    if timings is not None:
        timings["segment"] = timings.get("segment", 0.0) + time.perf_counter() - start
    names = feature_names(settings)
    if seg.count == 0:
        return np.zeros(len(names), dtype=np.float32)
    measured = measure_objects(image, seg, settings, timings)
    return np.asarray([_median(measured[name]) for name in names], dtype=np.float32)


# ----------------------------------------------------------------------------- the encoder

def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


class CellProfilerEncoder(CellFeaturiser):
    """CellProfiler features per image (median over cells), an :class:`~benchmark.core.encoders.registry.Encoder`."""

    code = ("benchmark.core.cells.segmentation", "benchmark.core.cells.featuriser",
            "benchmark.core.cells.cellprofiler")

    def __init__(self, settings: Settings = Settings()):
        self.settings = settings
        families = ALL if settings.families == FAMILIES else ",".join(settings.families)
        self.name = NAME if settings.families == DEFAULT_FAMILIES else f"{NAME}:{families}"
        self.features = list(feature_names(settings))
        self.dim = len(self.features)
        self.timings: dict[str, float] = {}  # seconds of segmentation and of each family so far
        self.images = 0                     # images measured so far
        self._memo: dict[bytes, np.ndarray] = {}  # features by SHA-256 of the image: each image is measured once

    def featurise(self, image: np.ndarray) -> np.ndarray:
        """The features of one image, measured once per distinct image (by its SHA-256)."""
        key = hashlib.sha256(np.ascontiguousarray(image)).digest()
        if key not in self._memo:
            self._memo[key] = image_features(image, self.settings, self.timings)
            self.images += 1
        return self._memo[key]

    def digest_params(self) -> dict[str, Any]:
        """The settings, the feature names and the versions of cp_measure and its numerics libraries."""
        return {"settings": dataclasses.asdict(self.settings), "features": self.features,
                "versions": {p: _version(p) for p in _LIBRARIES}}

    def cost(self) -> dict[str, Any]:
        """Milliseconds per image so far, in total and for segmentation and each family."""
        n = max(self.images, 1)
        per = {k: round(1000 * v / n, 2) for k, v in self.timings.items()}
        return {"images": self.images, "ms_per_image": round(sum(per.values()), 2), "breakdown_ms": per}


def parse_families(argument: str | None) -> tuple[str, ...]:
    """The families of a spec argument: ``None`` for :data:`DEFAULT_FAMILIES`, ``all``, or a comma-separated list."""
    if argument is None:
        return DEFAULT_FAMILIES
    if argument.strip() == ALL:
        return FAMILIES
    return tuple(f.strip() for f in argument.split(",") if f.strip())


def cellprofiler_encoder(argument: str | None, device: str) -> CellProfilerEncoder:
    """``cellprofiler``, ``cellprofiler:all`` or ``cellprofiler:<family>,...`` (module docstring); CPU whatever ``device``."""
    return CellProfilerEncoder(Settings(families=parse_families(argument)))
