"""Turn an epoch's mini-batches (image ids) into training steps: read, augment, normalise, move.

:func:`epochs` is the epoch function :func:`benchmark.core.training.loop.train_model` takes:
each call draws the epoch's batches from a :class:`~benchmark.core.training.sampler.BatchComposition`
and reads them. Every :class:`~benchmark.core.training.loop.Step` carries the targets (``-1``
for DMSO context and for unlabelled target-plate images) and the domain of every image: the
index of its plate in ``train.plates``, or for a target-plate image ``len(train.plates)`` plus
the index of its plate in ``train.targets`` (:func:`n_domains` counts them).

With ``workers=0`` (the CPU default) batches are read and augmented in this process,
in order, drawing augmentations from the epoch's generator. With ``workers > 0`` (the
CUDA default, see :func:`benchmark.core.training.accel.loader_workers`) a
:class:`torch.utils.data.DataLoader` reads and augments whole batches in worker
processes into pinned memory, each batch with its own seed drawn from the epoch's
generator (so results do not depend on the number of workers), and the uint8
pixels are normalised on the device.

Data-parallel (:mod:`benchmark.core.training.distributed`), every rank draws the same epoch of batches from the same
generator and reads only its share (every ``size``-th batch from its rank on), with the augmentations one
process would draw for it: with ``workers=0`` a rank augments a stand-in of every batch of the others (no
pixels read) to keep its generator where one process's would be; with workers every batch's seed is drawn
for the whole sequence. So the ranks' batches of one step hold the images, crops and flips of the
consecutive batches one process takes with ``grad_accum`` times the number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ...constants import DMSO_LABEL
from ...datasets.dataset import LabelledImages
from .accel import is_cuda, to_device
from .distributed import World
from .preprocess import Preprocessor, normalise
from .sampler import Batch, BatchComposition
from .loop import SizedEpoch, Step


def batch_targets(train: LabelledImages, batch: Batch) -> np.ndarray:
    """Class index per image of ``batch``; DMSO context and target-plate images get ``-1`` (not in the loss)."""
    labelled = np.where(batch.is_context, DMSO_LABEL, train.labels(batch.image_ids))
    return np.concatenate([labelled, np.full(len(batch.target_rows), DMSO_LABEL, dtype=labelled.dtype)])


def read_batch(train: LabelledImages, batch: Batch) -> np.ndarray:
    """uint8 pixels of ``batch``: its images of ``train``, then its target-plate images (``train.targets``)."""
    pixels = train.read(batch.image_ids)
    if not len(batch.target_rows):
        return pixels
    unlabelled = np.empty((len(batch.target_rows), *pixels.shape[1:]), dtype=pixels.dtype)
    for i in np.unique(batch.target_rows[:, 0]):
        at = np.flatnonzero(batch.target_rows[:, 0] == i)
        unlabelled[at] = train.targets[i].treated[batch.target_rows[at, 1]]
    return np.concatenate([pixels, unlabelled])


def n_domains(train: LabelledImages) -> int:
    """Number of domain ids of ``train``'s steps: its training plates, then its target plates."""
    return len(train.plates) + len(train.targets)


class PlateCodes:
    """The domain of every image of ``train``: the index of its plate in ``train.plates``."""

    def __init__(self, train: LabelledImages):
        ids = train.table["image_id"].to_numpy()
        position = {plate: i for i, plate in enumerate(train.plates)}
        codes = np.array([position[p] for p in train.table["plate"].to_list()], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self._ids, self._codes = ids[order], codes[order]
        self._n_plates = len(train.plates)

    def __call__(self, image_ids: np.ndarray) -> np.ndarray:
        """The plate index of every id (ids of ``train`` only)."""
        return self._codes[np.searchsorted(self._ids, image_ids)]

    def of(self, batch: Batch) -> np.ndarray:
        """The domain of every image of ``batch``: plate index, or ``len(train.plates)`` + target index."""
        return np.concatenate([self(batch.image_ids), self._n_plates + batch.target_rows[:, 0]])


class _AugmentedBatches(TorchDataset):
    """Item ``i``: the uint8 random crops/flips of batch ``i`` and its targets (run in a worker)."""

    def __init__(self, train: LabelledImages, batches: Sequence[Batch], preprocess: Preprocessor, seeds: np.ndarray,
                 domains: PlateCodes):
        self.train, self.batches, self.preprocess, self.seeds, self.domains = (train, list(batches), preprocess,
                                                                               seeds, domains)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.batches[i]
        pixels = self.preprocess.augmented(read_batch(self.train, batch), np.random.default_rng(self.seeds[i]))
        return (torch.from_numpy(pixels), torch.as_tensor(batch_targets(self.train, batch), dtype=torch.long),
                torch.as_tensor(self.domains.of(batch), dtype=torch.long))


def training_steps(train: LabelledImages, batches: Sequence[Batch], preprocess: Preprocessor,
                   rng: np.random.Generator, workers: int = 0, domains: PlateCodes | None = None,
                   share: Sequence[int] | None = None) -> Iterator[Step]:
    """One epoch of :class:`Step` on ``preprocess.device`` for the given ``batches``.

    Parameters
    ----------
    train : the labelled images the batches' ids refer to.
    batches : the epoch's mini-batches, in order.
    preprocess : crop size, channel statistics, device and memory format.
    rng : the epoch's generator (augmentations with ``workers=0``; per-batch seeds otherwise).
    workers : loader worker processes; 0 reads in this process.
    domains : the plate codes of ``train`` (built here when not given).
    share : the positions of the batches to read (a data-parallel rank's share, ascending; None: all); the
        others only advance ``rng`` as reading them would.
    """
    device = preprocess.device
    domains = PlateCodes(train) if domains is None else domains
    if workers <= 0:
        mine = None if share is None else set(share)
        shape = None if mine is None else train.images(train.treated_ids()[:1]).shape[1:]
        for i, batch in enumerate(batches):
            if mine is not None and i not in mine:  # another rank's batch: the same draws, no pixels read
                preprocess.train(_stand_in(len(batch), shape), rng)
                continue
            inputs = preprocess.train(read_batch(train, batch), rng)
            yield Step(inputs, torch.as_tensor(batch_targets(train, batch), dtype=torch.long, device=device),
                       torch.as_tensor(domains.of(batch), dtype=torch.long, device=device))
        return
    seeds = rng.integers(0, 2**63 - 1, size=len(batches))
    if share is not None:
        batches, seeds = [batches[i] for i in share], seeds[list(share)]
    loader = DataLoader(_AugmentedBatches(train, batches, preprocess, seeds, domains), batch_size=None,
                        shuffle=False, num_workers=workers, pin_memory=is_cuda(device), prefetch_factor=4)
    for pixels, targets, plates in loader:
        yield Step(normalise(pixels, preprocess.stats, device, preprocess.channels_last),
                   to_device(targets, device), to_device(plates, device))


def epochs(train: LabelledImages, composition: BatchComposition, preprocess: Preprocessor, workers: int = 0,
           world: World | None = None) -> Callable[[np.random.Generator], SizedEpoch]:
    """The epoch function of ``train_model``: each call draws one epoch's batches and reads them.

    Parameters
    ----------
    train : the labelled training images.
    composition : which images form a mini-batch (mixed, one plate, one plate + its DMSO).
    preprocess : crop size, channel statistics, device and memory format.
    workers : loader worker processes; 0 reads in this process.
    world : the processes training together (default: the initialised default process group, else this
        process alone); each reads its share of every epoch, and the epoch's length is the longest share.
    """
    domains = PlateCodes(train)
    world = World.current() if world is None else world

    def epoch(rng: np.random.Generator) -> SizedEpoch:
        batches = composition.batches(train, rng)
        share = world.shard(range(len(batches))) if world.size > 1 else None
        return SizedEpoch(training_steps(train, batches, preprocess, rng, workers, domains, share),
                          world.steps(len(batches)))
    return epoch


def _stand_in(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """``n`` black images of ``shape`` (C, H, W), none allocated (a read-only broadcast): augmenting them
    draws from the generator exactly what augmenting ``n`` real images would."""
    return np.broadcast_to(np.zeros((), dtype=np.uint8), (n, *shape))
