"""What a frozen encoder is, and the table its backends register in.

An encoder turns uint8 images ``(N, 5, H, W)`` into float32 embeddings ``(N, dim)``.
A backend is a factory ``(argument or None, device) -> Encoder`` registered by name with
:func:`register_encoder_backend`; :func:`benchmark.core.encoders.loading.load_encoder` looks
backends up here. This module imports no backend, so backends can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from ...errors import BenchError


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


def registered_backends() -> dict[str, EncoderFactory]:
    """The backends registered so far, by name (built-ins only once :mod:`~benchmark.core.encoders.loading` loaded them)."""
    return dict(_BACKENDS)
