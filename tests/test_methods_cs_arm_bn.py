"""CS-ARM-BN: BN contexts hold the plate's DMSO images; the loss ignores them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _method_data import split, view
from benchmark.core.training.loader import epochs
from benchmark.core.training.sampler import OnePlateBatches, PlateContext
from benchmark.core.recipe.validation import ValidationSet
from benchmark.errors import MethodError
from benchmark.methods.cs_arm_bn import CSARMBN

FAST = dict(threads=1, crop=0, max_epochs=2, patience=2, lr=3e-3, schedule="constant", n_treated=24,
            n_controls=16)


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    return CSARMBN(CSARMBN.Config(**FAST)).fit(train, val, seed=0), train, target


def test_bn_context_holds_treated_chunk_plus_the_plates_dmso(fitted, toy_dataset):
    method, _, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    inputs = []
    hook = method.model_.conv1.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().clone()))
    try:
        base = method.adapt(v).predict(v.treated)
    finally:
        hook.remove()
    assert [len(x) for x in inputs] == [16 + 16] * 2
    controls = method.net.tensor(v.controls)
    assert all(any(torch.equal(row, c) for c in controls) for x in inputs for row in x[16:])
    # different DMSO images change the statistics, hence the predictions
    other = type(v)(v.plate, v.treated, np.asarray(v.controls)[::-1].copy())
    assert not np.allclose(method.adapt(other).predict(v.treated), base)


def test_default_context_holds_twice_as_many_controls_as_treated_images():
    """The reference's 64 treated + 128 DMSO, at the CPU default's 32 treated: the label-shift scenario depends on it."""
    config = CSARMBN.Config()
    assert config.n_controls == 2 * config.n_treated == 64
    assert CSARMBN(config).recipe().batches == OnePlateBatches(PlateContext(32, n_controls=64))


def test_training_targets_mark_dmso_as_context_outside_the_loss(fitted):
    method, train, _ = fitted
    steps = epochs(train, method.recipe().batches, method.preprocess_)
    assert method.recipe().batches == OnePlateBatches(PlateContext(24, n_controls=16))
    x, y, _ = next(iter(steps(np.random.default_rng(0))))
    assert len(x) == 16 + 16 and (y[16:] == -1).all() and (y[:16] >= 0).all()  # 32 treated per plate: chunks of 16


def test_full_domain_stats_predict_each_image_on_its_own(fitted, toy_dataset):
    method, _, target = fitted
    full = CSARMBN(method.config.replace(full_domain_stats=True))
    full.__dict__.update({k: v for k, v in method.__dict__.items() if k.endswith("_")})
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    x = np.asarray(v.treated)
    full.adapt(v)
    np.testing.assert_allclose(full.predict(x[:5]), full.predict(x)[:5], rtol=1e-5, atol=1e-6)


def test_a_target_plate_without_dmso_is_a_clear_error(fitted, toy_dataset):
    method, _, target = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0", with_controls=False)
    with pytest.raises(MethodError, match="plate src3_b0_p0 has no DMSO images; cs_arm_bn needs the plate's controls"):
        method.adapt(v)


def test_the_fit_seed_orders_validation_and_draws_the_controls(toy_dataset, monkeypatch):
    train, val, _ = split(toy_dataset)
    seen = []
    read = ValidationSet.read

    def spy(val, source, net, seed=0):
        seen.append((seed, source.seed))
        return read(val, source, net, seed)

    monkeypatch.setattr(ValidationSet, "read", spy)
    method = CSARMBN(CSARMBN.Config(**{**FAST, "max_epochs": 1})).fit(train, val, seed=3)
    assert seen == [(3, 3)] and method.recipe().test.seed == 3

