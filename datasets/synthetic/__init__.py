"""The ``synthetic`` dataset: a deterministic simulator of a JUMP-like compound-plate experiment.

See ``DATA_CARD.md`` in this folder for the generative model and its calibration.
"""

from __future__ import annotations

from .config import SIMULATOR_VERSION, SIZES, BiologyParams, SimulatorConfig, TechnicalParams
from .generate import generate_synthetic
from .loader import cache_path, load_synthetic
from .phenotypes import PHENOTYPES, Phenotype
from .pretrain import pretraining_images

__all__ = ["SIMULATOR_VERSION", "SIZES", "BiologyParams", "Phenotype", "PHENOTYPES", "SimulatorConfig",
           "TechnicalParams", "cache_path", "generate_synthetic", "load_synthetic", "pretraining_images"]
