"""Generate a synthetic dataset: sources -> batches -> plates -> wells -> sites, one shard per plate.

Random streams are keyed by (seed, stream tag, source, batch, plate), so a plate's
pixels do not depend on how many other plates are generated, and the biology of a
plate is the same at every severity (only the technical effects change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import Progress

from ...constants import DMSO_ID, DMSO_LABEL, PLATE_COLS, PLATE_ROWS, POSCONS, dmso_wells, is_edge_well
from ..dataset import DatasetMeta, write_dataset
from ..store import write_shard
from .cells import N_CH, draw_cells
from .config import SIMULATOR_VERSION, BiologyParams, SimulatorConfig, TechnicalParams
from .microscope import Microscope, draw_microscope, image_microscope, to_uint8
from .phenotypes import BY_LABEL, Phenotype
from .render import render

# stream tags (never reuse one for a different purpose)
SOURCE, BATCH, PLATE, BIOLOGY, TEXTURE, CAMERA = 1, 2, 3, 10, 11, 12


def plate_layout() -> list[tuple[str, int, str]]:
    """(well, label, compound id) of the control wells of a JUMP compound plate, in well order."""
    wells = [(w, p[0], p[2]) for p in POSCONS for w in p[4]] + [(w, DMSO_LABEL, DMSO_ID) for w in dmso_wells()]
    return sorted(wells)


@dataclass(frozen=True)
class WellSpec:
    """What the renderer needs to know about one well."""

    phenotype: Phenotype
    stain: np.ndarray   # (5,) stain x plate gain x edge x biological well factor
    density: float      # seeding x edge x biological well factor
    defocus: float      # px
    dye: np.ndarray | None = None  # (5,) unbound-dye background of the batch (signal units)


def render_wells(bio: BiologyParams, micro: Microscope, wells: list[WellSpec], sites: int, size: int,
                 severity: float, site_defocus: float, rng_bio: np.random.Generator,
                 rng_tex: np.random.Generator, rng_cam: np.random.Generator) -> np.ndarray:
    """uint8 images ``(len(wells) * sites, 5, size, size)``, well-major, site-minor."""
    tables = draw_cells(rng_bio, bio, [w.phenotype for w in wells], sites, size,
                        np.array([w.density for w in wells]), micro.scale)
    clean = render(tables, size, rng_tex)
    stain = np.repeat(np.stack([w.stain for w in wells]), sites, axis=0)
    defocus = np.repeat([w.defocus for w in wells], sites) + severity * np.abs(
        rng_cam.normal(0, site_defocus, size=len(wells) * sites))
    dye = np.repeat(np.stack([np.zeros(N_CH) if w.dye is None else w.dye for w in wells]), sites, axis=0)
    return to_uint8(image_microscope(micro, stain, defocus, clean, rng_cam, dye))


def _rng(config: SimulatorConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, *keys])


def source_microscopes(config: SimulatorConfig) -> list[Microscope]:
    """The microscope of each source (even sources widefield, odd ones confocal)."""
    return [draw_microscope(_rng(config, SOURCE, k), config.technical, config.severity, widefield=k % 2 == 0)
            for k in range(config.shape.n_sources)]


def plate_wells(config: SimulatorConfig, k: int, b: int, p: int) -> list[WellSpec]:
    """Technical and biological well factors of plate ``p`` of batch ``b`` of source ``k``."""
    tech: TechnicalParams = config.technical
    s = config.severity
    rb = _rng(config, BATCH, k, b)
    stain_batch = np.exp(s * rb.normal(0, tech.stain_spread, size=N_CH))
    seeding = float(np.exp(s * rb.normal(0, tech.seeding_spread)))
    dye = s * rb.uniform(0, tech.unbound_dye, size=N_CH)
    batch_defocus = s * abs(rb.normal(0, tech.batch_defocus))
    rp = _rng(config, PLATE, k, b, p)
    plate_gain = np.exp(s * rp.normal(0, tech.plate_gain_spread, size=N_CH))
    tilt, best_column = s * rp.normal(0, tech.plate_tilt), rp.uniform(1, PLATE_COLS)
    row_slope = s * 0.15 * tech.plate_tilt * rp.normal()
    specs = []
    for well, label, _ in plate_layout():
        edge = is_edge_well(well)
        row, col = PLATE_ROWS.index(well[0]), int(well[1:])
        bio_stain = np.exp(rp.normal(0, config.biology.well_cv, size=N_CH))
        bio_density = float(np.exp(rp.normal(0, config.biology.well_density_cv)))
        defocus = batch_defocus + s * abs(rp.normal(0, tech.defocus_spread)) + abs(
            tilt * (col - best_column) / (PLATE_COLS - 1))
        row_gain = np.exp(row_slope * (row - 7.5) / 7.5)
        specs.append(WellSpec(
            phenotype=BY_LABEL[label],
            stain=stain_batch * plate_gain * row_gain * bio_stain * (1 + s * tech.edge_effect * edge),
            density=seeding * bio_density * max(0.2, 1 - s * tech.edge_effect * edge),
            defocus=defocus,
            dye=dye,
        ))
    return specs


def generate_synthetic(config: SimulatorConfig, root: Path, progress: bool = True) -> DatasetMeta:
    """Generate the dataset of ``config`` into the folder ``root`` (deterministic: same config, same bytes).

    Returns the metadata written to ``root/dataset.json``; its settings hold
    ``SIMULATOR_VERSION`` and the full configuration.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shape = config.shape
    micros = source_microscopes(config)
    layout = plate_layout()
    rows: dict[str, list] = {k: [] for k in ("source", "batch", "plate", "well", "site", "compound", "label",
                                             "shard", "offset")}
    shards = []
    plates = [(k, b, p) for k in range(shape.n_sources) for b in range(shape.batches_per_source)
              for p in range(shape.plates_per_batch)]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("synthetic: plates", total=len(plates))
        for k, b, p in plates:
            source, batch, plate = f"lab{k + 1}", f"lab{k + 1}_b{b + 1}", f"lab{k + 1}_b{b + 1}_p{p + 1}"
            images = render_wells(config.biology, micros[k], plate_wells(config, k, b, p), shape.sites_per_well,
                                  shape.image_size, config.severity, config.technical.site_defocus_spread,
                                  _rng(config, BIOLOGY, k, b, p), _rng(config, TEXTURE, k, b, p),
                                  _rng(config, CAMERA, k, b, p))
            code = len(shards)
            shards.append(write_shard(root, plate, images))
            offset = 0
            for well, label, compound in layout:
                for site in range(1, shape.sites_per_well + 1):
                    for key, value in zip(rows, (source, batch, plate, well, site, compound, label, code, offset)):
                        rows[key].append(value)
                    offset += 1
            bar.advance(task)
    index = (pl.DataFrame(rows)
             .with_columns(is_control=pl.col("label") == DMSO_LABEL)
             .with_row_index("image_id"))
    description = (f"synthetic Cell Painting simulator {SIMULATOR_VERSION}: {shape.n_sources} sources x "
                   f"{shape.batches_per_source} batches x {shape.plates_per_batch} plates, "
                   f"{shape.sites_per_well} sites/well, {shape.image_size} px, severity {config.severity}")
    return write_dataset(root, "synthetic", SIMULATOR_VERSION, config.to_json(), index, shards, description)
