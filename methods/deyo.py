"""DeYO — destroy your object: entropy minimisation on confident images whose prediction depends on their
shape (Lee et al. 2024, "Entropy is not Enough for Test-Time Adaptation: From the Perspective of
Disentangled Factors", ICLR, arXiv:2403.07366).

Access: ``unlabeled``. Source model, BN mode, trainable parameters, optimiser and the online pass per plate are
TENT's (:mod:`benchmark.methods.tent`). The loss of a batch, with ``C`` = 8 classes and ``H`` each image's
softmax entropy:

1. keep the images with ``H < 0.5·ln C`` (``entropy_filter``);
2. build ``x'`` from each kept image by cutting it into a 4×4 grid of patches and permuting the 16 patches at
   random (:func:`patch_shuffle`; the same pixels, the object destroyed); forward ``x'`` without gradient;
3. PLPD = ``p(ĉ|x) − p(ĉ|x')`` for the original prediction ``ĉ``; keep the images with PLPD > 0.2;
4. weight = ``exp(0.4·ln C − H) + exp(PLPD)`` (no gradient); loss = mean of ``H · weight`` over the kept
   images; no update when none is kept.

The reported logits of a batch are its forward pass before the update. The patches' permutations come from
the pass's generator (fit seed and plate name). Where a side is not a multiple of 4 the reference resizes
the image to one and back; here the last rows or columns stay in place instead (no interpolation, so the
pixels stay exactly the same; the CPU default crop of 40 px and the paper's 256 px divide evenly anyway).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..config_bounds import at_least, positive
from ..constants import N_CLASSES
from ..core.recipe.bn_policies import RunningStats
from ..core.recipe.axes import Recipe
from ..core.training.sampler import MixedBatches
from ..core.recipe.tta import Objective, TestTimeOptimisation, softmax_entropy
from ..registry import register_method
from ._convnet import ConvNetMethod
from .base import AccessLevel
from .erm import ERMConfig


def patch_shuffle(x: torch.Tensor, grid: int, rng: np.random.Generator) -> torch.Tensor:
    """Every image of ``x`` (N, C, H, W) cut into ``grid × grid`` patches, permuted at random per image.

    Patches are ``H // grid × W // grid``; when a side is not a multiple of ``grid`` its last rows (columns)
    stay in place, so every image keeps exactly its multiset of pixel values.
    """
    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    if ph == 0 or pw == 0:
        return x.clone()
    body = x[:, :, :ph * grid, :pw * grid]
    patches = body.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    perm = torch.as_tensor(np.stack([rng.permutation(grid * grid) for _ in range(n)]), device=x.device)
    patches = patches[torch.arange(n, device=x.device)[:, None], perm]
    shuffled = patches.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, ph * grid, pw * grid)
    out = x.clone()
    out[:, :, :ph * grid, :pw * grid] = shuffled
    return out


def plpd(probs: torch.Tensor, probs_shuffled: torch.Tensor) -> torch.Tensor:
    """Pseudo-label probability difference: ``p(ĉ|x) − p(ĉ|x')`` with ``ĉ`` the argmax of ``probs``."""
    top = probs.argmax(1, keepdim=True)
    return (probs.gather(1, top) - probs_shuffled.gather(1, top)).squeeze(1)


def deyo_weights(entropy: torch.Tensor, plpd_values: torch.Tensor, margin: float) -> torch.Tensor:
    """DeYO's sample weight ``exp(margin − H) + exp(PLPD)``."""
    return torch.exp(margin - entropy) + torch.exp(plpd_values)


@dataclasses.dataclass(frozen=True)
class DeYOConfig(ERMConfig):
    """DeYO hyper-parameters: ERM's (the source model) and the test-time optimiser's."""

    tta_lr: float = 1e-3             # Adam learning rate of the BN affine parameters on a target plate
    entropy_filter: float = 0.5      # keep images with entropy < entropy_filter · ln C (reference: 0.5)
    entropy_margin: float = 0.4      # weight term exp(entropy_margin · ln C − H) (reference: 0.4)
    plpd_threshold: float = 0.2      # keep images with PLPD above it (reference: 0.2)
    patch_grid: int = 4              # x' permutes a patch_grid × patch_grid grid of patches (reference: 4)

    bounds = {"tta_lr": positive(), "entropy_filter": at_least(0), "entropy_margin": at_least(0),
              "patch_grid": at_least(2)}


def deyo_objective(cfg: DeYOConfig):
    """The factory of DeYO's objective for ``cfg`` (one objective per plate, on the pass's generator)."""
    log_c = math.log(N_CLASSES)

    def factory(rng: np.random.Generator) -> Objective:
        def objective(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
            logits = model(inputs)
            entropy = softmax_entropy(logits)
            keep = entropy < cfg.entropy_filter * log_c
            if not keep.any():
                return None, logits
            with torch.no_grad():
                shuffled_logits = model(patch_shuffle(inputs[keep].detach(), cfg.patch_grid, rng))
            difference = plpd(logits[keep].softmax(1).detach(), shuffled_logits.softmax(1))
            sure = difference > cfg.plpd_threshold
            if not sure.any():
                return None, logits
            h = entropy[keep][sure]
            weight = deyo_weights(h.detach(), difference[sure], cfg.entropy_margin * log_c)
            return (h * weight).mean(), logits
        return objective
    return factory


@register_method
class DeYO(ConvNetMethod):
    """ERM source model; per target plate, entropy minimisation on confident, shape-dependent images (DeYO)."""

    name = "deyo"
    access = AccessLevel.UNLABELED
    description = ("ERM source model; per target plate, TENT's online BN-affine updates on images kept by entropy "
                   "and by the probability drop under patch shuffling, reweighted (DeYO)")
    Config = DeYOConfig
    config: DeYOConfig
    starts_from = ERMConfig

    def recipe(self) -> Recipe:
        cfg = self.config
        return Recipe(batches=MixedBatches(cfg.batch_size),  # ERM's training ...
                      validation=RunningStats(),              # ... and model selection
                      test=TestTimeOptimisation(deyo_objective(cfg), batch_size=cfg.batch_size, lr=cfg.tta_lr,
                                                seed=getattr(self, "seed_", 0)))
