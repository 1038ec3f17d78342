"""Plan a beam-tilt series: predicted 95 % intervals of Cs and the other coefficients.

The prediction is the covariance of the same linear models that :mod:`temcal.calibrate.cs_tilt`
fits (including the frame rotation and, for the image-shift method, the random-walk drift
prior), evaluated at the nominal aberrations with *given* observation errors:

* image shifts: registration error per component
  ``sigma = c / (N sqrt(dose))`` Å (``N`` = image size in pixels, dose in e⁻/Å² per image),
  with ``c_ref = 60 + 2500 / dose`` for a tilted image registered to the untilted reference
  and ``c_pair = 55 + 500 / dose`` for a ``+tau/-tau`` pair (equal CTFs correlate better);
* tableau: error of each image's defocus and astigmatism components
  ``sigma = 20000 / (N sqrt(dose))`` Å.

The constants were calibrated against :func:`temcal.simulate.tilt_series.simulate_tilt_series`
(amorphous carbon-like specimen of 0.1 rad rms phase, 300 kV, Cs 2.7 mm, 0.8 µm underfocus,
B = 20 Å², tilts 5 and 10 mrad, 256² and 512² images at 1 Å/px, doses 20–100 e⁻/Å²): the rms
error of the measured shifts against the simulated truth, and the rms residual of tableau
fits. ``benchmarks/cs_tilt.py`` compares the predicted intervals with the achieved errors.
Thicker or more strongly scattering specimens register better than this model says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from temcal.calibrate.cs_tilt import (
    ShiftMeasurement,
    TiltFit,
    calculate_error_budget,
    fit_tilt_shifts,
    fit_tilt_tableau,
)
from temcal.errors import InputError
from temcal.physics.aberrations import (
    AxialAberrations,
    calculate_tilt_image_shift_A,
    calculate_tilt_induced_c1_a1_A,
)
from temcal.simulate.tilt_series import design_tilts_mrad, manifest_to_image_tilt_rad

__all__ = ["TiltPlan", "calculate_registration_sigma_A", "calculate_tilt_plan"]

_Z95 = 1.959963984540054


def calculate_registration_sigma_A(
    size_px: int, dose_e_per_A2: float, *, pair: bool = False
) -> float:
    """Modelled registration error (Å, per component) of one image pair (see module notes)."""
    if size_px < 16 or dose_e_per_A2 <= 0:
        raise InputError("image size must be >= 16 px and the dose positive")
    c = (55.0 + 500.0 / dose_e_per_A2) if pair else (60.0 + 2500.0 / dose_e_per_A2)
    return c / (size_px * math.sqrt(dose_e_per_A2))


def _tableau_sigma_A(size_px: int, dose_e_per_A2: float) -> float:
    return 20000.0 / (size_px * math.sqrt(dose_e_per_A2))


@dataclass(frozen=True)
class TiltPlan:
    """Predicted precision of one method for a tilt design.

    Attributes
    ----------
    method : str
        ``"shift"`` or ``"tableau"``.
    cs_ci95_mm : float
        Predicted 95 % half-width of Cs including the calibration budget.
    cs_fit_ci95_mm : float
        The statistical part alone.
    defocus_ci95_A, rotation_ci95_deg : float
        Predicted 95 % half-widths of the defocus and the frame rotation.
    coefficient_ci95_A : dict
        95 % half-widths of the Cartesian components (Å): ``C12`` (|A1|), ``C21`` (3|B2|),
        ``C23`` (|A2|), taken as the larger of the two components.
    n_images : int
        Images in the design.
    observation_sigma_A : float
        Modelled error of one observation (Å).
    """

    method: str
    cs_ci95_mm: float
    cs_fit_ci95_mm: float
    defocus_ci95_A: float
    rotation_ci95_deg: float
    coefficient_ci95_A: dict[str, float]
    n_images: int
    observation_sigma_A: float


def _coefficients(fit: TiltFit) -> dict[str, float]:
    c = fit.covariance
    out = {}
    for name, i, factor in (("C12", 1, 1.0), ("C21", 3, 3.0), ("C23", 5, 1.0)):
        out[name] = _Z95 * factor * math.sqrt(max(c[i, i], c[i + 1, i + 1], 0.0))
    return out


def calculate_tilt_plan(
    *,
    magnitudes_mrad: tuple[float, ...] | list[float],
    n_azimuths: int,
    dose_e_per_A2: float,
    pixel_size_A: float,
    size_px: int,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    defocus_A: float = 8000.0,
    drift_step_A: float = 0.3,
    pixel_size_rel_sigma: float = 0.0,
    tilt_rel_sigma: float = 0.0,
    methods: tuple[str, ...] = ("shift", "tableau"),
) -> dict[str, TiltPlan]:
    """Predict the 95 % intervals of a tilt design (design as :func:`design_tilts_mrad`).

    Parameters
    ----------
    magnitudes_mrad : sequence of float
        Tilt magnitudes (mrad).
    n_azimuths : int
        Azimuths per magnitude (visited as +tau/-tau pairs when even).
    dose_e_per_A2 : float
        Dose per image.
    pixel_size_A : float
        Pixel size (Å).
    size_px : int
        Image size (pixels, square).
    voltage_kV, cs_mm, defocus_A : float
        Nominal conditions (the linear models are evaluated there).
    drift_step_A : float
        Expected random-walk drift per image (Å).
    pixel_size_rel_sigma, tilt_rel_sigma : float
        Calibration uncertainties (fractions, 1 sigma) for the error budget.
    methods : tuple of str
        Methods to predict.

    Returns
    -------
    dict
        :class:`TiltPlan` per method.

    Raises
    ------
    InputError
        If the design cannot determine the coefficients.
    """
    if pixel_size_A <= 0 or size_px < 64 or dose_e_per_A2 <= 0:
        raise InputError("pixel size and dose must be positive and the image >= 64 px")
    tilts = design_tilts_mrad(tuple(magnitudes_mrad), n_azimuths)
    ab = AxialAberrations(C1_A=-float(defocus_A), C3_A=float(cs_mm) * 1e7)
    tau = manifest_to_image_tilt_rad(tilts, frame_rotation_deg=0.0)
    n = len(tilts)
    out: dict[str, TiltPlan] = {}
    if "shift" in methods:
        delta = calculate_tilt_image_shift_A(tau, ab)
        mag = np.hypot(tilts[:, 0], tilts[:, 1])
        pairs: list[tuple[int, int]] = [(0, i) for i in range(1, n)]
        sig = [calculate_registration_sigma_A(size_px, dose_e_per_A2)] * (n - 1)
        used: set[int] = set()
        for i in range(1, n):
            if i in used:
                continue
            for j in range(i + 1, n):
                if j not in used and np.hypot(*(tilts[i] + tilts[j])) <= 0.01 * mag[i]:
                    if abs(delta[j] - delta[i]) <= 0.3 * size_px * pixel_size_A:
                        pairs.append((i, j))
                        sig.append(
                            calculate_registration_sigma_A(size_px, dose_e_per_A2, pair=True)
                        )
                    used.update((i, j))
                    break
        pa = np.asarray(pairs)
        d = delta[pa[:, 1]] - delta[pa[:, 0]]
        meas = ShiftMeasurement(
            pairs=pa, shift_A=np.stack([d.real, d.imag], axis=1), sigma_A=np.asarray(sig)
        )
        fit = fit_tilt_shifts(
            meas, tilts, drift_step_A=drift_step_A, mirror=False, scale_by_residuals=False,
            sigma_floor_A=0.0,
        )  # fmt: skip
        out["shift"] = _plan(fit, sig[0], pixel_size_rel_sigma, tilt_rel_sigma)
    if "tableau" in methods:
        c1, a1 = calculate_tilt_induced_c1_a1_A(tau, ab)
        s_t = _tableau_sigma_A(size_px, dose_e_per_A2)
        fit = fit_tilt_tableau(
            c1, a1, tilts, sigma_c1_A=np.full(n, s_t), sigma_a1_A=np.full(n, s_t),
            mirror=False, scale_by_residuals=False,
        )  # fmt: skip
        out["tableau"] = _plan(fit, s_t, pixel_size_rel_sigma, tilt_rel_sigma)
    return out


def _plan(fit: TiltFit, sigma: float, pix: float, tilt: float) -> TiltPlan:
    b = calculate_error_budget(fit, pixel_size_rel_sigma=pix, tilt_rel_sigma=tilt)
    return TiltPlan(
        method=fit.method,
        cs_ci95_mm=b.total_ci95_mm,
        cs_fit_ci95_mm=_Z95 * fit.cs_sigma_mm,
        defocus_ci95_A=_Z95 * fit.defocus_sigma_A,
        rotation_ci95_deg=_Z95 * fit.frame_rotation_sigma_deg,
        coefficient_ci95_A=_coefficients(fit),
        n_images=fit.n_images,
        observation_sigma_A=float(sigma),
    )
