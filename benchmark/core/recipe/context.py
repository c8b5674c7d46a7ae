"""Context models (ARM-CML; Zhang et al. 2021): a classifier that sees, besides each image, a summary
of the batch it comes from.

:class:`ContextNet` maps every image to a few feature maps; :class:`ContextualClassifier`
averages them over the batch (one plate, or one chunk of a plate) and appends the mean
to every image as extra input channels of the classifier. At test, :class:`EvalChunks`
predicts a plate chunk by chunk, each chunk one batch (so one context) with BN in
evaluation mode: a chunk's predictions depend on that chunk only, not on the order of
its images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .bn_policies import NormSource, PlateNorm
from .network import Network
from ..training.sampler import PlateContext, chunk_indices


class ContextNet(nn.Module):
    """Three ``kernel``×``kernel`` convolutions, ``in → hidden → hidden → out`` channels, BN + ReLU between,
    same padding: one ``out``-channel context map per image, of the image's size."""

    def __init__(self, in_channels: int = 5, hidden: int = 64, out_channels: int = 12, kernel: int = 5):
        super().__init__()
        pad = kernel // 2
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel, padding=pad), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel, padding=pad), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, out_channels, kernel, padding=pad))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def batch_context(context_net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The batch's context: the mean of ``context_net``'s maps over the images of ``x``, ``(1, c, h, w)``."""
    return context_net(x).mean(dim=0, keepdim=True)


class ContextualClassifier(nn.Module):
    """``classifier(cat[x, context(batch)])``: every image of a batch gets the batch's mean context maps
    as extra input channels (``classifier`` takes ``in_channels + context_net.out_channels``)."""

    def __init__(self, context_net: ContextNet, classifier: nn.Module):
        super().__init__()
        self.context_net, self.classifier = context_net, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = batch_context(self.context_net, x).expand(len(x), -1, -1, -1)
        return self.classifier(torch.cat([x, context.to(x.dtype)], dim=1))

    def get_classifier(self) -> nn.Module:
        """The classifier's final linear layer (see :func:`benchmark.core.recipe.features.classifier_head`)."""
        return self.classifier.get_classifier()


@dataclass(frozen=True)
class ChunkBatches:
    """A plate's images predicted in near-equal chunks of at most ``n`` images, each chunk one batch in eval mode."""

    n: int

    def logits(self, net: Network, pixels: torch.Tensor) -> torch.Tensor:
        net.model.eval()
        with torch.no_grad():
            return torch.cat([net.model(net.inputs(pixels[c])) for c in chunk_indices(len(pixels), self.n)])


@dataclass(frozen=True)
class EvalChunks(NormSource):
    """Each chunk of the plate's predicted images is one batch (a context model's context), BN in evaluation
    mode (running statistics): nothing is estimated from the plate beforehand."""

    context: PlateContext

    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        return ChunkBatches(self.context.n_treated)
