"""The epoch loader (in-process and worker processes), the device policy and the training-loop timing hook."""

import numpy as np
import torch

from benchmark.core.training.accel import Autocast, accelerate, loader_workers, mixed_precision, to_device
from benchmark.core.training.loader import epochs, training_steps
from benchmark.core.training.preprocess import Preprocessor, channel_stats
from benchmark.core.training.sampler import MixedBatches, OnePlateBatches, PlateContext, plate_batches
from benchmark.core.training.loop import TrainSettings, train_model


def _setup(toy_dataset):
    train = toy_dataset.labelled(toy_dataset.index)
    pre = Preprocessor(channel_stats(train.read(train.treated_ids()[:64])), 12, "cpu", channels_last=True)
    batches = plate_batches(train, 16, np.random.default_rng(0), n_controls=8)[:6]
    return train, pre, batches


def test_in_process_loader_reads_augments_and_marks_context(toy_dataset):
    train, pre, batches = _setup(toy_dataset)
    steps = list(training_steps(train, batches, pre, np.random.default_rng(1)))
    rng = np.random.default_rng(1)  # the same generator, used the same way, gives the same inputs
    for (x, y, _), batch in zip(steps, batches):
        assert torch.equal(x, pre.train(train.read(batch.image_ids), rng))
        assert x.is_contiguous(memory_format=torch.channels_last) and x.shape[-1] == 12
        assert (y == -1).sum() == batch.is_context.sum() and (y[~torch.from_numpy(batch.is_context)] >= 0).all()


def test_worker_loader_does_not_depend_on_the_number_of_workers(toy_dataset):
    train, pre, batches = _setup(toy_dataset)
    one = list(training_steps(train, batches, pre, np.random.default_rng(1), workers=1))
    two = list(training_steps(train, batches, pre, np.random.default_rng(1), workers=2))
    assert len(one) == len(batches)
    for (x1, y1, d1), (x2, y2, d2) in zip(one, two):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(d1, d2) and x1.dtype == torch.float32


def test_cpu_device_policy_changes_nothing():
    model = torch.nn.Linear(3, 2)
    assert accelerate(model, "cpu") is model and mixed_precision("cpu") is None and loader_workers("cpu") == 0
    x = torch.ones(2, 3)
    assert to_device(x, "cpu") is x
    assert mixed_precision("cuda") == "bf16" and loader_workers("cuda") >= 0


def test_autocast_wrapper_returns_float32():
    model = Autocast(torch.nn.Linear(3, 2))
    out = model(torch.randn(4, 3))
    assert out.dtype == torch.float32 and isinstance(model.model, torch.nn.Linear)


def test_timing_hook_sees_every_step_and_the_report_gives_the_wait_share():
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    seen = []

    def epoch(rng):
        for chunk in np.array_split(rng.permutation(32), 4):
            yield x[chunk], y[chunk]

    report = train_model(torch.nn.Linear(3, 2), epoch, lambda m: 1.0, TrainSettings(max_epochs=2, patience=5),
                         seed=0, on_step=lambda wait, step: seen.append((wait, step)))
    assert len(seen) == 8 and all(0 <= w <= s for w, s in seen)
    assert 0 <= report["data_wait_fraction"] <= 1


def test_every_step_carries_the_plate_index_of_its_images(toy_dataset):
    train, pre, _ = _setup(toy_dataset)
    plate_of = toy_dataset.index["plate"].to_numpy()
    rng = np.random.default_rng(0)
    batches = MixedBatches(32).batches(train, rng)[:4]
    for step, batch in zip(training_steps(train, batches, pre, np.random.default_rng(1)), batches):
        assert [train.plates[i] for i in step.domains.tolist()] == list(plate_of[batch.image_ids])


def test_epochs_draw_batches_from_the_composition_and_know_their_length(toy_dataset):
    train, pre, _ = _setup(toy_dataset)
    epoch = epochs(train, OnePlateBatches(PlateContext(16, n_controls=8)), pre)(np.random.default_rng(3))
    expected = plate_batches(train, 16, np.random.default_rng(3), n_controls=8)
    steps = list(epoch)
    assert len(epoch) == len(expected) == len(steps)
    assert all(len(s.inputs) == len(b) and len(set(s.domains.tolist())) == 1 for s, b in zip(steps, expected))
