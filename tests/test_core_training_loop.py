"""The training loop: early stopping with best-weight restore, NaN handling, context targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.core.training.loop import SELECTION_RULE, SizedEpoch, Step, TrainSettings, cross_entropy_loss, train_model
from benchmark.errors import MethodError


def _batches(x, y, n=4):
    def epoch(rng: np.random.Generator):
        for chunk in np.array_split(rng.permutation(len(x)), n):
            yield x[chunk], y[chunk]
    return epoch


def test_early_stopping_restores_the_weights_of_the_best_epoch():
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    model = torch.nn.Linear(3, 2)
    losses = iter([3.0, 1.0, 2.0, 2.5, 4.0, 5.0])
    snapshots = []

    def val_loss(m):
        snapshots.append(m.weight.detach().clone())
        return next(losses)

    report = train_model(model, _batches(x, y), val_loss, TrainSettings(max_epochs=6, patience=2), seed=0)
    assert report["epochs_run"] == 4 and report["best_epoch"] == 2 and report["best_val_loss"] == 1.0
    assert report["selection"] == SELECTION_RULE
    assert torch.equal(model.weight, snapshots[1])


def test_training_is_deterministic_given_the_seed():
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    weights = []
    for _ in range(2):
        model = torch.nn.Linear(3, 2)
        torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
        train_model(model, _batches(x, y), lambda m: 0.0, TrainSettings(max_epochs=2, patience=5), seed=3)
        weights.append(model.weight.detach().clone())
    assert torch.equal(*weights)


def test_nan_loss_stops_with_a_clear_message():
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    x[5] = float("nan")
    with pytest.raises(MethodError, match=r"training diverged: the training loss is nan at epoch 1, step \d; "
                                          r"lower the learning rate \(lr=0.001\)"):
        train_model(torch.nn.Linear(3, 2), _batches(x, y), lambda m: 0.0, TrainSettings(), seed=0)


def test_the_divergence_message_names_the_first_step_whose_loss_is_not_finite():
    """The losses are read once per epoch; the error still names the first bad step, not a later one."""
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    bad = x.clone()
    bad[0] = float("inf")
    steps = [(x, y), (x, y), (bad, y), (x, y), (x, y)]
    with pytest.raises(MethodError, match=r"the training loss is (nan|inf) at epoch 1, step 3;"):
        train_model(torch.nn.Linear(3, 2), lambda rng: iter(steps), lambda m: 0.0, TrainSettings(), seed=0)


def test_context_images_with_target_minus_one_do_not_enter_the_loss():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    y[4:] = -1  # DMSO context
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    one = lambda xs, ys: (lambda rng: iter([(xs, ys)]))  # noqa: E731
    train_model(a, one(x, y), lambda m: 0.0, TrainSettings(max_epochs=1), seed=0)
    train_model(b, one(x[:4], y[:4]), lambda m: 0.0, TrainSettings(max_epochs=1), seed=0)
    torch.testing.assert_close(a.weight, b.weight)


def _recorded_learning_rates(monkeypatch, settings, n_batches=5):
    lrs = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    batches = _batches(x, y, n_batches)
    train_model(torch.nn.Linear(3, 2), lambda rng: SizedEpoch(batches(rng), n_batches), lambda m: 0.0,
                settings, seed=0)
    return np.array(lrs)


def test_one_cycle_warms_up_to_the_learning_rate_then_anneals(monkeypatch):
    lrs = _recorded_learning_rates(monkeypatch, TrainSettings(lr=0.01, max_epochs=4, patience=9, schedule="onecycle"))
    assert len(lrs) == 20
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(0.01) and peak == 4  # a quarter of the 20 steps warm up
    assert np.all(np.diff(lrs[:peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert lrs[0] == pytest.approx(0.01 / 25) and lrs[-1] < 0.01 / 100


def test_one_cycle_over_four_steps_warms_up_over_two(monkeypatch):
    """torch's one-cycle divides by zero when the warm-up is exactly one step (a quarter of 4): two steps then."""
    lrs = _recorded_learning_rates(monkeypatch, TrainSettings(lr=0.01, max_epochs=1, patience=9, schedule="onecycle"),
                                   n_batches=4)
    assert len(lrs) == 4 and int(np.argmax(lrs)) == 1 and lrs[1] == pytest.approx(0.01)


def test_constant_schedule_keeps_the_learning_rate(monkeypatch):
    lrs = _recorded_learning_rates(monkeypatch, TrainSettings(lr=0.003, max_epochs=2, patience=9))
    assert len(lrs) == 10 and np.all(lrs == 0.003)


def test_schedule_errors_are_clear():
    with pytest.raises(MethodError, match="unknown learning-rate schedule 'cosine'; choose one of constant, onecycle"):
        TrainSettings(schedule="cosine")
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(MethodError, match="the onecycle schedule needs the number of steps per epoch"):
        train_model(torch.nn.Linear(3, 2), _batches(x, y), lambda m: 0.0,
                    TrainSettings(max_epochs=1, schedule="onecycle"), seed=0)


def test_a_training_loss_gets_every_step_with_its_domains():
    torch.manual_seed(0)
    x, y, d = torch.randn(12, 3), torch.randint(0, 2, (12,)), torch.arange(12) % 3
    seen = []

    def loss(model, step):
        seen.append(step)
        return cross_entropy_loss(model, step) + 0.0 * step.domains.sum()

    epoch = lambda rng: iter([Step(x[:6], y[:6], d[:6]), Step(x[6:], y[6:], d[6:])])  # noqa: E731
    train_model(torch.nn.Linear(3, 2), epoch, lambda m: 0.0, TrainSettings(max_epochs=2, patience=5), seed=0,
                loss=loss)
    assert len(seen) == 4 and all(isinstance(s, Step) for s in seen)
    assert torch.equal(torch.cat([s.domains for s in seen[:2]]), d)


def test_plain_pairs_are_steps_without_domains():
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    seen = []
    train_model(torch.nn.Linear(3, 2), lambda rng: iter([(x, y)]), lambda m: 0.0, TrainSettings(max_epochs=1), seed=0,
                loss=lambda model, step: seen.append(step) or cross_entropy_loss(model, step))
    assert seen[0].domains is None and torch.equal(seen[0].inputs, x)


def test_extra_parameters_train_with_their_own_learning_rate(monkeypatch):
    torch.manual_seed(0)
    model, head = torch.nn.Linear(3, 2), torch.nn.Linear(2, 4)
    frozen = head.weight.detach().clone()
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))

    def loss(m, step):
        return cross_entropy_loss(m, step) + head(m(step.inputs)).pow(2).mean()

    groups = [{"params": model.parameters()}, {"params": head.parameters(), "lr": 0.0}]
    before = model.weight.detach().clone()
    train_model(model, _batches(x, y), lambda m: 0.0, TrainSettings(max_epochs=2, patience=5), seed=0,
                loss=loss, params=groups)
    assert torch.equal(head.weight, frozen) and not torch.equal(model.weight, before)
    lrs = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        lrs.append([g["lr"] for g in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    groups = [{"params": model.parameters()}, {"params": head.parameters(), "lr": 1e-4}]
    batches = _batches(x, y)
    train_model(model, lambda rng: SizedEpoch(batches(rng), 4), lambda m: 0.0,
                TrainSettings(lr=0.01, max_epochs=2, patience=5, schedule="onecycle"), seed=0, loss=loss, params=groups)
    peaks = np.max(np.array(lrs), axis=0)
    assert peaks[0] == pytest.approx(0.01) and peaks[1] == pytest.approx(1e-4)  # each group peaks at its own lr
