"""Test-time optimisation: parameters that change on a target plate, reset to the source weights for every plate.

TENT-like methods (TENT, DeYO, ROID) start from a trained source model, let every BN
layer normalise each batch by its own statistics and train only the BN affine
parameters on the plate's treated images: one online pass in shuffled batches, one Adam
step per batch, each batch predicted by the forward pass *before* its update.
:class:`TestTimeOptimisation` is a :class:`~benchmark.core.recipe.bn_policies.NormSource`, so
such a method declares it as its test-time source and writes only what is its own: the
:data:`Objective` (TENT: the batch's mean entropy) and, if needed, an :data:`AfterStep`.
Every pass starts from the source weights with a fresh optimiser and objective and
restores the source weights afterwards, so nothing carries over from one plate (or one
``predict`` call) to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ...seeding import plate_entropy
from ..training.bn_stats import bn_layers, set_bn_mode
from .bn_policies import NormSource, PlateNorm
from .network import Network

Objective = Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]]
"""``(model, inputs) -> (loss, or None for no update; the logits reported for inputs)``."""

ObjectiveFactory = Callable[[np.random.Generator], Objective]
"""Called once per pass with the pass's generator: a fresh objective for every plate (e.g. ROID's prior)."""

AfterStep = Callable[[list[torch.nn.Parameter], list[torch.Tensor]], None]
"""Called under ``no_grad`` after every update with the adapted parameters and their source values."""


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``-Σ_c p_c log p_c`` of every row's softmax (natural log): TENT's loss, DeYO's and ROID's filters."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def bn_affine_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weight and bias of every affine BN layer of ``model``."""
    return [p for layer in bn_layers(model) if layer.affine for p in (layer.weight, layer.bias)]


@contextmanager
def source_weights_restored(model: torch.nn.Module) -> Iterator[None]:
    """Inside: change ``model`` at will; on exit every parameter, buffer, ``requires_grad`` flag and
    train/eval mode is as it was on entry."""
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    try:
        yield
    finally:
        model.load_state_dict(state)
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes):
            m.training = mode


@dataclass(frozen=True)
class TestTimeOptimisation(NormSource):
    """BN batch statistics and an online pass of Adam steps on the BN affine parameters, per plate.

    Parameters
    ----------
    objective : a fresh :data:`Objective` per pass, from the pass's generator.
    batch_size : treated images per step (the last batch may be smaller).
    lr : Adam learning rate.
    seed : with the plate's name, seeds the pass (its order and the objective's generator, :func:`pass_generator`):
        the same images of the same plate always give the same predictions.
    after_step : optional :data:`AfterStep` (e.g. a pull of the parameters toward the source).
    """

    __test__ = False  # not a pytest test class, despite its name

    objective: ObjectiveFactory
    batch_size: int
    lr: float = 1e-3
    seed: int = 0
    after_step: AfterStep | None = None

    def prepare(self, net: Network, plate: str, treated: torch.Tensor | None,
                controls: torch.Tensor | None) -> PlateNorm:
        return OnlinePass(self, plate)


def pass_generator(seed: int, plate: str) -> np.random.Generator:
    """The generator of one plate's pass, from the fit seed and a stable hash (CRC-32) of the plate's name."""
    return np.random.default_rng(plate_entropy(seed, plate))


@dataclass(frozen=True)
class OnlinePass:
    """The plate state of :class:`TestTimeOptimisation`: ``logits`` runs one pass over the images it predicts."""

    policy: TestTimeOptimisation
    plate: str = ""

    def logits(self, net: Network, pixels: torch.Tensor) -> torch.Tensor:
        policy, model = self.policy, net.model
        rng = pass_generator(policy.seed, self.plate)
        order = rng.permutation(len(pixels))
        outputs = []
        with source_weights_restored(model), torch.enable_grad():
            model.eval()
            set_bn_mode(model, True)  # every batch normalised by its own statistics
            params = bn_affine_parameters(model)
            trainable = {id(p) for p in params}
            for p in model.parameters():
                p.requires_grad_(id(p) in trainable)
            source = [p.detach().clone() for p in params]
            optimiser = torch.optim.Adam(params, lr=policy.lr)
            objective = policy.objective(rng)
            for start in range(0, len(order), policy.batch_size):
                loss, logits = objective(model, net.inputs(pixels[order[start:start + policy.batch_size]]))
                outputs.append(logits.detach())  # the prediction before this batch's update
                if loss is not None:
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    if policy.after_step is not None:
                        with torch.no_grad():
                            policy.after_step(params, source)
        shuffled = torch.cat(outputs)
        logits = torch.empty_like(shuffled)
        logits[torch.as_tensor(order, device=shuffled.device)] = shuffled
        return logits
