"""ARM-BN: one plate per BN context in training and test; undoes per-channel affine shifts."""

from __future__ import annotations

import numpy as np
import pytest

from _method_data import recorded_batch_plates, shifted, split, view
from benchmark.methods.arm_bn import ARMBN

FAST = dict(threads=1, crop=0, max_epochs=4, patience=4, lr=3e-3, schedule="constant", n_treated=24,
            augment="flips", weight_average=0.0)  # the recipe these mechanism checks were written on


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    with recorded_batch_plates(toy_dataset) as seen:
        method = ARMBN(ARMBN.Config(**FAST)).fit(train, val, seed=0)
    return method, target, seen


def test_training_batches_hold_one_plate_each(fitted):
    _, _, seen = fitted
    assert seen and all(len(plates) == 1 for plates in seen)


def test_test_time_contexts_are_chunks_of_one_plate(fitted, toy_dataset):
    method, target, _ = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    sizes = []
    hook = method.model_.bn1.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    try:
        method.adapt(v).predict(v.treated)
    finally:
        hook.remove()
    assert sizes == [16, 16]  # the 32 treated images of the plate in near-equal chunks of at most n_treated


def test_predictions_for_a_plate_do_not_depend_on_other_plates(fitted, toy_dataset):
    method, target, _ = fitted
    a, _ = view(toy_dataset, target, "src3_b0_p0")
    b, _ = view(toy_dataset, target, "src3_b2_p1")
    first = method.adapt(a).predict(a.treated)
    method.adapt(b).predict(b.treated)
    np.testing.assert_allclose(method.adapt(a).predict(a.treated), first, rtol=1e-5, atol=1e-6)


def test_adaptation_undoes_a_per_channel_gain_and_offset_shift(fitted, toy_dataset):
    method, target, _ = fitted
    v, labels = view(toy_dataset, target, "src3_b1_p0")
    gain, offset = [0.8, 0.8, 0.8, 0.8, 0.8], [30, -20, 25, 10, -15]
    moved = type(v)(v.plate, shifted(v.treated, gain, offset), shifted(v.controls, gain, offset))
    base = method.adapt(v).predict(v.treated)
    after = method.adapt(moved).predict(moved.treated)
    assert (base.argmax(1) == labels).mean() > 0.6  # the model has learned the task
    assert (after.argmax(1) == base.argmax(1)).mean() >= 0.9
    assert np.abs(after - base).mean() < 0.05
