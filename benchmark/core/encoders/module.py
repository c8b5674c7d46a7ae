"""A frozen torch module as an :class:`~benchmark.core.encoders.registry.Encoder`, memoised by image content.

Encoders are frozen: the same image always gives the same embedding, so embeddings
are kept by a hash of the image's bytes and each distinct image is embedded once.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import numpy as np
import torch

from ...errors import BenchError


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


class ModuleEncoder:
    """A frozen torch module as an :class:`Encoder`, with embeddings memoised by image content.

    Parameters
    ----------
    name : the spec the encoder was loaded from.
    module : maps a prepared batch to ``(B, dim)`` features; put in eval mode, never trained.
    dim : embedding width.
    prepare : uint8 ``(B, C, H, W)`` array -> input tensor on ``device``.
    device : where the module runs.
    """

    def __init__(self, name: str, module: torch.nn.Module, dim: int,
                 prepare: Callable[[np.ndarray], torch.Tensor], device: str = "cpu"):
        self.name, self.dim, self.device = name, dim, device
        self.module = module.to(device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._prepare = prepare
        self._memo: dict[bytes, np.ndarray] = {}

    @functools.cached_property
    def weights_digest(self) -> str:
        """SHA-256 over the module's parameter and buffer names, shapes, dtypes and values."""
        sha = hashlib.sha256()
        for key, tensor in sorted(self.module.state_dict().items()):
            value = tensor.detach().cpu().contiguous()
            sha.update(f"{key}|{tuple(value.shape)}|{value.dtype}|".encode())
            sha.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        return sha.hexdigest()

    max_memo = 500_000
    """Embeddings kept in memory at most (the memo is cleared beyond that)."""

    @torch.no_grad()
    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embeddings ``(N, dim)`` float32 of uint8 images ``(N, C, H, W)``."""
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise BenchError(f"encoder {self.name} takes uint8 images (N, C, H, W), "
                             f"got {images.dtype} {images.shape}")
        keys = [_digest(img) for img in images]
        if len(self._memo) + len(images) > self.max_memo:
            self._memo.clear()
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            features = self.module(self._prepare(images[idx])).float().cpu().numpy()
            for i, f in zip(idx, features):
                self._memo[keys[i]] = f
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = self._memo[k]
        return out
