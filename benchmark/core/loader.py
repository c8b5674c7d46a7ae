"""Turn an epoch's mini-batches (image ids) into model inputs: read, augment, normalise, move.

With ``workers=0`` (the CPU default) batches are read and augmented in this process,
in order, drawing augmentations from the epoch's generator. With ``workers > 0`` (the
CUDA default, see :func:`benchmark.core.accel.loader_workers`) a
:class:`torch.utils.data.DataLoader` reads and augments whole batches in worker
processes into pinned memory, each batch with its own seed drawn from the epoch's
generator (so results do not depend on the number of workers), and the uint8
pixels are normalised on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ..constants import DMSO_LABEL
from ..datasets.dataset import LabelledImages
from .accel import is_cuda, to_device
from .preprocess import Preprocessor, normalise, random_crop_flip
from .sampler import Batch

Step = tuple[torch.Tensor, torch.Tensor]


def batch_targets(train: LabelledImages, batch: Batch) -> np.ndarray:
    """Class index per image of ``batch``; DMSO context images get ``-1`` (not in the loss)."""
    return np.where(batch.is_context, DMSO_LABEL, train.labels(batch.image_ids))


class _AugmentedBatches(TorchDataset):
    """Item ``i``: the uint8 random crops/flips of batch ``i`` and its targets (run in a worker)."""

    def __init__(self, train: LabelledImages, batches: Sequence[Batch], crop: int, seeds: np.ndarray):
        self.train, self.batches, self.crop, self.seeds = train, list(batches), crop, seeds

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batches[i]
        pixels = random_crop_flip(self.train.read(batch.image_ids), self.crop, np.random.default_rng(self.seeds[i]))
        return torch.from_numpy(pixels), torch.as_tensor(batch_targets(self.train, batch), dtype=torch.long)


def training_steps(train: LabelledImages, batches: Sequence[Batch], preprocess: Preprocessor,
                   rng: np.random.Generator, workers: int = 0) -> Iterator[Step]:
    """One epoch of ``(inputs, targets)`` on ``preprocess.device`` for the given ``batches``.

    Parameters
    ----------
    train : the labelled images the batches' ids refer to.
    batches : the epoch's mini-batches, in order.
    preprocess : crop size, channel statistics, device and memory format.
    rng : the epoch's generator (augmentations with ``workers=0``; per-batch seeds otherwise).
    workers : loader worker processes; 0 reads in this process.
    """
    device = preprocess.device
    if workers <= 0:
        for batch in batches:
            inputs = preprocess.train(train.read(batch.image_ids), rng)
            yield inputs, torch.as_tensor(batch_targets(train, batch), dtype=torch.long, device=device)
        return
    seeds = rng.integers(0, 2**63 - 1, size=len(batches))
    loader = DataLoader(_AugmentedBatches(train, batches, preprocess.crop, seeds), batch_size=None, shuffle=False,
                        num_workers=workers, pin_memory=is_cuda(device), prefetch_factor=4)
    for pixels, targets in loader:
        yield (normalise(pixels, preprocess.stats, device, preprocess.channels_last),
               to_device(targets, device))
