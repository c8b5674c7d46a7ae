"""The validation loss of model selection, computed with the method's validation :class:`NormSource`.

The validation images (training-domain plates) are read once, before training, and
held as centre-cropped **uint8** pixels, normalised chunk by chunk at every epoch: as
float32 the validation set of a JUMP run at 256 px would take about 13 GB. A plate-wise
source predicts every validation plate as it predicts a target plate (the same BN
contexts), each plate's images shuffled once, seeded by the run and the plate, so that a
chunk holds wells from across the plate rather than a few adjacent ones (storage order is
by well); with running statistics all validation images are pooled, in storage order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ...datasets.dataset import LabelledImages
from .bn_policies import VALIDATION_ORDER, NormSource, plate_generator
from .network import Network


@dataclass(frozen=True)
class ValidationPlate:
    """One group of validation images: a plate (or, for running statistics, all plates)."""

    plate: str | None
    pixels: torch.Tensor            # centre-cropped uint8 treated images
    labels: torch.Tensor            # their classes
    controls: torch.Tensor | None   # the plate's DMSO images as network input, if the source uses them


@dataclass(frozen=True)
class ValidationSet:
    """The validation plates and the source that predicts them; :meth:`loss` is ``train_model``'s ``val_loss``."""

    source: NormSource
    plates: list[ValidationPlate]

    @classmethod
    def read(cls, val: LabelledImages, source: NormSource, net: Network, seed: int = 0) -> ValidationSet:
        """Read the treated images of ``val`` (and the DMSO images the source uses) once; a plate-wise source's
        plates each in an order drawn from the fit ``seed`` and the plate's name."""
        if not source.plate_wise:
            return cls(source, [_treated(val, None, net)])
        groups = []
        for plate in val.plates:
            group = _shuffled(_treated(val, plate, net), plate_generator(seed, plate, VALIDATION_ORDER))
            if len(group.labels):
                controls = source.controls_input(net, plate, val.read(val.control_ids(plate)))
                groups.append(replace(group, controls=controls))
        return cls(source, groups)

    def loss(self, net: Network) -> float:
        """Mean cross-entropy over all validation images (0.0 without any)."""
        if not self.source.plate_wise:
            group = self.plates[0]
            return F.cross_entropy(self._logits(net, group), group.labels).item() if len(group.labels) else 0.0
        losses = [F.cross_entropy(self._logits(net, g), g.labels, reduction="sum") for g in self.plates]
        n = sum(len(g.labels) for g in self.plates)
        return (sum(losses) / n).item() if n else 0.0

    def _logits(self, net: Network, group: ValidationPlate) -> torch.Tensor:
        state = self.source.prepare(net, group.plate or "validation", group.pixels, group.controls)
        return state.logits(net, group.pixels)


def _treated(val: LabelledImages, plate: str | None, net: Network) -> ValidationPlate:
    """The treated images of one plate of ``val`` (all plates for None), read once."""
    ids = val.treated_ids(plate)
    labels = torch.as_tensor(val.labels(ids), dtype=torch.long, device=net.preprocess.device)
    return ValidationPlate(plate, net.pixels(val.read(ids)), labels, None)


def _shuffled(group: ValidationPlate, rng: np.random.Generator) -> ValidationPlate:
    """``group`` with its images (and their labels) in the order of a permutation drawn with ``rng``."""
    order = torch.as_tensor(rng.permutation(len(group.labels)), device=group.labels.device)
    return replace(group, pixels=group.pixels[order], labels=group.labels[order])
