"""The morphological phenotype of each positive control, inspired by its mechanism.

A phenotype is a set of effects on the cell model (multiplicative factors, 1 = no
change, or additive amounts, 0 = no change). Not every cell responds: a cell
responds with probability ``penetrance``, and a responding cell shows the effect
with a strength drawn per cell (and scaled per well), so a treated well is a mix of
responding and unperturbed-looking cells.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ...constants import CLASS_NAMES, DMSO_LABEL


@dataclass(frozen=True)
class Phenotype:
    """Effects of a compound on the cell model (defaults: unperturbed, i.e. DMSO)."""

    penetrance: float = 0.0
    """Probability that a cell responds."""
    viability: float = 1.0
    """Factor on the number of cells per field (well level)."""
    cell_size: float = 1.0
    nucleus_size: float = 1.0
    aspect: float = 1.0
    """Factor on the log aspect ratio (>1 elongated, <1 round)."""
    irregularity: float = 1.0
    """Factor on the boundary modulation (protrusions, ruffles)."""
    multinucleated: float = 0.0
    """Probability (additive) that a responding cell carries 2-4 nuclei."""
    dna: float = 1.0
    nucleoli: float = 1.0
    """Factor on nucleolar RNA intensity."""
    nucleoli_size: float = 1.0
    rna_cyto: float = 1.0
    er: float = 1.0
    er_granules: float = 0.0
    """Bright ER/lysosomal granules per cell (additive)."""
    mito: float = 1.0
    mito_fragmentation: float = 0.0
    """0 = tubular network, 1 = round puncta (additive)."""
    mito_perinuclear: float = 0.0
    """0 = spread through the cytoplasm, 1 = clustered at the nucleus (additive)."""
    agp_membrane: float = 1.0
    agp_fibres: float = 1.0
    golgi: float = 1.0
    """Factor on the Golgi size."""
    vacuoles: float = 0.0
    """Dark cytoplasmic vacuoles per cell (additive)."""


MULTIPLICATIVE = ("viability", "cell_size", "nucleus_size", "aspect", "irregularity", "dna", "nucleoli",
                  "nucleoli_size", "rna_cyto", "er", "mito", "agp_membrane", "agp_fibres", "golgi")
ADDITIVE = ("multinucleated", "er_granules", "mito_fragmentation", "mito_perinuclear", "vacuoles")

PHENOTYPES: dict[str, Phenotype] = {
    # sim-2: phenotypes are carried by morphology and spatial organisation (shape, texture, object
    # counts and arrangement); totals of stain per cell change little, so whole-image intensity
    # statistics see only a faint trace of most of them. Strong: AMG900, FK-866; subtle:
    # dexamethasone, LY2109761, quinidine (lower penetrance, smaller effects); the rest in between.
    #
    # Aurora kinases drive mitosis; without them cytokinesis fails: large, polyploid,
    # multinucleated cells, and fewer of them (strong).
    "AMG900": Phenotype(penetrance=0.9, viability=0.5, cell_size=1.7, nucleus_size=1.5,
                        multinucleated=0.9, dna=1.2, irregularity=1.6),
    # Glucocorticoid receptor agonist: spreading and elongation, slightly more stress fibres (subtle).
    "dexamethasone": Phenotype(penetrance=0.7, aspect=2.2, cell_size=1.2, agp_fibres=1.4, nucleus_size=0.9),
    # NAMPT inhibition depletes NAD+: fragmented mitochondria clustered at the nucleus, fewer cells (strong).
    "FK-866": Phenotype(penetrance=0.85, viability=0.7, mito=0.7, mito_fragmentation=0.85,
                        mito_perinuclear=0.8, cell_size=0.9),
    # TGF-beta receptor inhibition: fewer stress fibres; rounder, more compact cells (subtle).
    "LY2109761": Phenotype(penetrance=0.7, agp_fibres=0.3, aspect=0.25, cell_size=0.8, agp_membrane=1.3,
                           viability=1.2),
    # PAK1 controls actin dynamics: ruffled, irregular outlines with brighter cortical actin.
    "NVS-PAK1-1": Phenotype(penetrance=0.85, irregularity=4.0, agp_membrane=2.0, agp_fibres=0.8),
    # Cationic amphiphilic drug: phospholipidosis, cytoplasmic vacuoles, slightly swollen cells (subtle).
    "quinidine": Phenotype(penetrance=0.7, vacuoles=10.0, cell_size=1.2, er=1.2),
    # DYRK1A/B regulate nuclear speckles and the cell cycle: larger, brighter nucleoli, larger nuclei.
    "TC-S-7004": Phenotype(penetrance=0.85, nucleoli=1.8, nucleoli_size=1.8, nucleus_size=1.3, viability=1.1),
    # Cathepsin inhibition: undigested material gathers in lysosomes (granules take ER/AGP stain from
    # the diffuse cytoplasm), larger Golgi.
    "aloxistatin": Phenotype(penetrance=0.85, er_granules=14.0, golgi=2.2),
}

BY_LABEL: dict[int, Phenotype] = {DMSO_LABEL: Phenotype()} | {i: PHENOTYPES[n] for i, n in enumerate(CLASS_NAMES)}


def random_phenotype(rng: np.random.Generator, p_effect: float = 0.3) -> Phenotype:
    """A random mixture of elementary effects (for pretraining images; not a benchmark compound)."""
    values: dict[str, float] = {"penetrance": float(rng.uniform(0.4, 0.9))}
    for f in fields(Phenotype):
        if f.name == "penetrance" or rng.random() >= p_effect:
            continue
        if f.name in MULTIPLICATIVE:
            values[f.name] = float(np.exp(rng.normal(0, 0.3)))
        else:
            hi = {"multinucleated": 0.6, "er_granules": 8.0, "mito_fragmentation": 0.9,
                  "mito_perinuclear": 0.7, "vacuoles": 6.0}[f.name]
            values[f.name] = float(rng.uniform(0, hi))
    return Phenotype(**values)
