"""BatchNorm-statistics utilities: BN modes, batch statistics, accumulated and reference statistics.

The building blocks of :mod:`benchmark.core.recipe.bn_policies`. :func:`batch_stats_context`
puts only the BN layers in training mode (each forward pass normalised by that batch's
own statistics) and restores the model's running statistics afterwards, so a context
never leaks into the next one. :func:`accumulate_bn_stats` averages statistics over
many chunks (a whole plate) for evaluation-mode prediction. :func:`reference_stats_bn`
normalises every row of a batch with the statistics of some of its rows only (BEN's
DMSO rows), and :func:`reference_stats` gives those statistics of a set of images as
running statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.nn.modules.batchnorm import _BatchNorm

BNState = dict[str, torch.Tensor]
"""Running statistics of every BN layer (``running_mean``, ``running_var``, ``num_batches_tracked``)."""


def bn_layers(model: torch.nn.Module) -> list[_BatchNorm]:
    """All BatchNorm layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def set_bn_mode(model: torch.nn.Module, train: bool) -> None:
    """Put only the BN layers in training (batch statistics) or evaluation (running statistics) mode."""
    for layer in bn_layers(model):
        layer.train(train)


def bn_state(model: torch.nn.Module) -> BNState:
    """A copy of the running statistics of every BN layer."""
    return {name: buf.detach().clone() for name, buf in model.named_buffers()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def load_bn_state(model: torch.nn.Module, state: BNState) -> None:
    """Set the running statistics of the BN layers from :func:`bn_state` output."""
    buffers = dict(model.named_buffers())
    for name, value in state.items():
        buffers[name].copy_(value)


@contextmanager
def preserved_bn_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore BN running statistics, momenta and train/eval modes on exit."""
    state = bn_state(model)
    layers = bn_layers(model)
    modes = [(layer.training, layer.momentum) for layer in layers]
    try:
        yield
    finally:
        load_bn_state(model, state)
        for layer, (training, momentum) in zip(layers, modes):
            layer.train(training)
            layer.momentum = momentum


@contextmanager
def batch_stats_context(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside: the model is in eval mode except its BN layers, which normalise every forward pass
    by that batch's own statistics. On exit the modes and running statistics are restored."""
    was_training = model.training
    with preserved_bn_state(model):
        model.eval()
        set_bn_mode(model, True)
        try:
            yield model
        finally:
            model.train(was_training)


@torch.no_grad()
def accumulate_bn_stats(model: torch.nn.Module, chunks: Iterable[torch.Tensor]) -> BNState:
    """BN statistics averaged over all ``chunks`` (e.g. every chunk of one plate).

    Each chunk is forwarded with batch statistics; the running statistics are the
    cumulative average over chunks (``momentum=None``). The model itself is left as
    it was; apply the result with :func:`load_bn_state` (or :func:`bn_stats_applied`).
    """
    with batch_stats_context(model):
        for layer in bn_layers(model):
            layer.reset_running_stats()
            layer.momentum = None
        for chunk in chunks:
            model(chunk)
        return bn_state(model)


@contextmanager
def bn_stats_applied(model: torch.nn.Module, state: BNState) -> Iterator[torch.nn.Module]:
    """Inside: the model in eval mode, its BN layers using ``state``; restored on exit."""
    was_training = model.training
    with preserved_bn_state(model):
        load_bn_state(model, state)
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)


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
        ref = x[rows.mask]  # issue 11: the reference detaches these statistics (and computes them in float32)
        mean, var = ref.mean(dim=dims), ref.var(dim=dims, unbiased=False)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + layer.eps)
        return y * layer.weight.view(shape) + layer.bias.view(shape) if layer.affine else y

    handles = [layer.register_forward_hook(hook) for layer in bn_layers(model)]
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()


def reference_stats(model: torch.nn.Module, images: torch.Tensor) -> BNState:
    """Every BN layer's mean and biased variance of ``images`` (one forward pass), as running statistics.

    Applied with :func:`bn_stats_applied`, an image is normalised exactly as a batch row is
    under :func:`reference_stats_bn` with ``images`` as the reference rows.
    """
    counts: dict[str, int] = {}

    def counter(name: str) -> Callable[..., None]:
        return lambda layer, inputs: counts.__setitem__(name, inputs[0].numel() // inputs[0].shape[1])

    hooks = [layer.register_forward_pre_hook(counter(name)) for name, layer in model.named_modules()
             if isinstance(layer, _BatchNorm)]
    try:
        state = accumulate_bn_stats(model, [images])
    finally:
        for hook in hooks:
            hook.remove()
    for name, n in counts.items():  # BN stores the unbiased variance over n values per channel
        if n > 1:
            state[f"{name}.running_var"] = state[f"{name}.running_var"] * (n - 1) / n
    return state
