"""How close a fit comes to the machine's arithmetic: FLOPs per training image and the float32 matmul rate.

A fit's arithmetic rate is its training throughput (images/s) times the FLOPs of one training
image (forward + backward, counted by torch's ``FlopCounterMode``); its *matmul fraction* is that
rate over the rate of a large float32 matmul measured in the same process with the same torch
threads — the most a CPU core reaches, so the fraction says how much of a fit's time is arithmetic.
"""

from __future__ import annotations

import time

import torch


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """This process's float32 ``n x n`` matmul rate in GFLOP/s (the best of three timings of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def training_flops_per_image(model: torch.nn.Module, channels: int, crop: int, batch: int = 8) -> float:
    """FLOPs of one training image of ``model``: forward + backward of a random batch at the training crop, in
    training mode, divided by the batch; counted on a copy, so ``model`` is left as it was."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    param = next(model.parameters())
    x = torch.randn(batch, channels, crop, crop, device=param.device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / batch


def matmul_fraction(images_per_second: float, flops_per_image: float, gflops: float) -> float:
    """The share of the matmul rate ``gflops`` that ``images_per_second`` training images of ``flops_per_image``
    FLOPs each make."""
    return images_per_second * flops_per_image / 1e9 / gflops
