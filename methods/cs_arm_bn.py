"""CS-ARM-BN — control-stabilised ARM-BN (Sanchez-Fernandez et al. 2026, "Closing the Domain Gap
in Biomedical Imaging by In-Context Control Samples").

Access: ``unlabeled``. As ARM-BN, but every training mini-batch is ``n_treated``
labelled positive-control images plus ``n_controls`` DMSO images of the same plate (by
default twice as many, the reference's ratio: 32 + 64 on CPU, 64 + 128 in the reference);
BN statistics are computed over the union and the loss uses only the treated images.
At test time (and in validation) the same composition: each chunk of the target plate's
treated images together with ``n_controls`` of its DMSO images, drawn afresh at random
for every chunk (seeded by the run and the plate), forms the BN context.
Controls carry no biology that differs between plates, so they anchor the statistics to
technical variation instead of the batch's class mix. Option ``full_domain_stats``:
accumulate the test statistics over all contexts of the plate.

The recipe is ARM-BN's with a larger context; the class composes the same shared parts
rather than subclassing ARM-BN, so each file reads as its own paper's description.
"""

from __future__ import annotations

import dataclasses

from ..config_bounds import at_least
from ..core.recipe.bn_policies import ChunkStats, PlateStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import OnePlateBatches, PlateContext
from ..registry import register_method
from ._convnet import ConvNetMethod
from .arm_bn import ARMBNConfig
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class CSARMBNConfig(ARMBNConfig):
    """CS-ARM-BN hyper-parameters (see ARMBNConfig and ConvNetConfig for the others)."""

    n_controls: int = 64  # DMSO images of the same plate in every BN context: 2 x n_treated, as the reference's 128

    bounds = {"n_controls": at_least(1)}


@register_method
class CSARMBN(ConvNetMethod):
    """One plate per mini-batch, its DMSO images in every BN context (not in the loss), in training and test."""

    name = "cs_arm_bn"
    access = AccessLevel.UNLABELED
    description = "ARM-BN whose BN statistics also include the plate's DMSO controls (loss on treated only)"
    Config = CSARMBNConfig
    config: CSARMBNConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        context = PlateContext(cfg.n_treated, n_controls=cfg.n_controls)  # treated chunk ∪ DMSO of the same plate
        seed = getattr(self, "seed_", 0)  # with the plate's name, seeds the random controls of every chunk
        return Recipe(batches=OnePlateBatches(context),
                      validation=ChunkStats(context, seed),
                      test=PlateStats(context, seed=seed) if cfg.full_domain_stats else ChunkStats(context, seed))
