"""ROID does what it claims: the weight formula and mask, the soft-likelihood ratio, the symmetric
cross-entropy, the output's prior correction, the pull toward the source, and a prior reset for every plate."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.recipe.tta import TestTimeOptimisation, softmax_entropy
from benchmark.methods.erm import ERMConfig
from benchmark.methods.roid import (ROID, augment, min_max, prior_correction, pull_to_source, roid_objective,
                                    roid_weights, soft_likelihood_ratio, symmetric_cross_entropy)


def test_the_weights_follow_the_formula_and_mask_the_less_diverse_images():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.5], [1.0, 1.0, 1.0]])
    prior = torch.tensor([0.6, 0.3, 0.1])
    w, masked = roid_weights(logits, prior, 1 / 3)
    p = logits.softmax(1)
    d = 1 - (p @ prior) / (p.norm(dim=1) * prior.norm())
    d = (d - d.min()) / (d.max() - d.min())
    c = -softmax_entropy(logits)
    c = (c - c.min()) / (c.max() - c.min())
    expected = torch.exp(d * c * 3)
    assert torch.equal(masked, d < d.mean()) and masked.any() and not masked.all()
    torch.testing.assert_close(w, torch.where(masked, torch.zeros_like(expected), expected))


def test_a_batch_of_equal_images_is_weighted_one_and_not_masked():
    w, masked = roid_weights(torch.zeros(3, 8), torch.full((8,), 1 / 8), 1 / 3)
    assert not masked.any() and torch.equal(w, torch.ones(3))
    assert torch.equal(min_max(torch.tensor([2.0, 2.0])), torch.zeros(2))


def test_soft_likelihood_ratio_and_symmetric_cross_entropy():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    p = logits.softmax(1).clamp(max=0.99)
    expected = -(p * torch.log(p / (1 - p) + 1e-5)).sum(1)
    torch.testing.assert_close(soft_likelihood_ratio(logits), expected)
    assert math.isclose(float(p[0, 0]), 0.99, rel_tol=1e-7)  # clipped
    assert math.isclose(float(soft_likelihood_ratio(logits)[1]), -math.log(0.5 + 1e-5), rel_tol=1e-6)  # uniform
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    sce = -0.5 * (b.softmax(1) * a.log_softmax(1)).sum(1) - 0.5 * (a.softmax(1) * b.log_softmax(1)).sum(1)
    torch.testing.assert_close(symmetric_cross_entropy(a, b), sce)
    torch.testing.assert_close(symmetric_cross_entropy(a, b), symmetric_cross_entropy(b, a))


def test_the_output_is_rescaled_by_the_smoothed_batch_prior():
    logits = torch.tensor([[2.0, 0.0, 1.0, 0.0], [0.5, 1.5, 0.0, 0.0]])
    prior = logits.softmax(1).mean(0)
    s = max(1 / 2, 1 / 4) / float(prior.max())
    torch.testing.assert_close(prior_correction(logits), logits * (prior + s) / (1 + s * 4))
    flat = torch.zeros(5, 8)  # a uniform prior rescales every logit by the same factor
    torch.testing.assert_close(prior_correction(flat + 1.0), flat + (1 / 8 + 1) / (1 + 8))


def test_the_bn_parameters_are_pulled_toward_the_source_after_a_step():
    p, s = torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.tensor([0.0, 4.0])
    with torch.no_grad():
        pull_to_source(0.99)([p], [s])
    torch.testing.assert_close(p.data, torch.tensor([0.99, 0.99 * 2 + 0.01 * 4]))


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2 * 8 * 8, 8)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_the_loss_is_weighted_slr_plus_consistency_over_64_and_the_prior_starts_uniform_for_every_plate():
    torch.manual_seed(0)
    model, x = Tiny(), torch.randn(16, 2, 8, 8)
    cfg = ROID.Config()
    objective = roid_objective(cfg)(np.random.default_rng(3))
    loss, out = objective(model, x)
    logits = model(x)
    w, masked = roid_weights(logits, torch.full((8,), 1 / 8), 1 / 3)  # a fresh objective: the uniform prior
    view = model(augment(x[~masked], np.random.default_rng(3)))
    expected = ((soft_likelihood_ratio(logits) * w)[~masked].sum()
                + (symmetric_cross_entropy(view, logits[~masked]) * w[~masked]).sum()) / 64
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(out, prior_correction(logits))
    second, _ = objective(model, x)  # the prior moved: 0.9 · uniform + 0.1 · mean p
    prior = 0.9 * torch.full((8,), 1 / 8) + 0.1 * logits.softmax(1).mean(0)
    w2, m2 = roid_weights(logits, prior, 1 / 3)
    again, _ = roid_objective(cfg)(np.random.default_rng(3))(model, x)  # another plate: uniform again
    torch.testing.assert_close(again, loss)
    assert not torch.equal(w2, w) or not torch.equal(m2, masked) or not math.isclose(float(second), float(loss))


def test_augment_is_a_small_random_affine_view_drawn_from_the_generator():
    x = torch.rand(4, 5, 16, 16)
    a, b = augment(x, np.random.default_rng(0)), augment(x, np.random.default_rng(0))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    same = augment(x, np.random.default_rng(0), degrees=0, translate=0, scale=(1.0, 1.0))
    flipped = torch.flip(x, dims=[3])
    for i in range(4):  # without rotation, shift or zoom: the image or its mirror image
        assert (F.l1_loss(same[i], x[i]) < 1e-5) or (F.l1_loss(same[i], flipped[i]) < 1e-5)


def test_roid_is_tents_pass_from_erms_model_with_the_reference_setting():
    method = ROID()
    test = method.recipe().test
    assert isinstance(test, TestTimeOptimisation) and test.lr == 1e-3 and test.after_step is not None
    assert method.starts_from is ERMConfig and test.batch_size == method.config.batch_size
    cfg = method.config
    assert (cfg.temperature, cfg.prior_momentum, cfg.source_momentum, cfg.loss_divisor) == (1 / 3, 0.9, 0.99, 64.0)
