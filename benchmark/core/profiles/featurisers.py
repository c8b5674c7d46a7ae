"""Frozen featurisers of the profile methods: an encoder (any ``fm_tvn`` encoder spec) or ERM's penultimate layer.

A featuriser turns uint8 images ``(n, 5, H, W)`` into float32 embeddings ``(n, dim)`` and
says what identifies it (:meth:`Featuriser.cache_key`, the key of its embeddings in
:class:`~benchmark.core.profiles.embedding_cache.EmbeddingCache`). Specs (the profile methods'
``featuriser`` option):

``<backend>`` or ``<backend>:<argument>``
    A frozen pretrained encoder of :func:`benchmark.core.encoders.loading.load_encoder`: the shipped
    self-supervised ``platebench-ssl``, or ``timm:<dir>``, ``hf:<dir>``, ``openphenom:<dir>``.
``erm``
    The input of the classifier head (global-average-pooled features) of the fold's ERM model
    with ERM's default config, trained in ``fit`` with ``fit``'s seed, or loaded from the
    source-model cache (:mod:`benchmark.core.training.model_cache`) when the fold's model of that
    seed was trained before. Unlike an encoder it depends on the fold and the seed, so the profile
    methods' base builds it (:class:`benchmark.methods._profile.ERMFeaturiser`); this module gives
    it the same cache key parts (:func:`code_digest`, :func:`state_digest`).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Protocol

import numpy as np
import torch

from ...errors import MethodError
from ...source_digest import source_digest
from ..encoders.loading import load_encoder

ERM_SPEC = "erm"
_CODE = ("benchmark.core.encoders.loading", "benchmark.core.encoders.backends", "benchmark.core.encoders.module",
         "benchmark.core.encoders.ssl", "benchmark.core.training.preprocess", "benchmark.core.training.backbones",
         "benchmark.core.profiles.featurisers", "benchmark.methods._profile")
"""The modules whose source shapes an embedding (part of every cache key)."""


class Featuriser(Protocol):
    """What the profile pipeline needs of a frozen featuriser."""

    name: str
    dim: int

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, dim)`` float32 of uint8 images ``(n, C, H, W)``."""
        ...

    def cache_key(self) -> dict[str, Any] | None:
        """What identifies its embeddings (None: it cannot be told apart from another one; nothing is cached)."""
        ...


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the source of the modules that shape an embedding, with the versions of torch and numpy."""
    return source_digest(_CODE, f"torch {torch.__version__} numpy {np.__version__}")


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's parameter and buffer names, shapes, dtypes and values."""
    sha = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        sha.update(f"{key}|{tuple(value.shape)}|{value.dtype}|".encode())
        sha.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


class EncoderFeaturiser:
    """A frozen pretrained encoder (:func:`~benchmark.core.encoders.loading.load_encoder`) as a featuriser."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 256):
        self.encoder = load_encoder(spec, device)
        self.name, self.dim, self.device, self.batch_size = self.encoder.name, int(self.encoder.dim), device, batch_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.embed(np.asarray(images), self.batch_size)

    def cache_key(self) -> dict[str, Any] | None:
        weights = getattr(self.encoder, "weights_digest", None)
        if weights is None:
            return None
        return {"featuriser": self.name, "weights_sha256": weights, "code": code_digest(), "device": self.device}


def load_featuriser(spec: str, device: str, batch_size: int = 256) -> Featuriser:
    """The frozen encoder featuriser named by ``spec``; ``erm`` is fold-dependent and built by the profile methods'
    base (:class:`benchmark.methods._profile.ProfileMethod`), which trains or loads the fold's ERM model."""
    if spec == ERM_SPEC:
        raise MethodError("featuriser 'erm' is trained on a fold: the profile methods build it, not load_featuriser")
    return EncoderFeaturiser(spec, device, batch_size)
