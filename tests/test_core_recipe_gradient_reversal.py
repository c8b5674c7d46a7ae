"""Gradient reversal: identity forward, gradient times -λ backward."""

from __future__ import annotations

import torch

from benchmark.core.recipe.gradient_reversal import GradientReversal, reverse_gradient


def test_forward_is_the_identity_and_the_gradient_flips_sign():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3)
    plain = torch.autograd.grad((x * w).sum(), x)[0]
    y = reverse_gradient(x)
    assert torch.equal(y, x)
    reversed_ = torch.autograd.grad((y * w).sum(), x)[0]
    assert torch.equal(reversed_, -plain)


def test_the_layer_scales_the_reversed_gradient_by_lambda():
    x = torch.randn(5, 2, requires_grad=True)
    layer = GradientReversal(0.25)
    (layer(x) ** 2).sum().backward()
    assert torch.allclose(x.grad, -0.25 * 2 * x.detach())
    assert "lam=0.25" in repr(layer)
