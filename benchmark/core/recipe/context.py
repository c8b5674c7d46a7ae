"""Context models (ARM-CML; Zhang et al. 2021): a classifier that sees, besides each image, a summary
of the batch it comes from.

:class:`ContextNet` maps every image to a few feature maps; :class:`ContextualClassifier`
averages them over the batch (one plate, or one chunk of a plate) and appends the mean
to every image as extra input channels of the classifier (the context network may run on the
image average-pooled by ``pool``, its mean maps upsampled to the image's size). At test,
:class:`EvalChunks` predicts a plate chunk by chunk, each chunk one batch (so one context)
with BN in evaluation mode: a chunk's predictions depend on that chunk only, not on the
order of its images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MethodError
from .bn_policies import NormSource, PlateNorm
from .network import Network
from ..training.sampler import PlateContext, chunk_indices


class ContextNet(nn.Module):
    """Three ``kernel``×``kernel`` convolutions, ``in → hidden → hidden → out`` channels, BN + ReLU between,
    same padding: one ``out``-channel context map per image, of the image's size.

    With ``pool`` > 1 the convolutions run on the image average-pooled by ``pool`` (``pool``² times less
    arithmetic) and the maps are upsampled back to the image's size by nearest neighbour: every pixel
    gets the value of the pooled cell it was averaged into. Nearest is a copy, so the batch mean commutes
    with it exactly (:func:`batch_context` upsamples the one mean map, not every image's), and it invents
    no values between cells. ``pool`` must divide the image's sides. ``pool=1`` is the network at full
    resolution, with no pooling or upsampling at all.
    """

    def __init__(self, in_channels: int = 5, hidden: int = 64, out_channels: int = 12, kernel: int = 5,
                 pool: int = 1):
        super().__init__()
        if pool < 1:
            raise MethodError(f"context_pool must be >= 1, got {pool}")
        pad = kernel // 2
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel, padding=pad), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel, padding=pad), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, out_channels, kernel, padding=pad))
        self.out_channels, self.pool = out_channels, pool

    def pooled_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The maps at the pooled resolution, ``(N, out, H / pool, W / pool)``."""
        if self.pool == 1:
            return self.layers(x)
        check_context_pool(self.pool, {"input": (x.shape[-2], x.shape[-1])})
        return self.layers(F.avg_pool2d(x, self.pool))

    def upsample(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Pooled-resolution ``maps`` at the image's ``size`` (nearest neighbour; unchanged for ``pool=1``)."""
        return maps if self.pool == 1 else F.interpolate(maps, size=size, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.pooled_maps(x), x.shape[-2:])


def check_context_pool(pool: int, sizes: dict[str, tuple[int, int]]) -> None:
    """Raise :class:`MethodError` unless ``pool`` divides both sides of every image size in ``sizes`` (named by
    what they are, e.g. ``{"training crop (crop)": (40, 40)}``); the message lists the pools that fit."""
    bad = {what: size for what, size in sizes.items() if any(side % pool for side in size)}
    if not bad:
        return
    sides = {side for size in sizes.values() for side in size}
    fits = [p for p in range(1, min(sides) + 1) if all(side % p == 0 for side in sides)]
    shown = " and ".join(f"the {what}, {h}x{w} px" for what, (h, w) in bad.items())
    raise MethodError(f"context_pool {pool} does not divide {shown}: the context network runs on the image "
                      f"average-pooled by context_pool; set context_pool to one of {fits} (1 = full resolution)")


def batch_context(context_net: ContextNet, x: torch.Tensor) -> torch.Tensor:
    """The batch's context: the mean of ``context_net``'s maps over the images of ``x``, ``(1, c, h, w)`` at the
    images' size (averaged at the pooled resolution, then upsampled once)."""
    return context_net.upsample(context_net.pooled_maps(x).mean(dim=0, keepdim=True), x.shape[-2:])


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
