"""The CORAL penalty between domains: zero for identical domains, the hand computation otherwise."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from benchmark.core.recipe.coral import coral_penalty


def _by_hand(x: np.ndarray, d: np.ndarray, min_images: int = 2) -> float:
    groups = [x[d == k] for k in np.unique(d) if (d == k).sum() >= min_images]
    terms = []
    for a, b in combinations(groups, 2):
        mean = ((a.mean(0) - b.mean(0)) ** 2).mean()
        ca = (a - a.mean(0)).T @ (a - a.mean(0)) / (len(a) - 1)  # unbiased: n - 1
        cb = (b - b.mean(0)).T @ (b - b.mean(0)) / (len(b) - 1)
        terms.append(mean + ((ca - cb) ** 2).mean())
    return float(np.mean(terms))


def test_penalty_is_zero_for_identical_domains():
    x = torch.randn(6, 4)
    domains = torch.repeat_interleave(torch.arange(3), 6)
    assert coral_penalty(torch.cat([x, x, x]), domains).item() == 0.0  # three domains with the same images
    shuffled = torch.cat([x, x[torch.randperm(6)], x])  # the same images in another order: zero up to rounding
    assert abs(coral_penalty(shuffled, domains).item()) < 1e-12


def test_penalty_matches_a_hand_computation_over_all_pairs_of_domains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)) * rng.uniform(0.5, 2, size=5)
    d = np.array([0] * 7 + [1] * 6 + [2] * 5 + [3] * 1 + [4] * 1)  # domains 3, 4: one image, left out
    x[d == 1] += 1.5
    got = coral_penalty(torch.tensor(x, dtype=torch.float32), torch.tensor(d)).item()
    assert np.isclose(got, _by_hand(x, d), rtol=1e-5)
    assert np.isclose(coral_penalty(torch.tensor(x, dtype=torch.float32), torch.tensor(d), min_images=6).item(),
                      _by_hand(x, d, min_images=6), rtol=1e-5)  # only domains 0 and 1


def test_penalty_needs_two_domains_and_keeps_the_graph():
    x = torch.randn(8, 3, requires_grad=True)
    zero = coral_penalty(x, torch.tensor([0] * 7 + [1]))  # domain 1 has one image only
    assert zero.item() == 0.0 and zero.requires_grad
    shifted = torch.cat([x[:4], x[4:] + 1.0])
    loss = coral_penalty(shifted, torch.tensor([0] * 4 + [1] * 4))
    loss.backward()
    assert loss.item() > 0 and x.grad is not None and x.grad.abs().sum() > 0
