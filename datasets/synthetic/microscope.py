"""Technical effects of every level (source, batch, plate, well, site) and the 8-bit conversion.

Physical order of the image formation: stain intensity (batch, plate, edge wells) ->
optics (chromatic PSF blur + per-batch, per-well and per-site defocus; out-of-focus
haze of widefield systems) -> unbound-dye background of the batch -> spectral
bleed-through -> illumination fall-off (vignetting) -> stray light /
autofluorescence background -> detector (non-linear response ``signal ** gamma``,
shot noise, read noise, soft saturation at the full-well level, gain, offset) ->
per-image, per-channel 99.99th-percentile clip to uint8 (the JUMP reference
preprocessing). Every deviation from the reference microscope is multiplied by
``severity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from .cells import AGP, DNA, ER, MITO, N_CH, RNA
from .config import TechnicalParams
from .render import gaussian_transfer

WAVELENGTH_NM = np.array([520.0, 520.0, 570.0, 665.0, 460.0])
"""Emission peaks of the dyes (SYTO14, ConA-488, phalloidin/WGA-568/555, MitoTracker Deep Red, Hoechst)."""
BLEED_PAIRS = ((ER, RNA), (RNA, ER), (MITO, AGP), (ER, DNA), (AGP, ER))
"""(receiving channel, emitting channel) pairs with spectral overlap."""
BACKGROUND = 0.04
"""Stray light / autofluorescence of the reference microscope (signal units)."""
DARK = 0.03
"""Camera offset of the reference microscope (signal units)."""


@dataclass(frozen=True)
class Microscope:
    """The optics and camera of one source (lab)."""

    widefield: bool
    scale: float            # reference pixel size in this camera's pixels (magnification)
    psf: np.ndarray         # (5,) PSF sigma per channel (px)
    haze: float             # weight of the out-of-focus haze
    haze_sigma: float       # its blur (px)
    bleed: np.ndarray       # (5, 5) mixing matrix (rows: detected channel)
    vignette: np.ndarray    # (5,) fall-off at the field corner per channel
    centre: np.ndarray      # (2,) optical axis, fraction of the field
    background: np.ndarray  # (5,) stray light (signal units, photon noise)
    photons: np.ndarray     # (5,) electrons per signal unit
    read_noise: float       # electrons
    gain: np.ndarray        # (5,) detector gain (relative)
    dark: np.ndarray        # (5,) camera offset (signal units after gain)
    gamma: np.ndarray       # (5,) exponent of the detector response
    full_well: np.ndarray   # (5,) saturation level (signal units)


def draw_microscope(rng: np.random.Generator, tech: TechnicalParams, severity: float, widefield: bool) -> Microscope:
    """A source's microscope; every deviation from the reference is scaled by ``severity``."""
    s = severity
    psf0 = tech.psf_sigma + s * rng.uniform(0, tech.psf_sigma_spread)
    bleed = np.eye(N_CH)
    for to, frm in BLEED_PAIRS:
        bleed[to, frm] = s * tech.bleed_through * rng.uniform(0.3, 1.0)
    haze_draw = rng.uniform(0.5, 1.0)
    return Microscope(
        widefield=widefield,
        scale=float(np.exp(s * rng.uniform(-tech.magnification_spread, tech.magnification_spread))),
        psf=psf0 * WAVELENGTH_NM / 550.0,
        haze=s * tech.haze_widefield * haze_draw * (1.0 if widefield else 0.1),
        haze_sigma=tech.haze_sigma,
        bleed=bleed,
        vignette=s * tech.vignetting * rng.uniform(0.2, 1.0) * rng.uniform(0.8, 1.2, size=N_CH),
        centre=0.5 + s * rng.normal(0, 0.12, size=2),
        background=BACKGROUND * np.exp(s * rng.normal(0, 0.7, size=N_CH)) * (2.0 if widefield else 1.0) ** s,
        photons=tech.photons * np.exp(s * rng.normal(0, tech.photon_spread, size=N_CH)) * (0.6 if not widefield else 1.0) ** s,
        read_noise=float(tech.read_noise * np.exp(s * rng.normal(0, 0.3))),
        gain=np.exp(s * rng.normal(0, tech.gain_spread, size=N_CH)),
        dark=DARK + s * rng.uniform(0, tech.offset_spread, size=N_CH),
        gamma=np.exp(s * rng.normal(0, tech.gamma_spread, size=N_CH)),
        full_well=tech.saturation * np.exp(-s * np.abs(rng.normal(0, tech.saturation_spread, size=N_CH))),
    )


def soft_saturation(x: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Detector response that is linear well below ``level`` (per channel) and flattens out at it."""
    level = level[None, :, None, None].astype(np.float32)
    return (x / (1 + (np.maximum(x, 0) / level) ** 4) ** 0.25).astype(np.float32)


def image_microscope(m: Microscope, stain: np.ndarray, defocus: np.ndarray, clean: np.ndarray,
                     rng: np.random.Generator, dye: np.ndarray | None = None) -> np.ndarray:
    """Physical image formation, float32 ``(B, 5, S, S)`` in detector units.

    ``stain`` (B, 5) multiplies the dye signal (batch x plate x edge); ``defocus`` (B,) adds blur (px);
    ``dye`` (B, 5), if given, is the unbound-dye background (signal units).
    """
    size = clean.shape[-1]
    x = clean * stain[:, :, None, None].astype(np.float32)
    sigma = np.sqrt(m.psf[None, :] ** 2 + defocus[:, None] ** 2)  # (B, 5)
    transfer = gaussian_transfer(size, sigma)
    if m.haze > 0:
        transfer = transfer + np.float32(m.haze) * gaussian_transfer(size, np.float32(m.haze_sigma))[None, None]
    x = sfft.irfft2(sfft.rfft2(x) * transfer.astype(np.float32), s=(size, size)).astype(np.float32)
    if dye is not None:
        x = x + dye[:, :, None, None].astype(np.float32)
    x = np.einsum("ij,bjhw->bihw", m.bleed.astype(np.float32), x)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    r2 = ((grid[None, :] - m.centre[0]) ** 2 + (grid[:, None] - m.centre[1]) ** 2) / 0.5
    fall = np.clip(1 - m.vignette[:, None, None] * r2[None], 0.05, None).astype(np.float32)
    x = np.maximum(x, 0) * fall + (m.background[:, None, None] * fall).astype(np.float32)
    x = x ** m.gamma[None, :, None, None].astype(np.float32)
    electrons = x * m.photons[None, :, None, None].astype(np.float32)
    electrons += np.sqrt(electrons) * rng.standard_normal(electrons.shape, dtype=np.float32)
    electrons += np.float32(m.read_noise) * rng.standard_normal(electrons.shape, dtype=np.float32)
    signal = soft_saturation(electrons / m.photons[None, :, None, None].astype(np.float32), m.full_well)
    adu = signal * m.gain[None, :, None, None] + m.dark[None, :, None, None]
    return adu.astype(np.float32)


def to_uint8(images: np.ndarray, percentile: float = 99.99) -> np.ndarray:
    """Per image, per channel: clip at the ``percentile`` and map [0, clip] to [0, 255] (JUMP reference).

    The clip value is the smallest of the top ``100 - percentile`` % pixel values (at least one pixel).
    """
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w)
    k = max(1, int(np.ceil(h * w * (100 - percentile) / 100)))
    clip = np.partition(flat, h * w - k, axis=-1)[..., h * w - k]
    clip = np.maximum(clip, 1e-6)[..., None]
    scaled = np.clip(flat, 0, None) / clip * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).reshape(b, c, h, w)
