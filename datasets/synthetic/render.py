"""Turn cell tables into clean fluorescence images ``(B, 5, S, S)`` float32 (before the microscope).

Every cell is an ellipse whose boundary is bent by a smooth noise field; a pixel belongs to the cell whose normalised
distance is smallest (a weighted Voronoi tessellation, so touching cells share a
boundary). Compartments per channel:

- DNA: nuclei with chromatin texture; RNA: nucleoli plus weak nuclear and cytoplasmic RNA;
- ER: perinuclear reticular cytoplasm plus granules; Mito: tubules / puncta;
- AGP: plasma membrane and cell contacts, oriented actin fibres, Golgi.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from .cells import AGP, DNA, ER, MITO, N_CH, RNA, CellTables

CHUNK = 96
"""Sites rendered at once (bounds memory: about CHUNK x cells x S^2 x 4 bytes per temporary)."""


def _pad(table: dict[str, np.ndarray], keys: tuple[str, ...], lo: int, hi: int) -> tuple[dict, np.ndarray]:
    """Rows of sites ``lo..hi-1`` as padded arrays ``(hi-lo, max rows per site, ...)`` and a validity mask."""
    site = table["site"]
    a, b = np.searchsorted(site, [lo, hi])
    site = site[a:b] - lo
    n_sites = hi - lo
    first = np.searchsorted(site, np.arange(n_sites))
    counts = np.diff(np.append(first, len(site)))
    width = max(1, int(counts.max()) if len(counts) else 1)
    rank = np.arange(len(site)) - first[site]
    valid = np.zeros((n_sites, width), dtype=bool)
    valid[site, rank] = True
    out = {}
    for k in keys:
        arr = table[k][a:b]
        pad = np.zeros((n_sites, width, *arr.shape[1:]), dtype=np.float32)
        pad[site, rank] = arr
        out[k] = pad
    return out, valid


def _freq(size: int) -> np.ndarray:
    """Squared spatial frequency grid of ``rfft2`` for an ``size x size`` image."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return (fx**2 + fy**2).astype(np.float32)


def gaussian_transfer(size: int, sigma: np.ndarray | float) -> np.ndarray:
    """Fourier transfer function of a Gaussian blur (periodic), broadcast over ``sigma``'s shape."""
    sigma = np.asarray(sigma, dtype=np.float32)
    return np.exp(-2 * np.pi**2 * sigma[..., None, None] ** 2 * _freq(size))


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    size = x.shape[-1]
    return sfft.irfft2(sfft.rfft2(x) * gaussian_transfer(size, sigma), s=(size, size)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (x.std(axis=(-2, -1), keepdims=True) + 1e-6)


def _textures(rng: np.random.Generator, n: int, size: int) -> dict[str, np.ndarray]:
    """Chromatin, reticular ER, boundary warp and four orientations of fibre texture (unit variance)."""
    noise = rng.standard_normal((n, 4, size, size), dtype=np.float32)
    spec = sfft.rfft2(noise)
    f2 = _freq(size)
    chromatin = _unit(sfft.irfft2(spec[:, 0] * np.exp(-2 * np.pi**2 * 0.8**2 * f2), s=(size, size)))
    band = np.exp(-2 * np.pi**2 * 0.7**2 * f2) - np.exp(-2 * np.pi**2 * 2.0**2 * f2)
    reticular = _unit(sfft.irfft2(spec[:, 1] * band, s=(size, size)))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    fibres = []
    for k in range(4):  # line kernels along angle k*45 deg: long along the line, thin across
        phi = k * np.pi / 4
        along = fx * np.cos(phi) + fy * np.sin(phi)
        across = -fx * np.sin(phi) + fy * np.cos(phi)
        kern = np.exp(-2 * np.pi**2 * (3.0**2 * along**2 + 0.55**2 * across**2))
        fibres.append(_unit(sfft.irfft2(spec[:, 2] * kern, s=(size, size))))
    warp = _unit(sfft.irfft2(spec[:, 3] * np.exp(-2 * np.pi**2 * 2.5**2 * f2), s=(size, size)))
    return {"chromatin": chromatin.astype(np.float32), "reticular": reticular.astype(np.float32),
            "warp": warp.astype(np.float32),
            "fibres": np.stack(fibres, axis=1).astype(np.float32)}


def _splat(n_sites: int, size: int, site: np.ndarray, x: np.ndarray, y: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Nearest-pixel splat of point amplitudes ``amp (N, K)`` into ``(n_sites, K, size, size)`` (blurred later)."""
    k_ch = amp.shape[1]
    xi, yi = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    nz_spot, nz_ch = np.nonzero(amp)
    xi, yi = xi[nz_spot], yi[nz_spot]
    ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
    flat = ((site[nz_spot] * k_ch + nz_ch) * size + yi) * size + xi
    out = np.bincount(flat[ok], weights=amp[nz_spot, nz_ch][ok], minlength=n_sites * k_ch * size * size)
    return out.reshape(n_sites, k_ch, size, size).astype(np.float32)


def _nearest(X, Y, p: dict, valid: np.ndarray, warp: np.ndarray | None, second: bool = True) -> tuple[np.ndarray, ...]:
    """Smallest and second-smallest normalised ellipse distance per pixel, and the owner index.

    ``p`` holds padded ``(B, K)`` ellipse parameters; ``warp`` (B, S, S), if given, is a smooth
    noise field that bends the boundaries of cell ``k`` with amplitude ``p["irr"][:, k]``.
    """
    n, k_max = valid.shape
    size = X.shape[-1]
    d1 = np.full((n, size, size), 1e6, dtype=np.float32)
    d2 = np.full_like(d1, 1e3)
    owner = np.zeros((n, size, size), dtype=np.int64)
    ct, st = np.cos(p["theta"]), np.sin(p["theta"])
    a, b = np.maximum(p["a"], 1e-3), np.maximum(p["b"], 1e-3)
    coef = np.stack([ct / a, st / a, -st / b, ct / b], axis=-1).astype(np.float32)[..., None, None]
    for k in range(k_max):  # squared distances: same order, no square root per cell
        dx = X - p["cx"][:, k, None, None]
        dy = Y - p["cy"][:, k, None, None]
        u = dx * coef[:, k, 0] + dy * coef[:, k, 1]
        v = dx * coef[:, k, 2] + dy * coef[:, k, 3]
        d = u * u + v * v
        if warp is not None:
            w = np.maximum(1 + p["irr"][:, k, None, None] * warp, 0.3)
            d *= w * w
        d[~valid[:, k]] = 1e6
        closer = d < d1
        if second:
            d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
        owner[closer] = k
    return np.sqrt(d1), np.sqrt(d2), owner


def render(tables: CellTables, size: int, rng: np.random.Generator) -> np.ndarray:
    """Clean images ``(n_sites, 5, size, size)`` float32 of the cells in ``tables``."""
    out = np.empty((tables.n_sites, N_CH, size, size), dtype=np.float32)
    for lo in range(0, tables.n_sites, CHUNK):
        hi = min(lo + CHUNK, tables.n_sites)
        out[lo:hi] = _render_chunk(tables, lo, hi, size, rng)
    return out


def _render_chunk(t: CellTables, lo: int, hi: int, size: int, rng: np.random.Generator) -> np.ndarray:
    n = hi - lo
    grid = np.arange(size, dtype=np.float32) + 0.5
    X, Y = grid[None, None, :], grid[None, :, None]
    bi = np.arange(n)[:, None, None]

    tex = _textures(rng, n, size)
    cp, cvalid = _pad(t.cells, ("cx", "cy", "a", "b", "theta", "irr", "inten", "membrane", "fibres"), lo, hi)
    d1, d2, owner = _nearest(X, Y, cp, cvalid, tex["warp"])
    cellmask = 1 / (1 + np.exp(np.clip((d1 - 1) / 0.07, -30, 30)))
    inten = cp["inten"][bi, owner]            # (n, S, S, 5)
    membrane_i = cp["membrane"][bi, owner]
    fibre_i = cp["fibres"][bi, owner]
    orient = np.round(cp["theta"][bi, owner] / (np.pi / 4)).astype(np.int64) % 4

    npd, nvalid = _pad(t.nuclei, ("cx", "cy", "a", "b", "theta", "dna"), lo, hi)
    dn, _, nown = _nearest(X, Y, npd, nvalid, None, second=False)
    rad = np.sqrt(npd["a"] * npd["b"])[bi, nown]
    nucmask = 1 / (1 + np.exp(np.clip((dn - 1) * rad / 0.6, -30, 30)))
    dna = nucmask * npd["dna"][bi, nown]

    spots = _splat(n, size, t.spots["site"][_rows(t.spots, lo, hi)] - lo, t.spots["x"][_rows(t.spots, lo, hi)],
                   t.spots["y"][_rows(t.spots, lo, hi)], t.spots["amp"][_rows(t.spots, lo, hi)])
    spots = _blur(spots, 0.7) * (2 * np.pi * 0.7**2)
    vr = _rows(t.vacuoles, lo, hi)
    vac = _splat(n, size, t.vacuoles["site"][vr] - lo, t.vacuoles["x"][vr], t.vacuoles["y"][vr],
                 t.vacuoles["amp"][vr][:, None])[:, 0]
    vac = np.clip(_blur(vac, 1.0) * (2 * np.pi * 1.0**2), 0, 0.9)

    cyto = cellmask * (1 - nucmask)
    hole = 1 - vac * cyto
    grad = np.exp(-1.6 * np.minimum(d1, 5))
    edge = np.exp(-(((d1 - 0.95) / 0.08) ** 2))
    contact = np.exp(-(((d2 - d1) / 0.08) ** 2)) * (d1 < 1.1)
    fib = np.take_along_axis(tex["fibres"], orient[:, None], axis=1)[:, 0]

    img = np.empty((n, N_CH, size, size), dtype=np.float32)
    img[:, DNA] = dna * np.clip(1 + 0.3 * tex["chromatin"], 0.2, None)
    img[:, RNA] = (spots[:, RNA] * nucmask + 0.25 * inten[..., RNA] * nucmask
                   + 0.3 * inten[..., RNA] * cyto * (0.4 + grad)) * hole
    img[:, ER] = (inten[..., ER] * cyto * (0.3 + 0.9 * grad) * np.clip(1 + 0.5 * tex["reticular"], 0, None)
                  + spots[:, ER] * cellmask) * hole
    img[:, MITO] = (spots[:, MITO] * cellmask + 0.06 * inten[..., MITO] * cyto) * hole
    img[:, AGP] = (0.8 * membrane_i * np.maximum(edge, contact) * cellmask
                   + 0.6 * fibre_i * np.maximum(fib, 0) * cyto
                   + 0.15 * inten[..., AGP] * cyto + spots[:, AGP] * cellmask) * hole
    return np.maximum(img, 0)


def _rows(table: dict[str, np.ndarray], lo: int, hi: int) -> slice:
    a, b = np.searchsorted(table["site"], [lo, hi])
    return slice(int(a), int(b))
