"""DANN: a plate classifier behind gradient reversal on the pooled features, its own learning rate, eval at test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _method_data import split, view
from benchmark.core.training.backbones import create_backbone
from benchmark.core.recipe.features import features_and_logits
from benchmark.core.training.loop import Step, TrainSettings, train_model
from benchmark.methods.dann import DANN, DomainAdversarialLoss, DomainAdversarialStep

FAST = dict(threads=1, crop=0, max_epochs=2, patience=2, lr=3e-3, schedule="constant", batch_size=24, n_target=16)
TARGETS = ("src3_b0_p0", "src3_b1_p1")


def _step(n_domains: int = 7) -> Step:
    torch.manual_seed(1)
    return Step(torch.randn(12, 5, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5] + [-1] * 6),
                torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 6, 5, 5, 6]) % n_domains)


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    views = [view(toy_dataset, target, plate)[0] for plate in TARGETS]
    seen, heads = [], {}
    original = DomainAdversarialStep.__call__

    def spy(self, model, step):
        heads.setdefault("initial", [p.detach().clone() for p in self.head.parameters()])
        heads["head"] = self.head
        seen.append((self.head[-1].out_features, step.domains.clone(), step.targets.clone()))
        return original(self, model, step)

    DomainAdversarialStep.__call__ = spy
    try:
        method = DANN(DANN.Config(**FAST)).fit(toy_dataset.labelled(train.table, views), val, seed=0)
    finally:
        DomainAdversarialStep.__call__ = original
    moved = [(p.detach() - q).abs().max().item() for p, q in zip(heads["head"].parameters(), heads["initial"])]
    return method, train, target, seen, moved


def test_reversal_flips_the_sign_of_the_domain_gradient_reaching_the_features():
    torch.manual_seed(0)
    model = create_backbone("resnet_micro")
    loss, _ = DomainAdversarialLoss(weight=0.5, lam=1.0, head_lr=1e-4, hidden=16).build(model, 7)
    head = loss.head
    features = torch.randn(10, model.num_features, requires_grad=True)
    domains = torch.randint(0, 7, (10,))
    through_reversal = torch.autograd.grad(F.cross_entropy(head(features), domains), features)[0]
    plain = torch.autograd.grad(F.cross_entropy(head[1:](features), domains), features)[0]  # head without reversal
    assert torch.allclose(through_reversal, -plain) and plain.abs().sum() > 0
    weight = head[1].weight  # the head itself still descends the domain loss
    g_rev = torch.autograd.grad(F.cross_entropy(head(features), domains), weight)[0]
    g_plain = torch.autograd.grad(F.cross_entropy(head[1:](features), domains), weight)[0]
    assert torch.allclose(g_rev, g_plain)


def test_loss_is_class_cross_entropy_plus_half_the_domain_cross_entropy_over_all_images():
    torch.manual_seed(0)
    model = create_backbone("resnet_micro").train()
    loss, _ = DomainAdversarialLoss(weight=0.5, lam=1.0, head_lr=1e-4, hidden=16).build(model, 7)
    assert isinstance(loss, DomainAdversarialStep)
    step = _step()
    torch.manual_seed(2)
    with torch.no_grad():
        got = loss(model, step)
        features, logits = features_and_logits(model, step.inputs)
        want = F.cross_entropy(logits[:6], step.targets[:6]) + 0.5 * F.cross_entropy(loss.head(features), step.domains)
    assert torch.allclose(got, want, rtol=1e-5)


def test_the_domain_head_trains_with_its_own_learning_rate():
    torch.manual_seed(0)
    model = create_backbone("resnet_micro")
    loss, groups = DomainAdversarialLoss(weight=0.5, lam=1.0, head_lr=1e-4, hidden=16).build(model, 7)
    assert [g["lr"] for g in groups] == [1e-4]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in loss.head.parameters()}
    head_before = [p.detach().clone() for p in loss.head.parameters()]
    stem_before = model.conv1.weight.detach().clone()
    params = [{"params": list(model.parameters())}, *groups]
    train_model(model, lambda rng: [_step()], lambda m: 0.0, TrainSettings(lr=1e-2, max_epochs=1, patience=1),
                seed=0, loss=loss, params=params)
    head_moved = max((p.detach() - q).abs().max().item() for p, q in zip(loss.head.parameters(), head_before))
    stem_moved = (model.conv1.weight.detach() - stem_before).abs().max().item()
    # Adam's first step moves every parameter by at most about its learning rate
    assert 0 < head_moved <= 1.01e-4 and stem_moved > 1e-3


def test_the_domain_head_predicts_the_plate_of_every_image_target_included(fitted):
    method, train, _, seen, moved = fitted
    assert min(moved) > 0  # fit trained the head (its parameter group reached the optimiser)
    n_train = len(train.plates)
    assert seen and all(n_out == n_train + len(TARGETS) for n_out, _, _ in seen)
    for _, domains, targets in seen:
        unlabelled = targets == -1
        assert (domains[unlabelled] >= n_train).all() and (domains[~unlabelled] < n_train).all()
    assert set(torch.cat([d for _, d, _ in seen]).tolist()) == set(range(n_train + len(TARGETS)))
    assert method.config.domain_lr == 1e-4 and method.config.domain_weight == 0.5 and method.config.reversal == 1.0


def test_test_time_is_evaluation_mode_each_image_on_its_own(fitted, toy_dataset):
    method, _, target, _, _ = fitted
    v, _ = view(toy_dataset, target, "src3_b2_p0")
    x = v.treated[:]
    method.adapt(v)
    np.testing.assert_allclose(method.predict(x)[:5], method.predict(x[:5]), rtol=1e-5, atol=1e-6)
