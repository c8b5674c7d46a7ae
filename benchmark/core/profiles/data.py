"""Profiles: image embeddings with the metadata a method may know, and their well-level means.

:class:`Profiles` holds one row per image: the embedding and its plate, source, batch, well,
label (class, ``-1`` for DMSO) and control flag. Images of a target plate (a transductive
``fit``'s ``train.targets``) come without labels and wells: their label is :data:`UNKNOWN`,
their well ``""`` and their source and batch :data:`TARGET` (a method never learns which
lab a target plate comes from). :func:`well_profiles` averages the sites of every known
well: the well-level profiles the field computes its metrics on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...constants import DMSO_LABEL

UNKNOWN = -2
"""Label of a target plate's treated image (labels stay with the evaluator)."""
TARGET = "(target)"
"""Source and batch of a target plate's images."""


@dataclass(frozen=True)
class Profiles:
    """Image-level (or well-level) profiles and their metadata, row by row."""

    x: np.ndarray           # (n, d) float32 embeddings
    plate: np.ndarray       # (n,) plate names
    source: np.ndarray      # (n,) source (lab), TARGET for target plates
    batch: np.ndarray       # (n,) batch, TARGET for target plates
    well: np.ndarray        # (n,) well, "" where unknown
    label: np.ndarray       # (n,) class 0..7, DMSO_LABEL for DMSO, UNKNOWN for a target plate's treated images
    is_control: np.ndarray  # (n,) True for DMSO

    def __post_init__(self) -> None:
        n = len(self.x)
        for name in ("plate", "source", "batch", "well", "label", "is_control"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Profiles.{name} has {len(getattr(self, name))} rows, x has {n}")

    def __len__(self) -> int:
        return len(self.x)

    def select(self, rows: np.ndarray) -> Profiles:
        """The rows ``rows`` (a boolean mask or indices)."""
        return Profiles(*(np.asarray(getattr(self, f))[rows] for f in _FIELDS))

    def with_x(self, x: np.ndarray) -> Profiles:
        """The same metadata with other embeddings (e.g. corrected ones)."""
        return Profiles(np.asarray(x, dtype=np.float32), self.plate, self.source, self.batch, self.well, self.label,
                        self.is_control)

    @property
    def labelled(self) -> np.ndarray:
        """Rows whose label is known (training and validation plates: classes and DMSO)."""
        return np.asarray(self.label) != UNKNOWN


_FIELDS = ("x", "plate", "source", "batch", "well", "label", "is_control")


def profiles_of(x: np.ndarray, plate: str, source: str, batch: str, wells: Sequence[str], labels: np.ndarray,
                is_control: bool) -> Profiles:
    """Profiles of images of one plate that share source, batch and control flag."""
    n = len(x)
    return Profiles(np.asarray(x, dtype=np.float32), np.full(n, plate, dtype=object), np.full(n, source, dtype=object),
                    np.full(n, batch, dtype=object), np.asarray(wells, dtype=object),
                    np.asarray(labels, dtype=np.int64), np.full(n, is_control, dtype=bool))


def concat(parts: Sequence[Profiles]) -> Profiles:
    """The rows of ``parts``, one after the other."""
    if not parts:
        raise ValueError("no profiles to concatenate")
    return Profiles(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in _FIELDS))


def well_profiles(profiles: Profiles) -> Profiles:
    """The mean over sites of every well with a known name (rows without a well are left out)."""
    known = np.asarray(profiles.well) != ""
    p = profiles.select(known)
    if len(p) == 0:
        return p
    keys = np.char.add(np.char.add(p.plate.astype(str), "\0"), p.well.astype(str))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    sums = np.zeros((len(first), p.x.shape[1]))
    np.add.at(sums, inverse, p.x.astype(np.float64))
    counts = np.bincount(inverse, minlength=len(first))[:, None]
    meta = p.select(first)
    return meta.with_x(sums / counts)


__all__ = ["DMSO_LABEL", "TARGET", "UNKNOWN", "Profiles", "concat", "profiles_of", "well_profiles"]
