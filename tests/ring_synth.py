"""A fast spectral model of gold-ring images for tests (not a physical simulator).

The image is a Gaussian random field whose expected power spectrum is known exactly:
rings at specimen frequencies |g| = 1/d_hkl (Gaussian radial profile with the Debye
factor R/s), a smooth amorphous background, an optional CTF sin^2 chi modulation, the
detector box MTF and aliasing (first alias order), plus white noise. The pixel matrix
convention is temcal's: peaks at pixel frequencies q with |M^{-1} q| = 1/d.
"""

from __future__ import annotations

import math

import numpy as np

from temcal.physics.gold import (
    GOLD_REFLECTIONS,
    LATTICE_CONSTANT_293K_A,
    d_spacing_A,
    reflection_multiplicity,
)
from temcal.physics.magnification import pixel_matrix_A
from temcal.physics.scattering import electron_scattering_factor_A


def ring_image(
    n: int,
    *,
    pixel_size_A: float,
    anisotropy_percent: float = 0.0,
    major_angle_deg: float = 0.0,
    sigma_per_A: float = 0.002,
    defocus_A: float | None = None,
    ring_amplitude: float = 20.0,
    reflections: tuple[tuple[int, int, int], ...] = GOLD_REFLECTIONS[:4],
    envelope_b_A2: float | None = None,
    relrod_thickness_A: float | None = None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Gold-ring image; ``envelope_b_A2`` switches to kinematic ring intensities.

    With ``envelope_b_A2``, ring ``j`` has the intensity of a 3-D gold powder cut by the
    image plane, ``m_j f_e(s)^2 exp(-B s^2 / 2) / (R_j s)`` times a normalised Gaussian
    profile (multiplicity ``m_j``, gold scattering factor ``f_e``), instead of equal
    amplitudes under the smooth ``exp(-s - 2 s^2)``.

    With ``relrod_thickness_A`` (crystals ``t`` thick) each ring is the sum over random
    orientations of reflections tilted out of the image plane by ``q_z``, weighted by the
    slab's ``sinc^2(t q_z)`` and centred at ``sqrt(R^2 - q_z^2)``: the profile gains a
    tail toward smaller radii (built here by direct summation on a radial grid).
    """

    def profile(s: np.ndarray, r: float) -> np.ndarray:
        if relrod_thickness_A is None:
            return np.exp(-0.5 * ((s - r) / sigma_per_A) ** 2)
        t = float(relrod_thickness_A)
        h = sigma_per_A / 50.0
        grid = np.arange(0.5 * r - 10 * sigma_per_A, r + 10 * sigma_per_A, h)
        qz = np.linspace(0.0, min(r, 12.0 / t), 20001)
        centres = np.sqrt(r * r - qz * qz)
        hist, _ = np.histogram(
            centres,
            bins=np.append(grid - 0.5 * h, grid[-1] + 0.5 * h),
            weights=np.sinc(t * qz) ** 2,
        )
        u = np.arange(-8.0 * sigma_per_A, 8.0 * sigma_per_A + h, h)
        acc = np.convolve(hist, np.exp(-0.5 * (u / sigma_per_A) ** 2), mode="same")
        acc /= hist.sum()
        return np.interp(s, grid, acc, left=0.0, right=0.0)

    M = pixel_matrix_A(pixel_size_A, anisotropy_percent, major_angle_deg)
    W = np.linalg.inv(M)
    f = np.fft.fftfreq(n)
    qy, qx = np.meshgrid(f, f, indexing="ij")
    S = np.zeros((n, n))
    lam, cs = 0.019687, 2.7e7
    for ay in (-1, 0, 1):
        for ax in (-1, 0, 1):
            X, Y = qx + ax, qy + ay
            s = np.hypot(W[0, 0] * X + W[0, 1] * Y, W[1, 0] * X + W[1, 1] * Y) + 1e-9
            mod = np.exp(-s - 2 * s * s) * np.sinc(X) ** 2 * np.sinc(Y) ** 2
            if defocus_A is not None:
                chi = math.pi * lam * defocus_A * s * s - 0.5 * math.pi * cs * lam**3 * s**4
                mod = mod * np.sin(chi + 0.07) ** 2 * 2.0
            amorph = 1.0 / (1.0 + (s / 0.1) ** 2)
            rings = np.zeros_like(s)
            for hkl in reflections:
                r = 1.0 / d_spacing_A(hkl, LATTICE_CONSTANT_293K_A)
                prof = profile(s, r)
                if envelope_b_A2 is None:
                    rings += ring_amplitude * prof * (r / s)
                else:
                    rings += prof * reflection_multiplicity(hkl) / (r * s * sigma_per_A)
            if envelope_b_A2 is not None:
                r111 = 1.0 / d_spacing_A((1, 1, 1), LATTICE_CONSTANT_293K_A)
                kin = (electron_scattering_factor_A(s) / electron_scattering_factor_A(r111)) ** 2
                kin *= np.exp(-0.5 * envelope_b_A2 * (s * s - r111 * r111))
                norm = ring_amplitude * r111 * r111 * sigma_per_A / 8.0  # 111 ring peak
                rings *= kin * norm * np.sinc(X) ** 2 * np.sinc(Y) ** 2
                S += mod * amorph + rings
                continue
            S += mod * (amorph + rings)
    S += 0.05
    F = np.sqrt(S) * (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    return np.fft.ifft2(F).real * n + 100.0
