"""Where the crystals are: tiles of an image whose spectrum holds lattice spots.

A few gold particles in a large field put their lattice spots into a small part of the
image; a spectrum averaged over every tile dilutes them with the noise of all the empty
tiles. Each tile's periodogram is compared with the median periodogram of all tiles: a
tile of noise and amorphous support has no pixel far above it (its ratios are
exponentially distributed), a tile with a crystal has the crystal's spots. Masking the
image to the tiles that have spots raises a sparse crystal's signal-to-noise ratio by
about ``sqrt(1 / fraction)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from temcal.errors import InputError

__all__ = ["CrystalTiles", "find_crystal_tiles"]


@dataclass(frozen=True)
class CrystalTiles:
    """Tiles of an image that hold crystal spots (see :func:`find_crystal_tiles`).

    Attributes
    ----------
    selected : numpy.ndarray of bool
        Shape ``(rows, columns)`` of the tile grid: ``True`` where the tile's periodogram
        has a spot. Tile ``(i, j)`` covers image rows ``i * tile_size`` to
        ``(i + 1) * tile_size`` and the same columns with ``j``.
    tile_size : int
        Side of the square tiles in pixels.
    threshold : float
        The spot threshold: a tile is selected when some pixel of its periodogram exceeds
        ``threshold`` times the median periodogram of all tiles there.
    peak_ratio : numpy.ndarray
        Shape ``(rows, columns)``: each tile's largest such ratio.
    image_shape : tuple of int
        Shape of the image that was searched.
    """

    selected: np.ndarray
    tile_size: int
    threshold: float
    peak_ratio: np.ndarray
    image_shape: tuple[int, int]

    @property
    def fraction(self) -> float:
        """Fraction of the tiles that hold spots."""
        return float(np.mean(self.selected)) if self.selected.size else 0.0

    @property
    def n_selected(self) -> int:
        """Number of tiles that hold spots."""
        return int(np.count_nonzero(self.selected))

    def mask(self, *, margin_px: int | None = None) -> np.ndarray:
        """A smooth weight image, 1 on the selected tiles and 0 far from them.

        Parameters
        ----------
        margin_px : int, optional
            The selected tiles are widened by this many pixels (default a quarter tile:
            a crystal cut by a tile edge keeps its outer part) and their edges tapered
            over about as much (no sharp step leaks into the spectrum).

        Returns
        -------
        numpy.ndarray
            ``float32`` weights of the image's shape.
        """
        n = self.tile_size
        margin = n // 4 if margin_px is None else int(margin_px)
        cell = max(1, n // 8)  # the mask is built on a grid of 1/8 tile and upsampled
        k = n // cell
        fine = np.kron(self.selected, np.ones((k, k), dtype=bool))
        grow = max(0, round(margin / cell))
        if grow:
            fine = ndimage.binary_dilation(fine, structure=np.ones((3, 3), bool), iterations=grow)
        soft = ndimage.gaussian_filter(fine.astype(np.float32), sigma=max(0.5, grow / 3))
        # upsample by linear interpolation of the cell centres
        ny, nx = self.image_shape
        gy = (np.arange(ny) + 0.5) / cell - 0.5
        gx = (np.arange(nx) + 0.5) / cell - 0.5
        rows = _interp_axis(soft, gy, axis=0)
        return np.clip(_interp_axis(rows, gx, axis=1), 0.0, 1.0).astype(np.float32)


def _interp_axis(a: np.ndarray, coords: np.ndarray, *, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``coords`` along ``axis``."""
    m = a.shape[axis]
    c = np.clip(coords, 0.0, m - 1.0)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, m - 1)
    t = (c - i0).astype(np.float32)
    a0 = np.take(a, i0, axis=axis)
    a1 = np.take(a, i1, axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    t = t.reshape(shape)
    return a0 * (1.0 - t) + a1 * t


def find_crystal_tiles(
    image: np.ndarray,
    *,
    tile_size: int = 128,
    false_alarm: float = 1e-3,
    min_frequency: float = 0.05,
) -> CrystalTiles:
    """Find the tiles of an image whose periodogram holds crystal spots.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image, shape ``(ny, nx)``; the tiles cover ``ny // tile_size`` rows and
        ``nx // tile_size`` columns of them (the remainder at the far edges is not used).
    tile_size : int
        Side of the square tiles in pixels (even, at least 32).
    false_alarm : float
        Probability that a tile of Gaussian noise is selected. The ratio of a noise
        periodogram to its median is ``E / ln 2`` with ``E`` exponential, so the largest
        of ``M`` independent pixels exceeds ``ln(M / false_alarm) / ln 2`` with about
        that probability.
    min_frequency : float
        Pixels below this frequency (cycles/pixel) are ignored: the low frequencies
        carry the image's uneven illumination and thickness, not lattice spots.

    Returns
    -------
    CrystalTiles
        The selected tiles and their peak ratios.
    """
    img = np.asarray(image)
    if img.ndim == 2 and img.dtype != np.float32:
        # remove the mean in the input's precision first: a large offset over a small
        # signal (float64 data) would otherwise lose the signal's digits in float32
        img = img - float(np.mean(img, dtype=np.float64))
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"crystal tiles need a 2-D image, got shape {img.shape}")
    n = int(tile_size)
    if n < 32 or n % 2:
        raise InputError(f"tile size {tile_size} must be even and at least 32")
    rows, cols = img.shape[0] // n, img.shape[1] // n
    if rows * cols < 4:
        raise InputError(f"image {img.shape} too small for {n}-pixel crystal tiles")
    grid = img[: rows * n, : cols * n].reshape(rows, n, cols, n).swapaxes(1, 2)
    tiles = grid.reshape(rows * cols, n, n)
    w1 = np.hanning(n).astype(np.float32)
    win = np.outer(w1, w1)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    # half-plane of the real FFT without its edge column and row (kx = 0 and the Nyquist
    # lines hold each value twice, or real values with a heavier-tailed distribution)
    use = np.hypot(fy, fx) >= min_frequency
    use[:, 0] = use[:, -1] = False
    use[n // 2, :] = False
    m_indep = int(np.count_nonzero(use))
    power = np.empty((rows * cols, m_indep), dtype=np.float32)
    step = 64
    for i0 in range(0, rows * cols, step):
        b = tiles[i0 : i0 + step]
        b = (b - b.mean(axis=(1, 2), keepdims=True)) * win
        f = sfft.rfft2(b, axes=(1, 2))
        power[i0 : i0 + step] = (f.real**2 + f.imag**2)[:, use]
    k = power.shape[0] // 2
    med = np.partition(power, k, axis=0)[k]
    ratio = (power / np.maximum(med, np.finfo(np.float32).tiny)[None, :]).max(axis=1)
    threshold = math.log(m_indep / false_alarm) / math.log(2.0)
    peak = ratio.reshape(rows, cols)
    return CrystalTiles(
        selected=peak > threshold,
        tile_size=n,
        threshold=float(threshold),
        peak_ratio=peak,
        image_shape=(int(img.shape[0]), int(img.shape[1])),
    )
