"""BN-statistics utilities: modes, restoration, batch statistics, accumulation."""

from __future__ import annotations

import torch

from benchmark.core.training.bn_stats import accumulate_bn_stats, batch_stats_context, bn_state, bn_stats_applied, set_bn_mode


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.Dropout(0.5))


def test_set_bn_mode_touches_only_bn_layers():
    model = _model().eval()
    set_bn_mode(model, True)
    assert model[1].training and not model[0].training and not model[2].training


def test_batch_stats_context_normalises_by_the_batch_and_restores_running_stats():
    model = _model().eval()
    before = bn_state(model)
    x = torch.randn(8, 2, 4, 4) * 5 + 3
    with torch.no_grad(), batch_stats_context(model) as m:
        y = m(x)
        assert not m[2].training  # dropout stays off
    assert torch.allclose(y.mean(dim=(0, 2, 3)), model[1].bias, atol=1e-5)  # normalised by its own stats
    after = bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


def test_accumulated_stats_average_the_chunks_and_leave_the_model_unchanged():
    model = _model().eval()
    before = bn_state(model)
    chunks = [torch.randn(4, 2, 3, 3) + i for i in range(3)]
    state = accumulate_bn_stats(model, chunks)
    with torch.no_grad():
        feats = [model[0](c) for c in chunks]
    expected = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)  # equal chunk sizes
    torch.testing.assert_close(state["1.running_mean"], expected)
    assert all(torch.equal(before[k], v) for k, v in bn_state(model).items())
    with torch.no_grad(), bn_stats_applied(model, state) as m:
        assert not m[1].training and torch.equal(m[1].running_mean, state["1.running_mean"])
    assert torch.equal(model[1].running_mean, before["1.running_mean"])
