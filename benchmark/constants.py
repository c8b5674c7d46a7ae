"""Fixed facts of the task: channels, the eight positive controls and DMSO.

The class order is fixed once here (sorted by compound name, as in DESIGN.md §1)
and recorded in every dataset and every run record.
"""

from __future__ import annotations

CHANNELS: tuple[str, ...] = ("RNA", "ER", "AGP", "Mito", "DNA")
"""Channel order used everywhere in platebench."""

DMSO_ID = "JCP2022_033924"
DMSO_LABEL = -1
"""Label value of DMSO (negative-control) images: context, never a class."""

# (class index, compound name, JCP2022 id, mechanism, real 384-well positions)
POSCONS: tuple[tuple[int, str, str, str, tuple[str, ...]], ...] = (
    (0, "AMG900", "JCP2022_037716", "pan-Aurora kinase inhibitor", ("B01", "F24", "J01", "N24")),
    (1, "dexamethasone", "JCP2022_025848", "glucocorticoid receptor agonist", ("C01", "G24", "K01", "O24")),
    (2, "FK-866", "JCP2022_046054", "NAMPT inhibitor", ("D01", "H24", "L01", "P24")),
    (3, "LY2109761", "JCP2022_035095", "TGF-beta receptor kinase inhibitor", ("A24", "E01", "I24", "M01")),
    (4, "NVS-PAK1-1", "JCP2022_064022", "PAK1 inhibitor", ("B24", "F01", "J24", "N01")),
    (5, "quinidine", "JCP2022_050797", "Na+/K+ channel blocker", ("C24", "G01", "K24", "O01")),
    (6, "TC-S-7004", "JCP2022_012818", "DYRK1A/B kinase inhibitor", ("D24", "H01", "L24", "P01")),
    (7, "aloxistatin", "JCP2022_085227", "cysteine-protease inhibitor", ("A01", "E24", "I01", "M24")),
)

CLASS_NAMES: tuple[str, ...] = tuple(p[1] for p in POSCONS)
CLASS_IDS: tuple[str, ...] = tuple(p[2] for p in POSCONS)
N_CLASSES = len(POSCONS)
COMPOUND_TO_CLASS: dict[str, int] = {p[2]: p[0] for p in POSCONS}

PLATE_ROWS = "ABCDEFGHIJKLMNOP"
PLATE_COLS = 24
DMSO_COLUMNS = (2, 23)
"""JUMP compound plates carry DMSO in all 16 wells of columns 2 and 23 (32 wells)."""


def dmso_wells() -> tuple[str, ...]:
    """The 32 DMSO well names of a JUMP compound plate, e.g. ``"A02"``."""
    return tuple(f"{r}{c:02d}" for c in DMSO_COLUMNS for r in PLATE_ROWS)


def is_edge_well(well: str) -> bool:
    """True for wells on the outer ring of a 384-well plate (row A/P or column 1/24)."""
    row, col = well[0], int(well[1:])
    return row in (PLATE_ROWS[0], PLATE_ROWS[-1]) or col in (1, PLATE_COLS)
