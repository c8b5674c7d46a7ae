"""TENT — fully test-time adaptation by entropy minimisation (Wang et al. 2021, "Tent: Fully Test-Time
Adaptation by Entropy Minimization", ICLR, arXiv:2006.10726).

Access: ``unlabeled``. The source model is ERM's (the same training, config and model selection; in a sealed
worker it is loaded from the source-model cache, :mod:`benchmark.core.training.model_cache`). On every target plate
the model starts again from the source weights with a fresh Adam optimiser (lr 1e-3): every BN layer
normalises each batch by its own statistics, only the BN weight and bias are trainable, and one shuffled pass
over the plate's treated images in batches of ERM's batch size takes one step per batch on the batch's mean
softmax entropy, online (the pass is not reset between batches of a plate). Each batch is predicted by the
forward pass *before* its update. The shuffle is seeded by the fit seed and the plate's name.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config_bounds import positive
from ..core.recipe.bn_policies import RunningStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches
from ..core.recipe.tta import Objective, TestTimeOptimisation, softmax_entropy
from ..registry import register_method
from ._convnet import ConvNetMethod
from .base import AccessLevel
from .erm import ERMConfig


def entropy_objective(rng: np.random.Generator) -> Objective:
    """TENT's objective: the batch's mean softmax entropy; the reported logits are the same forward pass."""
    def objective(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs)
        return softmax_entropy(logits).mean(), logits
    return objective


@dataclasses.dataclass(frozen=True)
class TentConfig(ERMConfig):
    """TENT hyper-parameters: ERM's (the source model) and the test-time optimiser's."""

    tta_lr: float = 1e-3  # Adam learning rate of the BN affine parameters on a target plate (reference: 1e-3)

    bounds = {"tta_lr": positive()}


@register_method
class Tent(ConvNetMethod):
    """ERM source model; per target plate, BN affine parameters trained online to minimise prediction entropy."""

    name = "tent"
    access = AccessLevel.UNLABELED
    description = ("ERM source model; on each target plate BN batch statistics and one online pass of Adam on the "
                   "BN affine parameters minimising entropy (TENT)")
    Config = TentConfig
    config: TentConfig
    starts_from = ERMConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        return Recipe(batches=MixedBatches(cfg.batch_size),  # ERM's training ...
                      validation=RunningStats(),              # ... and model selection
                      test=TestTimeOptimisation(entropy_objective, batch_size=cfg.batch_size, lr=cfg.tta_lr,
                                                seed=getattr(self, "seed_", 0)))
