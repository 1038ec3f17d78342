"""Image formation shared by every temcal simulator.

A specimen is given as its projected phase (rad) and, optionally, absorption on a *fine*
grid that is ``oversample`` times finer than the detector, in detector-pixel coordinates
(so anisotropic magnification is already applied to the specimen when it is rendered:
an atom at specimen position ``r`` (Å) sits at pixel ``M^{-1} r``, see
:mod:`temcal.physics.magnification`). The exit wave ``exp(i phase - absorption)`` is
propagated through the objective lens by multiplying its Fourier transform by
``exp(+i chi(g))``, where ``chi`` follows temcal's underfocus-positive convention
(:func:`temcal.physics.ctf.calculate_chi`) and ``g = M^{-T} q`` is the specimen spatial
frequency (Å⁻¹) of the fine-grid frequency ``q`` (cycles per detector pixel). With this
sign, a weak phase object with amplitude contrast ``A`` (absorption ``= phase * A /
sqrt(1 - A^2)``) gives image contrast ``-sin(chi + arcsin A)`` times the phase (the CTF
of :func:`temcal.physics.ctf.calculate_ctf`).

The intensity is integrated over detector pixels (mean over ``oversample x oversample``
blocks: the pixel's box MTF, with the aliasing of frequencies beyond Nyquist that a real
detector shows), then Poisson noise is drawn for a given dose.

The specimen is periodic (FFT); simulators should wrap objects across the edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import fft as sfft

from temcal.errors import InputError

__all__ = ["amplitude_contrast_absorption", "form_image", "specimen_frequencies_per_A"]

ChiFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def amplitude_contrast_absorption(amplitude_contrast: float) -> float:
    """Ratio absorption/phase that gives the amplitude-contrast fraction ``A``."""
    a = float(amplitude_contrast)
    if not 0.0 <= a < 1.0:
        raise InputError(f"amplitude contrast {a} must lie in [0, 1)")
    return a / math.sqrt(1.0 - a * a)


def specimen_frequencies_per_A(
    shape: tuple[int, int], pixel_matrix_A: np.ndarray, oversample: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Specimen spatial frequencies ``(gx, gy)`` in Å⁻¹ of an unshifted FFT grid.

    Parameters
    ----------
    shape : tuple of int
        Fine-grid shape ``(ny, nx)``.
    pixel_matrix_A : numpy.ndarray
        Detector pixel matrix ``M`` (Å per detector pixel, 2x2, ``(x, y)`` order).
    oversample : int
        Fine grid points per detector pixel.

    Returns
    -------
    tuple of numpy.ndarray
        ``gx, gy`` of shape ``shape`` (FFT order, zero frequency at ``[0, 0]``).
    """
    ny, nx = shape
    qy = sfft.fftfreq(ny) * oversample  # cycles per detector pixel
    qx = sfft.fftfreq(nx) * oversample
    minv_t = np.linalg.inv(np.asarray(pixel_matrix_A, dtype=float)).T
    # Broadcast sums (no meshgrid copies): same values, half the memory traffic.
    gx = (minv_t[0, 0] * qx)[None, :] + (minv_t[0, 1] * qy)[:, None]
    gy = (minv_t[1, 0] * qx)[None, :] + (minv_t[1, 1] * qy)[:, None]
    return gx, gy


def _propagate_single(
    ph: np.ndarray,
    pixel_matrix_A: np.ndarray,
    os_: int,
    chi: ChiFunction,
    absorption: np.ndarray | float | None,
    envelope: ChiFunction | None,
    workers: int,
) -> np.ndarray:
    """Single-precision version of the propagation in :func:`form_image`."""
    ph32 = ph.astype(np.float32)
    wave = np.empty(ph32.shape, dtype=np.complex64)
    np.cos(ph32, out=wave.real)
    np.sin(ph32, out=wave.imag)
    if absorption is not None:
        if np.isscalar(absorption):
            amp = np.exp(-np.float32(absorption) * ph32)  # type: ignore[arg-type]
        else:
            amp = np.exp(-np.asarray(absorption, dtype=np.float32))
        wave *= amp
        del amp
    del ph32
    spec = sfft.fft2(wave, workers=workers, overwrite_x=True)
    del wave
    gx, gy = specimen_frequencies_per_A(ph.shape, pixel_matrix_A, os_)
    # Reduce chi modulo 2 pi in float64, then take cos/sin in float32.
    c = np.remainder(chi(gx, gy), 2.0 * math.pi).astype(np.float32)
    transfer = np.empty(c.shape, dtype=np.complex64)
    np.cos(c, out=transfer.real)
    np.sin(c, out=transfer.imag)
    del c
    if envelope is not None:
        transfer *= envelope(gx, gy).astype(np.float32)
    del gx, gy
    transfer[0, 0] = transfer[0, 0] / abs(transfer[0, 0])
    spec *= transfer
    del transfer
    image_wave = sfft.ifft2(spec, workers=workers, overwrite_x=True)
    intensity = image_wave.real**2
    intensity += image_wave.imag**2
    return intensity


def form_image(
    phase_rad: np.ndarray,
    *,
    pixel_matrix_A: np.ndarray,
    oversample: int,
    chi: ChiFunction,
    absorption: np.ndarray | float | None = None,
    envelope: ChiFunction | None = None,
    dose_e_per_A2: float | None = None,
    rng: np.random.Generator | None = None,
    workers: int = 1,
    single_precision: bool = False,
) -> np.ndarray:
    """Form a detector image from a specimen's projected phase.

    Parameters
    ----------
    phase_rad : numpy.ndarray
        Projected phase on the fine grid, shape ``(ny * oversample, nx * oversample)``.
    pixel_matrix_A : numpy.ndarray
        Detector pixel matrix ``M`` (Å per detector pixel).
    oversample : int
        Fine grid points per detector pixel along each axis (>= 1).
    chi : callable
        ``chi(gx, gy)`` -> phase aberration (rad) at specimen frequencies in Å⁻¹,
        underfocus-positive convention; the wave is multiplied by ``exp(+i chi)``.
    absorption : numpy.ndarray or float, optional
        Absorption on the fine grid (same shape as ``phase_rad``), or a scalar ratio
        multiplying ``phase_rad`` (see :func:`amplitude_contrast_absorption`).
    envelope : callable, optional
        ``envelope(gx, gy)`` -> real amplitude damping of the scattered wave (partial
        coherence, B-factor), 1 at zero frequency.
    dose_e_per_A2 : float, optional
        Electron dose in e⁻/Å²; when given, Poisson counts are drawn (needs ``rng``).
        Otherwise the noise-free intensity (1 = no specimen) is returned.
    rng : numpy.random.Generator, optional
        Random generator for the shot noise.
    workers : int
        Threads for the FFTs.
    single_precision : bool
        Propagate the wave in complex64 (about twice as fast, half the memory; relative
        accuracy ~1e-6, ample for simulated test data). ``chi`` is still evaluated in
        float64.

    Returns
    -------
    numpy.ndarray
        Detector image, shape ``(ny, nx)``: counts per pixel if a dose is given, else
        relative intensity.
    """
    ph = np.asarray(phase_rad, dtype=np.float64)
    os_ = int(oversample)
    if os_ < 1 or ph.shape[0] % os_ or ph.shape[1] % os_:
        raise InputError(f"fine grid {ph.shape} is not a multiple of oversample={oversample}")
    if single_precision:
        intensity = _propagate_single(ph, pixel_matrix_A, os_, chi, absorption, envelope, workers)
    else:
        if absorption is None:
            wave = np.exp(1j * ph)
        elif np.isscalar(absorption):
            wave = np.exp((1j - float(absorption)) * ph)  # type: ignore[arg-type]
        else:
            wave = np.exp(1j * ph - np.asarray(absorption, dtype=np.float64))
        spec = sfft.fft2(wave, workers=workers)
        gx, gy = specimen_frequencies_per_A(ph.shape, pixel_matrix_A, os_)
        transfer = np.exp(1j * chi(gx, gy))
        if envelope is not None:
            transfer = transfer * envelope(gx, gy)
        transfer[0, 0] = spec.dtype.type(1.0) * (transfer[0, 0] / abs(transfer[0, 0]))
        spec *= transfer
        image_wave = sfft.ifft2(spec, workers=workers, overwrite_x=True)
        intensity = image_wave.real**2 + image_wave.imag**2
    ny, nx = ph.shape[0] // os_, ph.shape[1] // os_
    detector = intensity.reshape(ny, os_, nx, os_).mean(axis=(1, 3), dtype=np.float64)
    if dose_e_per_A2 is None:
        return detector
    if rng is None:
        raise InputError("a dose needs a random generator (rng) for the shot noise")
    if not dose_e_per_A2 > 0:
        raise InputError(f"dose {dose_e_per_A2} e/Å² must be positive")
    area_A2 = abs(float(np.linalg.det(np.asarray(pixel_matrix_A, dtype=float))))
    return rng.poisson(detector * dose_e_per_A2 * area_A2).astype(np.float64)
