"""Packed store loader vs the reference data path (one deflate TIFF per site, decoded per sample).

Both sides produce the same thing for one epoch: plate-grouped batches (32 treated +
32 DMSO images of one plate, CS-ARM-BN's composition), random crops and flips, and
either per-channel normalised float32 tensors (``float32``: the CPU training path) or
the uint8 crops that the loader workers hand to the GPU, which normalises them on
the device (``uint8``: the CUDA path). Only the pixel source differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from benchmark.core.training.loader import batch_targets, training_steps
from benchmark.core.training.preprocess import Preprocessor, channel_stats, random_crop_flip
from benchmark.core.training.sampler import plate_batches

from ._bench_data import plates_of, subset

CROPS = {64: 40, 256: 224}
"""Crop per image side: the CPU default (40 px of 64) and a reference-like crop of 256 px images."""
SMOKE_CROPS = {64: 40, 256: 80}
"""The same in the smoke run, whose "256 px" dataset is 96 px (tests/benchmarks/conftest.py)."""
N_PLATES = 8


def _setup(datasets, side, crop):
    dataset = datasets[side]
    train = subset(dataset, plates_of(dataset)[:N_PLATES])
    ids = np.sort(np.concatenate([train.treated_ids(), train.control_ids()]))
    stats = channel_stats(train.read(ids[:256]))
    batches = plate_batches(train, 32, np.random.default_rng(0), n_controls=32)
    return train, Preprocessor(stats, crop, "cpu", channels_last=True), batches


def _tiff_epoch(paths, train, preprocess, batches, rng, output):
    for batch in batches:
        pixels = np.stack([tifffile.imread(paths[i]) for i in batch.image_ids])
        inputs = (preprocess.train(pixels, rng) if output == "float32"
                  else torch.from_numpy(random_crop_flip(pixels, preprocess.crop, rng)))
        yield inputs, torch.as_tensor(batch_targets(train, batch))


def _packed_uint8_epoch(train, preprocess, batches, rng):
    for batch in batches:  # what a loader worker does on the CUDA path
        pixels = random_crop_flip(train.read(batch.image_ids), preprocess.crop, rng)
        yield torch.from_numpy(pixels), torch.as_tensor(batch_targets(train, batch))


def _consume(steps) -> int:
    n = 0
    for inputs, *_ in steps:
        n += len(inputs)
    return n


@pytest.mark.parametrize("output", ["float32", "uint8"])
@pytest.mark.parametrize("side", [64, 256])
@pytest.mark.parametrize("source", ["packed_store", "tiff_per_site"])
def test_loader(benchmark, datasets, tiff_sites, smoke, side, source, output):
    """One epoch of augmented, normalised plate batches (images/s = n_images / time)."""
    torch.set_num_threads(1)  # the ResNet methods' default (ConvNetConfig.threads)
    crop = (SMOKE_CROPS if smoke else CROPS)[side]
    train, preprocess, batches = _setup(datasets, side, crop)
    paths = tiff_sites[side]

    def epoch():
        rng = np.random.default_rng(1)
        if source == "tiff_per_site":
            return _consume(_tiff_epoch(paths, train, preprocess, batches, rng, output))
        if output == "float32":
            return _consume(training_steps(train, batches, preprocess, rng))
        return _consume(_packed_uint8_epoch(train, preprocess, batches, rng))

    n = benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    benchmark.group = f"loader {side}px {output}"
    benchmark.extra_info.update(kind="loader", source=source, side=side, crop=crop, output=output, n_images=n,
                                baseline="tiff_per_site")
