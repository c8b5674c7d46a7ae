"""Where each BN layer's statistics come from: the BN axis of the ResNet methods, as policy objects.

**In training** (:class:`TrainingNorm`): :class:`BatchStatistics` — every BN layer
normalises a mini-batch by the statistics of all its rows (with DMSO context in the
batch: the union of treated and controls); :class:`ControlRows` — by the statistics of
the batch's DMSO rows only (BEN).

**In validation and at test** (:class:`NormSource`), for one plate:

=====================  =================================================================
:class:`RunningStats`  the running statistics learned in training; each image on its own (ERM)
:class:`ChunkStats`    each chunk of the plate's images (+ its DMSO) by its own statistics (ARM-BN, CS-ARM-BN)
:class:`PlateStats`    statistics accumulated over the whole plate, then evaluation mode (AdaBN, ``full_domain_stats``)
:class:`ControlStats`  statistics of the plate's DMSO images only, then evaluation mode (BEN)
=====================  =================================================================

A source's :meth:`~NormSource.adapt` takes what a method may see of one plate and
returns a :class:`PlateNorm`, the plate's state, whose ``logits`` predicts treated
images; test-time optimisation (:mod:`benchmark.core.recipe.tta`) is a source too. A source
never changes the model: running statistics and modes are restored after every use.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from ...constants import DMSO_LABEL
from ...datasets.dataset import PlateView
from ...errors import MethodError
from ..training.bn_stats import (BNState, ReferenceRows, accumulate_bn_stats, batch_stats_context, bn_layers, bn_stats_applied,
                 reference_stats, reference_stats_bn)
from .network import Network
from ..training.sampler import PlateContext, chunk_indices
from ..training.loop import Step, TrainingLoss

# ----------------------------------------------------------------------------- training time


class TrainingNorm(Protocol):
    """Where a training mini-batch's BN statistics come from."""

    def applied(self, model: torch.nn.Module, loss: TrainingLoss) -> AbstractContextManager[TrainingLoss]:
        """Inside: ``model`` trains under this policy; yields the loss to train with (``loss``, possibly wrapped)."""
        ...


@dataclass(frozen=True)
class BatchStatistics:
    """Every BN layer normalises a training batch by the statistics of all its rows (BatchNorm's own behaviour)."""

    @contextmanager
    def applied(self, model: torch.nn.Module, loss: TrainingLoss) -> Iterator[TrainingLoss]:
        yield loss


@dataclass(frozen=True)
class ControlRows:
    """Every BN layer normalises the whole training batch with the mean and biased variance of its DMSO rows.

    As in the reference, those statistics carry no gradient and are float32, under autocast too
    (:func:`reference_rows_detached`).
    """

    @contextmanager
    def applied(self, model: torch.nn.Module, loss: TrainingLoss) -> Iterator[TrainingLoss]:
        with reference_stats_bn(model) as rows, reference_rows_detached(model, rows):
            def loss_with_reference_rows(net: torch.nn.Module, step: Step) -> torch.Tensor:
                rows.mask = step.targets == DMSO_LABEL  # for this step's forward pass only
                try:
                    return loss(net, step)
                finally:
                    rows.mask = None
            yield loss_with_reference_rows


@contextmanager
def reference_rows_detached(model: torch.nn.Module, rows: ReferenceRows) -> Iterator[None]:
    """Inside, with :func:`~benchmark.core.training.bn_stats.reference_stats_bn`: every BN layer receives its input in float32
    with the reference rows detached, so the statistics computed from those rows carry no gradient and are
    float32 even under bf16 autocast.

    The reference rows (DMSO, outside the loss) reach the loss only through these statistics, so detaching
    the rows is detaching the statistics; the other rows keep their gradient.
    """
    def hook(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if rows.mask is None or not layer.training:
            return None
        x = inputs[0].float()
        reference = rows.mask.view(-1, *[1] * (x.dim() - 1))
        return (torch.where(reference, x.detach(), x), *inputs[1:])

    handles = [layer.register_forward_pre_hook(hook) for layer in bn_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------- a plate's state


class PlateNorm(Protocol):
    """What a :class:`NormSource` keeps of one plate: it turns that plate's treated images into logits."""

    def logits(self, net: Network, pixels: torch.Tensor) -> torch.Tensor:
        """Logits of centre-cropped uint8 ``pixels`` of the plate."""
        ...


@dataclass(frozen=True)
class EvalStats:
    """Evaluation mode with the BN statistics ``stats`` (None: the running statistics); each image on its own."""

    stats: BNState | None = None

    def logits(self, net: Network, pixels: torch.Tensor) -> torch.Tensor:
        if self.stats is None:
            return net.eval_logits(pixels)
        with bn_stats_applied(net.model, self.stats):
            return net.eval_logits(pixels)


@dataclass(frozen=True)
class PerChunkStats:
    """Every chunk of the images to predict (+ DMSO ``controls``) normalised by its own batch statistics."""

    context: PlateContext
    controls: torch.Tensor | None = None  # network input of the plate's DMSO images
    seed: int = 0                         # with ``plate``, seeds the control draws (:func:`plate_generator`)
    plate: str = ""

    def logits(self, net: Network, pixels: torch.Tensor) -> torch.Tensor:
        rng = plate_generator(self.seed, self.plate, CONTROL_DRAWS)  # afresh for every call: the same draws each time
        with torch.no_grad(), batch_stats_context(net.model) as model:
            return torch.cat([model(x)[:n] for x, n in plate_chunks(net, pixels, self.context, self.controls, rng)])


CONTROL_DRAWS, VALIDATION_ORDER = 1, 2
"""The streams of :func:`plate_generator`: a plate's control draws, the order of its validation images."""


def plate_generator(seed: int, plate: str, stream: int) -> np.random.Generator:
    """The generator of one ``stream`` of one plate, from the fit seed and a stable hash (CRC-32) of the plate's
    name: the same run draws the same for the same plate, on every host."""
    return np.random.default_rng([seed, zlib.crc32(plate.encode()), stream])


def plate_chunks(net: Network, pixels: torch.Tensor, context: PlateContext, controls: torch.Tensor | None,
                 rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, int]]:
    """The BN contexts of one plate: near-equal chunks of ``pixels`` (network input), each followed by
    ``context.n_controls`` rows of ``controls`` drawn afresh with ``rng`` for every chunk (without replacement;
    all of them when the plate has fewer); yields ``(inputs, number of treated rows)``."""
    for chunk in chunk_indices(len(pixels), context.n_treated):
        x = net.inputs(pixels[chunk])
        if controls is not None and len(controls):
            drawn = rng.choice(len(controls), size=min(context.n_controls, len(controls)), replace=False)
            x = torch.cat([x, controls[torch.as_tensor(drawn, device=controls.device)]])
        yield x, len(chunk)


# ----------------------------------------------------------------------------- validation and test time


class NormSource(ABC):
    """Where BN statistics come from when a fitted network predicts one plate (validation and test)."""

    plate_wise: ClassVar[bool] = True
    """Whether predictions depend on the plate (False: validation pools the images of all plates)."""

    @property
    def uses_controls(self) -> bool:
        """Whether the plate's DMSO images take part (then a plate without them is an error)."""
        return False

    @property
    def uses_treated(self) -> bool:
        """Whether :meth:`adapt` estimates something from the plate's treated images."""
        return False

    @abstractmethod
    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        """The plate's state from its treated pixels (uint8; None unless :attr:`uses_treated`) and
        its DMSO images as network input (None unless :attr:`uses_controls`)."""

    def controls_input(self, net: Network, plate: str, controls: np.ndarray) -> torch.Tensor | None:
        """The plate's DMSO images as network input, or None if this source does not use them."""
        if not self.uses_controls:
            return None
        if len(controls) == 0:
            raise MethodError(f"plate {plate} has no DMSO images; {net.owner} needs the plate's controls "
                              "as BN context")
        return net.tensor(controls)

    def adapt(self, net: Network, plate: PlateView) -> PlateNorm:
        """The state for one target plate from its label-free view."""
        controls = self.controls_input(net, plate.plate, plate.controls)
        treated = net.pixels(plate.treated) if self.uses_treated else None
        return self.prepare(net, plate.plate, treated, controls)


@dataclass(frozen=True)
class RunningStats(NormSource):
    """BN running statistics from training (``eval()``): nothing of the plate is used."""

    plate_wise: ClassVar[bool] = False

    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        return EvalStats()


@dataclass(frozen=True)
class ChunkStats(NormSource):
    """Each chunk of the predicted images, with ``context.n_controls`` of the plate's DMSO images, normalised
    by its own statistics: the BN context of one-plate training, at test. ``seed`` and the plate's name
    seed each chunk's random draw of controls."""

    context: PlateContext
    seed: int = 0  # the fit seed

    @property
    def uses_controls(self) -> bool:
        return self.context.n_controls > 0

    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        return PerChunkStats(self.context, controls, self.seed, plate)


@dataclass(frozen=True)
class PlateStats(NormSource):
    """Statistics accumulated over all chunks of the plate's treated images (cumulative average,
    each chunk with ``context.n_controls`` DMSO images drawn as :class:`ChunkStats` draws them), then evaluation
    mode."""

    context: PlateContext
    min_treated: int = 0  # refuse plates with fewer treated images
    seed: int = 0         # the fit seed (with the plate's name, seeds the control draws)

    @property
    def uses_controls(self) -> bool:
        return self.context.n_controls > 0

    @property
    def uses_treated(self) -> bool:
        return True

    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        assert treated is not None
        if len(treated) < self.min_treated:
            raise MethodError(f"plate {plate} shows {len(treated)} treated image(s); {net.owner} needs at least "
                              f"{self.min_treated} to estimate BN statistics")
        draws = plate_generator(self.seed, plate, CONTROL_DRAWS)
        chunks = (x for x, _ in plate_chunks(net, treated, self.context, controls, draws))
        return EvalStats(accumulate_bn_stats(net.model, chunks))


@dataclass(frozen=True)
class ControlStats(NormSource):
    """Mean and biased variance of the plate's DMSO images in every BN layer, then evaluation mode: a treated
    image's prediction depends on itself and the plate's controls only."""

    @property
    def uses_controls(self) -> bool:
        return True

    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        assert controls is not None
        return EvalStats(reference_stats(net.model, controls))
