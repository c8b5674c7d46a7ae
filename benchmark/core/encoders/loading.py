"""Encoders for embedding-based methods (FM + TVN): load one by its spec.

A spec string ``"<backend>"`` or ``"<backend>:<argument>"`` (e.g. ``"platebench-ssl"``,
``"timm:<path>"``) picks a registered backend in :func:`load_encoder`. The built-in
backends are ``platebench-ssl`` (:mod:`~benchmark.core.encoders.ssl`) and ``timm``, ``hf``,
``openphenom`` (:mod:`~benchmark.core.encoders.backends`) and ``cell-count``
(:mod:`~benchmark.core.encoders.cell_count`); they register in
:mod:`~benchmark.core.encoders.registry`, which also defines the :class:`Encoder` contract.
"""

from __future__ import annotations

from ...errors import UnknownNameError
from .registry import Encoder, EncoderFactory, register_encoder_backend, registered_backends
from .module import ModuleEncoder

_LOADED: dict[tuple[str, str], Encoder] = {}


def _load_builtins() -> None:
    """Import the built-in backend modules (importing registers them)."""
    from . import backends, cell_count, ssl  # noqa: F401  (timm, hf, openphenom; cell-count; platebench-ssl)
    from . import cellprofiler  # noqa: F401  (cellprofiler; cp_measure is imported only when it measures)


def available_encoder_backends() -> list[str]:
    """Names of the registered encoder backends."""
    _load_builtins()
    return sorted(registered_backends())


def load_encoder(spec: str, device: str = "cpu") -> Encoder:
    """The encoder named by ``spec`` (``"<backend>"`` or ``"<backend>:<argument>"``), loaded once per process."""
    _load_builtins()
    backend, _, argument = spec.partition(":")
    backends = registered_backends()
    if backend not in backends:
        raise UnknownNameError("encoder backend", backend, backends)
    key = (spec, device)
    if key not in _LOADED:
        _LOADED[key] = backends[backend](argument or None, device)
    return _LOADED[key]


def shipped_weights_digest() -> str:
    """The weights digest of the shipped encoder (``platebench-ssl`` without a path), as run records store it."""
    from .ssl import NAME

    return load_encoder(NAME).weights_digest


__all__ = ["Encoder", "EncoderFactory", "ModuleEncoder", "available_encoder_backends", "load_encoder",
           "register_encoder_backend", "shipped_weights_digest"]
