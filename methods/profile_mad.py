"""profile_mad — plate-wise robust MAD normalisation of embeddings on DMSO (pycytominer ``mad_robustize``,
as in JUMP's production profiling pipeline; Chandrasekaran et al. 2023, Arevalo et al. 2024).

Access: ``controls``. The profile pipeline (:mod:`benchmark.core.profiles.pipeline`) with, for every
plate and every feature, ``(x - median_DMSO) / (1.4826 · MAD_DMSO + ε)``: median and median
absolute deviation over that plate's DMSO images only (pycytominer's ``RobustMAD``). A target
plate is normalised with its own DMSO images; then the same logistic regression as every
``profile_*`` method.
"""

from __future__ import annotations

import dataclasses

from ..core.profiles.corrections import Correction, PlateMAD
from ._profile import ProfileConfig, ProfileMethod
from ..registry import register_method
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ProfileMADConfig(ProfileConfig):
    """profile_mad hyper-parameters."""

    epsilon: float = 1e-18  # added to 1.4826 · MAD (pycytominer's default)


@register_method
class ProfileMAD(ProfileMethod):
    """Per-plate robust MAD normalisation of embeddings on the plate's DMSO, logistic regression."""

    name = "profile_mad"
    access = AccessLevel.CONTROLS
    description = "frozen encoder embeddings, per-plate robust MAD normalisation on DMSO + logistic regression"
    Config = ProfileMADConfig
    config: ProfileMADConfig

    def correction(self, seed: int) -> Correction:
        return PlateMAD(self.config.epsilon)
