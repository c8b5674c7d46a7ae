"""ARM-CML: a jointly trained context network; a chunk's context is its images' mean maps (order-free, its own);
``context_pool`` runs the context network on a pooled image (an option; 1, the reference, by default)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _method_data import recorded_batch_plates, split, view
from benchmark.config_bounds import ConfigError
from benchmark.core.recipe.context import ContextualClassifier
from benchmark.errors import MethodError
from benchmark.methods.arm_cml import ARMCML
from benchmark.protocol.loop import resolve_config

FAST = dict(threads=1, crop=0, max_epochs=2, patience=2, lr=3e-3, schedule="constant", n_treated=16)


@pytest.fixture(scope="module")
def fitted(toy_dataset):
    train, val, target = split(toy_dataset)
    with recorded_batch_plates(toy_dataset) as seen:
        method = ARMCML(ARMCML.Config(**FAST)).fit(train, val, seed=0)
    return method, target, seen


def test_the_classifier_takes_the_images_and_twelve_context_channels(fitted):
    method, _, _ = fitted
    model = method.model_
    assert isinstance(model, ContextualClassifier)
    assert model.classifier.conv1.in_channels == 17 and model.context_net.out_channels == 12
    assert model.context_net.pool == method.config.context_pool == 1  # the reference, by default


def test_context_pool_is_the_reference_by_default_and_in_the_paper_preset():
    assert ARMCML.Config().context_pool == 1
    assert resolve_config(ARMCML, preset="paper").context_pool == 1
    with pytest.raises(ConfigError, match="context_pool"):
        ARMCML.Config(context_pool=0)


def test_a_context_pool_that_does_not_fit_the_crop_fails_before_training(toy_dataset):
    train, val, _ = split(toy_dataset)  # 16 px images, crop 0: the whole image
    method = ARMCML(ARMCML.Config(**{**FAST, "context_pool": 3}))
    expected = (r"context_pool 3 does not divide the training crop \(crop\), 16x16 px and the evaluation crop "
                r"\(eval_crop\), 16x16 px.*one of \[1, 2, 4, 8, 16\]")
    with pytest.raises(MethodError, match=expected):
        method.fit(train, val, seed=0)
    assert not hasattr(method, "fit_report_")


def test_context_net_and_classifier_train_jointly_on_one_plate_batches(fitted):
    method, _, seen = fitted
    assert seen and all(len(plates) == 1 for plates in seen)
    torch.manual_seed(0)
    fresh = method.build_model()  # the initialisation fit started from (seed 0)
    for part in ("context_net", "classifier"):
        trained = dict(getattr(method.model_, part).named_parameters())
        initial = dict(getattr(fresh, part).named_parameters())
        assert all(not torch.equal(trained[k], initial[k]) for k in trained if k.endswith("weight"))


def test_predictions_do_not_depend_on_the_order_of_a_chunks_images(fitted, toy_dataset):
    method, target, _ = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    x = v.treated[:16]  # one chunk
    order = np.random.default_rng(0).permutation(16)
    method.adapt(v)
    np.testing.assert_allclose(method.predict(x[order]), method.predict(x)[order], rtol=1e-5, atol=1e-6)


def test_a_chunks_predictions_do_not_depend_on_other_chunks(fitted, toy_dataset):
    method, target, _ = fitted
    v, _ = view(toy_dataset, target, "src3_b0_p0")
    w, _ = view(toy_dataset, target, "src3_b2_p1")
    x = v.treated[:]
    assert len(x) == 32  # two chunks of 16
    method.adapt(v)
    both = method.predict(x)
    other_second = method.predict(np.concatenate([x[:16], w.treated[:16]]))
    np.testing.assert_allclose(other_second[:16], both[:16], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(method.predict(x[:16]), both[:16], rtol=1e-5, atol=1e-6)
    assert np.abs(other_second[16:] - both[16:]).max() > 1e-4  # the context does reach the prediction


def test_the_context_is_the_batch_mean_of_the_context_maps(fitted):
    method, _, _ = fitted
    model = method.model_.eval()
    x = torch.randn(6, 5, 16, 16)
    seen = []
    hook = model.classifier.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(x)
            maps = model.context_net(x)
    finally:
        hook.remove()
    extra = seen[0][:, 5:]
    assert torch.equal(seen[0][:, :5], x)
    assert torch.allclose(extra, maps.mean(0, keepdim=True).expand_as(extra), atol=1e-6)
