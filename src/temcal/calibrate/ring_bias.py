"""Systematic error of gold ring positions from the CTF modulation across a broad ring.

A gold ring of finite width (small grains) is multiplied in the power spectrum by the
modulation of the contrast transfer, roughly ``1 - gamma cos(2 chi(s) + c)``. A ring
profile ``U(s)`` of width ``w`` times a modulation whose log-slope is ``(ln m)'`` peaks
shifted by about ``w^2 (ln m)'`` -- a shift that no single-image fit can separate from
the ring position (a Gaussian times ``exp(a s)`` *is* a shifted Gaussian). Its phase
``c`` depends on the specimen (the strong mean inner potential of gold makes it differ
from the weak-phase ``sin^2 chi``; measured on the project's simulator), so the shift is
not corrected but carried as an uncertainty.

In real space the modulation is the interference of the two images of each grain's
lattice fringes that the defocus displaces by ``+-Delta/2``, ``Delta = |chi'| / pi``
(Å), with ``chi'(R) = 2 pi lambda dz R - 2 pi Cs lambda^3 R^3`` (rad Å): they interfere
only where they overlap. The amplitude of the shift (Å⁻¹) is taken as

``b = 2 |chi'| w^2 max(D, O)``

* ``D = (1 - eta) exp(-2 chi'^2 w^2) + eta exp(-2.355 w |chi'|)``: the Fourier transform
  of the pseudo-Voigt ring profile at the modulation's frequency -- the exact first-order
  result for a weak modulation (checked numerically in the tests);
* ``O = (2 / pi) (acos x - x sqrt(1 - x^2))``, ``x = Delta / D_g`` (0 for ``x >= 1``):
  the overlap of two discs of diameter ``D_g = 1.5 * 0.44 / w`` (the grain diameter that
  gives the ring width ``w``, times 1.5 for the large grains of a size distribution) at
  distance ``Delta``. With the full modulation of real (strongly scattering) gold the
  shift follows the overlap of the displaced images rather than the smooth tail ``D``:
  on the project's simulator (10 nm grains, 0.75 Å/px, 300 kV, Cs 2.7 mm) the measured
  shifts were 0.6-0.8 % in focus (``b`` = 0.7 %), 0.3-1.1 % near 0.6 µm
  (``b`` ~ 0.8 %, ``D`` alone 0.3 %), and below 0.25 % beyond 1.1 µm where ``b`` = 0.

Over the unknown phase the shift is ``b sin(phase)``; ``b`` itself is used as the
standard uncertainty. Without a defocus (no Thon rings to fit) the worst case over all
defoci is used, ``max b = 0.84 w``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from temcal.physics.wavelength import calculate_wavelength_A

__all__ = [
    "calculate_min_unshifted_defocus_A",
    "calculate_relrod_shift",
    "calculate_ring_ctf_bias",
    "calculate_worst_ring_ctf_bias",
    "combine_ring_biases",
]

_LORENTZ_FWHM_PER_SIGMA = 2.3548200450309493


def calculate_ring_ctf_bias(
    radius_per_A: float,
    width_per_A: float,
    *,
    eta: float,
    defocus_A: float,
    voltage_kV: float,
    cs_mm: float,
) -> float:
    """Amplitude of the CTF-induced shift of one ring's fitted position (Å⁻¹).

    Parameters
    ----------
    radius_per_A : float
        Ring radius ``R = 1 / d`` (Å⁻¹).
    width_per_A : float
        Gaussian-equivalent half width (sigma) of the ring profile (Å⁻¹).
    eta : float
        Lorentzian fraction of the pseudo-Voigt ring profile, in [0, 1].
    defocus_A : float
        Defocus (Å, underfocus positive).
    voltage_kV, cs_mm : float
        Accelerating voltage (kV) and spherical aberration (mm).

    Returns
    -------
    float
        ``b = 2 |chi'(R)| w^2 max(D, O)`` in Å⁻¹ (see the module docstring); the shift is
        ``b sin(phase)`` with a phase unknown from one image.
    """
    lam = calculate_wavelength_A(voltage_kV)
    cs_A = cs_mm * 1e7
    r = float(radius_per_A)
    w = float(width_per_A)
    dchi = abs(2.0 * math.pi * lam * defocus_A * r - 2.0 * math.pi * cs_A * lam**3 * r**3)
    damp = (1.0 - eta) * math.exp(-2.0 * dchi * dchi * w * w) + eta * math.exp(
        -_LORENTZ_FWHM_PER_SIGMA * w * dchi
    )
    return 2.0 * dchi * w * w * max(damp, _overlap(dchi / math.pi / _grain_diameter_A(w)))


def calculate_min_unshifted_defocus_A(
    radius_per_A: float,
    width_per_A: float,
    *,
    voltage_kV: float,
    cs_mm: float,
) -> float:
    """Smallest underfocus (Å) beyond which the CTF no longer shifts a ring of this width.

    The shift vanishes once the defocus displaces the two images of a grain's lattice
    fringes by more than the grain (``Delta = |chi'| / pi >= D_g``, the overlap term of
    :func:`calculate_ring_ctf_bias`; its smooth-tail term is then below ``exp(-8)``):
    ``dz = (D_g + 2 Cs lambda^3 R^3) / (2 lambda R)`` with ``D_g = 1.5 * 0.44 / w``.

    Parameters
    ----------
    radius_per_A : float
        Ring radius ``R = 1 / d`` (Å⁻¹).
    width_per_A : float
        Gaussian-equivalent half width (sigma) of the ring profile (Å⁻¹).
    voltage_kV, cs_mm : float
        Accelerating voltage (kV) and spherical aberration (mm).

    Returns
    -------
    float
        Defocus in Å (underfocus positive). On the project's simulator (10 nm grains,
        0.40 and 0.75 Å/px) the measured pixel-size errors settled at their specimen
        floor from 1.25 µm on, where this gives about 1.2 µm.
    """
    lam = calculate_wavelength_A(voltage_kV)
    r = float(radius_per_A)
    cs_term = 2.0 * cs_mm * 1e7 * lam**3 * r**3
    return (_grain_diameter_A(float(width_per_A)) + cs_term) / (2.0 * lam * r)


def _grain_diameter_A(width_per_A: float) -> float:
    """Diameter (Å) of the large grains behind a ring of Gaussian-equivalent width ``w``."""
    return 1.5 * 0.44 / width_per_A


def _overlap(x: float) -> float:
    """Overlap area of two unit discs at centre distance ``x`` diameters, as a fraction."""
    if x >= 1.0:
        return 0.0
    return (2.0 / math.pi) * (math.acos(x) - x * math.sqrt(1.0 - x * x))


def calculate_worst_ring_ctf_bias(width_per_A: float) -> float:
    """Worst case over all defoci of :func:`calculate_ring_ctf_bias`, Å⁻¹.

    The overlap branch dominates: ``max_y 2 pi D_g w^2 y O(y) = 0.838 w`` at ``y ~ 0.42``
    (``D_g = 0.66 / w``); the Gaussian branch peaks at ``exp(-1/2) w = 0.607 w``.
    """
    ys = np.linspace(0.0, 1.0, 2001)
    best = max(y * _overlap(float(y)) for y in ys)
    w = float(width_per_A)
    return max(2.0 * math.pi * _grain_diameter_A(w) * w * w * best, math.exp(-0.5) * w)


def combine_ring_biases(relative_bias: Sequence[float], information: Sequence[float]) -> float:
    """Relative bias of a joint multi-ring scale: information-weighted mean of the rings'.

    The rings' shifts share one defocus, so they are combined as fully correlated (a
    weighted mean, not in quadrature). Weights: each ring's share of the fit
    information (e.g. its SNR squared).
    """
    b = np.asarray(relative_bias, dtype=float)
    wgt = np.clip(np.asarray(information, dtype=float), 0.0, None)
    if b.size == 0 or not np.isfinite(b).all():
        return float("nan")
    if wgt.sum() <= 0:
        return float(np.mean(b))
    return float(np.sum(wgt * b) / np.sum(wgt))


def calculate_relrod_shift(
    radius_per_A: float,
    width_per_A: float,
    *,
    eta: float,
    thickness_A: float,
    half_window_per_A: float | None = None,
) -> float:
    """Shift of a ring's fitted position from the relrods of thin crystals (Å⁻¹, < 0).

    A crystal ``t`` thick has its reciprocal-lattice points drawn out along the beam
    (relrods, intensity ``sinc^2(t q_z)``). The image samples ``k_z = 0``, where a
    reflection tilted by ``q_z`` lands at the in-plane radius ``sqrt(R^2 - q_z^2)``: over
    random orientations (``q_z`` uniform on the sphere of radius ``R``) each ring gains a
    tail toward smaller radii, ``delta = R - sqrt(R^2 - q_z^2) ~ q_z^2 / 2R``. This
    function builds that ring -- the symmetric pseudo-Voigt profile of the given width
    smeared by the tail -- over the window the estimator fits (``R +- half_window``),
    fits it as the estimator does (the symmetric profile plus a cubic background), and
    returns the fitted centre minus ``R``. Measured on the project's simulator (10 nm
    grains, ``benchmarks/pixel_size_thickness.py``) the pixel size came out 0.05 % small
    at 3 nm thickness, 0.01 % at 20 nm, and this shift corrected it to within 0.01 %.
    The model is a plate's (a foil's crystals spanning it): a sphere's relrods fall off
    as ``q_z^-4``, not ``q_z^-2``, and 8 nm spheres showed no shift.

    Parameters
    ----------
    radius_per_A : float
        Ring radius ``R = 1 / d`` (Å⁻¹).
    width_per_A : float
        Gaussian-equivalent half width (sigma) of the fitted ring profile (Å⁻¹).
    eta : float
        Lorentzian fraction of the pseudo-Voigt profile, in [0, 1].
    thickness_A : float
        Thickness of the crystals along the beam (Å).
    half_window_per_A : float, optional
        Half width of the fitted window (Å⁻¹); default ``max(5 w, 0.05 R)``, the
        estimator's.

    Returns
    -------
    float
        Fitted centre minus ``R`` (Å⁻¹): negative, inward.
    """
    from scipy import optimize

    R, w, t = float(radius_per_A), float(width_per_A), float(thickness_A)
    if not (R > 0 and w > 0 and t > 0 and 0.0 <= eta <= 1.0):
        raise ValueError("radius, width and thickness must be positive and eta in [0, 1]")
    half = max(5.0 * w, 0.05 * R) if half_window_per_A is None else float(half_window_per_A)
    x = np.linspace(-half, half, 801)  # offset from R
    # the tail over q_z >= 0 (symmetric in q_z), out to twice the window
    q_max = min(R, math.sqrt(2.0 * R * 2.0 * half), 40.0 / t)
    q = np.linspace(0.0, q_max, 1501)
    weight = np.sinc(t * q) ** 2
    weight[[0, -1]] *= 0.5  # trapezoid
    delta = q * q / (R + np.sqrt(R * R - q * q))
    hw = 1.1774100225154747

    def pv(u: np.ndarray, width: float) -> np.ndarray:
        v = u / width
        return (1.0 - eta) * np.exp(-0.5 * v * v) + eta / (1.0 + (v / hw) ** 2)

    profile = np.zeros_like(x)
    for lo in range(0, q.size, 300):  # in blocks: x by q arrays of moderate size
        d = delta[lo : lo + 300]
        profile += pv(x[:, None] + d[None, :], w) @ weight[lo : lo + 300]
    u = x / half
    background = np.stack([np.ones_like(u), u, u * u, u * u * u], axis=1)

    def residual(th: np.ndarray) -> np.ndarray:
        design = np.column_stack([pv(x - th[0], w * math.exp(th[1])), background])
        coef, *_ = np.linalg.lstsq(design, profile, rcond=None)
        return design @ coef - profile

    fit = optimize.least_squares(residual, np.array([0.0, 0.0]), x_scale=np.array([w, 0.1]))
    return float(fit.x[0])
