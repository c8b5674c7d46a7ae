"""Gradient reversal (Ganin & Lempitsky 2015): the identity forward, the gradient times ``-λ`` backward.

Put between features and a domain head, it lets the head learn to tell domains apart
while the features below it learn to make them indistinguishable (DANN).
"""

from __future__ import annotations

import torch


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; the gradient that flows back through it is multiplied by ``-lam``."""
    return _ReverseGradient.apply(x, lam)


class GradientReversal(torch.nn.Module):
    """:func:`reverse_gradient` as a layer (``lam``: the reversal's weight λ)."""

    def __init__(self, lam: float = 1.0):
        super().__init__()
        self.lam = lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"
