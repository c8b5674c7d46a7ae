"""ROID — universal test-time adaptation through weight ensembling, diversity weighting and prior correction
(Marsden, Döbler & Yang 2024, "Universal Test-time Adaptation through Weight Ensembling, Diversity Weighting,
and Prior Correction", WACV, arXiv:2306.00650).

Access: ``unlabeled``. Source model, BN mode, trainable parameters, optimiser and the online pass per plate are
TENT's (:mod:`benchmark.methods.tent`). For a batch of ``B`` images with softmax ``p_i`` over ``C`` classes:

- weights, without gradient (:func:`roid_weights`): diversity ``d = 1 − cos(prior, p_i)`` min-max normalised
  in the batch, images with ``d`` below the batch mean masked out; certainty ``c = −H(p_i)`` min-max
  normalised; ``w = exp(d·c / T)`` with ``T = 1/3``, 0 where masked. A batch whose values are all equal
  normalises to 0 (the reference divides by zero there).
- the prior: an exponential moving average of the batch's mean ``p`` (momentum 0.9), starting uniform, updated
  after the weights are computed;
- loss = (Σ w·SLR + Σ w·SCE(view, original)) / 64 over the unmasked images: the soft-likelihood-ratio term
  ``SLR = −Σ_c p·log(p/(1−p) + 1e-5)`` with ``p`` clipped at 0.99, and the symmetric cross-entropy between an
  augmented view (:func:`augment`: random rotation ±15°, translation ±1/16, scale 0.9–1.1, horizontal flip;
  reflection padding) and the original prediction;
- after every step the BN affine parameters are pulled toward the source: ``θ ← 0.99·θ + 0.01·θ_source``;
- prior correction of the output (:func:`prior_correction`): the batch's logits (forward pass before the
  update) multiplied by ``(π + s)/(1 + s·C)``, with ``π`` the batch's mean prediction (as the reference does)
  and ``s = max(1/B, 1/C)/max(π)``.

**Deviation from the reference:** the prior is reset to uniform for every target plate. The reference never
resets it, so the class mix of one plate (and through it of one lab) steers the weights on the next; here the
plate is the unit of adaptation and nothing may carry over from one plate to the next (conformance check
``no_state_across_plates``), so the prior lives only inside one plate's pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..config_bounds import between, positive
from ..core.recipe.bn_policies import RunningStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches
from ..core.recipe.tta import Objective, TestTimeOptimisation, softmax_entropy
from ..registry import register_method
from ._convnet import ConvNetMethod
from .base import AccessLevel
from .erm import ERMConfig


def min_max(x: torch.Tensor) -> torch.Tensor:
    """``x`` rescaled to [0, 1] over the batch; all zeros when its values are all equal."""
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else torch.zeros_like(x)


def roid_weights(logits: torch.Tensor, prior: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ROID's sample weights and mask (True = masked out) from the batch's logits and the prior."""
    diversity = min_max(1 - F.cosine_similarity(prior[None], logits.softmax(1), dim=1))
    masked = diversity < diversity.mean()
    certainty = min_max(-softmax_entropy(logits))
    weights = torch.exp(diversity * certainty / temperature)
    return torch.where(masked, torch.zeros_like(weights), weights), masked


def soft_likelihood_ratio(logits: torch.Tensor, clip: float = 0.99, eps: float = 1e-5) -> torch.Tensor:
    """``−Σ_c p·log(p/(1−p) + eps)`` per row, ``p`` the softmax clipped at ``clip``."""
    p = logits.softmax(1).clamp(0.0, clip)
    return -(p * torch.log(p / (1 - p) + eps)).sum(1)


def symmetric_cross_entropy(view: torch.Tensor, original: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Symmetric cross-entropy between the logits of a view and of the original, per row (reference: α = 0.5)."""
    return (-(1 - alpha) * (original.softmax(1) * view.log_softmax(1)).sum(1)
            - alpha * (view.softmax(1) * original.log_softmax(1)).sum(1))


def prior_correction(logits: torch.Tensor) -> torch.Tensor:
    """The logits multiplied by ``(π + s)/(1 + s·C)``, ``π`` the batch's mean softmax, ``s = max(1/B, 1/C)/max π``."""
    prior = logits.softmax(1).mean(0)
    smooth = max(1 / logits.shape[0], 1 / logits.shape[1]) / prior.max()
    return logits * (prior + smooth) / (1 + smooth * logits.shape[1])


def augment(x: torch.Tensor, rng: np.random.Generator, degrees: float = 15.0, translate: float = 1 / 16,
            scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """A random affine view of every image (rotation, translation, scale, horizontal flip), reflection padding."""
    n = len(x)
    angle = np.deg2rad(rng.uniform(-degrees, degrees, n))
    zoom = rng.uniform(*scale, n)
    shift = rng.uniform(-2 * translate, 2 * translate, (n, 2))  # affine_grid's coordinates span [-1, 1]
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle) / zoom * flip, -np.sin(angle) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle) / zoom * flip, np.cos(angle) / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype, device=x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclasses.dataclass(frozen=True)
class ROIDConfig(ERMConfig):
    """ROID hyper-parameters: ERM's (the source model) and the test-time optimiser's."""

    tta_lr: float = 1e-3            # Adam learning rate of the BN affine parameters on a target plate
    temperature: float = 1 / 3      # w = exp(d·c / temperature) (reference: 1/3)
    prior_momentum: float = 0.9     # prior ← m·prior + (1 − m)·mean p (reference: 0.9)
    source_momentum: float = 0.99   # θ ← m·θ + (1 − m)·θ_source after every step (reference: 0.99)
    loss_divisor: float = 64.0      # both loss terms are divided by this fixed number (reference: 64)

    bounds = {"tta_lr": positive(), "temperature": positive(), "prior_momentum": between(0, 1),
              "source_momentum": between(0, 1), "loss_divisor": positive()}


def roid_objective(cfg: ROIDConfig):
    """The factory of ROID's objective: a fresh uniform prior for every plate (see the module docstring)."""
    def factory(rng: np.random.Generator) -> Objective:
        prior: list[torch.Tensor] = []

        def objective(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(inputs)
            with torch.no_grad():
                probs = logits.softmax(1)
                if not prior:
                    prior.append(torch.full((logits.shape[1],), 1 / logits.shape[1], device=logits.device))
                weights, masked = roid_weights(logits, prior[0], cfg.temperature)
                prior[0] = cfg.prior_momentum * prior[0] + (1 - cfg.prior_momentum) * probs.mean(0)
            kept = ~masked
            loss = (soft_likelihood_ratio(logits) * weights)[kept].sum() / cfg.loss_divisor
            if kept.any():
                view = model(augment(inputs[kept].detach(), rng))
                loss = loss + (symmetric_cross_entropy(view, logits[kept]) * weights[kept]).sum() / cfg.loss_divisor
            return loss, prior_correction(logits.detach())
        return objective
    return factory


def pull_to_source(momentum: float):
    """After a step: ``θ ← momentum·θ + (1 − momentum)·θ_source`` for every adapted parameter."""
    def after_step(params: list[torch.nn.Parameter], source: list[torch.Tensor]) -> None:
        for p, s in zip(params, source):
            p.mul_(momentum).add_(s, alpha=1 - momentum)
    return after_step


@register_method
class ROID(ConvNetMethod):
    """ERM source model; per target plate, diversity-weighted SLR + consistency, weight ensembling, prior correction."""

    name = "roid"
    access = AccessLevel.UNLABELED
    description = ("ERM source model; per target plate, TENT's online BN-affine updates on a certainty- and "
                   "diversity-weighted soft-likelihood-ratio + consistency loss, pulled to the source, "
                   "prior-corrected outputs (ROID)")
    Config = ROIDConfig
    config: ROIDConfig
    starts_from = ERMConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        return Recipe(batches=MixedBatches(cfg.batch_size),  # ERM's training ...
                      validation=RunningStats(),              # ... and model selection
                      test=TestTimeOptimisation(roid_objective(cfg), batch_size=cfg.batch_size, lr=cfg.tta_lr,
                                                seed=getattr(self, "seed_", 0),
                                                after_step=pull_to_source(cfg.source_momentum)))
