"""CS-ARM-BN — control-stabilised ARM-BN (Sanchez-Fernandez et al. 2026, "Closing the Domain Gap
in Biomedical Imaging by In-Context Control Samples").

Access: ``unlabeled``. As ARM-BN, but every training mini-batch is ``n_treated``
labelled positive-control images plus ``n_controls`` DMSO images of the same plate;
BN statistics are computed over the union and the loss uses only the treated images.
At test time the same composition: the target plate's treated images together with
its DMSO images form the BN context. Controls carry no biology that differs between
plates, so they anchor the statistics to technical variation instead of the batch's
class mix. Option ``full_domain_stats``: accumulate BN statistics over the whole plate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import MethodError
from ..registry import register_method
from .arm_bn import ARMBN, ARMBNConfig


@dataclasses.dataclass(frozen=True)
class CSARMBNConfig(ARMBNConfig):
    """CS-ARM-BN hyper-parameters (see ARMBNConfig and ConvNetConfig for the others)."""

    n_controls: int = 32  # DMSO images of the same plate in every BN context (reference: 128)


@register_method
class CSARMBN(ARMBN):
    """ARM-BN whose BN contexts also hold the plate's DMSO images (not in the loss)."""

    name = "cs_arm_bn"
    description = "ARM-BN whose BN statistics also include the plate's DMSO controls (loss on treated only)"
    Config = CSARMBNConfig
    config: CSARMBNConfig

    @property
    def n_context(self) -> int:  # type: ignore[override]
        return self.config.n_controls

    def _context(self, controls: np.ndarray, plate: str) -> torch.Tensor:
        if len(controls) == 0:
            raise MethodError(f"plate {plate} has no DMSO images; {self.name} needs the plate's controls "
                              "as BN context")
        return self._eval_tensor(controls)
