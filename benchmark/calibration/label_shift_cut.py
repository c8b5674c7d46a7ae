"""Label shift on a target plate: cut its treated images to a few classes, keep its DMSO images.

A plate of the real layout holds every class in equal numbers; under label shift a new
plate holds a different class mix. The simplest, most severe case keeps the treated
images of ``n_classes`` classes of each plate. The classes of a plate are drawn by a
generator keyed by ``(seed, plate name)`` alone, so every method (and every run) sees
the same cut of the same plate. DMSO images are never labels; they stay with the plate.

Pure functions: an index table and image ids in, image ids out.
"""

from __future__ import annotations


import numpy as np
import polars as pl

from ..errors import BenchError
from ..seeding import name_key


def plate_rng(plate: str, seed: int = 0) -> np.random.Generator:
    """A generator keyed by ``seed`` and the plate's name (stable across processes and Python versions)."""
    return np.random.default_rng([seed, name_key(plate)])


def choose_classes(plate: str, classes: np.ndarray | list[int], n_classes: int = 2, seed: int = 0) -> list[int]:
    """The ``n_classes`` classes kept on ``plate``, drawn from ``classes`` (sorted result).

    Raises
    ------
    BenchError
        When the plate has fewer than ``n_classes`` classes.
    """
    present = sorted({int(c) for c in classes})
    if n_classes < 1 or len(present) < n_classes:
        raise BenchError(f"plate {plate} has treated images of {len(present)} class(es); cannot keep "
                         f"{n_classes} (choose n_classes between 1 and {len(present)})")
    picked = plate_rng(plate, seed).choice(present, size=n_classes, replace=False)
    return sorted(int(c) for c in picked)


def cut_plates(index: pl.DataFrame, image_ids: np.ndarray, n_classes: int = 2,
               seed: int = 0) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Cut every plate among ``image_ids`` to the treated images of ``n_classes`` classes, plus its DMSO images.

    Parameters
    ----------
    index
        The dataset index (columns ``image_id, plate, label, is_control``; row ``i`` is image ``i``).
    image_ids
        Images of the plates to cut (for example a fold's ``target_ids``).
    n_classes, seed
        How many classes each plate keeps; seed of the choice (with the plate's name).

    Returns
    -------
    ids : numpy.ndarray
        The kept image ids (sorted): each plate's treated images of its classes and all its DMSO images
        among ``image_ids``.
    classes : dict
        The classes kept, by plate (plates sorted).
    """
    rows = index[np.asarray(image_ids, dtype=np.int64)].select("image_id", "plate", "label", "is_control")
    treated = rows.filter(~pl.col("is_control"))
    classes = {plate: choose_classes(plate, group["label"].to_numpy(), n_classes, seed)
               for (plate,), group in treated.sort("plate").group_by("plate", maintain_order=True)}
    keep = pl.DataFrame({"plate": [p for p, cs in classes.items() for _ in cs],
                         "label": [c for cs in classes.values() for c in cs]},
                        schema={"plate": rows.schema["plate"], "label": rows.schema["label"]})
    kept = treated.join(keep, on=["plate", "label"], how="semi")["image_id"].to_numpy()
    controls = rows.filter(pl.col("is_control"))["image_id"].to_numpy()
    return np.sort(np.concatenate([kept, controls]).astype(np.int64)), classes


__all__ = ["choose_classes", "cut_plates", "plate_rng"]
