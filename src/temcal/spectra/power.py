"""Power-spectrum estimation shared by every calibration in temcal.

Conventions
-----------
Spectra are stored centred (zero frequency at index ``(n // 2, n // 2)``, as
``numpy.fft.fftshift`` leaves it) and indexed ``[ky, kx]``. Frequencies are in cycles
per pixel, in ``[-0.5, 0.5)``: ``kx`` along +x (column index increasing), ``ky`` along
+y (row index increasing). Multiply by ``1 / pixel_size_A`` for Å⁻¹.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from temcal.errors import InputError

__all__ = ["PowerSpectrum", "calculate_power_spectrum", "frequency_grid"]


@dataclass(frozen=True)
class PowerSpectrum:
    """A centred 2-D power spectrum.

    Attributes
    ----------
    data : numpy.ndarray
        Power, shape ``(n, n)``, centred (zero frequency at ``[n // 2, n // 2]``).
    tile_size : int
        Side ``n`` of the square tiles (the spectrum's sampling is ``1 / n`` cycles/pixel).
    n_tiles : int
        Number of tiles averaged.
    """

    data: np.ndarray
    tile_size: int
    n_tiles: int

    def frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ky, kx)`` grids in cycles/pixel, each of shape ``(n, n)``."""
        return frequency_grid(self.tile_size)


def frequency_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred frequency grids ``(ky, kx)`` in cycles/pixel for an ``n x n`` spectrum."""
    f = (np.arange(n) - n // 2) / n
    ky, kx = np.meshgrid(f, f, indexing="ij")
    return ky, kx


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def calculate_power_spectrum(
    image: np.ndarray,
    *,
    tile_size: int | None = None,
    overlap: float = 0.5,
    window: str = "hann",
    workers: int = 1,
    dtype: type[np.floating] = np.float64,
) -> PowerSpectrum:
    """Tile-averaged periodogram (Welch's method) of an image.

    Each square tile has its mean removed, is multiplied by a separable window and
    Fourier transformed; the squared moduli are averaged over tiles. The window
    suppresses the leakage of the tile edges into a cross through the spectrum
    and, averaged over tiles, the speckle of a single periodogram.

    Parameters
    ----------
    image : numpy.ndarray
        Real image, shape ``(ny, nx)``.
    tile_size : int, optional
        Side of the square tiles in pixels (even). Default: the largest power of two
        not exceeding the shorter side (a single-tile, full-resolution periodogram when
        the image is square and a power of two).
    overlap : float
        Fractional overlap of neighbouring tiles, in ``[0, 0.9]``.
    window : str
        A :func:`scipy.signal.get_window` name (``"hann"``, ``"boxcar"``, ...).
    workers : int
        Threads for :mod:`scipy.fft`.
    dtype : numpy floating type
        Precision of the tiles and their FFTs (default float64). ``numpy.float32`` is two
        to three times faster; its rounding (relative 1e-7) is far below the noise of a
        periodogram. The average over tiles is always accumulated in float64.

    Returns
    -------
    PowerSpectrum
        Centred spectrum of shape ``(tile_size, tile_size)``.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise InputError(f"power spectrum needs a 2-D image, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float64)
    ny, nx = img.shape
    if tile_size is None:
        tile_size = 1 << int(np.floor(np.log2(min(ny, nx))))
    n = int(tile_size)
    if n < 16 or n % 2 or n > min(ny, nx):
        raise InputError(
            f"tile size {tile_size} must be even, at least 16 and at most the image's shorter "
            f"side ({min(ny, nx)})"
        )
    if not 0.0 <= overlap <= 0.9:
        raise InputError(f"tile overlap {overlap} must lie in [0, 0.9]")
    from scipy.signal import get_window  # scipy.signal is slow to import: only when used

    step = max(1, round(n * (1.0 - overlap)))
    w1 = get_window(window, n, fftbins=True).astype(np.float64)
    w2 = np.outer(w1, w1)
    w2 /= np.sqrt(np.mean(w2**2))
    w2 = w2.astype(dtype)
    acc = np.zeros((n, n // 2 + 1))
    count = 0
    xs = _tile_starts(nx, n, step)
    # a row of tiles at a time: one batched FFT, the tiles converted to ``dtype`` a row at
    # a time (no full-size float64 copy of a large image)
    batch = np.empty((len(xs), n, n), dtype=dtype)
    for y0 in _tile_starts(ny, n, step):
        for i, x0 in enumerate(xs):
            batch[i] = img[y0 : y0 + n, x0 : x0 + n]
        batch -= batch.mean(axis=(1, 2), keepdims=True)
        batch *= w2
        f = sfft.rfft2(batch, axes=(1, 2), workers=workers)
        f = f.view(np.float32 if f.dtype == np.complex64 else np.float64)
        f *= f  # (re², im²) pairs; summed over tiles, then the pairs added
        acc += f.sum(axis=0, dtype=np.float64).reshape(n, n // 2 + 1, 2).sum(axis=2)
        count += len(xs)
    acc /= count * n * n
    full = _half_to_full(acc, n)
    return PowerSpectrum(data=np.fft.fftshift(full), tile_size=n, n_tiles=count)


def _half_to_full(half: np.ndarray, n: int) -> np.ndarray:
    """Expand an rfft2 power array ``(n, n//2+1)`` to the full ``(n, n)`` Hermitian array."""
    full = np.empty((n, n))
    m = n // 2 + 1
    full[:, :m] = half
    # P(ky, kx) = P(-ky, -kx) for a real image
    rows = (-np.arange(n)) % n
    cols = (-np.arange(m, n)) % n
    full[:, m:] = half[rows][:, cols]
    return full
