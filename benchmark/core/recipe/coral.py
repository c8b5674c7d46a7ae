"""The CORAL penalty between domains (Sun & Saenko 2016, "Deep CORAL"): a pure function on features.

For every pair of domains present in a batch (with at least ``min_images`` images each),
the mean squared difference of their feature means plus that of their feature
covariances (unbiased, ``n − 1``); the penalty is the mean over pairs. Zero when all
domains have the same first and second moments.
"""

from __future__ import annotations

from itertools import combinations

import torch


def coral_penalty(features: torch.Tensor, domains: torch.Tensor, min_images: int = 2) -> torch.Tensor:
    """Mean over pairs of domains of ``mean((μ_i − μ_j)²) + mean((Σ_i − Σ_j)²)``.

    Parameters
    ----------
    features : ``(N, d)`` features (with gradient).
    domains : ``(N,)`` domain id of every row.
    min_images : domains with fewer rows take no part (a covariance needs 2).

    Returns
    -------
    A scalar tensor (float32); 0 (still connected to ``features``) when fewer than two domains qualify.
    """
    x = features.float()
    ids, counts = torch.unique(domains, return_counts=True)
    groups = [x[domains == d] for d, n in zip(ids.tolist(), counts.tolist()) if n >= max(min_images, 2)]
    if len(groups) < 2:
        return x.sum() * 0.0
    means = [g.mean(dim=0) for g in groups]
    covs = [torch.cov(g.T, correction=1) for g in groups]
    terms = [((means[i] - means[j]) ** 2).mean() + ((covs[i] - covs[j]) ** 2).mean()
             for i, j in combinations(range(len(groups)), 2)]
    return torch.stack(terms).mean()
