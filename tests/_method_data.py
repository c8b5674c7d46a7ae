"""A small toy split shared by the method tests: train/val/target plates of ``make_toy_dataset``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import polars as pl
import torch

import benchmark.core.training.sampler as sampler_module
from benchmark.core.encoders.loading import ModuleEncoder, register_encoder_backend

RANDOM_FEATURES = "test-random-features"
"""An encoder backend for the frozen-encoder tests: :class:`RandomFeatures`, 24 dimensions."""
SPARSE_RANDOM_FEATURES = "test-profile-features"
"""The same with a shifted ReLU, so some features sit at zero on some plates as a real encoder's do."""


class RandomFeatures(torch.nn.Module):
    """A fixed random-feature encoder: 4x4 average pooling, a fixed projection (seed 0), optionally a shifted ReLU."""

    def __init__(self, sparse: bool = False):
        super().__init__()
        self.sparse = sparse
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(5 * 16, 24)

    def forward(self, x):
        out = self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))
        return torch.relu(out + 0.5) if self.sparse else out


def _scaled(x):
    return torch.as_tensor(x, dtype=torch.float32) / 255


@register_encoder_backend(RANDOM_FEATURES)
def _random_features(argument, device):
    return ModuleEncoder(RANDOM_FEATURES, RandomFeatures(), 24, _scaled)


@register_encoder_backend(SPARSE_RANDOM_FEATURES)
def _sparse_random_features(argument, device):
    return ModuleEncoder(SPARSE_RANDOM_FEATURES, RandomFeatures(sparse=True), 24, _scaled)


def split(dataset):
    """(train, val, target plates) — target is source src3 (held out), val is batch b2 of the others."""
    index = dataset.index
    target = index.filter(pl.col("source") == "src3")
    rest = index.filter(pl.col("source") != "src3")
    val = rest.filter(pl.col("batch").str.ends_with("_b2"))
    train = rest.filter(~pl.col("batch").str.ends_with("_b2"))
    return dataset.labelled(train), dataset.labelled(val), target


def view(dataset, target, plate, seed=0, with_controls=True):
    """The label-free view of one target plate and the labels of its treated images in view order."""
    rows = target.filter((pl.col("plate") == plate) & ~pl.col("is_control"))
    v, order = dataset.plate_view(plate, rows["image_id"].to_numpy(), np.random.default_rng(seed), with_controls)
    return v, rows["label"].to_numpy()[order]


def shifted(images, gain, offset):
    """Images with a per-channel gain and offset (clipped to uint8)."""
    x = np.asarray(images, dtype=np.float64) * np.asarray(gain)[None, :, None, None]
    return np.clip(x + np.asarray(offset)[None, :, None, None], 0, 255).astype(np.uint8)


@contextmanager
def recorded_batch_plates(dataset) -> Iterator[list[set[str]]]:
    """Inside: the plates of every batch the one-plate sampler draws are appended, a set per batch."""
    plate_of = dataset.index["plate"].to_numpy()
    seen: list[set[str]] = []
    original = sampler_module.plate_batches

    def spy(*args, **kwargs):
        batches = original(*args, **kwargs)
        seen.extend(set(plate_of[b.image_ids]) for b in batches)
        return batches

    sampler_module.plate_batches = spy
    try:
        yield seen
    finally:
        sampler_module.plate_batches = original
