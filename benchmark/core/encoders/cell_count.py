"""The ``cell-count`` encoder backend: the per-image cell features of :mod:`benchmark.core.cells.count`
(nuclei per image, optionally per-channel area fractions) as a frozen featuriser of the profile methods."""

from __future__ import annotations

from ..cells.count import NAME, cell_count_encoder
from .registry import register_encoder_backend

register_encoder_backend(NAME)(cell_count_encoder)
