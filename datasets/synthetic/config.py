"""Every parameter of the simulator and its default, in one place.

Lengths are in pixels of a reference microscope (before the source's
magnification); intensities are in units of the mean stain signal of an
unperturbed cell. Technical parameters describe the *spread* of an effect between
sources, batches, plates and wells; each spread is multiplied by ``severity``, so
at ``severity=0`` every source, batch, plate and well has the same microscope.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from ...errors import BenchError, UnknownNameError

SIMULATOR_VERSION = "sim-2"
"""Bump whenever the generative model changes (it is part of the cache key)."""


@dataclass(frozen=True)
class BiologyParams:
    """Cells, compartments and biological variability (independent of ``severity``)."""

    cells_per_site: float = 13.0
    """Mean number of cell centres per 64x64 px field (Poisson; seeding and viability scale it)."""
    cell_radius: float = 8.5
    """Mean cell semi-axis (px)."""
    nucleus_radius: float = 3.8
    """Mean nucleus semi-axis (px)."""
    cell_size_cv: float = 0.18
    """Per-cell coefficient of variation of cell and nucleus size."""
    elongation: float = 0.25
    """Mean log aspect ratio of a cell (0 = round)."""
    irregularity: float = 0.12
    """Amplitude of the smooth noise that bends cell boundaries (protrusions)."""
    intensity_cv: float = 0.25
    """Per-cell, per-channel log-normal intensity spread."""
    well_cv: float = 0.10
    """Per-well, per-channel log-normal intensity spread (biological well-to-well variation)."""
    well_density_cv: float = 0.12
    """Per-well log-normal spread of cell density."""
    site_density_cv: float = 0.20
    """Per-site log-normal spread of cell density (uneven seeding, clumping): whole-image intensity
    statistics vary between the sites of one well, the cells themselves do not."""
    g2_fraction: float = 0.35
    """Share of cells in G2 (twice the DNA, larger nucleus)."""
    mitotic_fraction: float = 0.03
    """Share of rounded mitotic cells with condensed, bright chromatin."""
    nucleoli_per_nucleus: float = 2.5
    """Mean number of nucleoli (Poisson + 1)."""
    mito_per_cell: int = 34
    """Mitochondrial segments per cell (scaled by cell area)."""
    well_potency_cv: float = 0.20
    """Per-well log-normal spread of the compound's effect strength."""
    phenotype_strength: float = 2.5
    """Global multiplier of every compound's effect (the exponent of multiplicative effects)."""


@dataclass(frozen=True)
class TechnicalParams:
    """Microscope, staining and plate effects; every spread is multiplied by ``severity``."""

    # per source: optics and camera
    psf_sigma: float = 0.55
    """Baseline PSF Gaussian sigma (px) of the reference microscope."""
    psf_sigma_spread: float = 0.6
    """Extra PSF sigma of a source: U(0, spread)."""
    magnification_spread: float = 0.16
    """Log pixel-size factor of a source: U(-spread, spread)."""
    gain_spread: float = 0.45
    """Log per-channel detector gain / exposure of a source: N(0, spread)."""
    offset_spread: float = 0.22
    """Per-channel camera offset + background of a source (fraction of mean signal): U(0, spread)."""
    bleed_through: float = 0.12
    """Spectral bleed-through into neighbouring channels: U(0.3, 1) x this."""
    vignetting: float = 0.45
    """Illumination fall-off at the field corner: U(0.2, 1) x this."""
    photons: float = 150.0
    """Photo-electrons per unit signal of the reference camera (shot noise)."""
    photon_spread: float = 0.5
    """Log spread of a source's photon budget: N(0, spread)."""
    read_noise: float = 2.0
    """Read noise of the reference camera (electrons)."""
    haze_widefield: float = 0.45
    """Out-of-focus haze of a widefield source: U(0.5, 1) x this (confocal: 0.1 x this)."""
    haze_sigma: float = 7.0
    """Gaussian sigma (px) of the out-of-focus haze."""
    gamma_spread: float = 0.12
    """Log per-channel exponent of a source's detector response, ``signal ** gamma``: N(0, spread)
    (non-linear: no affine correction of plate statistics undoes it exactly)."""
    saturation: float = 4.0
    """Full-well level of the reference camera, in units of the mean stain signal; a source's is
    this x exp(N(0, saturation_spread)); brighter pixels saturate softly."""
    saturation_spread: float = 0.35
    # per batch
    stain_spread: float = 0.25
    """Log per-channel stain intensity of a batch: N(0, spread)."""
    seeding_spread: float = 0.15
    """Log seeding density of a batch: N(0, spread)."""
    unbound_dye: float = 0.12
    """Unbound-dye background of a batch per channel (fraction of the mean signal): U(0, this)."""
    batch_defocus: float = 0.15
    """Focus offset of a batch (extra blur sigma, px): |N(0, this)|."""
    # per plate
    plate_gain_spread: float = 0.05
    """Log per-channel gain of a plate: N(0, spread)."""
    edge_effect: float = 0.12
    """Evaporation in edge wells: stain x (1 + this), density x (1 - this)."""
    plate_tilt: float = 0.2
    """Focus gradient across a plate (tilted plate or stage): extra blur sigma at the plate's far
    columns N(0, this) px, linear in the column, plus ``0.15`` x this of the log stain along the rows."""
    # per well / site
    defocus_spread: float = 0.25
    """Per-well extra blur sigma (px): |N(0, spread)|."""
    site_defocus_spread: float = 0.12
    """Per-site extra blur sigma (px): |N(0, spread)|."""
    # 8-bit conversion (not scaled: it is the real pipeline)
    clip_percentile: float = 99.99
    """Per image, per channel clip percentile mapped to 255."""


@dataclass(frozen=True)
class SizePreset:
    """Counts and image size of a size preset."""

    n_sources: int
    batches_per_source: int
    plates_per_batch: int
    sites_per_well: int
    image_size: int


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(n_sources=4, batches_per_source=3, plates_per_batch=2, sites_per_well=2, image_size=32),
    "default": SizePreset(n_sources=4, batches_per_source=3, plates_per_batch=2, sites_per_well=6, image_size=64),
    "large": SizePreset(n_sources=6, batches_per_source=4, plates_per_batch=3, sites_per_well=4, image_size=96),
}
"""Size presets: ``tiny`` for tests, ``default``, ``large`` for sweeps and scaling."""


@dataclass(frozen=True)
class SimulatorConfig:
    """All settings of one synthetic dataset.

    Parameters
    ----------
    seed : int
        Seed of every random stream (biology and technical effects).
    severity : float
        Multiplier of every technical spread (0: all sources alike; 1: default; >1: sweeps).
    size : str
        Size preset, one of :data:`SIZES`.
    n_sources, batches_per_source, plates_per_batch, sites_per_well, image_size : int or None
        Overrides of the preset's counts (for scaling studies).
    biology, technical : BiologyParams, TechnicalParams
        The generative model's parameters.
    """

    seed: int = 0
    severity: float = 1.0
    size: str = "default"
    n_sources: int | None = None
    batches_per_source: int | None = None
    plates_per_batch: int | None = None
    sites_per_well: int | None = None
    image_size: int | None = None
    biology: BiologyParams = field(default_factory=BiologyParams)
    technical: TechnicalParams = field(default_factory=TechnicalParams)

    def __post_init__(self):
        if not isinstance(self.severity, (int, float)) or not self.severity >= 0:
            raise BenchError(f"severity must be a number >= 0 (0 = no technical effects, 1 = default), "
                             f"got {self.severity!r}")
        if self.size not in SIZES:
            raise UnknownNameError("size preset", self.size, SIZES)
        minima = {"n_sources": 2, "batches_per_source": 1, "plates_per_batch": 1, "sites_per_well": 1,
                  "image_size": 16}
        for name, low in minima.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise BenchError(f"{name} must be an integer >= {low}, got {value!r}")

    @property
    def shape(self) -> SizePreset:
        """The preset's counts with the overrides applied."""
        preset = asdict(SIZES[self.size])
        return SizePreset(**{k: v if getattr(self, k) is None else getattr(self, k) for k, v in preset.items()})

    def to_json(self) -> dict:
        """The full configuration, resolved counts included (goes into ``dataset.json``)."""
        return {"simulator_version": SIMULATOR_VERSION, **asdict(self), "resolved": asdict(self.shape)}

    def cache_key(self) -> str:
        """``{SIMULATOR_VERSION}-{hash}``: the cache folder name of this configuration."""
        payload = self.to_json()
        payload.pop("size")  # two spellings of the same counts share one cache entry
        for k in asdict(self.shape):
            payload.pop(k)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
        return f"{SIMULATOR_VERSION}-{digest}"
