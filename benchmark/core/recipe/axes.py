"""A BN method's choices along the shared axes, declared as one value.

=================  ===========================================================  ==========================
axis               choices (core)                                               field
=================  ===========================================================  ==========================
training batches   :class:`MixedBatches`, :class:`OnePlateBatches`              ``batches``
                   (a :class:`PlateContext`: treated + DMSO of one plate),
                   :class:`WithTargetImages` (+ unlabelled target-plate images)
training BN        :class:`BatchStatistics`, :class:`ControlRows`               ``training_norm``
training loss      :func:`cross_entropy_loss`, any ``(model, step) -> loss``,   ``loss``
                   or a :class:`LossWithParameters` (a domain head)
validation BN      a :class:`NormSource`                                        ``validation``
test BN            a :class:`NormSource`: :class:`RunningStats`,                ``test``
                   :class:`ChunkStats`, :class:`PlateStats`,
                   :class:`ControlStats`, :class:`TestTimeOptimisation`
=================  ===========================================================  ==========================

``benchmark.methods._convnet.ConvNetMethod`` runs a recipe: ``fit`` trains with the first
three axes and selects with ``validation``; ``adapt``/``predict`` use ``test``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bn_policies import BatchStatistics, NormSource, TrainingNorm
from ..training.sampler import BatchComposition
from ..training.loop import LossWithParameters, TrainingLoss, cross_entropy_loss


@dataclass(frozen=True)
class Recipe:
    """How a ResNet method trains, selects and predicts, along the shared axes (see the module docstring)."""

    batches: BatchComposition                          # which images form a training mini-batch
    validation: NormSource                             # BN statistics of the validation plates (model selection)
    test: NormSource                                   # BN statistics (and parameter changes) on a target plate
    training_norm: TrainingNorm = BatchStatistics()    # BN statistics of a training mini-batch
    loss: TrainingLoss | LossWithParameters = cross_entropy_loss  # training loss of a step (extra terms: CORAL, DANN)
