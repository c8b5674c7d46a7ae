"""Paired A/B of torch CPU threads (1 vs 2) for the default model's training step and BN-mode forward.

The two settings alternate round by round in one process, so both see the same
machine load (on a shared machine, separate runs are not comparable). Prints the
median images/s of each setting and their ratio.

Usage::

    .venv/bin/python scripts/threads_ab.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmark.core.training.backbones import create_backbone


def _step(model, optimiser, x, y) -> None:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_backbone("resnet_micro").train().to(memory_format=torch.channels_last)
    x = torch.randn(64, 5, 40, 40).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 8, (64,))
    optimiser = torch.optim.Adam(model.parameters())
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds + 1):
        for threads in ((1, 2) if r % 2 else (2, 1)):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(args.steps):
                _step(model, optimiser, x, y)
            if r:  # round 0 warms up
                times[threads].append(time.perf_counter() - start)
    rate = {t: 64 * args.steps / statistics.median(v) for t, v in times.items()}
    print(f"resnet_micro train step, batch 64 at 40 px, channels-last, {args.rounds} paired rounds")
    for t in (1, 2):
        print(f"  {t} thread(s): {rate[t]:7.1f} img/s (median)")
    print(f"  2 threads / 1 thread: {rate[2] / rate[1]:.2f}x")


if __name__ == "__main__":
    main()
