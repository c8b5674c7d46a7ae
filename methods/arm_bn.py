"""ARM-BN — adaptive risk minimisation, BatchNorm variant (Zhang et al. 2021, "Adaptive Risk
Minimization: Learning to Adapt to Domain Shift"; applied to Cell Painting plates by
Sanchez-Fernandez et al. 2026).

Access: ``unlabeled``. Meta-training: every mini-batch holds images of one plate only
and BN runs in training mode, so each batch is normalised by its own plate's
statistics; the loss is cross-entropy on that batch. Test: BN statistics come from the
target plate's treated images, in chunks of the training batch size (one plate per
chunk, never mixed). No parameter changes at test time. Validation uses the same
plate-wise BN contexts as the test. Option ``full_domain_stats``: accumulate the test
statistics over all chunks of the plate instead (validation keeps the per-chunk contexts).
"""

from __future__ import annotations

import dataclasses

from ..config_bounds import at_least
from ..core.recipe.bn_policies import ChunkStats, PlateStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import OnePlateBatches, PlateContext
from ..registry import register_method
from ._convnet import ConvNetConfig, ConvNetMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ARMBNConfig(ConvNetConfig):
    """ARM-BN hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    n_treated: int = 32              # treated images per one-plate mini-batch and per test BN chunk (reference: 64)
    full_domain_stats: bool = False  # test: accumulate BN statistics over the whole plate instead of per chunk

    bounds = {"n_treated": at_least(1)}


@register_method
class ARMBN(ConvNetMethod):
    """One plate per mini-batch with BN batch statistics; the target plate's own statistics at test."""

    name = "arm_bn"
    access = AccessLevel.UNLABELED
    description = "ResNet meta-trained with one plate per batch; BN statistics from the target plate's treated images"
    Config = ARMBNConfig
    config: ARMBNConfig

    def recipe(self) -> Recipe:
        context = PlateContext(self.config.n_treated)  # a chunk of one plate's treated images
        return Recipe(batches=OnePlateBatches(context),
                      validation=ChunkStats(context),
                      test=PlateStats(context) if self.config.full_domain_stats else ChunkStats(context))
