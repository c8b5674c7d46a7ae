"""The ``cellprofiler`` encoder backend: the per-image CellProfiler features of :mod:`benchmark.core.cells.cellprofiler`
(cp_measure measurements of nuclei, cells and cytoplasm, median over cells) as a frozen featuriser of the profile methods."""

from __future__ import annotations

from ..cells.cellprofiler import NAME, cellprofiler_encoder
from .registry import register_encoder_backend

register_encoder_backend(NAME)(cellprofiler_encoder)
