"""Images for self-supervised pretraining: other labs, other perturbations, never a benchmark source.

Microscopes and stainings are drawn from their own random stream (tag ``PRETRAIN``),
disjoint from every benchmark source of every seed; perturbations are random
mixtures of elementary effects (:func:`.phenotypes.random_phenotype`), a share of
wells unperturbed, never one of the eight benchmark compounds.
"""

from __future__ import annotations

import numpy as np

from ...constants import DMSO_LABEL
from .cells import N_CH
from .config import SimulatorConfig
from .generate import WellSpec, render_wells
from .microscope import draw_microscope
from .phenotypes import BY_LABEL, random_phenotype

PRETRAIN = 100
N_LABS = 8
SITES = 4
UNPERTURBED = 0.3


def pretraining_images(n_images: int, seed: int, image_size: int = 64) -> np.ndarray:
    """``n_images`` uint8 images ``(N, 5, image_size, image_size)`` from labs and perturbations outside the benchmark."""
    if n_images < 0 or image_size < 16:
        raise ValueError(f"need n_images >= 0 and image_size >= 16, got {n_images}, {image_size}")
    cfg = SimulatorConfig(seed=seed)
    tech, bio = cfg.technical, cfg.biology
    labs = [draw_microscope(np.random.default_rng([seed, PRETRAIN, 1, k]), tech, 1.0, widefield=k % 2 == 0)
            for k in range(N_LABS)]
    out = np.empty((n_images, N_CH, image_size, image_size), dtype=np.uint8)
    done, group = 0, 0
    while done < n_images:
        rng = np.random.default_rng([seed, PRETRAIN, 2, group])
        lab = labs[int(rng.integers(N_LABS))]
        stain_batch = np.exp(rng.normal(0, tech.stain_spread, size=N_CH))
        wells = []
        for _ in range(16):
            pheno = BY_LABEL[DMSO_LABEL] if rng.random() < UNPERTURBED else random_phenotype(rng)
            wells.append(WellSpec(pheno, stain_batch * np.exp(rng.normal(0, bio.well_cv, size=N_CH)),
                                  float(np.exp(rng.normal(0, tech.seeding_spread + bio.well_density_cv))),
                                  abs(rng.normal(0, tech.defocus_spread))))
        images = render_wells(bio, lab, wells, SITES, image_size, 1.0, tech.site_defocus_spread,
                              np.random.default_rng([seed, PRETRAIN, 3, group]),
                              np.random.default_rng([seed, PRETRAIN, 4, group]),
                              np.random.default_rng([seed, PRETRAIN, 5, group]))
        take = min(len(images), n_images - done)
        out[done:done + take] = images[rng.permutation(len(images))[:take]]
        done += take
        group += 1
    return out
