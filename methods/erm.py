"""ERM — empirical risk minimisation (Vapnik 1991; the baseline of Sanchez-Fernandez et al. 2026).

Access: ``none``. A 5-channel ResNet is trained with cross-entropy on the labelled
positive-control images of the training plates, drawn in mixed mini-batches. At test
time BatchNorm uses its running statistics (``eval()``): each image is classified on
its own, and nothing of the target plate is used.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ._convnet import ConvNetConfig, ConvNetMethod, softmax
from ..core.sampler import mixed_batches
from ..datasets.dataset import LabelledImages, PlateView
from ..registry import register_method
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ERMConfig(ConvNetConfig):
    """ERM hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    batch_size: int = 32  # treated images per mixed mini-batch (reference: 64)


@register_method
class ERM(ConvNetMethod):
    """Cross-entropy on mixed training batches; BN running statistics at test time."""

    name = "erm"
    access = AccessLevel.NONE
    description = "ResNet trained with cross-entropy on mixed batches; BN running statistics at test (no adaptation)"
    Config = ERMConfig
    config: ERMConfig

    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> ERM:
        self._setup(train, seed)
        val_x, val_y = self._val_set(val)

        def val_loss(model: torch.nn.Module) -> float:
            return F.cross_entropy(self._logits_running_stats(val_x), val_y).item() if len(val_y) else 0.0

        self._train(train, lambda rng: mixed_batches(train, self.config.batch_size, rng), val_loss, seed)
        return self

    def adapt(self, plate: PlateView) -> ERM:
        self._check_fitted()
        self.plate_ = plate.plate  # only the name: ERM uses nothing of the target plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted()
        self._check_adapted()
        return softmax(self._logits_running_stats(self._eval_pixels(images)))
