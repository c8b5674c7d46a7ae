"""profile_combat — ComBat on embeddings of all plates jointly (Johnson et al. 2007, "Adjusting batch effects in
microarray expression data using empirical Bayes methods"; inmoose's ``pycombat_norm``; compared in Arevalo et al. 2024).

Access: ``transductive``. The profile pipeline (:mod:`benchmark.core.profiles.pipeline`) with ComBat
fitted in ``fit`` on every image it sees: the training and validation plates and the target
plates of ``train.targets`` (treated and DMSO), with the plate (or the source) as the batch and
no covariates (no class labels). Per batch and feature, a location and a scale, shrunk towards
their batch-wide priors by empirical Bayes, are removed. Without covariates ComBat is an affine
map per batch and feature, so an image the fit did not see (held-out wells of a training plate)
gets its batch's map. Target plates form one batch ``(target)`` when the batch is the source.
Then the same logistic regression as every ``profile_*`` method.
"""

from __future__ import annotations

import dataclasses

from ..core.profiles.corrections import ComBat, Correction, check_batch_key, require
from ._profile import ProfileConfig, ProfileMethod
from ..registry import register_method
from .base import AccessLevel, MethodConfig


@dataclasses.dataclass(frozen=True)
class ProfileCombatConfig(ProfileConfig):
    """profile_combat hyper-parameters."""

    batch_key: str = "plate"  # ComBat's batch: "plate" or "source" (all target plates: one batch)
    parametric: bool = True   # parametric empirical Bayes priors (False: non-parametric, slower)
    mean_only: bool = False   # adjust only the location, not the scale

    def __post_init__(self) -> None:
        super().__post_init__()  # the bounds
        check_batch_key(self.batch_key)  # refuse before any run starts, not inside fit


@register_method
class ProfileCombat(ProfileMethod):
    """ComBat on the embeddings of all plates (target plates included, no labels), logistic regression."""

    name = "profile_combat"
    access = AccessLevel.TRANSDUCTIVE
    description = "frozen encoder embeddings, ComBat fitted on all plates jointly (targets without labels) + logistic regression"
    Config = ProfileCombatConfig
    config: ProfileCombatConfig

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu", verbose: bool = False):
        super().__init__(config, device=device, verbose=verbose)
        require("inmoose.pycombat", "inmoose>=0.9", self.name)  # a missing inmoose fails here, with the install hint

    def correction(self, seed: int) -> Correction:
        c = self.config
        return ComBat(c.batch_key, parametric=c.parametric, mean_only=c.mean_only)
