"""ARM-CML — adaptive risk minimisation, contextual meta-learning variant (Zhang et al. 2021, "Adaptive
Risk Minimization: Learning to Adapt to Domain Shift"; applied to Cell Painting plates by
Sanchez-Fernandez et al. 2026).

Access: ``unlabeled``. A context network (three 5×5 convolutions, 5 → 64 → 64 → 12 channels,
BN + ReLU between, same padding) maps every image to 12 maps; the context of a batch is the
mean of those maps over the batch, appended to every image of the batch as 12 extra input
channels of the classifier (a ResNet of 5 + 12 = 17 input channels). Both networks are trained
jointly with cross-entropy on one-plate batches of ``n_treated`` images, so a context always
summarises one plate. Test: the target plate's images are predicted in chunks of ``n_treated``
(one plate per chunk, never mixed), each chunk's context its own mean, BN (of both networks) in
evaluation mode with the running statistics of training. No parameter changes at test time.
Validation predicts every validation plate the same way.

Choices the reference description leaves open: at test both networks use BN running
statistics (evaluation mode, as DomainBed's ARM predicts; the plate enters only through the
context), and the context network sees the same per-channel standardised input as the
classifier. The context network's 64-channel 5×5 convolutions at full crop resolution make a
training step about 12× as costly as ERM's on the CPU default (``resnet_micro``, 40 px).
"""

from __future__ import annotations

import dataclasses

import torch

from ..config_bounds import at_least
from ..constants import CHANNELS
from ..core.training.backbones import create_backbone
from ..core.recipe.context import ContextNet, ContextualClassifier, EvalChunks
from ..core.recipe.axes import Recipe
from ..core.training.sampler import OnePlateBatches, PlateContext
from ..registry import register_method
from ._convnet import ConvNetConfig, ConvNetMethod
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ARMCMLConfig(ConvNetConfig):
    """ARM-CML hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    n_treated: int = 32         # images per one-plate mini-batch and per test chunk: one context (reference: 64)
    context_channels: int = 12  # context maps appended to every image (reference: 12)
    context_hidden: int = 64    # channels of the context network's hidden convolutions (reference: 64)
    context_kernel: int = 5     # side of the context network's convolutions (reference: 5)

    bounds = {"n_treated": at_least(1), "context_channels": at_least(1), "context_hidden": at_least(1),
              "context_kernel": at_least(1)}


@register_method
class ARMCML(ConvNetMethod):
    """A context network's mean maps over a one-plate batch as extra input channels; per-chunk context at test."""

    name = "arm_cml"
    access = AccessLevel.UNLABELED
    description = ("ResNet fed each image plus the mean context maps of its one-plate batch (context network "
                   "trained jointly); context from each chunk of the target plate at test")
    Config = ARMCMLConfig
    config: ARMCMLConfig

    def build_model(self) -> torch.nn.Module:
        cfg = self.config
        context = ContextNet(len(CHANNELS), cfg.context_hidden, cfg.context_channels, cfg.context_kernel)
        classifier = create_backbone(cfg.backbone, in_chans=len(CHANNELS) + cfg.context_channels)
        return ContextualClassifier(context, classifier)

    def recipe(self) -> Recipe:
        context = PlateContext(self.config.n_treated)  # a chunk of one plate's treated images
        return Recipe(batches=OnePlateBatches(context),
                      validation=EvalChunks(context),
                      test=EvalChunks(context))
