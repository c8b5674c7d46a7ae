"""cell_count — the number of nuclei in each image, standardised per plate on the plate's DMSO
images, and a multinomial logistic regression: the floor every method must clear.

Access: ``controls``. Each image becomes one number, the count of the nuclei segmented on its DNA
channel (:mod:`benchmark.core.cells.segmentation`: Otsu threshold and an intensity-and-shape
watershed, as CellProfiler's IdentifyPrimaryObjects; features by the ``cell-count`` featuriser of
:mod:`benchmark.core.cells.count`). On every plate it is normalised with the median and MAD of that
plate's DMSO images (``profile_mad``'s correction, pycytominer's ``mad_robustize``), which turns
the count into "more or fewer cells than this plate's untreated wells" and removes a plate's
seeding density; then the profile pipeline's logistic regression (``C`` by validation log loss).
A target plate contributes only its DMSO images; each treated image is classified on its own.

Why it is the floor: many compounds act through proliferation and toxicity, and cell count alone is
a strong baseline on bioactivity benchmarks; per-well mean profiles already reach ~94 % MoA accuracy
on BBBC021. A method that does not beat a count of nuclei has not shown that it reads morphology, and
a method's gain over it is what more than viability adds. It also audits the dataset: accuracy
here is what density (seeding, edge wells, toxicity) explains, a shortcut an image model can take.

Deviations from the reference: the count is per image (site), not per well, since a target plate's
wells never reach a method; segmentation is a scikit-image rebuild of JUMP's CellProfiler settings
(see the segmentation module for where it differs); ``featuriser="cell-count:areas"`` adds the five
channels' stained-area fractions, which go beyond a pure count. Nothing is trained but the
regression: features are cached per image content like the profile methods' embeddings.
"""

from __future__ import annotations

import dataclasses

from ..core.profiles.corrections import Correction, PlateMAD
from ..registry import register_method
from ._profile import ProfileConfig, ProfileMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class CellCountConfig(ProfileConfig):
    """cell_count hyper-parameters."""

    featuriser: str = "cell-count"  # "cell-count" (nuclei per image) or "cell-count:areas" (+ stained-area fractions)
    epsilon: float = 1e-18          # added to 1.4826 · MAD (pycytominer's default)
    metrics: bool = False           # no correction metrics: cosine scores of a 1-number profile mean nothing


@register_method
class CellCount(ProfileMethod):
    """Nuclei per image, robust-standardised on the plate's DMSO, logistic regression."""

    name = "cell_count"
    access = AccessLevel.CONTROLS
    seeds_share_fold_work = True  # the fold's features are cached and the same for every seed
    description = "nuclei per image, per-plate robust MAD normalisation on DMSO + logistic regression (the floor)"
    Config = CellCountConfig
    config: CellCountConfig

    def correction(self, seed: int) -> Correction:
        return PlateMAD(self.config.epsilon)
