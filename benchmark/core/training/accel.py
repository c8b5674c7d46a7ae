"""The device policy: what runs differently on a GPU (mixed precision, pinned memory, loader workers).

On CUDA the model runs under bf16 autocast (:class:`Autocast`), batches travel as
uint8 from pinned host memory with non-blocking copies and are normalised on the
GPU (:func:`to_device`), and mini-batches are read and augmented by loader worker
processes (:func:`loader_workers`). On the CPU nothing changes: float32, in-process loading.
"""

from __future__ import annotations

import os

import torch


def is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` names a CUDA device."""
    return torch.device(device).type == "cuda"


def mixed_precision(device: str | torch.device) -> str | None:
    """The autocast dtype used on ``device``: ``"bf16"`` on CUDA, None (float32) elsewhere."""
    return "bf16" if is_cuda(device) else None


def loader_workers(device: str | torch.device) -> int:
    """Loader worker processes for training on ``device``: up to 8 on CUDA (one core left free), 0 on CPU."""
    return min(8, max((os.cpu_count() or 1) - 1, 0)) if is_cuda(device) else 0


def to_device(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device``; on CUDA from pinned memory with a non-blocking copy."""
    if not is_cuda(device) or x.is_cuda:
        return x.to(device)
    if not x.is_pinned():
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


class Autocast(torch.nn.Module):
    """Wrap a model so that every forward pass runs under autocast and returns float32 outputs.

    Parameters
    ----------
    model : the network; it stays reachable as ``.model``.
    dtype : the autocast dtype (bf16 needs no gradient scaling).
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


def accelerate(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``model`` wrapped in :class:`Autocast` (bf16) on CUDA; unchanged on other devices."""
    return Autocast(model) if mixed_precision(device) == "bf16" else model
