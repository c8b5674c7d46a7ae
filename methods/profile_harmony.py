"""profile_harmony — Harmony on embeddings of all plates jointly (Korsunsky et al. 2019, "Fast, sensitive and
accurate integration of single-cell data with Harmony"; best overall in Arevalo et al. 2024).

Access: ``transductive``. The profile pipeline (:mod:`benchmark.core.profiles.pipeline`) with harmonypy's
``run_harmony`` fitted in ``fit`` on every image it sees: the training and validation plates
and the target plates of ``train.targets`` (treated and DMSO, no labels), with the plate (or
the source) as the batch. Soft k-means clusters with a diversity penalty, then a per-cluster
linear correction of each batch. A target plate's images get their Harmony-corrected
embeddings; an image the fit did not see (held-out wells of a training plate) moves by the mean
correction of its nearest fitted images of the same batch. Target plates form one batch
``(target)`` when the batch is the source (a method never learns a target plate's lab). Then
the same logistic regression as every ``profile_*`` method.
"""

from __future__ import annotations

import dataclasses

from ..config_bounds import at_least, positive
from ..core.profiles.corrections import Correction, Harmony, check_batch_key
from ._profile import ProfileConfig, ProfileMethod
from ..registry import register_method
from .base import AccessLevel


@dataclasses.dataclass(frozen=True)
class ProfileHarmonyConfig(ProfileConfig):
    """profile_harmony hyper-parameters."""

    batch_key: str = "plate"  # Harmony's batch: "plate" or "source" (all target plates: one batch)
    theta: float = 2.0        # diversity penalty (harmonypy's default)
    sigma: float = 0.1        # soft-clustering bandwidth (harmonypy's default)
    n_clusters: int = 0       # clusters; 0 = harmonypy's default min(n / 30, 100)
    max_iter: int = 10        # Harmony iterations (harmonypy's default)
    neighbours: int = 10      # fitted images whose corrections move an image Harmony did not see
    threads: int = 1          # harmonypy threads (1 on a shared CPU)

    bounds = {"theta": at_least(0), "sigma": positive(), "n_clusters": at_least(0), "max_iter": at_least(1),
              "neighbours": at_least(1), "threads": at_least(0)}

    def __post_init__(self) -> None:
        super().__post_init__()  # the bounds
        check_batch_key(self.batch_key)  # refuse before any run starts, not inside fit


@register_method
class ProfileHarmony(ProfileMethod):
    """Harmony on the embeddings of all plates (target plates included, no labels), logistic regression."""

    name = "profile_harmony"
    access = AccessLevel.TRANSDUCTIVE
    description = "frozen encoder embeddings, Harmony fitted on all plates jointly (targets without labels) + logistic regression"
    Config = ProfileHarmonyConfig
    config: ProfileHarmonyConfig
    quick_overrides = {**ProfileMethod.quick_overrides, "max_iter": 5}

    def correction(self, seed: int) -> Correction:
        c = self.config
        return Harmony(c.batch_key, theta=c.theta, sigma=c.sigma, n_clusters=c.n_clusters, max_iter=c.max_iter,
                       neighbours=c.neighbours, seed=seed, threads=c.threads, verbose=self.verbose)
