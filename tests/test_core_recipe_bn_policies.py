"""The BN policies: each source's statistics are what it claims, and no source changes the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.core.training.bn_stats import bn_layers, bn_state
from benchmark.core.recipe.bn_policies import (BatchStatistics, ChunkStats, ControlRows, ControlStats, PlateStats,
                                        RunningStats, plate_chunks)
from benchmark.core.recipe.network import Network
from benchmark.core.training.preprocess import ChannelStats, Preprocessor
from benchmark.core.training.sampler import PlateContext
from benchmark.core.training.loop import Step, cross_entropy_loss
from benchmark.datasets.dataset import PlateView
from benchmark.errors import MethodError


def _net(seed: int = 0) -> Network:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(5, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 8))
    model[1].weight.data.uniform_(0.5, 2.0)
    model[1].bias.data.uniform_(-1.0, 1.0)
    model.eval()
    stats = ChannelStats(np.full(5, 100, np.float32), np.full(5, 25, np.float32))
    return Network(model, Preprocessor(stats, 8, "cpu"), eval_batch_size=4, owner="toy")


def _images(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(100 + shift, 25, size=(n, 5, 8, 8))
    return np.clip(x, 0, 255).astype(np.uint8)


TREATED, CONTROLS = _images(10, 1), _images(6, 2, shift=30)


def _bn_io(net: Network, run) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of the BN layer for every forward pass during ``run()``."""
    seen = []
    hook = net.model[1].register_forward_hook(lambda m, i, o: seen.append((i[0].detach().clone(), o.detach().clone())))
    try:
        run()
    finally:
        hook.remove()
    return seen


def _standardised(h: torch.Tensor, rows: torch.Tensor | slice, layer) -> torch.Tensor:
    """``h`` normalised with the mean and biased variance of ``h[rows]``, then BN's affine map."""
    ref = h[rows]
    mean, var = ref.mean(dim=(0, 2, 3)), ref.var(dim=(0, 2, 3), unbiased=False)
    shape = (1, -1, 1, 1)
    return (h - mean.view(shape)) / torch.sqrt(var.view(shape) + layer.eps) * layer.weight.view(shape) \
        + layer.bias.view(shape)


def test_chunk_stats_normalise_each_chunk_with_the_union_of_treated_and_controls():
    net = _net()
    source = ChunkStats(PlateContext(5, n_controls=4))
    state = source.adapt(net, PlateView("p", TREATED, CONTROLS))
    seen = _bn_io(net, lambda: state.logits(net, net.pixels(TREATED)))
    assert [len(h) for h, _ in seen] == [5 + 4, 5 + 4]
    layer = net.model[1]
    for h, out in seen:
        torch.testing.assert_close(out, _standardised(h, slice(None), layer))  # statistics of the union
        assert not torch.allclose(out, _standardised(h, slice(0, 5), layer), atol=1e-3)  # not of the treated alone
    assert all(len(set(drawn)) == 4 for drawn in _drawn_controls(net, seen, 5, CONTROLS))  # 4 distinct controls


def _drawn_controls(net: Network, seen: list[tuple[torch.Tensor, torch.Tensor]], n_treated: int,
                    controls: np.ndarray) -> list[list[int]]:
    """Which of ``controls`` every BN context (BN input rows after the ``n_treated`` treated ones) holds."""
    with torch.no_grad():
        features = net.model[0](net.tensor(controls)).flatten(1)
    return [torch.cdist(h[n_treated:].flatten(1), features).argmin(1).tolist() for h, _ in seen]


MANY_CONTROLS = _images(12, 3, shift=30)


def _chunk_controls(source, plate: str = "p", controls: np.ndarray = MANY_CONTROLS) -> list[list[int]]:
    """The controls of every BN context when ``source`` predicts TREATED (chunks of 2) on ``plate``."""
    net = _net()
    state = source.adapt(net, PlateView(plate, TREATED, controls))
    return _drawn_controls(net, _bn_io(net, lambda: state.logits(net, net.pixels(TREATED))), 2, controls)


def test_every_chunk_draws_fresh_random_controls_of_the_plate():
    """Not consecutive runs of the well-sorted DMSO list (a few plate rows): each chunk a random set of all of them."""
    drawn = _chunk_controls(ChunkStats(PlateContext(2, n_controls=4)))
    assert len(drawn) == 5 and all(len(set(d)) == 4 for d in drawn)  # without replacement within a chunk
    consecutive = [[(4 * j + i) % 12 for i in range(4)] for j in range(5)]
    assert drawn != consecutive and len({tuple(sorted(d)) for d in drawn}) == 5
    assert len(set().union(*drawn)) > 8  # drawn from all the plate's controls


def test_control_draws_are_seeded_by_the_run_and_the_plate():
    source = ChunkStats(PlateContext(2, n_controls=4))
    assert _chunk_controls(source) == _chunk_controls(source)  # the same predictions every time
    assert _chunk_controls(source) != _chunk_controls(ChunkStats(PlateContext(2, n_controls=4), seed=1))
    assert _chunk_controls(source) != _chunk_controls(source, plate="q")


def test_a_plate_with_fewer_controls_than_asked_gives_all_of_them_to_every_chunk():
    drawn = _chunk_controls(ChunkStats(PlateContext(2, n_controls=8)), controls=CONTROLS)
    assert all(sorted(d) == list(range(len(CONTROLS))) for d in drawn)


def test_plate_chunks_without_controls_are_near_equal_chunks_of_the_plate():
    net = _net()
    chunks = list(plate_chunks(net, net.pixels(TREATED), PlateContext(4), None, np.random.default_rng(0)))
    assert [(len(x), n) for x, n in chunks] == [(4, 4), (3, 3), (3, 3)]
    torch.testing.assert_close(torch.cat([x for x, _ in chunks]), net.tensor(TREATED))


def test_control_stats_are_the_dmso_rows_mean_and_biased_variance():
    net = _net()
    state = ControlStats().adapt(net, PlateView("p", TREATED[:0], CONTROLS))
    with torch.no_grad():
        h = net.model[0](net.tensor(CONTROLS))
    torch.testing.assert_close(state.stats["1.running_mean"], h.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(state.stats["1.running_var"], h.var(dim=(0, 2, 3), unbiased=False))


def test_control_stats_at_test_equal_training_with_control_rows():
    """ControlStats normalises a treated image as ControlRows normalised it in a training batch with those controls."""
    net = _net()
    state = ControlStats().adapt(net, PlateView("p", TREATED[:0], CONTROLS))
    x = torch.cat([net.tensor(TREATED[:3]), net.tensor(CONTROLS)])
    targets = torch.tensor([0, 1, 2] + [-1] * len(CONTROLS))
    logits = []

    def loss(model, step):
        logits.append(model(step.inputs))
        return logits[-1].sum()

    with torch.no_grad(), ControlRows().applied(net.model, loss) as wrapped:
        net.model.train()
        wrapped(net.model, Step(x, targets))
        net.model.eval()
    torch.testing.assert_close(state.logits(net, net.pixels(TREATED[:3])), logits[0][:3])


def test_plate_stats_are_the_cumulative_average_over_the_plates_chunks():
    net = _net()
    state = PlateStats(PlateContext(4)).adapt(net, PlateView("p", TREATED[:8], CONTROLS))
    with torch.no_grad():
        chunks = [net.model[0](net.tensor(TREATED[i:i + 4])) for i in (0, 4)]
    means, variances = [h.mean(dim=(0, 2, 3)) for h in chunks], [h.var(dim=(0, 2, 3)) for h in chunks]
    torch.testing.assert_close(state.stats["1.running_mean"], torch.stack(means).mean(0))
    torch.testing.assert_close(state.stats["1.running_var"], torch.stack(variances).mean(0))  # BN: unbiased


def test_plate_stats_with_controls_average_over_chunks_each_with_its_controls():
    net = _net()
    source = PlateStats(PlateContext(4, n_controls=2))
    seen = _bn_io(net, lambda: source.adapt(net, PlateView("p", TREATED[:8], MANY_CONTROLS)))
    with torch.no_grad():
        treated = [net.model[0](net.tensor(TREATED[i:i + 4])) for i in (0, 4)]
    assert [len(h) for h, _ in seen] == [4 + 2, 4 + 2]
    for (h, _), expected in zip(seen, treated):
        torch.testing.assert_close(h[:4], expected)
    drawn = _drawn_controls(net, seen, 4, MANY_CONTROLS)
    assert all(len(set(d)) == 2 for d in drawn) and drawn != [[0, 1], [2, 3]]  # random controls, as ChunkStats
    state = source.adapt(net, PlateView("p", TREATED[:8], MANY_CONTROLS))
    means = [h.mean(dim=(0, 2, 3)) for h, _ in seen]
    torch.testing.assert_close(state.stats["1.running_mean"], torch.stack(means).mean(0))


def test_plate_stats_refuse_a_plate_with_too_few_treated_images():
    with pytest.raises(MethodError, match=r"plate p shows 1 treated image\(s\); toy needs at least 2 to estimate"):
        PlateStats(PlateContext(4), min_treated=2).adapt(_net(), PlateView("p", TREATED[:1], CONTROLS))


@pytest.mark.parametrize("source", [RunningStats(), ChunkStats(PlateContext(4)), ChunkStats(PlateContext(4, 2)),
                                    PlateStats(PlateContext(4)), PlateStats(PlateContext(4, 2)), ControlStats()],
                         ids=repr)
@pytest.mark.parametrize("training", [False, True])
def test_no_source_changes_running_statistics_or_modes(source, training):
    net = _net()
    net.model.train(training)
    modes = [m.training for m in net.model.modules()]
    momenta = [layer.momentum for layer in bn_layers(net.model)]
    before = bn_state(net.model)
    state = source.adapt(net, PlateView("p", TREATED, CONTROLS))
    state.logits(net, net.pixels(TREATED))
    assert all(torch.equal(before[k], v) for k, v in bn_state(net.model).items())
    assert [layer.momentum for layer in bn_layers(net.model)] == momenta
    if isinstance(source, RunningStats):  # prediction with running statistics is eval(), as ERM's always was
        assert not any(m.training for m in net.model.modules())
    else:
        assert [m.training for m in net.model.modules()] == modes


@pytest.mark.parametrize("source", [RunningStats(), PlateStats(PlateContext(4)), ControlStats()], ids=repr)
def test_evaluation_mode_sources_predict_each_image_on_its_own(source):
    net = _net()
    state = source.adapt(net, PlateView("p", TREATED, CONTROLS))
    pixels = net.pixels(TREATED)
    torch.testing.assert_close(state.logits(net, pixels[:3]), state.logits(net, pixels)[:3])


def test_running_stats_use_nothing_of_the_plate():
    net = _net()
    a = RunningStats().adapt(net, PlateView("p", TREATED, CONTROLS)).logits(net, net.pixels(TREATED))
    b = RunningStats().adapt(net, PlateView("q", TREATED[:0], CONTROLS[:0])).logits(net, net.pixels(TREATED))
    torch.testing.assert_close(a, b)
    net.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(a, net.model(net.tensor(TREATED)))


@pytest.mark.parametrize("source", [ChunkStats(PlateContext(4, 2)), PlateStats(PlateContext(4, 2)), ControlStats()],
                         ids=repr)
def test_a_source_that_uses_controls_refuses_a_plate_without_them(source):
    with pytest.raises(MethodError, match="plate p1 has no DMSO images; toy needs the plate's controls as BN context"):
        source.adapt(_net(), PlateView("p1", TREATED, CONTROLS[:0]))


def test_sources_without_controls_do_not_need_them():
    net = _net()
    for source in (RunningStats(), ChunkStats(PlateContext(4)), PlateStats(PlateContext(4))):
        assert not source.uses_controls
        source.adapt(net, PlateView("p", TREATED, CONTROLS[:0])).logits(net, net.pixels(TREATED))


def test_control_rows_normalise_a_training_batch_with_its_dmso_rows_only():
    net = _net()
    model = net.model.train()
    x = torch.cat([net.tensor(TREATED[:4]), net.tensor(CONTROLS)])
    targets = torch.tensor([0, 1, 2, 3] + [-1] * len(CONTROLS))
    layer = model[1]
    with ControlRows().applied(model, cross_entropy_loss) as loss:
        seen = _bn_io(net, lambda: loss(model, Step(x, targets)))
        (h, out), = seen
        torch.testing.assert_close(out, _standardised(h, targets == -1, layer))
        plain = _bn_io(net, lambda: model(x))  # outside a step: BatchNorm's own batch statistics
        torch.testing.assert_close(plain[0][1], _standardised(plain[0][0], slice(None), layer))
    assert not layer._forward_hooks  # the hook is gone after training


def test_batch_statistics_train_with_the_loss_as_given():
    model = _net().model
    with BatchStatistics().applied(model, cross_entropy_loss) as loss:
        assert loss is cross_entropy_loss


def _control_rows_step(net: Network) -> tuple[torch.Tensor, torch.Tensor]:
    """A BEN training step: 4 treated rows, then the DMSO rows."""
    return (torch.cat([net.tensor(TREATED[:4]), net.tensor(CONTROLS)]),
            torch.tensor([0, 1, 2, 3] + [-1] * len(CONTROLS)))


def test_control_rows_statistics_carry_no_gradient():
    """As in the reference, the DMSO mean and variance are constants of the step: no gradient flows through them."""
    net = _net()
    model = net.model.train()
    x, targets = _control_rows_step(net)
    with ControlRows().applied(model, cross_entropy_loss) as loss:
        loss(model, Step(x, targets)).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h = model[0](x)
    ref = h[targets == -1].detach()
    mean, var = ref.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), ref.var(dim=(0, 2, 3), unbiased=False).view(1, -1, 1, 1)
    layer = model[1]
    y = (h - mean) / torch.sqrt(var + layer.eps) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.nn.functional.cross_entropy(model[2:](y), targets, ignore_index=-1).backward()
    for g, p in zip(got, model.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_control_rows_statistics_are_float32_under_autocast():
    """Under bf16 autocast the BN input is bf16; the DMSO statistics (and the normalisation) are float32 still."""
    net = _net()
    net.model[0].bias.data.fill_(40.0)  # a large offset: bf16 statistics would be off by a sizeable part of the spread
    model = net.model.train()
    x, targets = _control_rows_step(net)
    with torch.autocast("cpu", dtype=torch.bfloat16), ControlRows().applied(model, cross_entropy_loss) as loss:
        h = model[0](x)
        assert h.dtype == torch.bfloat16
        (seen,) = _bn_io(net, lambda: loss(model, Step(x, targets)))
    out = seen[1]
    expected = _standardised(h.double(), targets == -1, model[1])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
