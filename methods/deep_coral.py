"""Deep CORAL — correlation alignment of deep features (Sun & Saenko 2016, "Deep CORAL: Correlation
Alignment for Deep Domain Adaptation"; run transductively on Cell Painting plates as in
Sanchez-Fernandez et al. 2026).

Access: ``transductive``. Every training step concatenates a mixed labelled batch of the
training plates with an unlabelled batch of the fold's target plates' treated images. The loss
is cross-entropy on the labelled part plus ``coral_weight`` (0.1) × the mean, over the pairs of
domains (plates: training and target) present in the step with at least 2 images each, of
``mean((μ_i − μ_j)²) + mean((Σ_i − Σ_j)²)`` of the pooled features the classifier head sees
(covariances with ``n − 1``). Test: evaluation mode (BN running statistics), no adaptation;
model selection on the validation plates' cross-entropy with running statistics, as ERM.

Choices the reference description leaves open: the target images of a step are drawn from all
target plates pooled (each once per pass), so, as the labelled part, they spread over several
plates (with mixed batches of 32 over 14 training plates, a plate has 2–3 images in a step and
about a third of them miss the 2-image minimum); the unlabelled part is as large as the
labelled one (``n_target=0``); BN batch statistics in training are those of the whole
concatenated batch; the penalty is computed in float32 (also under bf16 autocast on CUDA).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..config_bounds import at_least
from ..constants import DMSO_LABEL
from ..core.recipe.bn_policies import RunningStats
from ..core.recipe.coral import coral_penalty
from ..core.recipe.features import features_and_logits
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches, WithTargetImages
from ..core.training.loop import Step
from ..registry import register_method
from ._convnet import ConvNetConfig, ConvNetMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class DeepCORALConfig(ConvNetConfig):
    """Deep CORAL hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    batch_size: int = 32        # labelled treated images of the training plates per step (reference: 64)
    n_target: int = 0           # unlabelled treated images of the target plates per step (0: batch_size)
    coral_weight: float = 0.1   # weight of the CORAL penalty (reference: 0.1)
    min_domain_images: int = 2  # a domain takes part in a step's penalty with at least this many images

    bounds = {"batch_size": at_least(1), "n_target": at_least(0), "coral_weight": at_least(0),
              "min_domain_images": at_least(2)}


@dataclasses.dataclass(frozen=True)
class CoralLoss:
    """Cross-entropy of the labelled rows + ``weight`` × the CORAL penalty between the step's domains."""

    weight: float
    min_images: int = 2

    def __call__(self, model: torch.nn.Module, step: Step) -> torch.Tensor:
        features, logits = features_and_logits(model, step.inputs)
        assert step.domains is not None
        classes = F.cross_entropy(logits, step.targets, ignore_index=DMSO_LABEL)
        return classes + self.weight * coral_penalty(features, step.domains, self.min_images)


@register_method
class DeepCORAL(ConvNetMethod):
    """Cross-entropy + CORAL alignment of feature moments across training and target plates; eval mode at test."""

    name = "deep_coral"
    access = AccessLevel.TRANSDUCTIVE
    description = ("ResNet trained with cross-entropy + CORAL penalty aligning feature moments of training and "
                   "target plates (target images unlabelled in fit); BN running statistics at test")
    Config = DeepCORALConfig
    config: DeepCORALConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        return Recipe(batches=WithTargetImages(MixedBatches(cfg.batch_size), cfg.n_target or cfg.batch_size),
                      validation=RunningStats(),
                      test=RunningStats(),
                      loss=CoralLoss(cfg.coral_weight, cfg.min_domain_images))
