"""Which images form a training mini-batch: the batch-composition axis of the BN methods.

A method declares its composition as an object: :class:`MixedBatches` (treated images
of all plates mixed: ERM, AdaBN) or :class:`OnePlateBatches` (one plate per batch, with
a :class:`PlateContext` of ``n_treated`` treated images plus optionally ``n_controls``
DMSO images of the same plate: ARM-BN, CS-ARM-BN, BEN). :class:`WithTargetImages` adds to
every batch of another composition an unlabelled batch of the fold's target plates' treated
images (``train.targets``, access ``transductive``: Deep CORAL, DANN). The same :class:`PlateContext`
describes the BN contexts of a target plate at test time
(:mod:`benchmark.core.recipe.bn_policies`), so training and test compose contexts alike.

A batch lists image ids, treated first; ``is_context`` flags the DMSO images that
only take part in the BN statistics (the loss ignores them); ``target_rows`` lists the
unlabelled target-plate images that follow them, as ``(index in train.targets, row of its
treated images)`` pairs (they have no ids and no labels). Every sampler is deterministic
given its ``numpy`` generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from ...datasets.dataset import LabelledImages, PlateView
from ...errors import DataError


@dataclass(frozen=True)
class Batch:
    """One mini-batch: image ids (treated first, then DMSO context) and the plate it comes from."""

    image_ids: np.ndarray
    is_context: np.ndarray  # bool, True for DMSO images appended as BN context
    plate: str | None       # None for a mixed batch
    target_rows: np.ndarray = field(default_factory=lambda: np.empty((0, 2), dtype=np.int64))
    """``(k, 2)`` int64: unlabelled target-plate images after the ids, as (index in ``train.targets``, row)."""

    def __len__(self) -> int:
        return len(self.image_ids) + len(self.target_rows)


def chunk_indices(n: int, size: int) -> list[np.ndarray]:
    """Split ``range(n)`` into ``ceil(n / size)`` consecutive near-equal chunks (no tiny last chunk)."""
    if n == 0:
        return []
    return np.array_split(np.arange(n), -(-n // max(size, 1)))


def mixed_batches(train: LabelledImages, batch_size: int, rng: np.random.Generator) -> list[Batch]:
    """One epoch of batches of treated images drawn across all plates (ERM)."""
    ids = rng.permutation(train.treated_ids())
    return [Batch(ids[c], np.zeros(len(c), dtype=bool), None) for c in chunk_indices(len(ids), batch_size)]


def plate_batches(train: LabelledImages, n_treated: int, rng: np.random.Generator,
                  n_controls: int = 0) -> list[Batch]:
    """One epoch of batches that each hold images of one plate only.

    Every plate's treated images are shuffled and split into near-equal chunks of about
    ``n_treated``; with ``n_controls > 0`` each chunk gets that many DMSO images of the
    same plate (drawn without replacement; all of them if the plate has fewer).
    The batches of all plates are then shuffled together.
    """
    batches: list[Batch] = []
    for plate in train.plates:
        treated = rng.permutation(train.treated_ids(plate))
        controls = train.control_ids(plate) if n_controls > 0 else np.empty(0, dtype=np.int64)
        if n_controls > 0 and len(controls) == 0 and len(treated):
            raise DataError(f"plate {plate} has no DMSO images, but the sampler needs {n_controls} per batch")
        for chunk in chunk_indices(len(treated), n_treated):
            ctx = rng.choice(controls, size=min(n_controls, len(controls)), replace=False)
            ids = np.concatenate([treated[chunk], ctx])
            flags = np.concatenate([np.zeros(len(chunk), dtype=bool), np.ones(len(ctx), dtype=bool)])
            batches.append(Batch(ids, flags, plate))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


# ----------------------------------------------------------------------------- the composition axis

@dataclass(frozen=True)
class PlateContext:
    """What one BN context of one plate holds: ``n_treated`` treated images and ``n_controls`` of its DMSO images."""

    n_treated: int       # treated images per context (near-equal chunks of at most this many)
    n_controls: int = 0  # DMSO images of the same plate added to every context (0: none)


class BatchComposition(Protocol):
    """Which images form the mini-batches of one training epoch."""

    def batches(self, train: LabelledImages, rng: np.random.Generator) -> list[Batch]:
        """One epoch of mini-batches, drawn with ``rng``."""
        ...


@dataclass(frozen=True)
class MixedBatches:
    """Treated images of all training plates, shuffled together into batches of ``batch_size``."""

    batch_size: int

    def batches(self, train: LabelledImages, rng: np.random.Generator) -> list[Batch]:
        return mixed_batches(train, self.batch_size, rng)


@dataclass(frozen=True)
class OnePlateBatches:
    """Every batch one plate's :class:`PlateContext`: a chunk of its treated images (+ its DMSO images)."""

    context: PlateContext

    def batches(self, train: LabelledImages, rng: np.random.Generator) -> list[Batch]:
        return plate_batches(train, self.context.n_treated, rng, n_controls=self.context.n_controls)


def target_draws(targets: Sequence[PlateView], n_batches: int, n_per_batch: int, rng: np.random.Generator
                 ) -> list[np.ndarray]:
    """``n_batches`` draws of ``n_per_batch`` treated images of the target plates, pooled and shuffled.

    Every target image is drawn once before any is drawn again (the pool is reshuffled when
    it runs out). A draw is a ``(k, 2)`` array of (index in ``targets``, row of its treated images).
    """
    sizes = [len(view.treated) for view in targets]
    pool = np.concatenate([np.stack([np.full(n, i), np.arange(n)], axis=1) for i, n in enumerate(sizes)]
                          ) if sizes else np.empty((0, 2), dtype=np.int64)
    if len(pool) == 0:
        raise DataError("the batches need unlabelled images of the target plates, but train.targets holds none; "
                        "a method composing WithTargetImages must declare access 'transductive'")
    order = np.empty(0, dtype=np.int64)
    draws = []
    for _ in range(n_batches):
        while len(order) < n_per_batch:
            order = np.concatenate([order, rng.permutation(len(pool))])
        draws.append(pool[order[:n_per_batch]].astype(np.int64))
        order = order[n_per_batch:]
    return draws


@dataclass(frozen=True)
class WithTargetImages:
    """Every batch of ``labelled`` followed by ``n_target`` unlabelled treated images of the target plates.

    Transductive training (Deep CORAL, DANN): the labelled part is drawn as ``labelled``
    draws it, the unlabelled part from the fold's target plates (``train.targets``) pooled;
    those images take part in the forward pass, carry target ``-1`` (no class loss) and
    the domain ``len(train.plates) + index in train.targets``.
    """

    labelled: BatchComposition
    n_target: int  # unlabelled target-plate images per batch

    def batches(self, train: LabelledImages, rng: np.random.Generator) -> list[Batch]:
        batches = self.labelled.batches(train, rng)
        draws = target_draws(train.targets, len(batches), self.n_target, rng)
        return [replace(batch, target_rows=rows) for batch, rows in zip(batches, draws)]
