"""DANN — domain-adversarial neural networks (Ganin et al. 2016, "Domain-Adversarial Training of Neural
Networks"; run transductively on Cell Painting plates as in Sanchez-Fernandez et al. 2026).

Access: ``transductive``. Every training step concatenates a mixed labelled batch of the
training plates with an unlabelled batch of the fold's target plates' treated images. The
pooled features the classifier head sees also feed a domain head, behind a gradient-reversal
layer (λ = 1), that predicts every image's domain: its plate, one id per training plate and per
target plate. Loss = cross-entropy(class, labelled rows) + ``domain_weight`` (0.5) ×
cross-entropy(domain, all rows): the head learns to tell plates apart, the features below the
reversal learn to hide them. The domain head trains with its own learning rate (1e-4), the rest
as ERM. Test: evaluation mode (BN running statistics), no adaptation; model selection on the
validation plates' cross-entropy with running statistics, as ERM.

Choices the reference description leaves open: the domain head is one hidden layer of
``domain_hidden`` units with ReLU (``domain_hidden=0``: a linear head), created with the model
(seeded by fit's seed) and discarded after training; λ stays 1 throughout (no ramp-up schedule
as in Ganin et al.); the head's learning rate follows the run's schedule with its own peak
(under the CPU default's plateau schedule: warmed up to 1e-4, divided as the classifier's is; the
weight average that is validated and kept covers the classifier, not the head); target images of a step are
drawn from all target plates pooled, as many as labelled images (``n_target=0``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config_bounds import at_least, positive
from ..constants import DMSO_LABEL
from ..core.recipe.bn_policies import RunningStats
from ..core.recipe.features import classifier_head, features_and_logits
from ..core.recipe.gradient_reversal import GradientReversal
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches, WithTargetImages
from ..core.training.loop import Step, TrainingLoss
from ..registry import register_method
from ._convnet import ConvNetConfig, ConvNetMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class DANNConfig(ConvNetConfig):
    """DANN hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    batch_size: int = 32         # labelled treated images of the training plates per step (reference: 64)
    n_target: int = 0            # unlabelled treated images of the target plates per step (0: batch_size)
    domain_weight: float = 0.5   # weight of the domain cross-entropy (reference: 0.5)
    reversal: float = 1.0        # gradient-reversal weight λ (reference: 1)
    domain_lr: float = 1e-4      # Adam (peak) learning rate of the domain head (reference: 1e-4)
    domain_hidden: int = 128     # hidden units of the domain head (0: linear)

    bounds = {"batch_size": at_least(1), "n_target": at_least(0), "domain_weight": at_least(0),
              "reversal": at_least(0), "domain_lr": positive(), "domain_hidden": at_least(0)}


def domain_head(n_features: int, n_domains: int, hidden: int, lam: float) -> nn.Sequential:
    """Gradient reversal, then a classifier of ``n_domains`` domains (one hidden ReLU layer unless ``hidden=0``)."""
    layers: list[nn.Module] = [GradientReversal(lam)]
    if hidden > 0:
        layers += [nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_domains)]
    else:
        layers.append(nn.Linear(n_features, n_domains))
    return nn.Sequential(*layers)


class DomainAdversarialStep:
    """The training loss of one step: class cross-entropy (labelled rows) + ``weight`` × domain cross-entropy
    (all rows) of ``head`` on the pooled features."""

    def __init__(self, head: nn.Module, weight: float):
        self.head, self.weight = head, weight

    def __call__(self, model: torch.nn.Module, step: Step) -> torch.Tensor:
        assert step.domains is not None
        features, logits = features_and_logits(model, step.inputs)
        classes = F.cross_entropy(logits, step.targets, ignore_index=DMSO_LABEL)
        return classes + self.weight * F.cross_entropy(self.head(features.float()), step.domains)


@dataclasses.dataclass(frozen=True)
class DomainAdversarialLoss:
    """A :class:`DomainAdversarialStep` with a fresh domain head, built for each fit (see ``LossWithParameters``)."""

    weight: float
    lam: float
    head_lr: float
    hidden: int

    def build(self, model: torch.nn.Module, n_domains: int) -> tuple[TrainingLoss, list[dict[str, Any]]]:
        """The loss with a new domain head on ``model``'s device, and the head's parameter group (own lr)."""
        layer = classifier_head(model)
        head = domain_head(layer.in_features, n_domains, self.hidden, self.lam).to(layer.weight.device)
        return DomainAdversarialStep(head, self.weight), [{"params": list(head.parameters()), "lr": self.head_lr}]


@register_method
class DANN(ConvNetMethod):
    """Cross-entropy + a plate classifier behind gradient reversal on the features; eval mode at test."""

    name = "dann"
    access = AccessLevel.TRANSDUCTIVE
    description = ("ResNet trained adversarially against a plate classifier (gradient reversal) over training and "
                   "target plates (target images unlabelled in fit); BN running statistics at test")
    Config = DANNConfig
    config: DANNConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        return Recipe(batches=WithTargetImages(MixedBatches(cfg.batch_size), cfg.n_target or cfg.batch_size),
                      validation=RunningStats(),
                      test=RunningStats(),
                      loss=DomainAdversarialLoss(cfg.domain_weight, cfg.reversal, cfg.domain_lr, cfg.domain_hidden))
