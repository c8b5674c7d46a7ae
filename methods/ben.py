"""BEN — batch-effect normalisation: BatchNorm statistics from the plate's DMSO controls only
(Lin & Lu 2022, "Incorporating knowledge of plates in batch normalization improves
generalization of deep learning for microscopy images").

Access: ``controls``. Training: every mini-batch is ``n_treated`` labelled treated
images plus ``n_controls`` DMSO images of the same plate; every BN layer normalises the
whole batch with the mean and variance of the *DMSO rows only* (as in the reference, no
gradient flows through them, and they are float32 under mixed precision), and the loss
uses only the treated images. Test (and validation): one forward pass of the target
plate's DMSO images gives every layer's DMSO statistics; each treated image is then
normalised with them. A treated image's prediction therefore depends on itself and the
plate's controls only, never on the plate's other treated images.
"""

from __future__ import annotations

import dataclasses

from ..config_bounds import at_least
from ..core.recipe.bn_policies import ControlRows, ControlStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import OnePlateBatches, PlateContext
from ..registry import register_method
from ._convnet import ConvNetConfig, ConvNetMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class BENConfig(ConvNetConfig):
    """BEN hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    n_treated: int = 32   # treated images per one-plate training mini-batch
    n_controls: int = 32  # DMSO images of the same plate per training mini-batch: the only source of BN statistics

    bounds = {"n_treated": at_least(1), "n_controls": at_least(1)}


@register_method
class BEN(ConvNetMethod):
    """One plate per mini-batch; BN statistics from that plate's DMSO images only, in training and test."""

    name = "ben"
    access = AccessLevel.CONTROLS
    description = "ResNet whose BN statistics come from the plate's DMSO images only, in training and test (BEN)"
    Config = BENConfig
    config: BENConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        return Recipe(batches=OnePlateBatches(PlateContext(cfg.n_treated, n_controls=cfg.n_controls)),
                      training_norm=ControlRows(),  # every BN layer: mean and variance of the batch's DMSO rows
                      validation=ControlStats(),
                      test=ControlStats())
