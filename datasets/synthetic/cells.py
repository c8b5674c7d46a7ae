"""Draw the cells of the sites of one well: geometry, compartments and intensities.

The result is a set of flat tables (one row per cell, per nucleus, per punctate
object) that :mod:`.render` turns into pixels. Biology only: technical effects
enter through ``density`` (seeding, edge wells) and ``scale`` (magnification).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from .config import BiologyParams
from .phenotypes import Phenotype

N_CH = 5
RNA, ER, AGP, MITO, DNA = range(N_CH)
GRANULE_SHARE = 0.025
"""Share of a cell's diffuse ER stain that one lysosomal granule takes (stain is conserved, not added)."""


@dataclass
class CellTables:
    """Flat tables of cells, nuclei, spots and vacuoles for ``n_sites`` sites."""

    n_sites: int
    cells: dict[str, np.ndarray]    # site, cx, cy, a, b, theta, irr, inten (5,), membrane, fibres
    nuclei: dict[str, np.ndarray]   # site, cx, cy, a, b, theta, dna
    spots: dict[str, np.ndarray]    # site, x, y, amp (5,)
    vacuoles: dict[str, np.ndarray]  # site, x, y, amp

    @staticmethod
    def concat(parts: list[CellTables]) -> CellTables:
        """Stack the tables of several wells; site indices are renumbered consecutively."""
        offsets = np.cumsum([0] + [p.n_sites for p in parts])

        def cat(attr: str) -> dict[str, np.ndarray]:
            keys = getattr(parts[0], attr).keys()
            out = {k: np.concatenate([getattr(p, attr)[k] for p in parts]) for k in keys}
            out["site"] = np.concatenate([getattr(p, attr)["site"] + o for p, o in zip(parts, offsets)])
            return out

        return CellTables(int(offsets[-1]), cat("cells"), cat("nuclei"), cat("spots"), cat("vacuoles"))


def _effect(factor: float, resp: np.ndarray) -> np.ndarray:
    """Per-cell multiplicative effect ``factor ** resp``."""
    return np.power(factor, resp)


def _place(rng: np.random.Generator, counts: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Centres of ``counts[i]`` cells per site in [lo, hi]^2, site after site.

    Each site's cells take a random subset of a jittered, randomly rotated hexagonal
    lattice at 85 % occupancy: cells in a monolayer keep their distance, without a
    slow sequential placement.
    """
    side = hi - lo
    n_sites = len(counts)
    spacing = side * np.sqrt(2 * 0.85 / (np.sqrt(3) * np.maximum(counts, 1)))
    m = int(np.ceil(0.8 * side / spacing.min())) + 2
    i, j = np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1))
    unit = np.stack([i + 0.5 * (j % 2), j * np.sqrt(3) / 2], -1).reshape(-1, 2)
    ang = rng.uniform(0, np.pi, size=n_sites)
    rot = np.stack([np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], -2)
    shift = rng.uniform(0, 1, size=(n_sites, 1, 2)) * spacing[:, None, None]
    pts = np.einsum("pk,sjk->spj", unit, rot) * spacing[:, None, None] + shift + (lo + hi) / 2
    pts += rng.normal(0, 1, size=pts.shape) * 0.22 * spacing[:, None, None]
    inside = ((pts >= lo) & (pts <= hi)).all(-1)
    keys = np.where(inside, rng.random(inside.shape), 2.0)
    order = np.argsort(keys, axis=1)
    out = []
    for s_, c in enumerate(counts):  # cheap: slicing only
        take = pts[s_, order[s_, : min(c, int(inside[s_].sum()))]]
        out.append(take)
        if len(take) < c:  # a lattice too coarse for very few cells
            out.append(rng.uniform(lo, hi, size=(c - len(take), 2)))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _in_cell(rng: np.random.Generator, cells: dict, idx: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at relative radius ``frac`` (0 centre, 1 boundary) and random angle inside cells ``idx``."""
    ang = rng.uniform(0, 2 * np.pi, size=len(idx))
    u, v = frac * cells["a"][idx] * np.cos(ang), frac * cells["b"][idx] * np.sin(ang)
    c, s = np.cos(cells["theta"][idx]), np.sin(cells["theta"][idx])
    return cells["cx"][idx] + u * c - v * s, cells["cy"][idx] + u * s + v * c


def draw_well(rng: np.random.Generator, bio: BiologyParams, pheno: Phenotype, n_sites: int, size: int,
              density: float, scale: float) -> CellTables:
    """Cells of ``n_sites`` sites of one well (see :func:`draw_cells`)."""
    return draw_cells(rng, bio, [pheno], n_sites, size, np.array([density]), scale)


def draw_cells(rng: np.random.Generator, bio: BiologyParams, phenos: Sequence[Phenotype], sites_per_well: int,
               size: int, densities: np.ndarray, scale: float) -> CellTables:
    """Cells of the sites of several wells (well-major, site-minor).

    Parameters
    ----------
    rng : numpy Generator
        The plate's biology stream.
    bio : BiologyParams
        The cell model.
    phenos : sequence of Phenotype
        The compound effects of each well.
    sites_per_well, size : int
        Sites per well and their side in pixels.
    densities : array (n_wells,)
        Factor on the number of cells per well (seeding, edge wells, biology); viability is applied here.
    scale : float
        Size of a reference pixel in this microscope's pixels (magnification).
    """
    n_wells = len(phenos)
    table = {f.name: np.array([getattr(p, f.name) for p in phenos], dtype=float) for f in fields(Phenotype)}
    well_of_site = np.repeat(np.arange(n_wells), sites_per_well)
    n_sites = n_wells * sites_per_well
    potency = np.exp(rng.normal(0, bio.well_potency_cv, size=n_wells))
    margin = 0.6 * bio.cell_radius * scale
    area = ((size + 2 * margin) / 64.0) ** 2
    site_density = np.exp(rng.normal(0, bio.site_density_cv, size=n_sites))  # uneven seeding within a well
    lam = bio.cells_per_site * area * (densities * table["viability"])[well_of_site] * site_density / scale**2
    counts = rng.poisson(lam)
    n = int(counts.sum())
    site = np.repeat(np.arange(n_sites), counts)
    well = well_of_site[site]
    ph = {k: v[well] for k, v in table.items()}  # per-cell phenotype

    resp = (rng.random(n) < ph["penetrance"]) * np.clip(potency[well] * rng.beta(5, 2, size=n), 0, 1.5)
    resp = resp * bio.phenotype_strength
    z = np.exp(rng.normal(0, bio.cell_size_cv, size=n))
    g2 = rng.random(n) < bio.g2_fraction
    mitotic = rng.random(n) < bio.mitotic_fraction
    radius = bio.cell_radius * z * _effect(ph["cell_size"], resp) * scale * np.where(mitotic, 0.6, 1.0)
    aspect = np.abs(rng.normal(bio.elongation, 0.15, size=n)) * _effect(ph["aspect"], resp) * ~mitotic
    irr = bio.irregularity * _effect(ph["irregularity"], resp) * np.where(mitotic, 0.2, 1.0)

    centres = _place(rng, counts, -margin, size + margin)
    cells = {"site": site, "cx": centres[:, 0], "cy": centres[:, 1],
             "a": radius * np.exp(aspect / 2), "b": radius * np.exp(-aspect / 2),
             "theta": rng.uniform(0, np.pi, size=n), "irr": irr}

    inten = np.exp(rng.normal(0, bio.intensity_cv, size=(n, N_CH)))
    inten[:, RNA] *= _effect(ph["rna_cyto"], resp)
    inten[:, ER] *= _effect(ph["er"], resp)
    inten[:, MITO] *= _effect(ph["mito"], resp)
    cells["inten"] = inten
    cells["membrane"] = _effect(ph["agp_membrane"], resp) * np.where(mitotic, 1.8, 1.0) * inten[:, AGP]
    cells["fibres"] = _effect(ph["agp_fibres"], resp) * np.where(mitotic, 0.2, 1.0) * inten[:, AGP]

    # nuclei: one per cell, 2-4 for multinucleated (failed cytokinesis) cells
    multi = rng.random(n) < np.clip(ph["multinucleated"] * resp, 0, 1)
    n_nuc = np.where(multi, rng.integers(2, 5, size=n), 1)
    cell_of = np.repeat(np.arange(n), n_nuc)
    k = np.concatenate([np.arange(m) for m in n_nuc]) if n else np.zeros(0, int)
    rn = (bio.nucleus_radius * z**0.7 * _effect(ph["nucleus_size"], resp) * scale
          * np.where(g2, 1.12, 1.0) * np.where(mitotic, 0.75, 1.0))[cell_of]
    rn = rn * np.where(n_nuc[cell_of] > 1, 0.8, 1.0) * np.exp(rng.normal(0, 0.06, size=len(cell_of)))
    phase = rng.uniform(0, 2 * np.pi, size=n)[cell_of] + 2 * np.pi * k / n_nuc[cell_of]
    off = np.where(n_nuc[cell_of] > 1, 0.55, 0.12) * rng.uniform(0.6, 1.0, size=len(cell_of))
    ca, sa = np.cos(phase), np.sin(phase)
    u, v = off * cells["a"][cell_of] * ca, off * cells["b"][cell_of] * sa
    ct, st = np.cos(cells["theta"][cell_of]), np.sin(cells["theta"][cell_of])
    nx, ny = cells["cx"][cell_of] + u * ct - v * st, cells["cy"][cell_of] + u * st + v * ct
    nasp = 0.4 * aspect[cell_of] + np.abs(rng.normal(0, 0.1, size=len(cell_of)))
    dna = (inten[:, DNA] * _effect(ph["dna"], resp) * np.where(g2, 1.4, 1.0) * np.where(mitotic, 2.2, 1.0))[cell_of]
    nuclei = {"site": site[cell_of], "cx": nx, "cy": ny, "a": rn * np.exp(nasp / 2), "b": rn * np.exp(-nasp / 2),
              "theta": cells["theta"][cell_of] + rng.normal(0, 0.2, size=len(cell_of)), "dna": dna}

    spot_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add_spots(sites: np.ndarray, x: np.ndarray, y: np.ndarray, channel_amp: np.ndarray) -> None:
        spot_parts.append((sites, x, y, channel_amp))

    # nucleoli (RNA): clusters of sub-spots inside each nucleus; larger nucleoli spread wider
    n_nucleoli = 1 + rng.poisson(bio.nucleoli_per_nucleus - 1, size=len(cell_of)) * (~mitotic[cell_of])
    nuc_of = np.repeat(np.arange(len(cell_of)), n_nucleoli)
    ang = rng.uniform(0, 2 * np.pi, size=len(nuc_of))
    rr = rng.uniform(0, 0.55, size=len(nuc_of)) * rn[nuc_of]
    ns = _effect(ph["nucleoli_size"][cell_of[nuc_of]], resp[cell_of[nuc_of]])
    amp_nl = inten[cell_of[nuc_of], RNA] * _effect(ph["nucleoli"][cell_of[nuc_of]], resp[cell_of[nuc_of]]) * ~mitotic[cell_of[nuc_of]]
    for _ in range(3):
        jit = rng.normal(0, 0.45 * scale, size=(len(nuc_of), 2)) * ns[:, None]
        amp = np.zeros((len(nuc_of), N_CH))
        amp[:, RNA] = 0.9 * amp_nl * ns
        add_spots(nuclei["site"][nuc_of], nx[nuc_of] + rr * np.cos(ang) + jit[:, 0],
                  ny[nuc_of] + rr * np.sin(ang) + jit[:, 1], amp)

    # mitochondria (Mito): short tubules through the cytoplasm, or round puncta when fragmented
    n_mito = np.round(bio.mito_per_cell * (radius / (bio.cell_radius * scale)) ** 2).astype(int) * ~mitotic
    mcell = np.repeat(np.arange(n), n_mito)
    peri = np.clip(ph["mito_perinuclear"][mcell] * resp[mcell], 0, 1)
    inner = (rn[np.searchsorted(cell_of, mcell)] / radius[mcell]) if n else np.zeros(0)
    frac = inner + (0.95 - inner) * rng.random(len(mcell)) ** (1 + 3 * peri)
    mx, my = _in_cell(rng, cells, mcell, frac)
    frag = rng.random(len(mcell)) < np.clip(0.1 + ph["mito_fragmentation"][mcell] * resp[mcell], 0, 1)
    direction = rng.uniform(0, 2 * np.pi, size=len(mcell))
    step = 0.9 * scale * ~frag
    amp_m = inten[mcell, MITO]  # a punctum holds the stain of the tubule it came from
    for j in range(-1, 3):
        amp = np.zeros((len(mcell), N_CH))
        amp[:, MITO] = amp_m * (0.55 if j in (-1, 2) else 0.75)
        add_spots(site[mcell], mx + j * step * np.cos(direction), my + j * step * np.sin(direction), amp)

    # Golgi (AGP): a compact ribbon next to the nucleus
    first_nuc = np.searchsorted(cell_of, np.arange(n))
    gang = rng.uniform(0, 2 * np.pi, size=n)
    gx = nx[first_nuc] + 1.15 * rn[first_nuc] * np.cos(gang)
    gy = ny[first_nuc] + 1.15 * rn[first_nuc] * np.sin(gang)
    gs = _effect(ph["golgi"], resp)
    for _ in range(4):
        jit = rng.normal(0, 0.7 * scale, size=(n, 2)) * gs[:, None]
        amp = np.zeros((n, N_CH))
        amp[:, AGP] = 0.45 * inten[:, AGP] * ~mitotic
        add_spots(site, gx + jit[:, 0], gy + jit[:, 1], amp)

    # lysosomal / ER granules (ER, some AGP): perinuclear bright puncta
    n_gr = rng.poisson(np.clip(ph["er_granules"] * resp, 0, None) + 0.3) * ~mitotic
    gcell = np.repeat(np.arange(n), n_gr)
    gxx, gyy = _in_cell(rng, cells, gcell, rng.uniform(0.3, 0.7, size=len(gcell)))
    amp = np.zeros((len(gcell), N_CH))
    amp[:, ER] = 1.4 * inten[gcell, ER]
    amp[:, AGP] = 0.6 * inten[gcell, AGP]
    add_spots(site[gcell], gxx, gyy, amp)
    inten[:, ER] *= np.clip(1 - GRANULE_SHARE * n_gr, 0.4, 1)  # granules take their stain from the diffuse ER

    # vacuoles: dark holes in the cytoplasm
    n_vac = rng.poisson(np.clip(ph["vacuoles"] * resp, 0, None) + 0.2) * ~mitotic
    vcell = np.repeat(np.arange(n), n_vac)
    vx, vy = _in_cell(rng, cells, vcell, rng.uniform(0.45, 0.85, size=len(vcell)))
    vacuoles = {"site": site[vcell], "x": vx, "y": vy, "amp": rng.uniform(0.7, 1.0, size=len(vcell))}

    spot_site = np.concatenate([p[0] for p in spot_parts])
    order = np.argsort(spot_site, kind="stable")  # the renderer slices tables by site
    spots = {"site": spot_site[order], "x": np.concatenate([p[1] for p in spot_parts])[order],
             "y": np.concatenate([p[2] for p in spot_parts])[order],
             "amp": np.concatenate([p[3] for p in spot_parts])[order]}
    return CellTables(n_sites, cells, nuclei, spots, vacuoles)
