"""profile_sphering — ZCA-cor sphering of embeddings fitted on DMSO (pycytominer ``Spherize``; Kessy et al. 2018,
"Optimal Whitening and Decorrelation"; as in JUMP's profiling pipeline, Arevalo et al. 2024).

Access: ``controls``. The profile pipeline (:mod:`benchmark.core.profiles.pipeline`) with, per plate, the
ZCA-cor whitening of that plate's DMSO embeddings: standardise every feature with the DMSO mean
and standard deviation, then multiply by the inverse square root of the DMSO correlation matrix
(pycytominer's ``Spherize(method="ZCA-cor")``, ε added to the singular values), so the plate's
DMSO images have identity covariance. A target plate is sphered with its own DMSO images (JUMP
fits one sphering on all plates' negative controls; per plate, the transform needs nothing
beyond the ``controls`` access). Then the same logistic regression as every ``profile_*`` method.
"""

from __future__ import annotations

import dataclasses

from ..core.profiles.corrections import Correction, PlateSphering
from ._profile import ProfileConfig, ProfileMethod
from ..registry import register_method
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ProfileSpheringConfig(ProfileConfig):
    """profile_sphering hyper-parameters."""

    epsilon: float = 1e-6  # added to the DMSO singular values before inverting (pycytominer's default)


@register_method
class ProfileSphering(ProfileMethod):
    """Per-plate ZCA-cor sphering of embeddings on the plate's DMSO, logistic regression."""

    name = "profile_sphering"
    access = AccessLevel.CONTROLS
    description = "frozen encoder embeddings, per-plate ZCA-cor sphering on DMSO + logistic regression"
    Config = ProfileSpheringConfig
    config: ProfileSpheringConfig

    def correction(self, seed: int) -> Correction:
        return PlateSphering(self.config.epsilon)
