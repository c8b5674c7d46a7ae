"""ERM — empirical risk minimisation (Vapnik 1991; the baseline of Sanchez-Fernandez et al. 2026).

Access: ``none``. A 5-channel ResNet is trained with cross-entropy on the labelled
positive-control images of the training plates, drawn in mixed mini-batches. At test
time BatchNorm uses its running statistics (``eval()``): each image is classified on
its own, and nothing of the target plate is used. Model selection uses the same
running statistics on the validation plates.
"""

from __future__ import annotations

import dataclasses

from ..config_bounds import at_least
from ..core.recipe.bn_policies import RunningStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches
from ..registry import register_method
from ._convnet import ConvNetConfig, ConvNetMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ERMConfig(ConvNetConfig):
    """ERM hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    batch_size: int = 32  # treated images per mixed mini-batch (reference: 64)

    bounds = {"batch_size": at_least(1)}


@register_method
class ERM(ConvNetMethod):
    """Cross-entropy on mixed training batches; BN running statistics at test time."""

    name = "erm"
    access = AccessLevel.NONE
    description = "ResNet trained with cross-entropy on mixed batches; BN running statistics at test (no adaptation)"
    Config = ERMConfig
    config: ERMConfig
    starts_from = ERMConfig  # a sealed run caches its model for AdaBN, TENT, DeYO, ROID (and loads it when there)

    def recipe(self) -> Recipe:
        return Recipe(batches=MixedBatches(self.config.batch_size),
                      validation=RunningStats(),
                      test=RunningStats())
