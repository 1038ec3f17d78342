"""Spectrum preparation for CTF fitting: background normalisation and annulus pixels.

The power spectrum (:func:`temcal.spectra.power.calculate_power_spectrum`) of a
micrograph is divided by a smooth radial background (a polynomial in ``log r`` fitted to
the logarithm of the rotational average), which flattens the steep fall of the specimen
spectrum and the detector MTF while keeping the Thon rings. The pixels of one half plane
(the spectrum of a real image is centrosymmetric) inside a resolution annulus are then
kept as flat arrays sorted by radius, so that any band ``[k_min, k_max]`` is a
contiguous slice.

Also provided: per-sector radial profiles (means over azimuthal sectors of the half
plane), used by coarse searches for elliptical ring patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from temcal.errors import InputError
from temcal.spectra.power import PowerSpectrum

__all__ = [
    "AnnulusPixels",
    "calculate_background_normalised",
    "calculate_sector_profiles",
    "select_annulus_pixels",
]


@dataclass(frozen=True)
class AnnulusPixels:
    """Half-plane spectrum pixels inside an annulus, sorted by radius.

    Attributes
    ----------
    kx_px, ky_px : numpy.ndarray
        Frequencies in cycles per pixel, shape ``(n,)``.
    radius_px : numpy.ndarray
        ``|k|`` in spectrum pixels (``tile_size * |k|``), ascending.
    values : numpy.ndarray
        Background-normalised spectrum values.
    tile_size : int
        Side of the spectrum.
    """

    kx_px: np.ndarray
    ky_px: np.ndarray
    radius_px: np.ndarray
    values: np.ndarray
    tile_size: int

    def band(self, r_min_px: float, r_max_px: float) -> slice:
        """Slice of the pixels with ``r_min_px <= radius < r_max_px``."""
        i0 = int(np.searchsorted(self.radius_px, r_min_px, side="left"))
        i1 = int(np.searchsorted(self.radius_px, r_max_px, side="left"))
        return slice(i0, i1)


def _radial_average(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = data.shape[0]
    f = np.arange(n) - n // 2
    r = np.hypot(f[:, None], f[None, :])
    idx = np.rint(r).astype(np.int64).ravel()
    sums = np.bincount(idx, weights=data.ravel())
    counts = np.bincount(idx)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = sums / counts
    return np.arange(prof.size, dtype=float), prof


def calculate_background_normalised(
    spectrum: PowerSpectrum,
    *,
    r_min_px: float,
    r_max_px: float,
    degree: int = 6,
) -> np.ndarray:
    """Divide a centred power spectrum by a smooth radial background.

    Parameters
    ----------
    spectrum : PowerSpectrum
        Centred power spectrum.
    r_min_px, r_max_px : float
        Radii (spectrum pixels) between which the background is fitted.
    degree : int
        Degree of the polynomial in ``log r`` fitted to ``log`` of the rotational average.

    Returns
    -------
    numpy.ndarray
        The spectrum divided by the background, same shape (about 1 on average).
    """
    data = np.asarray(spectrum.data, dtype=float)
    if not np.all(np.isfinite(data)) or float(data.max()) <= 0:
        raise InputError("power spectrum is empty or not finite")
    r, prof = _radial_average(data)
    sel = (r >= max(r_min_px, 1.0)) & (r <= r_max_px) & (prof > 0)
    if int(sel.sum()) < degree + 2:
        raise InputError("too few spectrum samples in the fitting band; enlarge the band")
    x = np.log(r[sel])
    x0, x1 = float(x.min()), float(x.max())
    t = (x - x0) / max(x1 - x0, 1e-12) * 2.0 - 1.0
    coef = np.polynomial.legendre.legfit(t, np.log(prof[sel]), degree)
    n = data.shape[0]
    f = np.arange(n) - n // 2
    rr = np.hypot(f[:, None], f[None, :])
    # evaluate on a fine 1-D radius grid and interpolate (much faster than on the 2-D grid)
    r1 = np.linspace(0.0, float(rr.max()) + 1.0, 4 * n)
    xx = np.log(np.clip(r1, max(r_min_px, 1.0), max(r_max_px, 2.0)))
    tt = (xx - x0) / max(x1 - x0, 1e-12) * 2.0 - 1.0
    bg1 = np.exp(np.polynomial.legendre.legval(np.clip(tt, -1.0, 1.0), coef))
    return data / np.interp(rr, r1, bg1)


def select_annulus_pixels(
    normalised: np.ndarray, *, r_min_px: float, r_max_px: float
) -> AnnulusPixels:
    """Half-plane pixels of a centred spectrum with ``r_min_px <= |k| n < r_max_px``.

    The half plane is ``ky > 0`` plus ``ky = 0, kx > 0`` (azimuth in ``[0, 180)``).
    """
    n = normalised.shape[0]
    f = (np.arange(n) - n // 2) / n
    ky, kx = np.meshgrid(f, f, indexing="ij")
    r = np.hypot(kx, ky) * n
    half = (ky > 0) | ((ky == 0) & (kx > 0))
    sel = half & (r >= r_min_px) & (r < r_max_px)
    order = np.argsort(r[sel], kind="stable")
    return AnnulusPixels(
        kx_px=kx[sel][order],
        ky_px=ky[sel][order],
        radius_px=r[sel][order],
        values=np.asarray(normalised[sel][order], dtype=float),
        tile_size=n,
    )


def calculate_sector_profiles(
    pixels: AnnulusPixels, *, n_sectors: int, r_max_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the annulus values in 1-pixel radial bins of azimuthal sectors.

    Parameters
    ----------
    pixels : AnnulusPixels
        Half-plane pixels.
    n_sectors : int
        Number of equal sectors covering azimuths ``[0, 180)``.
    r_max_px : float
        Largest radius used.

    Returns
    -------
    radii_px : numpy.ndarray
        Bin centres (integer radii), shape ``(L,)``.
    profiles : numpy.ndarray
        Sector means, shape ``(n_sectors, L)`` (NaN where a bin is empty).
    counts : numpy.ndarray
        Pixels per bin, shape ``(n_sectors, L)``.
    centres_rad : numpy.ndarray
        Sector centre azimuths in rad, shape ``(n_sectors,)``.
    """
    s = pixels.band(0.0, r_max_px)
    r = pixels.radius_px[s]
    phi = np.arctan2(pixels.ky_px[s], pixels.kx_px[s]) % np.pi
    sec = np.minimum((phi / np.pi * n_sectors).astype(np.int64), n_sectors - 1)
    rb = np.rint(r).astype(np.int64)
    r0 = int(rb.min())
    nb = int(rb.max()) - r0 + 1
    flat = sec * nb + (rb - r0)
    sums = np.bincount(flat, weights=pixels.values[s], minlength=n_sectors * nb)
    counts = np.bincount(flat, minlength=n_sectors * nb).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = (sums / counts).reshape(n_sectors, nb)
    centres = (np.arange(n_sectors) + 0.5) * np.pi / n_sectors
    return np.arange(r0, r0 + nb, dtype=float), prof, counts.reshape(n_sectors, nb), centres
