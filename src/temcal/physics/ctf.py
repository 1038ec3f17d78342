"""Contrast transfer function (weak phase object with amplitude contrast).

Conventions (CTFFIND / RELION, ``../shared/physics.md``): defocus positive for
underfocus, in Å; ``defocus_u_A >= defocus_v_A``; ``astig_angle_deg`` is the direction
of ``defocus_u_A`` from +x toward +y. Spatial frequencies in Å⁻¹.

``chi(k) = pi lambda dz(phi) k^2 - pi/2 Cs lambda^3 k^4 + phase_shift``
``CTF(k) = -sin(chi(k) + arcsin(A))``
``dz(phi) = (dz_u + dz_v)/2 + (dz_u - dz_v)/2 cos 2(phi - phi_u)``
"""

from __future__ import annotations

import math

import numpy as np

from temcal.physics.wavelength import calculate_wavelength_A

__all__ = ["calculate_chi", "calculate_ctf"]


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
    """
    lam = calculate_wavelength_A(voltage_kV)
    dv = defocus_u_A if defocus_v_A is None else defocus_v_A
    kx = np.asarray(kx_per_A, dtype=float)
    ky = np.asarray(ky_per_A, dtype=float)
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
) -> np.ndarray:
    """CTF ``-sin(chi + arcsin(A)) * exp(-B k^2 / 4)`` at ``(kx, ky)`` in Å⁻¹.

    ``b_factor_A2`` is an amplitude envelope ``exp(-B k^2 / 4)`` (B in Å²; the power
    spectrum then falls as ``exp(-B k^2 / 2)``). Other parameters as
    :func:`calculate_chi`; ``amplitude_contrast`` is the fraction A in [0, 1).
    """
    chi = calculate_chi(
        kx_per_A,
        ky_per_A,
        defocus_u_A=defocus_u_A,
        defocus_v_A=defocus_v_A,
        astig_angle_deg=astig_angle_deg,
        cs_mm=cs_mm,
        voltage_kV=voltage_kV,
        phase_shift_deg=phase_shift_deg,
    )
    ctf = -np.sin(chi + math.asin(amplitude_contrast))
    if b_factor_A2:
        k2 = np.asarray(kx_per_A, dtype=float) ** 2 + np.asarray(ky_per_A, dtype=float) ** 2
        ctf = ctf * np.exp(-0.25 * b_factor_A2 * k2)
    return ctf
