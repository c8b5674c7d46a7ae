"""AdaBN and BEN do what they claim: whose BN statistics they use, and that these undo a plate's affine shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _method_data import shifted, split, view
from benchmark.core.training.bn_stats import bn_layers, reference_stats_bn
from benchmark.methods.adabn import AdaBN
from benchmark.methods.ben import BEN
from benchmark.methods.erm import ERM

FAST = dict(threads=1, crop=0, max_epochs=4, patience=4, lr=3e-3, schedule="constant",
            augment="flips", weight_average=0.0)  # the recipe these mechanism checks were written on
GAIN, OFFSET = [0.8] * 5, [30, -20, 25, 10, -15]


@pytest.fixture(scope="module")
def adabn(toy_dataset):
    train, val, target = split(toy_dataset)
    return AdaBN(AdaBN.Config(**FAST)).fit(train, val, seed=0), target


@pytest.fixture(scope="module")
def ben(toy_dataset):
    train, val, target = split(toy_dataset)
    return BEN(BEN.Config(**FAST, n_treated=24, n_controls=16)).fit(train, val, seed=0), target


def first_bn_input(model, x):
    """What the first BN layer receives for inputs ``x`` (the stem convolution's output)."""
    with torch.no_grad():
        return model.model_.conv1(x)


def test_adabn_statistics_are_those_of_the_plates_treated_images(adabn, toy_dataset):
    method, target = adabn
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    method.adapt(v)
    h = first_bn_input(method, method.net.tensor(v.treated))
    stats = method.plate_norm_.stats
    np.testing.assert_allclose(stats["bn1.running_mean"], h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["bn1.running_var"], h.var(dim=(0, 2, 3)), rtol=1e-3, atol=1e-5)


def test_adabn_trains_exactly_as_erm(adabn, toy_dataset):
    method, _ = adabn
    train, val, _ = split(toy_dataset)
    erm = ERM(method.config).fit(train, val, seed=0)
    assert erm.fit_report()["best_val_loss"] == method.fit_report()["best_val_loss"]
    assert all(torch.equal(v, method.model_.state_dict()[k]) for k, v in erm.model_.state_dict().items())


def test_adabn_undoes_a_per_channel_affine_shift_that_erm_does_not(adabn, toy_dataset):
    method, target = adabn
    v, labels = view(toy_dataset, target, "src3_b1_p0")
    moved = type(v)(v.plate, shifted(v.treated, GAIN, OFFSET), shifted(v.controls, GAIN, OFFSET))
    base = method.adapt(v).predict(v.treated)
    after = method.adapt(moved).predict(moved.treated)
    erm = ERM(method.config)
    erm.__dict__.update({k: v for k, v in method.__dict__.items() if k.endswith("_")})  # the same weights ...
    erm_after = erm.adapt(moved).predict(moved.treated)  # ... with ERM's test time: training-time BN statistics
    assert (base.argmax(1) == labels).mean() > 0.6
    assert (after.argmax(1) == base.argmax(1)).mean() >= 0.9 and np.abs(after - base).mean() < 0.05
    assert np.abs(erm_after - base).mean() > 2 * np.abs(after - base).mean()


def test_ben_statistics_are_those_of_the_plates_dmso_images(ben, toy_dataset):
    method, target = ben
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    method.adapt(v)
    h = first_bn_input(method, method.net.tensor(v.controls))
    stats = method.plate_norm_.stats
    np.testing.assert_allclose(stats["bn1.running_mean"], h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["bn1.running_var"], h.var(dim=(0, 2, 3), unbiased=False), rtol=1e-3, atol=1e-5)


def test_ben_test_time_equals_its_training_time_normalisation(ben, toy_dataset):
    """In training every layer normalises with the batch's DMSO rows; at test with the plate's DMSO statistics."""
    method, target = ben
    v, _ = view(toy_dataset, target, "src3_b2_p1")
    treated, controls = method.net.tensor(v.treated[:8]), method.net.tensor(v.controls)
    model = method.model_
    with torch.no_grad(), reference_stats_bn(model) as rows:
        model.train()
        rows.mask = torch.arange(len(treated) + len(controls)) >= len(treated)
        training_logits = model(torch.cat([treated, controls]))[:len(treated)]
        model.eval()
    method.adapt(v)
    test_logits = method.plate_norm_.logits(method.net, method.net.pixels(v.treated[:8]))
    np.testing.assert_allclose(test_logits.numpy(), training_logits.numpy(), rtol=1e-4, atol=1e-4)


def test_ben_reference_rows_set_every_bn_layers_statistics(ben):
    method, _ = ben
    model = method.model_
    x = torch.randn(6, 5, 16, 16) * 3 + 1
    seen = []
    with torch.no_grad(), reference_stats_bn(model) as rows:
        hook = bn_layers(model)[0].register_forward_hook(lambda m, i, o: seen.append(o.clone()))  # the ReLU after it is in-place
        try:
            model.train()
            rows.mask = torch.tensor([False, False, True, True, True, True])
            model(x)
        finally:
            hook.remove()
            model.eval()
    out = seen[0]
    layer = bn_layers(model)[0]
    ref = (out[2:] - layer.bias.view(1, -1, 1, 1)) / layer.weight.view(1, -1, 1, 1)
    np.testing.assert_allclose(ref.mean(dim=(0, 2, 3)).detach().numpy(), 0, atol=1e-4)  # the DMSO rows are standardised
    np.testing.assert_allclose(ref.var(dim=(0, 2, 3), unbiased=False).detach().numpy(), 1, atol=1e-2)


def test_ben_undoes_a_per_channel_affine_shift_from_the_controls_alone(ben, toy_dataset):
    method, target = ben
    v, labels = view(toy_dataset, target, "src3_b1_p0")
    moved = type(v)(v.plate, shifted(v.treated, GAIN, OFFSET), shifted(v.controls, GAIN, OFFSET))
    base = method.adapt(v).predict(v.treated)
    after = method.adapt(moved).predict(moved.treated)
    assert (base.argmax(1) == labels).mean() > 0.6
    assert (after.argmax(1) == base.argmax(1)).mean() >= 0.9 and np.abs(after - base).mean() < 0.05


def test_ben_training_normalises_with_the_samplers_dmso_rows(toy_dataset, monkeypatch):
    train, val, _ = split(toy_dataset)
    method = BEN(BEN.Config(**{**FAST, "max_epochs": 1}, n_treated=24, n_controls=16))
    masks = []
    original = reference_stats_bn

    def spy(model):
        ctx = original(model)
        rows = ctx.__enter__()
        real = type(rows)

        class Recording(real):
            def __setattr__(self, name, value):
                if name == "mask" and value is not None:
                    masks.append(value.clone())
                super().__setattr__(name, value)
        rows.__class__ = Recording

        class Wrap:
            def __enter__(self):
                return rows

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)
        return Wrap()

    monkeypatch.setattr("benchmark.core.recipe.bn_policies.reference_stats_bn", spy)
    method.fit(train, val, seed=0)
    assert masks and all(int(m.sum()) == 16 and not m[:int((~m).sum())].any() for m in masks)
