"""Deep CORAL: transductive steps (labelled + unlabelled target images), CE + 0.1 × CORAL penalty, eval at test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import benchmark.methods.deep_coral as deep_coral
from _method_data import split, view
from benchmark.core.recipe.coral import coral_penalty
from benchmark.core.recipe.features import features_and_logits
from benchmark.core.training.loop import Step
from benchmark.errors import DataError
from benchmark.methods.deep_coral import CoralLoss, DeepCORAL

FAST = dict(threads=1, crop=0, max_epochs=2, patience=2, lr=3e-3, schedule="constant", batch_size=24, n_target=16,
            augment="flips", weight_average=0.0)  # the recipe these mechanism checks were written on
TARGETS = ("src3_b0_p0", "src3_b1_p1")


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    views = [view(toy_dataset, target, plate)[0] for plate in TARGETS]
    seen = []
    original = deep_coral.coral_penalty

    def spy(features, domains, min_images=2):
        seen.append((features.shape, domains.clone()))
        return original(features, domains, min_images)

    deep_coral.coral_penalty = spy
    try:
        method = DeepCORAL(DeepCORAL.Config(**FAST)).fit(toy_dataset.labelled(train.table, views), val, seed=0)
    finally:
        deep_coral.coral_penalty = original
    return method, target, seen, len(train.plates)


def test_every_step_aligns_training_plates_with_target_plates(fitted):
    method, _, seen, n_train = fitted
    assert seen
    width = method.model_.get_classifier().in_features
    for shape, domains in seen:
        assert shape[1] == width  # the pooled features that enter the classifier head
        d = domains.numpy()
        assert (d[:-16] < n_train).all() and (d[-16:] >= n_train).all()  # 16 unlabelled target images last
        assert len(np.unique(d[-16:])) == 2  # both target plates appear


def test_loss_is_cross_entropy_plus_a_tenth_of_the_penalty(fitted):
    method, _, _, _ = fitted
    model = method.model_.train()
    torch.manual_seed(1)
    step = Step(torch.randn(12, 5, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1, -1]),
                torch.tensor([0, 0, 0, 1, 1, 1, 5, 5, 5, 6, 6, 6]))
    with torch.no_grad():
        got = CoralLoss(0.1)(model, step)
        features, logits = features_and_logits(model, step.inputs)
    want = F.cross_entropy(logits[:6], step.targets[:6]) + 0.1 * coral_penalty(features, step.domains)
    assert torch.allclose(got, want, rtol=1e-5)
    assert method.config.coral_weight == 0.1


def test_test_time_is_evaluation_mode_each_image_on_its_own(fitted, toy_dataset):
    method, target, _, _ = fitted
    v, _ = view(toy_dataset, target, "src3_b2_p0")
    x = v.treated[:]
    method.adapt(v)
    np.testing.assert_allclose(method.predict(x)[:5], method.predict(x[:5]), rtol=1e-5, atol=1e-6)


def test_fit_without_target_plates_says_what_access_it_needs(toy_dataset):
    train, val, _ = split(toy_dataset)
    with pytest.raises(DataError, match="transductive"):
        DeepCORAL(DeepCORAL.Config(**FAST)).fit(train, val, seed=0)


def _feature_gap(method, train, views) -> float:
    """CORAL penalty between the training plates' and the target plates' features (eval mode)."""
    net, model = method.net, method.model_.eval()
    with torch.no_grad():
        source = features_and_logits(model, net.tensor(train.read(train.treated_ids())))[0]
        target = features_and_logits(model, net.tensor(np.concatenate([v.treated[:] for v in views])))[0]
    return coral_penalty(torch.cat([source, target]), torch.tensor([0] * len(source) + [1] * len(target))).item()


def test_the_penalty_brings_target_features_closer_to_the_training_features(toy_dataset):
    train, val, target = split(toy_dataset)
    views = [view(toy_dataset, target, plate)[0] for plate in (*TARGETS, "src3_b2_p0")]
    transductive = toy_dataset.labelled(train.table, views)
    gaps = {}
    for weight in (0.0, 0.1):
        config = DeepCORAL.Config(**{**FAST, "max_epochs": 4, "patience": 4, "n_target": 24, "coral_weight": weight})
        gaps[weight] = _feature_gap(DeepCORAL(config).fit(transductive, val, seed=0), train, views)
    assert gaps[0.1] < 0.6 * gaps[0.0], gaps  # measured: 0.15 vs 0.36 (seed 0), 0.11 vs 0.40 (seed 1)
