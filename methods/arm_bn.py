"""ARM-BN — adaptive risk minimisation, BatchNorm variant (Zhang et al. 2021, "Adaptive Risk
Minimization: Learning to Adapt to Domain Shift"; applied to Cell Painting plates by
Sanchez-Fernandez et al. 2026).

Access: ``unlabeled``. Meta-training: every mini-batch holds images of one plate only
and BN runs in training mode, so each batch is normalised by its own plate's
statistics; the loss is cross-entropy on that batch. Test: BN statistics come from the
target plate's treated images, in chunks of the training batch size (one plate per
chunk, never mixed). No parameter changes at test time. Validation uses the same
plate-wise BN contexts as the test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..core.bn import accumulate_bn_stats, batch_stats_context, bn_stats_applied
from ._convnet import ConvNetConfig, ConvNetMethod, softmax
from ..core.sampler import chunk_indices, plate_batches
from ..datasets.dataset import LabelledImages, PlateView
from ..registry import register_method
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ARMBNConfig(ConvNetConfig):
    """ARM-BN hyper-parameters (CPU defaults; see ConvNetConfig for the shared ones)."""

    n_treated: int = 32              # treated images per one-plate mini-batch and per test BN chunk (reference: 64)
    full_domain_stats: bool = False  # test: accumulate BN statistics over the whole plate instead of per chunk


@register_method
class ARMBN(ConvNetMethod):
    """One plate per mini-batch with BN batch statistics; the target plate's own statistics at test."""

    name = "arm_bn"
    access = AccessLevel.UNLABELED
    description = "ResNet meta-trained with one plate per batch; BN statistics from the target plate's treated images"
    Config = ARMBNConfig
    config: ARMBNConfig

    # -- what defines the BN context (CS-ARM-BN adds the plate's DMSO images) ----------------
    n_context = 0
    """DMSO images of the same plate added to every BN context."""

    def _context(self, controls: np.ndarray, plate: str) -> torch.Tensor | None:
        """The plate's context images appended to every chunk (none for ARM-BN)."""
        return None

    # -- the plate-wise BN forward pass, shared by validation and test -----------------------
    def _chunks(self, treated: torch.Tensor, context: torch.Tensor | None) -> list[tuple[torch.Tensor, int]]:
        """BN contexts of one plate: chunks of its treated images (uint8 pixels; + context), with the treated count."""
        out = []
        for j, chunk in enumerate(chunk_indices(len(treated), self.config.n_treated)):
            x = self._inputs(treated[chunk])
            if context is not None and len(context):
                c = min(self.n_context, len(context))
                x = torch.cat([x, context[np.arange(j * c, (j + 1) * c) % len(context)]])
            out.append((x, len(chunk)))
        return out

    def _plate_logits(self, treated: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Logits of one plate's treated images (uint8 pixels), each chunk normalised by its own BN statistics."""
        with torch.no_grad(), batch_stats_context(self.model_) as model:
            return torch.cat([model(x)[:n] for x, n in self._chunks(treated, context)])

    # -- the method API ------------------------------------------------------------------------
    def fit(self, train: LabelledImages, val: LabelledImages, seed: int) -> ARMBN:
        self._setup(train, seed)
        val_plates = []
        for plate in val.plates:
            x, y = self._val_set(val, plate)
            if len(y):
                val_plates.append((x, y, self._context(val.read(val.control_ids(plate)), plate)))

        def val_loss(model: torch.nn.Module) -> float:
            losses = [F.cross_entropy(self._plate_logits(x, ctx), y, reduction="sum") for x, y, ctx in val_plates]
            n = sum(len(y) for _, y, _ in val_plates)
            return (sum(losses) / n).item() if n else 0.0

        def batches(rng: np.random.Generator):
            return plate_batches(train, self.config.n_treated, rng, n_controls=self.n_context)

        self._train(train, batches, val_loss, seed)
        return self

    def adapt(self, plate: PlateView) -> ARMBN:
        self._check_fitted()
        for attr in ("context_", "plate_stats_"):
            self.__dict__.pop(attr, None)  # forget the previous plate
        self.context_ = self._context(plate.controls, plate.plate)
        if self.config.full_domain_stats:
            treated = self._eval_pixels(plate.treated)
            self.plate_stats_ = accumulate_bn_stats(self.model_, (x for x, _ in self._chunks(treated, self.context_)))
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted()
        self._check_adapted()
        if self.config.full_domain_stats:
            with torch.no_grad(), bn_stats_applied(self.model_, self.plate_stats_) as model:
                return softmax(model(self._eval_tensor(images)))
        return softmax(self._plate_logits(self._eval_pixels(images), self.context_))
