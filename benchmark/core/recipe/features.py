"""The features a classifier head sees, for training losses on features (Deep CORAL, DANN).

:func:`features_and_logits` runs one forward pass and returns the pooled features that
enter the classifier head together with the logits, so a
:data:`~benchmark.core.training.loop.TrainingLoss` can add a term on features (a CORAL
penalty between domains, a domain head behind gradient reversal) without a second pass.
"""

from __future__ import annotations

import torch

from ..training.accel import Autocast


def classifier_head(model: torch.nn.Module) -> torch.nn.Module:
    """The final linear layer of a timm classifier (also inside the CUDA :class:`Autocast` wrapper)."""
    inner = model.model if isinstance(model, Autocast) else model
    return inner.get_classifier()


def features_and_logits(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, logits)`` of one forward pass: the classifier head's input ``(N, d)`` (with gradient) and output."""
    seen: list[torch.Tensor] = []
    handle = classifier_head(model).register_forward_pre_hook(lambda layer, args: seen.append(args[0]))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    return seen[0], logits
