"""Encoder backends for embedding-based methods (FM + TVN).

An encoder turns uint8 images ``(N, 5, H, W)`` into float32 embeddings ``(N, dim)``.
Backends register by name with :func:`register_encoder_backend`; a spec string
``"<backend>"`` or ``"<backend>:<argument>"`` (e.g. ``"platebench-ssl"``,
``"timm:<path>"``) picks one in :func:`load_encoder`. Encoders are frozen: the same
image always gives the same embedding, so embeddings are memoised by image content.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import BenchError, UnknownNameError


@runtime_checkable
class Encoder(Protocol):
    """What a frozen encoder offers."""

    name: str  # the spec it was loaded from, recorded in run records
    dim: int   # embedding width
    # Optional: ``weights_digest: str``, a hash of the frozen weights, recorded in run records when present.

    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embeddings ``(N, dim)`` float32 of uint8 images ``(N, C, H, W)``."""
        ...


EncoderFactory = Callable[[str | None, str], Encoder]
"""``(argument or None, device) -> Encoder``."""

_BACKENDS: dict[str, EncoderFactory] = {}
_LOADED: dict[tuple[str, str], Encoder] = {}


def register_encoder_backend(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator: register ``factory(argument, device) -> Encoder`` as backend ``name``."""
    if ":" in name:
        raise BenchError(f"encoder backend name {name!r} must not contain ':'")

    def decorate(factory: EncoderFactory) -> EncoderFactory:
        existing = _BACKENDS.get(name)
        if existing is not None and existing is not factory:
            raise BenchError(f"encoder backend '{name}' is registered twice: by {existing.__module__}."
                             f"{existing.__qualname__} and by {factory.__module__}.{factory.__qualname__}")
        _BACKENDS[name] = factory
        return factory
    return decorate


def _load_builtins() -> None:
    """Import the built-in backend modules (importing registers them)."""
    import importlib

    for module in ("ssl_encoder", "encoder_backends"):  # platebench-ssl; timm, hf, openphenom
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
    from . import encoder_backends  # noqa: F401  (registers "timm", "hf", "openphenom")


def available_encoder_backends() -> list[str]:
    """Names of the registered encoder backends."""
    _load_builtins()
    return sorted(_BACKENDS)


def load_encoder(spec: str, device: str = "cpu") -> Encoder:
    """The encoder named by ``spec`` (``"<backend>"`` or ``"<backend>:<argument>"``), loaded once per process."""
    _load_builtins()
    backend, _, argument = spec.partition(":")
    if backend not in _BACKENDS:
        raise UnknownNameError("encoder backend", backend, _BACKENDS)
    key = (spec, device)
    if key not in _LOADED:
        _LOADED[key] = _BACKENDS[backend](argument or None, device)
    return _LOADED[key]


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
