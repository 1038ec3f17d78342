"""Powder (ring) diffraction of gold: ring list, multiplicities, intensities, Bragg angles.

Conventions
-----------
``q = 1 / d`` is the reciprocal-lattice radius of a ring in Å⁻¹. A ring scatters by
``2 theta ~ lambda q`` rad (small angle) and lands at ``R = L lambda q`` on a detector at
camera length ``L`` (same length unit as ``R``).

Ring intensities follow the kinematic theory of a thin polycrystalline film (Vainshtein,
*Structure Analysis by Electron Diffraction*, 1964): the total intensity of ring ``hkl`` is
``m_hkl |F_hkl|^2 / q``, with ``F = 4 f(q)`` for the allowed FCC reflections. Spread over
a ring of radius ``q`` the intensity per unit detector area is therefore
``m |F(q)|^2 / (2 pi q^2) * profile(q - q_hkl)``; :func:`ring_shape_weight` is the factor
``f(q)^2 exp(-B q^2 / 2) / q`` that varies across a broad ring (the rest is constant).

The atomic scattering amplitude ``f(q)`` is the screened-Coulomb (Wentzel) model with the
Thomas-Fermi screening radius ``R = 0.885 a0 Z^(-1/3)`` (Reimer & Kohl, *Transmission
Electron Microscopy*, 5th ed., Sect. 5.1): ``f(q) ~ 1 / (q^2 + q0^2)``, ``q0 = 1 / (2 pi R)``
(1.46 Å⁻¹ for Au). It is an approximation (it falls less steeply at small ``q`` than
Hartree-Fock factors) used for realistic *relative* intensities and for the slope of the
intensity across a ring, which the ring fit takes into account. Thermal diffuse damping uses
the Debye-Waller factor ``exp(-B s^2)`` on ``f`` with ``s = q / 2`` and ``B = 0.62 Å²``
(gold near room temperature), i.e. ``exp(-B q^2 / 2)`` on the intensity.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GOLD_DEBYE_WALLER_B_A2",
    "GoldRing",
    "calculate_bragg_angle_mrad",
    "gold_rings",
    "ring_shape_weight",
    "scattering_amplitude_gold",
]

#: Debye-Waller B factor of gold near room temperature (Å²).
GOLD_DEBYE_WALLER_B_A2 = 0.62

_BOHR_A = 0.529177210903
_Z_GOLD = 79
_SCREENING_RADIUS_A = 0.885 * _BOHR_A * _Z_GOLD ** (-1.0 / 3.0)
_Q0_PER_A = 1.0 / (2.0 * math.pi * _SCREENING_RADIUS_A)


@dataclass(frozen=True)
class GoldRing:
    """One powder ring of gold.

    Attributes
    ----------
    hkl : tuple of int
        Representative Miller indices (``h >= k >= l >= 0``).
    n : int
        ``h^2 + k^2 + l^2``; the ring radius is proportional to ``sqrt(n)``.
    multiplicity : int
        Number of symmetry-equivalent ``(h, k, l)`` on the ring.
    d_A : float
        Interplanar spacing in Å.
    """

    hkl: tuple[int, int, int]
    n: int
    multiplicity: int
    d_A: float

    @property
    def q_per_A(self) -> float:
        """Ring radius in reciprocal space, ``1 / d`` (Å⁻¹)."""
        return 1.0 / self.d_A

    @property
    def label(self) -> str:
        """Miller indices as a string such as ``"111"``."""
        return "".join(str(i) for i in self.hkl)


def gold_rings(lattice_constant_A: float, *, max_q_per_A: float = 1.2) -> list[GoldRing]:
    """Allowed FCC rings of gold (h, k, l all even or all odd) up to ``max_q_per_A``.

    Parameters
    ----------
    lattice_constant_A : float
        Cubic lattice constant in Å.
    max_q_per_A : float
        Largest ``1 / d`` to list, in Å⁻¹.

    Returns
    -------
    list of GoldRing
        Rings in order of increasing radius; rings of equal ``n`` (e.g. 333 and 511) are
        merged into one entry with the summed multiplicity.
    """
    a = float(lattice_constant_A)
    n_max = math.floor((max_q_per_A * a) ** 2)
    h_max = math.isqrt(n_max) + 1
    counts: dict[int, int] = {}
    rep: dict[int, tuple[int, int, int]] = {}
    for h, k, l in itertools.product(range(-h_max, h_max + 1), repeat=3):
        n = h * h + k * k + l * l
        if n == 0 or n > n_max:
            continue
        if len({h % 2, k % 2, l % 2}) != 1:
            continue
        counts[n] = counts.get(n, 0) + 1
        key = tuple(sorted((abs(h), abs(k), abs(l)), reverse=True))
        if n not in rep or key > rep[n]:
            rep[n] = (key[0], key[1], key[2])
    return [
        GoldRing(hkl=rep[n], n=n, multiplicity=counts[n], d_A=a / math.sqrt(n))
        for n in sorted(counts)
    ]


def scattering_amplitude_gold(q_per_A: np.ndarray | float) -> np.ndarray:
    """Relative electron scattering amplitude of a gold atom (screened-Coulomb model).

    Parameters
    ----------
    q_per_A : array_like
        Reciprocal radius ``1 / d`` in Å⁻¹.

    Returns
    -------
    numpy.ndarray
        ``f(q) / f(0) = q0^2 / (q^2 + q0^2)`` (dimensionless).
    """
    q = np.asarray(q_per_A, dtype=float)
    return _Q0_PER_A**2 / (q * q + _Q0_PER_A**2)


def ring_shape_weight(
    q_per_A: np.ndarray | float, *, debye_waller_B_A2: float = GOLD_DEBYE_WALLER_B_A2
) -> tuple[np.ndarray, np.ndarray]:
    """Factor ``f(q)^2 exp(-B q^2 / 2) / q`` that multiplies a ring across its width.

    Returns
    -------
    tuple of numpy.ndarray
        The weight and its logarithmic derivative ``d ln(w) / dq`` (Å).
    """
    q = np.maximum(np.asarray(q_per_A, dtype=float), 1e-6)
    f = scattering_amplitude_gold(q)
    w = f * f * np.exp(-0.5 * debye_waller_B_A2 * q * q) / q
    dlnw = -4.0 * q / (q * q + _Q0_PER_A**2) - debye_waller_B_A2 * q - 1.0 / q
    return w, dlnw


def calculate_bragg_angle_mrad(d_A: float, voltage_kV: float) -> float:
    """Scattering angle ``2 theta = 2 asin(lambda / 2d)`` of a reflection, in mrad.

    Au 111 (d = 2.3546 Å): 8.36 mrad at 300 kV, 10.65 mrad at 200 kV.
    """
    from temcal.physics.wavelength import calculate_wavelength_A

    lam = calculate_wavelength_A(voltage_kV)
    return 2e3 * math.asin(lam / (2.0 * float(d_A)))
