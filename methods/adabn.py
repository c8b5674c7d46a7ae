"""AdaBN — adaptive batch normalisation (Li et al. 2016, "Revisiting Batch Normalization For
Practical Domain Adaptation", arXiv:1603.04779).

Access: ``unlabeled``. Training is ERM's (cross-entropy on mixed batches, BN running
statistics learned over all training plates). At test time every BN layer's statistics
are re-estimated on the target plate's treated images: the plate is forwarded with batch
statistics and the statistics are averaged over its chunks (one chunk when the plate
has at most ``eval_batch_size`` images), then every image is predicted in evaluation
mode with those statistics. The weights never change; the plate is the target domain.
"""

from __future__ import annotations

import numpy as np

from ..core.bn import accumulate_bn_stats, bn_stats_applied
from ..core.sampler import chunk_indices
from ..datasets.dataset import PlateView
from ..errors import MethodError
from ..registry import register_method
from ._convnet import softmax
from .base import AccessLevel
from .erm import ERM, ERMConfig


@register_method
class AdaBN(ERM):
    """ERM whose BN statistics are re-estimated on each target plate's treated images."""

    name = "adabn"
    access = AccessLevel.UNLABELED
    description = "ERM-trained ResNet; BN statistics re-estimated on the target plate's treated images (AdaBN)"
    Config = ERMConfig
    config: ERMConfig

    def adapt(self, plate: PlateView) -> AdaBN:
        self._check_fitted()
        self.__dict__.pop("plate_stats_", None)  # forget the previous plate
        if len(plate.treated) < 2:
            raise MethodError(f"plate {plate.plate} shows {len(plate.treated)} treated image(s); AdaBN needs "
                              "at least 2 to estimate BN statistics")
        pixels = self._eval_pixels(plate.treated)
        chunks = chunk_indices(len(pixels), self.config.eval_batch_size)
        self.plate_stats_ = accumulate_bn_stats(self.model_, (self._inputs(pixels[c]) for c in chunks))
        self.plate_ = plate.plate
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted()
        self._check_adapted("plate_stats_")
        with bn_stats_applied(self.model_, self.plate_stats_):
            return softmax(self._logits_running_stats(self._eval_pixels(images)))
