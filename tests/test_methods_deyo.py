"""DeYO does what it claims: the patch shuffle keeps every image's pixels, the filters and the weight follow the
formulas, no update when no image is kept, and the rest is TENT's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.constants import N_CLASSES
from benchmark.core.recipe.tta import TestTimeOptimisation, softmax_entropy
from benchmark.methods.deyo import DeYO, deyo_objective, deyo_weights, patch_shuffle, plpd
from benchmark.methods.erm import ERMConfig


@pytest.mark.parametrize("size", [(8, 8), (10, 9)])
def test_the_patch_shuffle_keeps_each_images_pixel_multiset_and_moves_whole_patches(size):
    h, w = size
    x = torch.arange(3 * 2 * h * w, dtype=torch.float32).reshape(3, 2, h, w)  # every pixel value distinct
    y = patch_shuffle(x, 4, np.random.default_rng(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    for a, b in zip(x, y):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
    ph, pw = h // 4, w // 4
    patches = {tuple(x[i, :, r:r + ph, c:c + pw].flatten().tolist()) for i in range(3)
               for r in range(0, 4 * ph, ph) for c in range(0, 4 * pw, pw)}
    for i in range(3):
        for r in range(0, 4 * ph, ph):
            for c in range(0, 4 * pw, pw):
                assert tuple(y[i, :, r:r + ph, c:c + pw].flatten().tolist()) in patches
    torch.testing.assert_close(y[:, :, 4 * ph:, :], x[:, :, 4 * ph:, :])  # the remainder stays in place
    torch.testing.assert_close(y[:, :, :, 4 * pw:], x[:, :, :, 4 * pw:])
    assert not torch.equal(y[0], y[1] - (x[1] - x[0]))  # each image gets its own permutation


def test_plpd_and_the_weight_follow_the_formulas():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    q = torch.tensor([[0.4, 0.4, 0.2], [0.2, 0.5, 0.3]])
    torch.testing.assert_close(plpd(p, q), torch.tensor([0.3, 0.3]))
    h, d = torch.tensor([0.5, 1.0]), torch.tensor([0.3, 0.25])
    margin = 0.4 * math.log(8)
    torch.testing.assert_close(deyo_weights(h, d, margin), torch.tensor([math.exp(margin - 0.5) + math.exp(0.3),
                                                                          math.exp(margin - 1.0) + math.exp(0.25)]))


class Flat(torch.nn.Module):
    """Logits from fixed per-pixel weights: a patch shuffle changes them."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(N_CLASSES, 2 * 8 * 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def _manual(model, x, cfg, rng):
    logits = model(x)
    h = softmax_entropy(logits)
    keep = h < cfg.entropy_filter * math.log(N_CLASSES)
    xs = patch_shuffle(x[keep], cfg.patch_grid, rng)
    d = plpd(logits[keep].softmax(1), model(xs).softmax(1))
    sure = d > cfg.plpd_threshold
    hh = h[keep][sure]
    return (hh * (torch.exp(cfg.entropy_margin * math.log(N_CLASSES) - hh) + torch.exp(d[sure]))).mean(), keep, sure


def test_the_loss_is_the_weighted_entropy_of_the_images_kept_by_both_filters():
    model = Flat()
    x = torch.randn(32, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():  # thresholds in the middle of this batch's values, so both filters act
        h = softmax_entropy(model(x))
        entropy_filter = float(h.median()) / math.log(N_CLASSES)
        kept = x[h < float(h.median())]
        d = plpd(model(kept).softmax(1), model(patch_shuffle(kept, 4, np.random.default_rng(5))).softmax(1))
    cfg = DeYO.Config(entropy_filter=entropy_filter, plpd_threshold=float(d.median()))
    loss, logits = deyo_objective(cfg)(np.random.default_rng(5))(model, x)
    expected, keep, sure = _manual(model, x, cfg, np.random.default_rng(5))
    assert 0 < int(sure.sum()) < int(keep.sum()) < len(x)  # both filters remove something here
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, model(x))
    loss.backward()  # the weight carries no gradient: d(loss)/dθ = mean(weight · dH/dθ)
    g = model.w.grad.clone()
    model.w.grad = None
    h = softmax_entropy(model(x))[keep][sure]
    weight = deyo_weights(h.detach(), plpd(model(x)[keep].softmax(1), model(patch_shuffle(
        x[keep], 4, np.random.default_rng(5))).softmax(1))[sure].detach(), 0.4 * math.log(N_CLASSES))
    (h * weight).mean().backward()
    torch.testing.assert_close(g, model.w.grad)


def test_no_update_when_no_image_is_kept():
    model, x = Flat(), torch.randn(8, 2, 8, 8)
    assert deyo_objective(DeYO.Config(entropy_filter=0.0))(np.random.default_rng(0))(model, x)[0] is None
    huge = DeYO.Config(entropy_filter=10.0, plpd_threshold=2.0)  # PLPD never exceeds 1
    assert deyo_objective(huge)(np.random.default_rng(0))(model, x)[0] is None


def test_deyo_is_tents_pass_from_erms_model_with_the_reference_setting():
    method = DeYO()
    test = method.recipe().test
    assert isinstance(test, TestTimeOptimisation) and test.lr == 1e-3 and test.batch_size == method.config.batch_size
    assert method.starts_from is ERMConfig
    cfg = method.config
    assert (cfg.entropy_filter, cfg.entropy_margin, cfg.plpd_threshold, cfg.patch_grid) == (0.5, 0.4, 0.2, 4)
