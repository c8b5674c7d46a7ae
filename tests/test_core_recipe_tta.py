"""Test-time optimisation: BN affine parameters only, a prediction before each update, source weights per plate."""

from __future__ import annotations

import numpy as np
import torch

from benchmark.core.training.bn_stats import batch_stats_context, bn_layers
from benchmark.core.recipe.network import Network
from benchmark.core.training.preprocess import ChannelStats, Preprocessor
from benchmark.core.recipe.tta import TestTimeOptimisation, bn_affine_parameters, pass_generator, source_weights_restored
from benchmark.datasets.dataset import PlateView


def _net() -> Network:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(5, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 8)).eval()
    stats = ChannelStats(np.full(5, 100, np.float32), np.full(5, 25, np.float32))
    return Network(model, Preprocessor(stats, 8, "cpu"), eval_batch_size=64, owner="toy")


def _plate(seed: int, n: int = 12) -> PlateView:
    x = np.clip(np.random.default_rng(seed).normal(100 + 10 * seed, 25, size=(n, 5, 8, 8)), 0, 255).astype(np.uint8)
    return PlateView(f"p{seed}", x, x[:0])


def entropy(rng: np.random.Generator):
    def objective(model, inputs):
        logits = model(inputs)
        return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean(), logits
    return objective


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _predict(policy: TestTimeOptimisation, net: Network, plate: PlateView) -> torch.Tensor:
    return policy.adapt(net, plate).logits(net, net.pixels(plate.treated))


def test_bn_affine_parameters_are_the_weight_and_bias_of_every_bn_layer():
    model = _net().model
    assert bn_affine_parameters(model) == [p for layer in bn_layers(model) for p in (layer.weight, layer.bias)]


def test_source_weights_are_restored_after_every_plate():
    net = _net()
    net.model[0].weight.requires_grad_(False)  # flags are restored too
    source, modes = _state(net.model), [m.training for m in net.model.modules()]
    policy = TestTimeOptimisation(entropy, batch_size=4, lr=0.1)
    a = _predict(policy, net, _plate(1))
    assert all(torch.equal(source[k], v) for k, v in net.model.state_dict().items())
    assert [m.training for m in net.model.modules()] == modes and not net.model[0].weight.requires_grad
    _predict(policy, net, _plate(2))
    torch.testing.assert_close(_predict(policy, net, _plate(1)), a, rtol=0, atol=0)  # plate 2 left no trace


def test_only_the_bn_affine_parameters_change_during_a_pass():
    net = _net()
    source = _state(net.model)
    changed = []

    def after_step(params, start):
        now = net.model.state_dict()
        changed.append({k for k in source if not torch.equal(source[k], now[k])})
        assert torch.equal(start[0], source["1.weight"]) and torch.equal(start[1], source["1.bias"])

    _predict(TestTimeOptimisation(entropy, batch_size=4, lr=0.1, after_step=after_step), net, _plate(1))
    assert len(changed) == 3  # one update per batch of 4 of the 12 images
    parameters = {k for k, _ in net.model.named_parameters()}
    assert all(c & parameters == {"1.weight", "1.bias"} for c in changed)


def test_a_batch_is_predicted_before_its_update_and_outputs_follow_the_input_order():
    net, plate = _net(), _plate(1)
    policy = TestTimeOptimisation(entropy, batch_size=6, lr=0.5, seed=3)
    logits = _predict(policy, net, plate)
    order = pass_generator(3, plate.plate).permutation(12)
    pixels = net.pixels(plate.treated)
    with torch.no_grad(), batch_stats_context(net.model) as model:
        first = model(net.inputs(pixels[order[:6]]))
        second_at_source = model(net.inputs(pixels[order[6:]]))
    torch.testing.assert_close(logits[torch.as_tensor(order[:6])], first)  # the source model, batch statistics
    assert not torch.allclose(logits[torch.as_tensor(order[6:])], second_at_source)  # after the first update


def test_no_loss_means_no_update_and_a_fresh_objective_per_plate():
    net, plate = _net(), _plate(1)
    made = []

    def frozen(rng):
        made.append(rng)
        return lambda model, inputs: (None, model(inputs))

    policy = TestTimeOptimisation(frozen, batch_size=12)
    logits = _predict(policy, net, plate)
    _predict(policy, net, plate)
    assert len(made) == 2
    with torch.no_grad(), batch_stats_context(net.model) as model:
        order = pass_generator(0, plate.plate).permutation(12)
        expected = model(net.inputs(net.pixels(plate.treated)[order]))
    torch.testing.assert_close(logits[torch.as_tensor(order)], expected)


def test_source_weights_restored_undoes_any_change():
    net = _net()
    before = _state(net.model)
    with source_weights_restored(net.model):
        for p in net.model.parameters():
            p.data.add_(1.0)
        net.model.train()
        net.model(torch.randn(4, 5, 8, 8))  # updates running statistics
    assert all(torch.equal(before[k], v) for k, v in net.model.state_dict().items()) and not net.model.training
