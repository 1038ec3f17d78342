"""Radial, elliptical and alias-unfolded profiles of centred power spectra.

Conventions (as :mod:`temcal.spectra.power`): a centred ``n x n`` spectrum is indexed
``[ky, kx]``; the pixel ``[i, j]`` is the frequency of its *centre*,
``((j - n // 2) / n, (i - n // 2) / n)`` cycles/pixel. Every profile here reports, for
each bin, the mean coordinate of the samples that fell into it (never the bin's lower
edge), so that binning adds no bias to a peak position.

Rings beyond Nyquist: a sampled image's spectrum is the sum of the continuous
spectrum shifted by every integer lattice vector ``n`` (cycles/pixel), so a ring of
radius ``f > 0.5`` appears as arcs centred on ``(±1, 0), (0, ±1), (±1, ±1), ...``.
*Unfolding* assigns each measured pixel ``q`` to the candidate frequencies ``q + n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "UnfoldedSamples",
    "calculate_radial_profile",
    "centred_frequencies",
    "polar_bin",
    "unfold_spectrum",
]


def centred_frequencies(n: int) -> np.ndarray:
    """Pixel-centre frequencies (cycles/pixel) of one axis of a centred ``n``-spectrum."""
    return (np.arange(n) - n // 2) / n


@dataclass(frozen=True)
class UnfoldedSamples:
    """Spectrum samples placed at their (possibly aliased) true frequencies.

    Attributes
    ----------
    qx, qy : numpy.ndarray
        Frequencies ``q + n`` in cycles/pixel, shape ``(m,)``.
    values : numpy.ndarray
        Spectrum value of each sample, shape ``(m,)``.
    alias : numpy.ndarray
        Integer shifts ``n`` used, shape ``(m, 2)`` in ``(x, y)`` order.
    pixel : numpy.ndarray
        Flat index of the spectrum pixel each sample came from, shape ``(m,)``.
    """

    qx: np.ndarray
    qy: np.ndarray
    values: np.ndarray
    alias: np.ndarray
    pixel: np.ndarray


def unfold_spectrum(
    data: np.ndarray,
    *,
    max_frequency: float,
    min_frequency: float = 0.0,
    keep: np.ndarray | None = None,
    min_alias_base_frequency: float = 0.0,
) -> UnfoldedSamples:
    """Place every pixel of a centred spectrum at each alias ``q + n`` within a radius band.

    Parameters
    ----------
    data : numpy.ndarray
        Centred spectrum, shape ``(n, n)``.
    max_frequency, min_frequency : float
        Keep the unfolded samples with ``min_frequency <= |q + n| < max_frequency``
        (cycles/pixel).
    keep : numpy.ndarray of bool, optional
        Pixels to use, shape ``(n, n)``.
    min_alias_base_frequency : float
        Pixels closer than this to zero frequency (cycles/pixel) are not unfolded to
        aliases ``n != 0`` (their strong low-frequency power would otherwise appear as
        sharp features at ``|n|`` = 1, sqrt 2, ...).

    Returns
    -------
    UnfoldedSamples
        One sample per (pixel, alias) pair within the band.
    """
    n = data.shape[0]
    f = centred_frequencies(n)
    order = int(np.ceil(max_frequency + 0.5))
    sel = None if keep is None else np.asarray(keep, dtype=bool)
    flat_index = np.arange(n * n).reshape(n, n)
    base_far = None
    if min_alias_base_frequency > 0:
        base_far = f[:, None] ** 2 + f[None, :] ** 2 >= min_alias_base_frequency**2
    lo2, hi2 = min_frequency**2, max_frequency**2
    xs, ys, vs, al, px = [], [], [], [], []
    for ny in range(-order, order + 1):
        fy2 = (f + ny) ** 2
        rows = np.flatnonzero(fy2 < hi2)
        if rows.size == 0:
            continue
        for nx in range(-order, order + 1):
            if np.hypot(abs(nx) - 0.5 if nx else 0.0, abs(ny) - 0.5 if ny else 0.0) > max_frequency:
                continue
            fx2 = (f + nx) ** 2
            cols = np.flatnonzero(fx2 < hi2)
            if cols.size == 0:
                continue
            # only the block of rows and columns that can reach the band
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            r2 = fy2[r0:r1, None] + fx2[None, c0:c1]
            m = (r2 >= lo2) & (r2 < hi2)
            if sel is not None:
                m &= sel[r0:r1, c0:c1]
            if (nx or ny) and base_far is not None:
                m &= base_far[r0:r1, c0:c1]
            if not m.any():
                continue
            iy, ix = np.nonzero(m)
            iy += r0
            ix += c0
            xs.append(f[ix] + nx)
            ys.append(f[iy] + ny)
            vs.append(data[iy, ix])
            al.append(np.broadcast_to(np.array([nx, ny]), (iy.size, 2)))
            px.append(flat_index[iy, ix])
    if not xs:
        empty = np.zeros(0)
        return UnfoldedSamples(
            empty, empty, empty, np.zeros((0, 2), dtype=int), np.zeros(0, dtype=np.int64)
        )
    return UnfoldedSamples(
        qx=np.concatenate(xs),
        qy=np.concatenate(ys),
        values=np.concatenate(vs),
        alias=np.concatenate(al).astype(int),
        pixel=np.concatenate(px),
    )


def calculate_radial_profile(
    radius: np.ndarray,
    values: np.ndarray,
    *,
    bin_width: float,
    r_min: float = 0.0,
    r_max: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin samples by radius; each bin reports the mean radius of its samples.

    Parameters
    ----------
    radius, values : numpy.ndarray
        Radii (any unit, e.g. cycles/pixel or elliptical |g| in Å⁻¹) and values, same shape.
    bin_width : float
        Bin width in the unit of ``radius``.
    r_min, r_max : float
        Range to bin.

    Returns
    -------
    tuple of numpy.ndarray
        ``(mean_radius, mean_value, count)`` of the non-empty bins.
    """
    r = np.ravel(radius)
    v = np.ravel(values)
    top = float(r.max()) if r_max is None else float(r_max)
    m = (r >= r_min) & (r < top)
    idx = ((r[m] - r_min) / bin_width).astype(np.int64)
    nb = int(np.ceil((top - r_min) / bin_width)) + 1
    cnt = np.bincount(idx, minlength=nb).astype(float)
    sr = np.bincount(idx, weights=r[m], minlength=nb)
    sv = np.bincount(idx, weights=v[m], minlength=nb)
    ok = cnt > 0
    return sr[ok] / cnt[ok], sv[ok] / cnt[ok], cnt[ok]


def polar_bin(
    qx: np.ndarray,
    qy: np.ndarray,
    values: np.ndarray,
    *,
    radius: np.ndarray,
    bin_width: float,
    n_sectors: int,
    group: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin samples on a (radius, azimuth) grid, keeping each bin's mean polar position.

    The mean of the sample *vectors* of a bin lies inside the arc they cover (by a
    relative ``theta^2 / 24`` for a sector of ``theta`` rad, 0.13 % for 10°), so each
    bin is placed at the mean modulus ``|q|`` of its samples along their mean direction.

    Parameters
    ----------
    qx, qy : numpy.ndarray
        Sample frequencies (cycles/pixel), shape ``(m,)``.
    values : numpy.ndarray
        Sample values, shape ``(m,)``.
    radius : numpy.ndarray
        The radial coordinate to bin on (e.g. an elliptical radius), shape ``(m,)``.
    bin_width : float
        Radial bin width, unit of ``radius``.
    n_sectors : int
        Number of azimuthal sectors over 360°.
    group : numpy.ndarray of int, optional
        An extra label (e.g. the alias) that separates bins, shape ``(m,)``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(qx_bin, qy_bin, value_mean, count)`` of the non-empty bins.
    """
    phi = np.arctan2(qy, qx)
    mod = np.hypot(qx, qy)
    sec = np.minimum(((phi + np.pi) / (2 * np.pi) * n_sectors).astype(np.int64), n_sectors - 1)
    rb = np.floor((radius - radius.min()) / bin_width).astype(np.int64)
    key = rb * n_sectors + sec
    if group is not None:
        key = key * (int(group.max()) + 1) + group
    _, inv = np.unique(key, return_inverse=True)
    cnt = np.bincount(inv).astype(float)
    ux = np.bincount(inv, weights=qx / np.maximum(mod, 1e-300))
    uy = np.bincount(inv, weights=qy / np.maximum(mod, 1e-300))
    un = np.maximum(np.hypot(ux, uy), 1e-300)
    mr = np.bincount(inv, weights=mod) / cnt
    mv = np.bincount(inv, weights=values) / cnt
    return mr * ux / un, mr * uy / un, mv, cnt
