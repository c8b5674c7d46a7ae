"""The training loop: early stopping with best-weight restore, NaN handling, context targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.core.training import SELECTION_RULE, TrainSettings, train_model
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
