"""BEN — batch-effect normalisation: BatchNorm statistics from the plate's DMSO controls only
(Lin & Lu 2022, "Incorporating knowledge of plates in batch normalization improves
generalization of deep learning for microscopy images").

Access: ``controls``. Training: every mini-batch is ``n_treated`` labelled treated
images plus ``n_controls`` DMSO images of the same plate (the CS-ARM-BN sampler); every
BN layer normalises the whole batch with the mean and variance of the *DMSO rows only*,
and the loss uses only the treated images. Test (and validation): one forward pass of
the target plate's DMSO images gives every layer's DMSO statistics; each treated image
is then normalised with them. A treated image's prediction therefore depends on itself
and the plate's controls only, never on the plate's other treated images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ..constants import DMSO_LABEL
from ..core.bn import BNState, accumulate_bn_stats, bn_layers, bn_stats_applied
from ..core.sampler import Batch
from ..core.training import SizedEpoch, Step
from ..datasets.dataset import LabelledImages, PlateView
from ..registry import register_method
from ._convnet import ConvNetConfig, softmax
from .base import AccessLevel
from .cs_arm_bn import CSARMBN


@dataclasses.dataclass(frozen=True)
class BENConfig(ConvNetConfig):
    """BEN hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    n_treated: int = 32   # treated images per one-plate training mini-batch
    n_controls: int = 32  # DMSO images of the same plate per training mini-batch: the only source of BN statistics


class ReferenceRows:
    """Which rows of the current batch give the BN statistics (``None``: ordinary batch statistics)."""

    mask: torch.Tensor | None = None


@contextmanager
def reference_stats_bn(model: torch.nn.Module) -> Iterator[ReferenceRows]:
    """Inside: BN layers in training mode normalise every row with the statistics of the reference rows.

    Set ``.mask`` of the yielded object (bool, one entry per row) before a forward pass.
    The variance is the biased one, as BatchNorm uses in training.
    """
    rows = ReferenceRows()

    def hook(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
        if rows.mask is None or not layer.training:
            return None
        x = inputs[0]
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        ref = x[rows.mask]
        mean, var = ref.mean(dim=dims), ref.var(dim=dims, unbiased=False)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + layer.eps)
        return y * layer.weight.view(shape) + layer.bias.view(shape) if layer.affine else y

    handles = [layer.register_forward_hook(hook) for layer in bn_layers(model)]
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()


def control_stats(model: torch.nn.Module, controls: torch.Tensor) -> BNState:
    """Every BN layer's statistics of ``controls`` (one forward pass), with the biased variance BN normalises with."""
    counts: dict[str, int] = {}

    def counter(name: str) -> Callable[..., None]:
        return lambda layer, inputs: counts.__setitem__(name, inputs[0].numel() // inputs[0].shape[1])

    hooks = [layer.register_forward_pre_hook(counter(name)) for name, layer in model.named_modules()
             if isinstance(layer, _BatchNorm)]
    try:
        state = accumulate_bn_stats(model, [controls])
    finally:
        for hook in hooks:
            hook.remove()
    for name, n in counts.items():  # BN stores the unbiased variance over n values per channel
        if n > 1:
            state[f"{name}.running_var"] = state[f"{name}.running_var"] * (n - 1) / n
    return state


@register_method
class BEN(CSARMBN):
    """One plate per mini-batch; BN statistics from that plate's DMSO images only, in training and test."""

    name = "ben"
    access = AccessLevel.CONTROLS
    description = "ResNet whose BN statistics come from the plate's DMSO images only, in training and test (BEN)"
    Config = BENConfig  # type: ignore[assignment]
    config: BENConfig  # type: ignore[assignment]

    # -- training: the sampler's DMSO rows are the BN reference --------------------------------
    def _train(self, train: LabelledImages, make_batches: Callable[[np.random.Generator], list[Batch]],
               val_loss: Callable[[torch.nn.Module], float], seed: int) -> None:
        with reference_stats_bn(self.model_) as self._reference:
            super()._train(train, make_batches, val_loss, seed)
        del self._reference

    def _steps(self, train: LabelledImages, make_batches: Callable[[np.random.Generator], list[Batch]]
               ) -> Callable[[np.random.Generator], SizedEpoch]:
        steps = super()._steps(train, make_batches)

        def with_reference_rows(epoch: SizedEpoch) -> Iterator[Step]:
            for inputs, targets in epoch:
                self._reference.mask = targets == DMSO_LABEL  # set for the forward pass of this batch
                yield inputs, targets
                self._reference.mask = None

        def epoch(rng: np.random.Generator) -> SizedEpoch:
            inner = steps(rng)
            return SizedEpoch(with_reference_rows(inner), len(inner))
        return epoch

    # -- validation and test: the plate's DMSO statistics, then evaluation mode ------------------
    def _predict_with(self, stats: BNState, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), bn_stats_applied(self.model_, stats):
            return self._logits_running_stats(pixels)

    def _plate_logits(self, treated: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self._predict_with(control_stats(self.model_, context), treated)

    def adapt(self, plate: PlateView) -> BEN:
        self._check_fitted()
        self.__dict__.pop("plate_stats_", None)  # forget the previous plate
        self.plate_stats_ = control_stats(self.model_, self._context(plate.controls, plate.plate))
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted()
        self._check_adapted("plate_stats_")
        return softmax(self._predict_with(self.plate_stats_, self._eval_pixels(images)))
