"""TENT does what it claims: ERM's source model, only BN affine parameters change, batch statistics, the mean
entropy as loss, a fresh start for every plate, the prediction before the update."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _method_data import split, view
from benchmark.core.training.bn_stats import batch_stats_context, bn_layers
from benchmark.core.recipe.tta import TestTimeOptimisation, pass_generator, softmax_entropy
from benchmark.methods.erm import ERM
from benchmark.methods.tent import Tent, entropy_objective

QUICK = dict(threads=1, crop=0, max_epochs=1, patience=1, lr=3e-3, schedule="constant", batch_size=16)


@pytest.fixture(scope="module")
def tent(toy_dataset):
    train, val, target = split(toy_dataset)
    return Tent(Tent.Config(**QUICK, tta_lr=0.05)).fit(train, val, seed=0), target


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_source_model_is_erms(tent, toy_dataset):
    method, _ = tent
    train, val, _ = split(toy_dataset)
    erm = ERM(ERM.Config(**QUICK)).fit(train, val, seed=0)
    assert all(torch.equal(erm.model_.state_dict()[k], v) for k, v in method.model_.state_dict().items())


def test_the_recipe_is_the_reference_setting():
    test = Tent().recipe().test
    assert isinstance(test, TestTimeOptimisation) and test.lr == 1e-3 and test.batch_size == Tent().config.batch_size
    assert test.objective is entropy_objective and test.after_step is None


def test_only_bn_affine_parameters_change_and_every_plate_starts_from_the_source(tent, toy_dataset):
    method, target = tent
    source = _state(method.model_)
    affine = {f"{name}.{p}" for name, m in method.model_.named_modules() if m in bn_layers(method.model_)
              for p in ("weight", "bias")}
    parameters = {k for k, _ in method.model_.named_parameters()}
    seen = []

    def after_step(params, start):
        now = method.model_.state_dict()
        seen.append({k for k in parameters if not torch.equal(source[k], now[k])})
        assert all(torch.equal(a, b) for a, b in zip(start, [source[k] for k in sorted(affine, key=list(source).index)]))

    spy = dataclasses.replace(method.recipe().test, after_step=after_step)
    net = method.net
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    spy.adapt(net, v).logits(net, net.pixels(v.treated[:]))
    n = len(v.treated)
    assert len(seen) == -(-n // QUICK["batch_size"]) and all(s <= affine for s in seen)
    assert len(seen[-1]) > len(affine) / 2  # (a BN channel whose gradient is 0 may stay)
    assert all(torch.equal(source[k], t) for k, t in method.model_.state_dict().items())  # restored

    a = method.adapt(v).predict(v.treated[:])
    w, _ = view(toy_dataset, target, "src3_b1_p0")
    method.adapt(w).predict(w.treated[:])
    np.testing.assert_array_equal(method.adapt(v).predict(v.treated[:]), a)  # plate b1 left no trace
    assert all(torch.equal(source[k], t) for k, t in method.model_.state_dict().items())


def test_the_first_batch_is_the_source_model_with_batch_statistics_and_later_ones_are_adapted(tent, toy_dataset):
    method, target = tent
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    probs = method.adapt(v).predict(v.treated[:])
    net, bs = method.net, QUICK["batch_size"]
    order = pass_generator(0, "src3_b0_p0").permutation(len(v.treated))
    pixels = net.pixels(v.treated[:])
    with torch.no_grad(), batch_stats_context(method.model_) as model:
        first = model(net.inputs(pixels[order[:bs]])).double().softmax(1).numpy()
        second = model(net.inputs(pixels[order[bs:2 * bs]])).double().softmax(1).numpy()
    np.testing.assert_allclose(probs[order[:bs]], first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs[order[bs:2 * bs]], second, atol=1e-6)


def test_the_loss_is_the_mean_softmax_entropy():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    loss, out = entropy_objective(np.random.default_rng(0))(torch.nn.Identity(), logits)
    assert out is logits
    torch.testing.assert_close(loss, torch.tensor([np.log(2), 0.0], dtype=torch.float32).mean(), atol=1e-6, rtol=0)
    torch.testing.assert_close(softmax_entropy(logits)[0], torch.tensor(float(np.log(2))))


def test_shuffles_depend_on_seed_and_plate():
    a = pass_generator(0, "p1").permutation(50)
    assert np.array_equal(a, pass_generator(0, "p1").permutation(50))
    assert not np.array_equal(a, pass_generator(0, "p2").permutation(50))
    assert not np.array_equal(a, pass_generator(1, "p1").permutation(50))
