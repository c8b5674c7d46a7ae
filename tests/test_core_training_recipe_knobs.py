"""The training-recipe knobs of issue 26: dihedral augmentation, SGD-Nesterov, the plateau schedule, the per-epoch
hook and the convergence fields of the fit report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.core.training.loop import PlateauSchedule, SizedEpoch, TrainSettings, make_optimiser, train_model
from benchmark.core.training.preprocess import random_crop_flip
from benchmark.config_bounds import ConfigError
from benchmark.errors import MethodError
from benchmark.methods.erm import ERMConfig


def _symmetries(square: np.ndarray) -> list[np.ndarray]:
    """The 8 images of the dihedral group of a (C, s, s) square."""
    out = []
    for k in range(4):
        rotated = np.rot90(square, k, axes=(1, 2))
        out += [rotated, rotated[:, :, ::-1]]
    return out


def _which(patch: np.ndarray, group: list[np.ndarray]) -> int:
    matches = [i for i, g in enumerate(group) if np.array_equal(patch, g)]
    assert len(matches) == 1, "every augmented crop is exactly one symmetry of the crop"
    return matches[0]


@pytest.mark.parametrize("augment, n_expected", [("flips", 4), ("dihedral", 8)])
def test_the_augmentation_draws_the_symmetries_it_names(augment, n_expected):
    image = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(1, 2, 6, 6)  # no symmetry of its own
    group = _symmetries(image[0])
    seen = [_which(p, group) for p in random_crop_flip(np.repeat(image, 400, axis=0), 6, np.random.default_rng(0),
                                                        augment)]
    counts = np.bincount(seen, minlength=8)
    assert (counts > 0).sum() == n_expected
    assert counts[counts > 0].min() > 400 / n_expected * 0.6  # roughly uniform over the drawn ones


def test_flips_draw_what_they_drew_before_the_dihedral_option():
    """augment="flips" keeps the old random stream: records of the old default are reproduced bit for bit."""
    images = np.random.default_rng(1).integers(0, 255, size=(16, 2, 10, 10), dtype=np.uint8)
    old = random_crop_flip(images, 6, np.random.default_rng(5))
    assert np.array_equal(old, random_crop_flip(images, 6, np.random.default_rng(5), "flips"))


def test_unknown_recipe_choices_are_refused_with_the_valid_ones():
    with pytest.raises(MethodError, match="unknown optimizer 'lamb'; choose one of adam, sgd"):
        ERMConfig(optimizer="lamb")
    with pytest.raises(MethodError, match="unknown augmentation 'rot45'; choose one of flips, dihedral"):
        ERMConfig(augment="rot45")
    with pytest.raises(MethodError, match="unknown learning-rate schedule 'cosine'; choose one of constant, "
                                          "onecycle, plateau"):
        ERMConfig(schedule="cosine")


def test_sgd_is_nesterov_with_momentum():
    opt = make_optimiser(torch.nn.Linear(2, 2).parameters(), TrainSettings(optimizer="sgd", lr=0.1, weight_decay=1e-4))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.9
    assert group["lr"] == 0.1 and group["weight_decay"] == 1e-4


def test_the_plateau_schedule_warms_up_over_the_first_epoch_then_decays_on_stalls():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = PlateauSchedule(opt, TrainSettings(schedule="plateau", lr=1.0, lr_patience=2, lr_decay=0.1), 4)
    lrs = [schedule.lr]
    for _ in range(6):
        schedule.step()
        lrs.append(schedule.lr)
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])  # warm-up over 4 steps, then the peak
    for loss, expected in [(1.0, 1.0), (0.9, 1.0), (0.95, 1.0), (0.95, 0.1), (0.92, 0.1), (0.85, 0.1),
                           (0.9, 0.1), (0.9, 0.01)]:
        schedule.epoch_end(loss)
        assert schedule.lr == pytest.approx(expected)


def _toy_epoch(x, y):
    def epoch(rng):
        order = rng.permutation(len(x))
        return SizedEpoch(((x[c], y[c]) for c in np.array_split(order, 4)), 4)
    return epoch


def test_the_fit_report_says_whether_the_best_epoch_lies_before_the_cap_and_keeps_every_epochs_losses():
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    losses = iter([3.0, 1.0, 2.0, 2.5, 2.6, 2.7])
    report = train_model(torch.nn.Linear(3, 2), _toy_epoch(x, y), lambda m: next(losses),
                         TrainSettings(max_epochs=6, patience=3, schedule="plateau", lr_patience=1, lr_decay=0.5),
                         seed=0)
    assert report["best_epoch"] == 2 and report["epochs_run"] == 5 and report["converged"] is True
    assert report["val_loss"] == [3.0, 1.0, 2.0, 2.5, 2.6] and len(report["lr"]) == 5
    assert report["lr"][2] == pytest.approx(1e-3) and report["lr"][3] == pytest.approx(5e-4)  # decayed after epoch 3
    falling = iter([3.0, 2.0, 1.0])
    cut = train_model(torch.nn.Linear(3, 2), _toy_epoch(x, y), lambda m: next(falling),
                      TrainSettings(max_epochs=3, patience=3), seed=0)
    assert cut["best_epoch"] == 3 and cut["converged"] is False  # still improving at the cap: cut off


def test_the_epoch_hook_is_called_after_every_validation_with_the_model_in_eval_mode():
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    calls = []

    def hook(epoch, losses):
        calls.append((epoch, model.training, sorted(losses)))

    model = torch.nn.Linear(3, 2)
    train_model(model, _toy_epoch(x, y), lambda m: 1.0, TrainSettings(max_epochs=3, patience=5), seed=0, on_epoch=hook)
    assert calls == [(e, False, ["lr", "train_loss", "val_loss"]) for e in (1, 2, 3)]


def test_the_weight_average_is_what_is_validated_selected_and_returned():
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    model = torch.nn.Linear(3, 2)
    start = model.weight.detach().clone()
    seen, live = [], []

    def val_loss(m):
        seen.append(m.weight.detach().clone())
        return float(len(seen) == 1)  # epoch 2 is best

    def hook(epoch, losses):
        assert torch.equal(model.weight, seen[-1])  # the curve watches the validated (averaged) network

    def remember_live(epoch_batches):
        def epoch(rng):
            live.append(model.weight.detach().clone())  # the live weights, as the next epoch starts
            return epoch_batches(rng)
        return epoch

    train_model(model, remember_live(_toy_epoch(x, y)), val_loss,
                TrainSettings(max_epochs=3, patience=5, lr=0.1, weight_average=0.9), seed=0, on_epoch=hook)
    assert not torch.equal(seen[1], live[2])  # validated: the average, not the live weights
    assert torch.equal(model.weight, seen[1])  # returned: the best epoch's average
    # the average of steps from the start lies between the start and the live weights of its epoch
    assert (seen[0] - start).norm() < (live[1] - start).norm()


def test_the_weight_average_decay_must_be_below_one():
    with pytest.raises(ConfigError, match=r"weight_average=1.0 is out of range: it must be in \[0, 1\)"):
        ERMConfig(weight_average=1.0)


def test_min_delta_stops_on_a_crawl_but_still_keeps_the_lowest_loss():
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    crawl = [1.0, 0.5, 0.499, 0.498, 0.497, 0.496, 0.495, 0.494]
    runs = {}
    for min_delta in (0.0, 0.01):
        losses = iter(crawl)
        runs[min_delta] = train_model(torch.nn.Linear(3, 2), _toy_epoch(x, y), lambda m: next(losses),
                                      TrainSettings(max_epochs=8, patience=3, min_delta=min_delta), seed=0)
    assert runs[0.0]["epochs_run"] == 8 and runs[0.0]["best_epoch"] == 8
    # with a 1 % threshold the last progress is epoch 2; epochs 3-5 crawl, so it stops after epoch 5 ...
    assert runs[0.01]["epochs_run"] == 5
    assert runs[0.01]["best_epoch"] == 5  # ... and keeps the lowest loss it saw, not epoch 2's


def test_the_plateau_schedule_decays_on_a_crawl_under_min_delta():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = PlateauSchedule(opt, TrainSettings(schedule="plateau", lr=1.0, lr_patience=2, lr_decay=0.1,
                                                  min_delta=0.05), 1)
    schedule.step()
    for loss in (1.0, 0.97, 0.96):  # 3 % and 1 % below the reference 1.0: no progress at 5 %
        schedule.epoch_end(loss)
    assert schedule.lr == pytest.approx(0.1)


def test_the_weight_average_is_the_mean_of_the_steps_until_its_horizon_then_exponential():
    from benchmark.core.training.weight_average import WeightAverage

    model = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, decay=0.75)  # horizon 4 steps
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    expected = []
    for t, v in enumerate(values, start=1):
        model.weight.data.fill_(v)
        average.update(model)
        if t <= 4:
            expected.append(sum(values[:t]) / t)  # the plain mean of the steps so far
        else:
            expected.append(0.75 * expected[-1] + 0.25 * v)
        assert average.state["weight"].item() == pytest.approx(expected[-1])
