"""AdaBN — adaptive batch normalisation (Li et al. 2016, "Revisiting Batch Normalization For
Practical Domain Adaptation", arXiv:1603.04779).

Access: ``unlabeled``. Training and model selection are ERM's (cross-entropy on mixed
batches, BN running statistics learned over all training plates; ERM's config). At test
time every BN layer's statistics are re-estimated on the target plate's treated images:
the plate is forwarded with batch statistics and the statistics are averaged over its
chunks (one chunk when the plate has at most :data:`PLATE_CHUNK` images), then every
image is predicted in evaluation mode with those statistics. The weights never change;
the plate is the target domain. In a sealed run the ERM model comes from the source-model
cache when the fold's model of the same seed and config was trained before
(:mod:`benchmark.core.training.model_cache`).
"""

from __future__ import annotations

from ..core.recipe.bn_policies import PlateStats, RunningStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches, PlateContext
from ..registry import register_method
from ._convnet import ConvNetMethod
from .base import AccessLevel
from .erm import ERMConfig


PLATE_CHUNK = 256
"""Treated images per BN-statistics chunk of the target plate: the whole plate in one chunk up to this size (the
reference estimates over the whole plate; the bound caps the memory of one forward pass)."""


@register_method
class AdaBN(ConvNetMethod):
    """ERM training; BN statistics re-estimated on each target plate's treated images."""

    name = "adabn"
    access = AccessLevel.UNLABELED
    description = "ERM-trained ResNet; BN statistics re-estimated on the target plate's treated images (AdaBN)"
    Config = ERMConfig
    config: ERMConfig
    starts_from = ERMConfig  # trains exactly as ERM: a sealed run loads the fold's cached ERM model

    def recipe(self) -> Recipe:
        whole_plate = PlateContext(n_treated=PLATE_CHUNK)  # the plate's treated images, in chunks
        return Recipe(batches=MixedBatches(self.config.batch_size),      # ERM's training ...
                      validation=RunningStats(),                         # ... and model selection
                      test=PlateStats(whole_plate, min_treated=2))
