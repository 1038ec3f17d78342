"""Contrast transfer function (weak phase object with amplitude contrast).

Conventions (CTFFIND / RELION, ``../shared/physics.md``): defocus positive for
underfocus, in Å; ``defocus_u_A >= defocus_v_A``; ``astig_angle_deg`` is the direction
of ``defocus_u_A`` from +x toward +y. Spatial frequencies in Å⁻¹.

``chi(k) = pi lambda dz(phi) k^2 - pi/2 Cs lambda^3 k^4 + phase_shift``
``CTF(k) = -sin(chi(k) + arcsin(A))``
``dz(phi) = (dz_u + dz_v)/2 + (dz_u - dz_v)/2 cos 2(phi - phi_u)``

Envelopes (amplitude damping of the scattered wave, 1 at k = 0):

* temporal (focal spread ``Delta``, Å, 1-sigma): ``exp(-(pi lambda Delta)^2 k^4 / 2)``;
* spatial (Gaussian illumination semi-angle ``alpha``, rad, 1/e half-width):
  ``exp(-(alpha / (2 lambda))^2 |grad_k chi|^2)``, i.e.
  ``exp(-(pi alpha / lambda)^2 (dz lambda k - Cs lambda^3 k^3)^2)`` without astigmatism;
* B-factor: ``exp(-B k^2 / 4)`` (the power falls as ``exp(-B k^2 / 2)``).

Anisotropic magnification: an optional 2x2 ``frequency_matrix`` ``F`` maps the
frequencies given to the functions to the specimen frequencies ``g = F @ (kx, ky)`` at
which chi is evaluated. For nominal frequencies ``k`` (Å⁻¹, computed with a nominal
isotropic pixel size ``p``) and a true pixel matrix ``M`` (Å/pixel, see
:mod:`temcal.physics.magnification`), ``F = p (M^{-1})^T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from temcal.physics.wavelength import calculate_wavelength_A

__all__ = [
    "CTFParameters",
    "apply_frequency_matrix",
    "calculate_chi",
    "calculate_ctf",
    "calculate_envelope",
    "calculate_spatial_envelope",
    "calculate_temporal_envelope",
]


def apply_frequency_matrix(
    kx_per_A: np.ndarray, ky_per_A: np.ndarray, frequency_matrix: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Map frequencies by a 2x2 matrix ``F``: ``(gx, gy) = F @ (kx, ky)`` (Å⁻¹).

    ``frequency_matrix=None`` returns the inputs as float arrays. For an anisotropic
    magnification with true pixel matrix ``M`` (Å/pixel) and frequencies computed with a
    nominal pixel size ``p``, use ``F = p * inv(M).T``.
    """
    kx = np.asarray(kx_per_A, dtype=float)
    ky = np.asarray(ky_per_A, dtype=float)
    if frequency_matrix is None:
        return kx, ky
    f = np.asarray(frequency_matrix, dtype=float)
    if f.shape != (2, 2):
        raise ValueError(f"frequency_matrix must be 2x2, got shape {f.shape}")
    return f[0, 0] * kx + f[0, 1] * ky, f[1, 0] * kx + f[1, 1] * ky


def calculate_chi(
    kx_per_A: np.ndarray,
    ky_per_A: np.ndarray,
    *,
    defocus_u_A: float,
    defocus_v_A: float | None = None,
    astig_angle_deg: float = 0.0,
    cs_mm: float,
    voltage_kV: float,
    phase_shift_deg: float = 0.0,
    frequency_matrix: np.ndarray | None = None,
) -> np.ndarray:
    """Phase-aberration function chi (rad) at spatial frequencies ``(kx, ky)`` in Å⁻¹.

    Parameters
    ----------
    kx_per_A, ky_per_A : numpy.ndarray
        Spatial frequency components in Å⁻¹ (any broadcastable shapes).
    defocus_u_A, defocus_v_A : float
        Principal defoci in Å, underfocus positive. ``defocus_v_A`` defaults to
        ``defocus_u_A`` (no astigmatism).
    astig_angle_deg : float
        Direction of ``defocus_u_A`` from +x toward +y, degrees.
    cs_mm : float
        Spherical aberration in mm.
    voltage_kV : float
        Accelerating voltage in kV.
    phase_shift_deg : float
        Additional phase shift (phase plate), degrees.
    frequency_matrix : numpy.ndarray, optional
        2x2 matrix applied to the frequencies first (anisotropic magnification, see
        :func:`apply_frequency_matrix`).
    """
    lam = calculate_wavelength_A(voltage_kV)
    dv = defocus_u_A if defocus_v_A is None else defocus_v_A
    kx, ky = apply_frequency_matrix(kx_per_A, ky_per_A, frequency_matrix)
    k2 = kx * kx + ky * ky
    dz: np.ndarray | float
    if dv == defocus_u_A:
        dz = float(defocus_u_A)  # no astigmatism: skip the azimuth (same values, faster)
    else:
        phi = np.arctan2(ky, kx)
        dz = 0.5 * (defocus_u_A + dv) + 0.5 * (defocus_u_A - dv) * np.cos(
            2.0 * (phi - math.radians(astig_angle_deg))
        )
    cs_A = cs_mm * 1e7
    return (
        math.pi * lam * dz * k2
        - 0.5 * math.pi * cs_A * lam**3 * k2 * k2
        + math.radians(phase_shift_deg)
    )


def calculate_ctf(
    kx_per_A: np.ndarray,
    ky_per_A: np.ndarray,
    *,
    defocus_u_A: float,
    defocus_v_A: float | None = None,
    astig_angle_deg: float = 0.0,
    cs_mm: float,
    voltage_kV: float,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float = 0.0,
    b_factor_A2: float = 0.0,
    focal_spread_A: float = 0.0,
    illumination_semiangle_mrad: float = 0.0,
    frequency_matrix: np.ndarray | None = None,
) -> np.ndarray:
    """CTF ``-sin(chi + arcsin(A)) * E(k)`` at ``(kx, ky)`` in Å⁻¹.

    ``b_factor_A2`` is an amplitude envelope ``exp(-B k^2 / 4)`` (B in Å²; the power
    spectrum then falls as ``exp(-B k^2 / 2)``); ``focal_spread_A`` and
    ``illumination_semiangle_mrad`` add the temporal and spatial coherence envelopes
    (:func:`calculate_envelope`). Other parameters as :func:`calculate_chi`;
    ``amplitude_contrast`` is the fraction A in [0, 1).
    """
    if focal_spread_A or illumination_semiangle_mrad:
        env = calculate_envelope(
            kx_per_A,
            ky_per_A,
            defocus_u_A=defocus_u_A,
            defocus_v_A=defocus_v_A,
            astig_angle_deg=astig_angle_deg,
            cs_mm=cs_mm,
            voltage_kV=voltage_kV,
            focal_spread_A=focal_spread_A,
            illumination_semiangle_mrad=illumination_semiangle_mrad,
            frequency_matrix=frequency_matrix,
        )
    else:
        env = None
    chi = calculate_chi(
        kx_per_A,
        ky_per_A,
        defocus_u_A=defocus_u_A,
        defocus_v_A=defocus_v_A,
        astig_angle_deg=astig_angle_deg,
        cs_mm=cs_mm,
        voltage_kV=voltage_kV,
        phase_shift_deg=phase_shift_deg,
        frequency_matrix=frequency_matrix,
    )
    ctf = -np.sin(chi + math.asin(amplitude_contrast))
    if b_factor_A2:
        gx, gy = apply_frequency_matrix(kx_per_A, ky_per_A, frequency_matrix)
        ctf = ctf * np.exp(-0.25 * b_factor_A2 * (gx * gx + gy * gy))
    if env is not None:
        ctf = ctf * env
    return ctf


def calculate_temporal_envelope(
    k_per_A: np.ndarray, *, focal_spread_A: float, voltage_kV: float
) -> np.ndarray:
    """Temporal-coherence envelope ``exp(-(pi lambda Delta)^2 k^4 / 2)``.

    Parameters
    ----------
    k_per_A : numpy.ndarray
        Spatial frequency magnitude in Å⁻¹.
    focal_spread_A : float
        Focal spread ``Delta`` (1-sigma of the Gaussian defocus distribution) in Å.
    voltage_kV : float
        Accelerating voltage in kV.
    """
    lam = calculate_wavelength_A(voltage_kV)
    k = np.asarray(k_per_A, dtype=float)
    return np.exp(-0.5 * (math.pi * lam * focal_spread_A) ** 2 * k**4)


def calculate_spatial_envelope(
    kx_per_A: np.ndarray,
    ky_per_A: np.ndarray,
    *,
    defocus_u_A: float,
    defocus_v_A: float | None = None,
    astig_angle_deg: float = 0.0,
    cs_mm: float,
    voltage_kV: float,
    illumination_semiangle_mrad: float,
    frequency_matrix: np.ndarray | None = None,
) -> np.ndarray:
    """Spatial-coherence envelope ``exp(-(alpha / (2 lambda))^2 |grad_k chi|^2)``.

    ``alpha`` is the illumination semi-angle (mrad, 1/e half-width of a Gaussian source);
    the gradient of chi is taken analytically, with astigmatism. Without astigmatism this
    is ``exp(-(pi alpha / lambda)^2 (dz lambda k - Cs lambda^3 k^3)^2)``.
    """
    lam = calculate_wavelength_A(voltage_kV)
    gx, gy = apply_frequency_matrix(kx_per_A, ky_per_A, frequency_matrix)
    dv = defocus_u_A if defocus_v_A is None else defocus_v_A
    mean = 0.5 * (defocus_u_A + dv)
    half = 0.5 * (defocus_u_A - dv)
    t = 2.0 * math.radians(astig_angle_deg)
    a1, a2 = half * math.cos(t), half * math.sin(t)
    # chi = pi lam (mean k^2 + a1 (x^2 - y^2) + a2 2xy) - pi/2 Cs lam^3 k^4
    cs_A = cs_mm * 1e7
    k2 = gx * gx + gy * gy
    dchi_dx = (
        math.pi * lam * (2 * mean * gx + 2 * a1 * gx + 2 * a2 * gy)
        - 2 * math.pi * cs_A * (lam**3) * k2 * gx
    )
    dchi_dy = (
        math.pi * lam * (2 * mean * gy - 2 * a1 * gy + 2 * a2 * gx)
        - 2 * math.pi * cs_A * (lam**3) * k2 * gy
    )
    alpha = illumination_semiangle_mrad * 1e-3
    return np.exp(-((alpha / (2 * lam)) ** 2) * (dchi_dx**2 + dchi_dy**2))


def calculate_envelope(
    kx_per_A: np.ndarray,
    ky_per_A: np.ndarray,
    *,
    defocus_u_A: float,
    defocus_v_A: float | None = None,
    astig_angle_deg: float = 0.0,
    cs_mm: float,
    voltage_kV: float,
    focal_spread_A: float = 0.0,
    illumination_semiangle_mrad: float = 0.0,
    b_factor_A2: float = 0.0,
    frequency_matrix: np.ndarray | None = None,
) -> np.ndarray:
    """Product of the temporal, spatial and B-factor amplitude envelopes (1 at k = 0)."""
    gx, gy = apply_frequency_matrix(kx_per_A, ky_per_A, frequency_matrix)
    k2 = gx * gx + gy * gy
    env = np.ones_like(k2)
    if focal_spread_A:
        env = env * calculate_temporal_envelope(
            np.sqrt(k2), focal_spread_A=focal_spread_A, voltage_kV=voltage_kV
        )
    if illumination_semiangle_mrad:
        env = env * calculate_spatial_envelope(
            gx,
            gy,
            defocus_u_A=defocus_u_A,
            defocus_v_A=defocus_v_A,
            astig_angle_deg=astig_angle_deg,
            cs_mm=cs_mm,
            voltage_kV=voltage_kV,
            illumination_semiangle_mrad=illumination_semiangle_mrad,
        )
    if b_factor_A2:
        env = env * np.exp(-0.25 * b_factor_A2 * k2)
    return env


@dataclass(frozen=True)
class CTFParameters:
    """A frozen bundle of CTF parameters (units in the names; conventions of the module).

    Attributes
    ----------
    defocus_u_A, defocus_v_A : float
        Principal defoci in Å (underfocus positive).
    astig_angle_deg : float
        Direction of ``defocus_u_A`` from +x toward +y, degrees.
    cs_mm : float
        Spherical aberration in mm.
    voltage_kV : float
        Accelerating voltage in kV.
    amplitude_contrast : float
        Amplitude-contrast fraction in [0, 1).
    phase_shift_deg : float
        Additional phase shift in degrees.
    b_factor_A2, focal_spread_A, illumination_semiangle_mrad : float
        Envelope parameters (see :func:`calculate_envelope`).
    """

    defocus_u_A: float
    defocus_v_A: float
    astig_angle_deg: float
    cs_mm: float
    voltage_kV: float
    amplitude_contrast: float = 0.07
    phase_shift_deg: float = 0.0
    b_factor_A2: float = 0.0
    focal_spread_A: float = 0.0
    illumination_semiangle_mrad: float = 0.0

    def chi(
        self, kx_per_A: np.ndarray, ky_per_A: np.ndarray, frequency_matrix: np.ndarray | None = None
    ) -> np.ndarray:
        """Phase aberration chi (rad) at ``(kx, ky)`` in Å⁻¹."""
        return calculate_chi(
            kx_per_A,
            ky_per_A,
            defocus_u_A=self.defocus_u_A,
            defocus_v_A=self.defocus_v_A,
            astig_angle_deg=self.astig_angle_deg,
            cs_mm=self.cs_mm,
            voltage_kV=self.voltage_kV,
            phase_shift_deg=self.phase_shift_deg,
            frequency_matrix=frequency_matrix,
        )

    def envelope(
        self, kx_per_A: np.ndarray, ky_per_A: np.ndarray, frequency_matrix: np.ndarray | None = None
    ) -> np.ndarray:
        """Amplitude envelope at ``(kx, ky)`` in Å⁻¹."""
        return calculate_envelope(
            kx_per_A,
            ky_per_A,
            defocus_u_A=self.defocus_u_A,
            defocus_v_A=self.defocus_v_A,
            astig_angle_deg=self.astig_angle_deg,
            cs_mm=self.cs_mm,
            voltage_kV=self.voltage_kV,
            focal_spread_A=self.focal_spread_A,
            illumination_semiangle_mrad=self.illumination_semiangle_mrad,
            b_factor_A2=self.b_factor_A2,
            frequency_matrix=frequency_matrix,
        )

    def ctf(
        self, kx_per_A: np.ndarray, ky_per_A: np.ndarray, frequency_matrix: np.ndarray | None = None
    ) -> np.ndarray:
        """CTF including envelopes at ``(kx, ky)`` in Å⁻¹."""
        chi = self.chi(kx_per_A, ky_per_A, frequency_matrix)
        return -np.sin(chi + math.asin(self.amplitude_contrast)) * self.envelope(
            kx_per_A, ky_per_A, frequency_matrix
        )
