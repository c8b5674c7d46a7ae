"""profile_none — frozen-encoder profiles without any batch correction: the baseline of the profile methods.

Access: ``none``. The profile pipeline (:mod:`benchmark.core.profiles.pipeline`): a frozen featuriser
(default the shipped self-supervised encoder ``platebench-ssl``) embeds every image, and the
same multinomial logistic regression as every other ``profile_*`` method (``C`` chosen by
validation loss) classifies the raw embeddings. Nothing of a target plate is used: each image
is classified from its own embedding. What the corrections (``profile_mad``,
``profile_sphering``, ``profile_harmony``, ``profile_combat``) add is measured against it;
the fit report holds the correction metrics of the uncorrected profiles.
"""

from __future__ import annotations

import dataclasses

from ..core.profiles.corrections import Correction, NoCorrection
from ._profile import ProfileConfig, ProfileMethod
from ..registry import register_method
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ProfileNoneConfig(ProfileConfig):
    """profile_none hyper-parameters (the pipeline's only; see ProfileConfig)."""


@register_method
class ProfileNone(ProfileMethod):
    """Frozen-encoder embeddings, no correction, logistic regression."""

    name = "profile_none"
    access = AccessLevel.NONE
    description = "frozen encoder embeddings, no batch correction + logistic regression (the profile baseline)"
    Config = ProfileNoneConfig
    config: ProfileNoneConfig

    def correction(self, seed: int) -> Correction:
        return NoCorrection()
