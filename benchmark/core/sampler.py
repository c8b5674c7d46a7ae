"""Mini-batch samplers: plate-grouped (one plate per batch, optional DMSO context) and mixed.

A batch lists image ids, treated first; ``is_context`` flags the DMSO images that
only take part in the BN statistics (the loss ignores them). Every sampler is
deterministic given its ``numpy`` generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datasets.dataset import LabelledImages
from ..errors import DataError


@dataclass(frozen=True)
class Batch:
    """One mini-batch: image ids (treated first, then DMSO context) and the plate it comes from."""

    image_ids: np.ndarray
    is_context: np.ndarray  # bool, True for DMSO images appended as BN context
    plate: str | None       # None for a mixed batch

    def __len__(self) -> int:
        return len(self.image_ids)


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
