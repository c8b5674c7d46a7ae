"""5-channel ResNet backbones (timm) with BatchNorm, built by name.

``resnet_micro`` is the CPU default (BasicBlock, one block per stage, widths
16-32-64-128, ~0.33 M parameters); ``resnet18`` and ``resnet50`` are the standard
timm models with a 5-channel stem (``resnet50`` is the reference model of the
study, for GPU runs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...constants import CHANNELS, N_CLASSES
from ...errors import UnknownNameError


# timm is imported inside the builders: it takes seconds to load, and listing or
# checking methods must not pay for it.

def _micro(num_classes: int, in_chans: int) -> torch.nn.Module:
    from timm.models.resnet import BasicBlock, ResNet
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, in_chans=in_chans,
                  channels=(16, 32, 64, 128), stem_width=16)


def _small(num_classes: int, in_chans: int) -> torch.nn.Module:
    from timm.models.resnet import BasicBlock, ResNet
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, in_chans=in_chans,
                  channels=(32, 64, 128, 256), stem_width=32)


def _timm(name: str) -> Callable[[int, int], torch.nn.Module]:
    def build(num_classes: int, in_chans: int) -> torch.nn.Module:
        import timm
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    return build


BACKBONES: dict[str, Callable[[int, int], torch.nn.Module]] = {
    "resnet_micro": _micro,
    "resnet_small": _small,
    "resnet18": _timm("resnet18"),
    "resnet50": _timm("resnet50"),
}
"""Backbone builders by name: ``(num_classes, in_chans) -> model``."""


def create_backbone(name: str, num_classes: int = N_CLASSES, in_chans: int = len(CHANNELS)) -> torch.nn.Module:
    """A freshly initialised 5-channel ResNet with BatchNorm.

    Parameters
    ----------
    name : one of :data:`BACKBONES` (unknown names list the valid ones).
    num_classes : size of the classifier head; 0 gives a feature extractor
        (pooled features, ``model.num_features`` wide).
    in_chans : input channels (5 for Cell Painting).
    """
    if name not in BACKBONES:
        raise UnknownNameError("backbone", name, BACKBONES)
    return BACKBONES[name](num_classes, in_chans)


def n_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
