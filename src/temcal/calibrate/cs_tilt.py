"""Cs and axial aberrations from a beam-tilt series.

Two routes, both linear least squares in the Cartesian components of the CEOS coefficients
(``C1, A1, B2, A2, C3`` and, when the design supports them, ``S3, A3``) for a given
rotation ``theta`` (and mirror) between the manifest's tilt frame and the image frame;
``theta`` is found by a scan plus a bounded 1-D refinement of the residual.

* **Image shifts** (Koster & de Jong 1991): every image is registered to the untilted
  reference (and ``+tau`` to ``-tau`` when both were recorded), see
  :mod:`temcal.calibrate.registration`. A measured shift between images ``a`` and ``b`` is
  ``delta(tau_b) - delta(tau_a) + d_b - d_a`` with ``delta = 2 dW/dwbar`` and the
  specimen drift ``d`` modelled as a random walk in acquisition order with a free mean
  velocity: every step ``d_{k+1} - d_k - v`` enters as a pseudo-observation of zero with
  standard deviation ``drift_step_A``. Positive Cs picks ``theta`` out of ``theta + 180``.
* **Tableau** (Zemlin et al. 1978): a CTF fit of every image gives the tilt-induced
  defocus ``C1(tau)`` and astigmatism ``A1(tau)``; their linear model gives the
  coefficients. The tableau sees ``tau^2`` only, so ``theta`` is known modulo 180°.

Uncertainties: covariance ``s^2 (J^T J)^-1`` of the weighted problem (``s^2`` = reduced
chi-square; ``J`` includes the derivative with respect to ``theta``), 95 % = 1.96 sigma.
The error budget adds the calibration terms in quadrature: image-shift Cs scales as
``p tau^-3``, tableau Cs as ``p^2 tau^-2`` (``p`` = pixel size, ``tau`` = tilt scale).

References
----------
Koster & de Jong, Ultramicroscopy 38 (1991) 235. doi:10.1016/0304-3991(91)90158-Q
Zemlin, Weiss, Schiske, Kunath & Herrmann, Ultramicroscopy 3 (1978) 49.
doi:10.1016/S0304-3991(78)80006-0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from temcal.errors import CalibrationError, InputError
from temcal.physics.aberrations import (
    AxialAberrations,
    calculate_tilt_image_shift_A,
    calculate_tilt_induced_c1_a1_A,
)

__all__ = [
    "PARAMETER_NAMES",
    "ErrorBudget",
    "ShiftMeasurement",
    "TiltDefoci",
    "TiltFit",
    "align_rotation",
    "analyse_tilt_series",
    "calculate_error_budget",
    "combine_tilt_fits",
    "defocus_budget_sigma_A",
    "estimate_tilt_defoci",
    "estimate_tilt_shifts",
    "fit_tableau_from_images",
    "fit_tilt_shifts",
    "fit_tilt_tableau",
    "select_terms",
    "tilt_result_json",
]

#: Names of the real parameter vector of :meth:`AxialAberrations.to_vector`.
PARAMETER_NAMES = (
    "C1", "A1_re", "A1_im", "B2_re", "B2_im", "A2_re", "A2_im",
    "C3", "S3_re", "S3_im", "A3_re", "A3_im",
)  # fmt: skip
_BASE = (0, 1, 2, 3, 4, 5, 6, 7)
_HIGH = (8, 9, 10, 11)
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class ShiftMeasurement:
    """Measured shifts between pairs of images of a tilt series.

    Attributes
    ----------
    pairs : numpy.ndarray
        ``(m, 2)`` image indices ``(a, b)``: the shift is of image ``b`` relative to ``a``.
    shift_A : numpy.ndarray
        ``(m, 2)`` shifts ``(x, y)`` in Å.
    sigma_A : numpy.ndarray
        ``(m,)`` standard error of each component (Å).
    """

    pairs: np.ndarray
    shift_A: np.ndarray
    sigma_A: np.ndarray


@dataclass(frozen=True)
class TiltFit:
    """Result of a beam-tilt fit (image-shift or tableau method).

    Attributes
    ----------
    method : str
        ``"shift"`` or ``"tableau"``.
    aberrations : AxialAberrations
        Fitted coefficients in the image frame (Å).
    covariance : numpy.ndarray
        ``(12, 12)`` covariance of :meth:`AxialAberrations.to_vector` (Å²), zero rows for
        terms not fitted.
    fitted : tuple of str
        Names (:data:`PARAMETER_NAMES`) of the fitted parameters.
    frame_rotation_deg, frame_rotation_sigma_deg : float
        Rotation that turns a manifest tilt into the image frame, in [0, 360), and its
        standard error.
    mirror : bool
        Whether the tilt frame is mirrored (``t -> conj(t)`` before rotating).
    rotation_modulo_180 : bool
        True when only ``theta mod 180`` is determined (tableau).
    residual_rms : float
        RMS of the weighted-fit residuals (Å).
    n_images, n_observations : int
        Images used and scalar observations fitted (excluding drift pseudo-observations).
    observed, modelled : numpy.ndarray
        Observations and the model at the solution: ``(m, 2)`` shifts in Å (shift method)
        or ``(n, 3)`` ``[C1(tau), Re A1(tau), Im A1(tau)]`` in Å (tableau).
    tau_rad : numpy.ndarray
        Fitted image-frame tilts (complex, rad).
    drift_A : numpy.ndarray
        ``(n, 2)`` fitted drift (shift method; zeros for the tableau).
    extra : dict
        Method-specific details.
    """

    method: str
    aberrations: AxialAberrations
    covariance: np.ndarray
    fitted: tuple[str, ...]
    frame_rotation_deg: float
    frame_rotation_sigma_deg: float
    mirror: bool
    rotation_modulo_180: bool
    residual_rms: float
    n_images: int
    n_observations: int
    observed: np.ndarray
    modelled: np.ndarray
    tau_rad: np.ndarray
    drift_A: np.ndarray
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def cs_mm(self) -> float:
        """Spherical aberration C3 in mm."""
        return self.aberrations.C3_A * 1e-7

    @property
    def cs_sigma_mm(self) -> float:
        """Standard error of Cs from the fit (mm)."""
        return math.sqrt(max(self.covariance[7, 7], 0.0)) * 1e-7

    @property
    def defocus_A(self) -> float:
        """Defocus at zero tilt, underfocus positive (Å): ``-C1``."""
        return -self.aberrations.C1_A

    @property
    def defocus_sigma_A(self) -> float:
        """Standard error of the defocus (Å)."""
        return math.sqrt(max(self.covariance[0, 0], 0.0))


def _tilts_complex(tilts_mrad: np.ndarray, theta_deg: float, mirror: bool) -> np.ndarray:
    t = np.asarray(tilts_mrad, dtype=float)
    z = t[:, 0] + 1j * t[:, 1]
    if mirror:
        z = np.conj(z)
    return 1e-3 * np.exp(1j * math.radians(theta_deg)) * z


def _unit_aberrations() -> list[AxialAberrations]:
    out = []
    for k in range(12):
        e = np.zeros(12)
        e[k] = 1.0
        out.append(AxialAberrations.from_vector(e))
    return out


_UNITS = _unit_aberrations()


def _shift_basis(tau: np.ndarray, cols: tuple[int, ...]) -> np.ndarray:
    """Complex image shift (Å) per unit parameter: ``(len(tau), len(cols))``."""
    return np.stack([calculate_tilt_image_shift_A(tau, _UNITS[k]) for k in cols], axis=1)


def _tableau_basis(tau: np.ndarray, cols: tuple[int, ...]) -> np.ndarray:
    """``(3 n, len(cols))``: rows ``C1(tau)``, ``Re A1(tau)``, ``Im A1(tau)`` per image."""
    blocks = []
    for k in cols:
        c1, a1 = calculate_tilt_induced_c1_a1_A(tau, _UNITS[k])
        blocks.append(np.stack([c1, a1.real, a1.imag], axis=1).reshape(-1))
    return np.stack(blocks, axis=1)


def _untilted(tilts_mrad: np.ndarray) -> np.ndarray:
    mag = np.hypot(tilts_mrad[:, 0], tilts_mrad[:, 1])
    return mag <= 1e-6 * max(float(mag.max()), 1e-12)


def select_terms(
    tilts_mrad: np.ndarray, *, method: str, include_higher: bool | None = None
) -> tuple[int, ...]:
    """Parameters (indices into :data:`PARAMETER_NAMES`) that a tilt design determines.

    The base set ``C1, A1, B2, A2, C3`` is required; ``S3, A3`` are added when the design
    separates them (``include_higher=None``), always (``True``) or never (``False``).

    Raises
    ------
    InputError
        If the design cannot determine the base set (too few tilts, one magnitude, too
        few azimuths).
    """
    t = np.asarray(tilts_mrad, dtype=float)
    rng = np.random.default_rng(0)
    theta = float(rng.uniform(0, 360))
    tau = _tilts_complex(t, theta, False)

    def rank_ok(cols: tuple[int, ...]) -> bool:
        if method == "shift":
            # shifts are measured relative to the reference image (first untilted one)
            untilted = np.flatnonzero(_untilted(t))
            ref = int(untilted[0]) if untilted.size else 0
            b = _shift_basis(tau, cols)
            b = np.delete(b - b[ref], ref, axis=0)
            a = np.concatenate([b.real, b.imag], axis=0)
        else:
            a = _tableau_basis(tau, cols)
        norms = np.linalg.norm(a, axis=0)
        if np.any(norms == 0):
            return False
        s = np.linalg.svd(a / norms, compute_uv=False)
        return bool(s[-1] > 1e-6 * s[0]) and a.shape[0] > len(cols)

    n_tilted = int(np.sum(~_untilted(t)))
    if not rank_ok(_BASE):
        mags = np.unique(np.round(np.hypot(t[:, 0], t[:, 1]), 6))
        raise InputError(
            f"the tilt design ({n_tilted} tilted images, magnitudes "
            f"{', '.join(f'{m:g}' for m in mags)} mrad) cannot determine C1, A1, B2, A2 and C3 "
            f"by the {method} method: record at least 3 azimuths at each of two non-zero tilt "
            "magnitudes (shift) or an untilted image plus one magnitude at >= 3 azimuths "
            "(tableau)"
        )
    if include_higher is False:
        return _BASE
    full = _BASE + _HIGH
    if include_higher is True or rank_ok(full):
        if not rank_ok(full):
            raise InputError(f"the tilt design cannot determine S3 and A3 by the {method} method")
        return full
    return _BASE


def _fit_theta(
    solve: Callable[[float, bool], tuple[float, np.ndarray]],
    mirror: bool | None,
    *,
    period: float,
) -> tuple[float, bool]:
    """Scan and refine the frame rotation (and mirror) minimising the weighted chi-square."""
    best: tuple[float, float, bool] | None = None
    mirrors = (False, True) if mirror is None else (bool(mirror),)
    for mir in mirrors:
        grid = np.arange(0.0, period, 2.0)
        costs = [solve(float(th), mir)[0] for th in grid]
        i = int(np.argmin(costs))
        res = minimize_scalar(
            lambda th, mir=mir: solve(float(th), mir)[0],
            bounds=(grid[i] - 2.5, grid[i] + 2.5),
            method="bounded",
            options={"xatol": 1e-4},
        )
        cand = (float(res.fun), float(res.x), mir)
        if best is None or cand[0] < best[0]:
            best = cand
    assert best is not None
    return best[1], best[2]


def estimate_tilt_shifts(
    images: np.ndarray,
    tilts_mrad: np.ndarray,
    *,
    pixel_size_A: float,
    max_frequency: float = 0.25,
    taper: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> ShiftMeasurement:
    """Register a tilt series: every image to the reference, and ``+tau`` to ``-tau``.

    The reference is the first untilted image (or the first image when none is untilted).

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, ny, nx)`` images in acquisition order.
    tilts_mrad : numpy.ndarray
        ``(n, 2)`` tilts (mrad, any frame: only used to pair opposite tilts).
    pixel_size_A : float
        Pixel size (Å).
    max_frequency : float
        Highest frequency used by the registration (cycles/pixel).
    taper : float
        Edge taper fraction for non-periodic images.
    progress : callable, optional
        Called with 1 after each registration.
    """
    from temcal.calibrate.registration import estimate_shift_px

    t = np.asarray(tilts_mrad, dtype=float)
    n = len(t)
    untilted = np.flatnonzero(_untilted(t))
    ref = int(untilted[0]) if untilted.size else 0
    pairs: list[tuple[int, int]] = [(ref, i) for i in range(n) if i != ref]
    mag = np.hypot(t[:, 0], t[:, 1])
    used: set[int] = set()
    for i in range(n):
        if mag[i] == 0 or i in used:
            continue
        for j in range(i + 1, n):
            if j in used or mag[j] == 0:
                continue
            if np.hypot(*(t[i] + t[j])) <= 0.01 * mag[i]:
                pairs.append((i, j))
                used.update((i, j))
                break
    size = min(images.shape[1:])
    kept: list[tuple[int, int]] = []
    shifts: list[np.ndarray] = []
    sig: list[float] = []
    to_ref: dict[int, np.ndarray] = {ref: np.zeros(2)}
    for a, b in pairs:
        predicted = None
        if a != ref and a in to_ref and b in to_ref:
            # +tau/-tau pair: the reference registrations predict it; skip pairs whose
            # shift is too large for the field of view, drop inconsistent ones
            predicted = to_ref[b] - to_ref[a]
            if np.hypot(*predicted) > 0.3 * size:
                if progress is not None:
                    progress(1)
                continue
        est = estimate_shift_px(images[a], images[b], max_frequency=max_frequency, taper=taper)
        s_px = est.shift_px
        sg = float(np.sqrt(np.mean(est.sigma_px**2)))
        if progress is not None:
            progress(1)
        if predicted is not None and np.hypot(*(s_px - predicted)) > 1.0 + 5.0 * sg:
            continue
        if a == ref:
            to_ref[b] = s_px
        kept.append((a, b))
        shifts.append(s_px * pixel_size_A)
        sig.append(sg * pixel_size_A)
    return ShiftMeasurement(
        pairs=np.asarray(kept, dtype=int).reshape(-1, 2),
        shift_A=np.asarray(shifts, dtype=float).reshape(-1, 2),
        sigma_A=np.asarray(sig, dtype=float),
    )


def fit_tilt_shifts(
    measurement: ShiftMeasurement,
    tilts_mrad: np.ndarray,
    *,
    drift_step_A: float = 0.5,
    mirror: bool | None = False,
    include_higher: bool | None = None,
    sigma_floor_A: float = 0.02,
    scale_by_residuals: bool = True,
    max_outliers: int = 3,
) -> TiltFit:
    """Fit aberrations, frame rotation and drift to measured beam-tilt image shifts.

    A registration whose residual exceeds both 1 Å and 8 standard errors (a failed
    registration) is left out and the fit repeated, at most ``max_outliers`` times
    (``extra["n_outliers_left_out"]``).

    Parameters
    ----------
    measurement : ShiftMeasurement
        From :func:`estimate_tilt_shifts`.
    tilts_mrad : numpy.ndarray
        ``(n, 2)`` manifest-frame tilts in mrad, acquisition order.
    drift_step_A : float
        Prior RMS of the random-walk drift per image (Å), beyond a constant velocity.
    mirror : bool or None
        Mirror between tilt and image frame; ``None`` decides from the residuals.
    include_higher : bool or None
        Fit ``S3`` and ``A3`` (``None``: when the design supports them).
    sigma_floor_A : float
        Lower bound on each shift's standard error (Å).
    scale_by_residuals : bool
        Scale the covariance by the reduced chi-square (``False``: trust the given
        standard errors, as the planner does with noise-free synthetic shifts).

    Returns
    -------
    TiltFit
    """
    t = np.asarray(tilts_mrad, dtype=float)
    n = len(t)
    cols = select_terms(t, method="shift", include_higher=include_higher)
    pairs = measurement.pairs
    m = len(pairs)
    sig = np.maximum(measurement.sigma_A, sigma_floor_A)
    obs = measurement.shift_A
    nab = len(cols)
    ref = int(pairs[0, 0])
    drift_index = [i for i in range(n) if i != ref]
    col_of = {img: nab + 2 * k for k, img in enumerate(drift_index)}
    nv = nab + 2 * len(drift_index) + 2  # + velocity
    # drift part of the design (independent of theta)
    dd = np.zeros((2 * m, nv))
    for r, (a, b) in enumerate(pairs):
        for img, sgn in ((b, 1.0), (a, -1.0)):
            if img in col_of:
                dd[r, col_of[img]] += sgn
                dd[m + r, col_of[img] + 1] += sgn
    prior = np.zeros((2 * (n - 1), nv))
    step = max(float(drift_step_A), 1e-3)
    for k in range(n - 1):
        for c in range(2):
            row = 2 * k + c
            for img, sgn in ((k + 1, 1.0), (k, -1.0)):
                if img in col_of:
                    prior[row, col_of[img] + c] += sgn / step
            prior[row, nv - 2 + c] = -1.0 / step
    w = np.concatenate([1.0 / sig, 1.0 / sig])
    y = np.concatenate([obs[:, 0], obs[:, 1]]) * w
    y_all = np.concatenate([y, np.zeros(len(prior))])

    def design(theta: float, mir: bool, use: tuple[int, ...]) -> np.ndarray:
        tau = _tilts_complex(t, theta, mir)
        basis = _shift_basis(tau, use)
        diff = basis[pairs[:, 1]] - basis[pairs[:, 0]]
        a = dd.copy()
        a_ab = np.zeros((2 * m, nv))
        a_ab[:m, : len(use)] = diff.real
        a_ab[m:, : len(use)] = diff.imag
        a = a + a_ab
        a = a * w[:, None]
        return np.concatenate([a, prior], axis=0)

    def solve(theta: float, mir: bool, use: tuple[int, ...] = cols) -> tuple[float, np.ndarray]:
        a = design(theta, mir, use)
        norms = np.linalg.norm(a, axis=0)
        norms[norms == 0] = 1.0
        x, *_ = np.linalg.lstsq(a / norms, y_all, rcond=None)
        x = x / norms
        r = y_all - a @ x
        return float(r @ r), x

    # decide theta/mirror with the base terms (a mirror is not separable from S3/A3)
    theta, mir = _fit_theta(lambda th, mi: solve(th, mi, _BASE), mirror, period=360.0)
    cost, x = solve(theta, mir)
    c3 = x[cols.index(7)]
    if c3 < 0:  # positive Cs fixes the 180 degree ambiguity
        theta = (theta + 180.0) % 360.0
        cost, x = solve(theta, mir)
    theta = theta % 360.0
    res = minimize_scalar(
        lambda th: solve(float(th), mir)[0],
        bounds=(theta - 1.0, theta + 1.0),
        method="bounded",
        options={"xatol": 1e-5},
    )
    theta = float(res.x) % 360.0
    cost, x = solve(theta, mir)
    # covariance with theta: numeric derivative of the design
    a = design(theta, mir, cols)
    h = 1e-3
    da = (design(theta + h, mir, cols) - design(theta - h, mir, cols)) / (2 * h)
    jac = np.concatenate([a, (da @ x)[:, None]], axis=1)
    dof = max(len(y_all) - jac.shape[1], 1)
    s2 = cost / dof if scale_by_residuals else 1.0
    norms = np.linalg.norm(jac, axis=0)
    norms[norms == 0] = 1.0
    jn = jac / norms
    cov_n = np.linalg.pinv(jn.T @ jn)
    cov_full = cov_n / np.outer(norms, norms) * s2
    vec = np.zeros(12)
    cov = np.zeros((12, 12))
    for i, k in enumerate(cols):
        vec[k] = x[i]
        for j, kk in enumerate(cols):
            cov[k, kk] = cov_full[i, j]
    ab = AxialAberrations.from_vector(vec)
    drift = np.zeros((n, 2))
    for img, c in col_of.items():
        drift[img] = x[c : c + 2]
    tau = _tilts_complex(t, theta, mir)
    delta = calculate_tilt_image_shift_A(tau, ab)
    model_c = delta[pairs[:, 1]] - delta[pairs[:, 0]]
    model = np.stack([model_c.real, model_c.imag], axis=1)
    model = model + drift[pairs[:, 1]] - drift[pairs[:, 0]]
    resid = obs - model
    norm = np.hypot(resid[:, 0], resid[:, 1])
    worst = int(np.argmax(norm / sig))
    bad = max_outliers > 0 and len(pairs) > 3 and norm[worst] > max(1.0, 8.0 * sig[worst])
    if max_outliers > 0 and len(pairs) > 3 and not bad and n > 3:
        # a failed registration to the reference can hide in that image's drift: look for
        # an image whose drift jumps away from both neighbours
        dev = np.zeros(n)
        dev[1:-1] = np.hypot(*(drift[1:-1] - 0.5 * (drift[:-2] + drift[2:])).T)
        img = int(np.argmax(dev))
        hits = np.flatnonzero((pairs[:, 0] == ref) & (pairs[:, 1] == img))
        if hits.size and dev[img] > max(1.0, 8.0 * step):
            worst, bad = int(hits[0]), True
    if bad:
        keep = np.arange(len(pairs)) != worst
        sub = ShiftMeasurement(pairs[keep], obs[keep], measurement.sigma_A[keep])
        try:
            refit = fit_tilt_shifts(
                sub, t, drift_step_A=drift_step_A, mirror=mirror, include_higher=include_higher,
                sigma_floor_A=sigma_floor_A, scale_by_residuals=scale_by_residuals,
                max_outliers=max_outliers - 1,
            )  # fmt: skip
        except InputError:
            refit = None
        if refit is not None:
            n_out = int(refit.extra.get("n_outliers_left_out", 0)) + 1  # type: ignore[call-overload]
            return TiltFit(
                **{**refit.__dict__, "extra": {**refit.extra, "n_outliers_left_out": n_out}}
            )
    return TiltFit(
        method="shift",
        aberrations=ab,
        covariance=cov,
        fitted=tuple(PARAMETER_NAMES[k] for k in cols),
        frame_rotation_deg=theta,
        frame_rotation_sigma_deg=float(math.sqrt(max(cov_full[-1, -1], 0.0))),
        mirror=mir,
        rotation_modulo_180=False,
        residual_rms=float(np.sqrt(np.mean(resid**2))),
        n_images=n,
        n_observations=2 * m,
        observed=obs.copy(),
        modelled=model,
        tau_rad=tau,
        drift_A=drift,
        extra={
            "reduced_chi2": s2,
            "drift_velocity_A_per_image": x[nv - 2 : nv].tolist(),
            "reference_index": ref,
            "pairs": pairs.copy(),
            "n_outliers_left_out": 0,
        },
    )


def fit_tilt_tableau(
    c1_A: np.ndarray,
    a1_A: np.ndarray,
    tilts_mrad: np.ndarray,
    *,
    sigma_c1_A: np.ndarray | None = None,
    sigma_a1_A: np.ndarray | None = None,
    mirror: bool | None = False,
    include_higher: bool | None = None,
    scale_by_residuals: bool = True,
) -> TiltFit:
    """Fit aberrations and frame rotation (mod 180°) to per-image defocus and astigmatism.

    Parameters
    ----------
    c1_A : numpy.ndarray
        ``(n,)`` measured ``C1(tau) = -mean defocus`` in Å.
    a1_A : numpy.ndarray
        ``(n,)`` complex measured ``A1(tau)`` in Å (see
        :func:`temcal.physics.aberrations.c1_a1_from_defocus_astigmatism`).
    tilts_mrad : numpy.ndarray
        ``(n, 2)`` manifest-frame tilts (mrad).
    sigma_c1_A, sigma_a1_A : numpy.ndarray, optional
        Standard errors (Å) used as weights (equal weights when omitted).
    mirror, include_higher, scale_by_residuals
        As in :func:`fit_tilt_shifts`.

    Returns
    -------
    TiltFit
        ``frame_rotation_deg`` is in [0, 180) with ``rotation_modulo_180`` set.
    """
    t = np.asarray(tilts_mrad, dtype=float)
    n = len(t)
    c1 = np.asarray(c1_A, dtype=float)
    a1 = np.asarray(a1_A, dtype=complex)
    if len(c1) != n or len(a1) != n:
        raise InputError("c1_A, a1_A and tilts_mrad must have the same length")
    cols = select_terms(t, method="tableau", include_higher=include_higher)
    sc = np.ones(n) if sigma_c1_A is None else np.maximum(np.asarray(sigma_c1_A, float), 1e-3)
    sa = np.ones(n) if sigma_a1_A is None else np.maximum(np.asarray(sigma_a1_A, float), 1e-3)
    w = np.stack([1 / sc, 1 / sa, 1 / sa], axis=1).reshape(-1)
    obs = np.stack([c1, a1.real, a1.imag], axis=1)
    y = obs.reshape(-1) * w

    def design(theta: float, mir: bool, use: tuple[int, ...]) -> np.ndarray:
        return _tableau_basis(_tilts_complex(t, theta, mir), use) * w[:, None]

    def solve(theta: float, mir: bool, use: tuple[int, ...] = cols) -> tuple[float, np.ndarray]:
        a = design(theta, mir, use)
        norms = np.linalg.norm(a, axis=0)
        norms[norms == 0] = 1.0
        x, *_ = np.linalg.lstsq(a / norms, y, rcond=None)
        x = x / norms
        r = y - a @ x
        return float(r @ r), x

    theta, mir = _fit_theta(lambda th, mi: solve(th, mi, _BASE), mirror, period=180.0)
    res = minimize_scalar(
        lambda th: solve(float(th), mir)[0],
        bounds=(theta - 1.0, theta + 1.0),
        method="bounded",
        options={"xatol": 1e-5},
    )
    theta = float(res.x) % 180.0
    cost, x = solve(theta, mir)
    a = design(theta, mir, cols)
    h = 1e-3
    da = (design(theta + h, mir, cols) - design(theta - h, mir, cols)) / (2 * h)
    jac = np.concatenate([a, (da @ x)[:, None]], axis=1)
    dof = len(y) - jac.shape[1]
    if dof < 1:
        raise InputError(
            f"{n} images give {len(y)} tableau observations, fewer than the "
            f"{jac.shape[1]} unknowns; record more tilts"
        )
    s2 = cost / dof if scale_by_residuals else 1.0
    norms = np.linalg.norm(jac, axis=0)
    norms[norms == 0] = 1.0
    cov_full = np.linalg.pinv((jac / norms).T @ (jac / norms)) / np.outer(norms, norms) * s2
    vec = np.zeros(12)
    cov = np.zeros((12, 12))
    for i, k in enumerate(cols):
        vec[k] = x[i]
        for j, kk in enumerate(cols):
            cov[k, kk] = cov_full[i, j]
    ab = AxialAberrations.from_vector(vec)
    tau = _tilts_complex(t, theta, mir)
    mc1, ma1 = calculate_tilt_induced_c1_a1_A(tau, ab)
    model = np.stack([mc1, ma1.real, ma1.imag], axis=1)
    return TiltFit(
        method="tableau",
        aberrations=ab,
        covariance=cov,
        fitted=tuple(PARAMETER_NAMES[k] for k in cols),
        frame_rotation_deg=theta,
        frame_rotation_sigma_deg=float(math.sqrt(max(cov_full[-1, -1], 0.0))),
        mirror=mir,
        rotation_modulo_180=True,
        residual_rms=float(np.sqrt(np.mean((obs - model) ** 2))),
        n_images=n,
        n_observations=len(y),
        observed=obs,
        modelled=model,
        tau_rad=tau,
        drift_A=np.zeros((n, 2)),
        extra={"reduced_chi2": s2},
    )


def combine_tilt_fits(fits: list[TiltFit]) -> tuple[float, float]:
    """Inverse-variance weighted Cs (mm) and its standard error from several fits."""
    if not fits:
        raise CalibrationError("no fit to combine")
    wts = np.array([1.0 / max(f.cs_sigma_mm, 1e-12) ** 2 for f in fits])
    cs = np.array([f.cs_mm for f in fits])
    return float(np.sum(wts * cs) / np.sum(wts)), float(1.0 / math.sqrt(np.sum(wts)))


@dataclass(frozen=True)
class ErrorBudget:
    """Cs uncertainty of one method split by source (1 sigma, mm) and the 95 % total.

    Attributes
    ----------
    fit_mm : float
        Statistical error of the fit.
    pixel_size_mm : float
        From the pixel-size uncertainty (Cs ~ p for shifts, p^2 for the tableau).
    tilt_calibration_mm : float
        From the tilt-scale uncertainty (Cs ~ tau^-3 for shifts, tau^-2 for the tableau).
    total_ci95_mm : float
        ``1.96 * sqrt(fit^2 + pixel^2 + tilt^2)``.
    """

    fit_mm: float
    pixel_size_mm: float
    tilt_calibration_mm: float
    total_ci95_mm: float


def calculate_error_budget(
    fit: TiltFit, *, pixel_size_rel_sigma: float = 0.0, tilt_rel_sigma: float = 0.0
) -> ErrorBudget:
    """Error budget of Cs for one method (relative uncertainties given as fractions, 1 sigma).

    Image shifts: ``Cs ~ p tau^-3``; tableau: ``Cs ~ p^2 tau^-2``.
    """
    p_exp, t_exp = (1.0, 3.0) if fit.method == "shift" else (2.0, 2.0)
    cs = abs(fit.cs_mm)
    pix = p_exp * pixel_size_rel_sigma * cs
    tilt = t_exp * tilt_rel_sigma * cs
    total = _Z95 * math.sqrt(fit.cs_sigma_mm**2 + pix**2 + tilt**2)
    return ErrorBudget(fit.cs_sigma_mm, pix, tilt, total)


def defocus_budget_sigma_A(
    fit: TiltFit, *, pixel_size_rel_sigma: float = 0.0, tilt_rel_sigma: float = 0.0
) -> float:
    """1-sigma defocus uncertainty incl. calibration (shift: ``p tau^-1``; tableau: ``p^2``)."""
    dz = abs(fit.defocus_A)
    if fit.method == "shift":
        cal = math.hypot(pixel_size_rel_sigma, tilt_rel_sigma) * dz
    else:
        cal = 2.0 * pixel_size_rel_sigma * dz
    return math.hypot(fit.defocus_sigma_A, cal)


def align_rotation(fit: TiltFit, theta_deg: float) -> TiltFit:
    """Express a tableau fit (rotation known mod 180°) at the rotation nearest ``theta_deg``.

    Turning the frame by 180° flips the sign of the odd-order coefficients (B2, A2).
    """
    if not fit.rotation_modulo_180:
        return fit
    d = (theta_deg - fit.frame_rotation_deg) % 360.0
    if 90.0 <= d < 270.0:
        v = fit.aberrations.to_vector()
        flip = np.ones(12)
        flip[3:7] = -1.0
        cov = fit.covariance * np.outer(flip, flip)
        return TiltFit(
            **{
                **fit.__dict__,
                "aberrations": AxialAberrations.from_vector(v * flip),
                "covariance": cov,
                "frame_rotation_deg": (fit.frame_rotation_deg + 180.0) % 360.0,
                "tau_rad": -fit.tau_rad,
                "rotation_modulo_180": False,
            }
        )
    return TiltFit(**{**fit.__dict__, "rotation_modulo_180": False})


def tilt_result_json(
    fits: dict[str, TiltFit],
    *,
    pixel_size_rel_sigma: float = 0.0,
    tilt_rel_sigma: float = 0.0,
    cs_nominal_mm: float | None = None,
) -> dict[str, object]:
    """The ``temcal cs-tilt --json`` document from one or two method fits.

    Top level: inverse-variance combination (total uncertainty incl. budget) of the methods'
    Cs and defocus; the frame rotation from the image-shift fit when present (the tableau
    only knows it modulo 180°); the aberrations from the method with the smaller Cs interval.
    """
    if not fits:
        raise CalibrationError("no method produced a result")
    if "shift" in fits and "tableau" in fits:
        fits = {
            **fits,
            "tableau": align_rotation(fits["tableau"], fits["shift"].frame_rotation_deg),
        }
    methods: dict[str, dict[str, object]] = {}
    budgets: dict[str, ErrorBudget] = {}
    sig_cs: dict[str, float] = {}
    sig_dz: dict[str, float] = {}
    for name, f in fits.items():
        b = calculate_error_budget(
            f, pixel_size_rel_sigma=pixel_size_rel_sigma, tilt_rel_sigma=tilt_rel_sigma
        )
        budgets[name] = b
        sig_cs[name] = b.total_ci95_mm / _Z95
        sig_dz[name] = defocus_budget_sigma_A(
            f, pixel_size_rel_sigma=pixel_size_rel_sigma, tilt_rel_sigma=tilt_rel_sigma
        )
        k = f.aberrations.to_krivanek()
        methods[name] = {
            "cs_mm": f.cs_mm,
            "cs_ci95_mm": b.total_ci95_mm,
            "defocus_A": f.defocus_A,
            "defocus_ci95_A": _Z95 * sig_dz[name],
            "tilt_frame_rotation_deg": f.frame_rotation_deg,
            "tilt_frame_rotation_ci95_deg": _Z95 * f.frame_rotation_sigma_deg,
            "rotation_modulo_180": f.rotation_modulo_180,
            "mirror": f.mirror,
            "aberrations": {**k, "C30_mm": f.cs_mm},
            "fitted_parameters": list(f.fitted),
            "error_budget_mm": {
                "fit_sigma": b.fit_mm,
                "pixel_size_sigma": b.pixel_size_mm,
                "tilt_calibration_sigma": b.tilt_calibration_mm,
                "total_ci95": b.total_ci95_mm,
            },
            "residual_rms_A": f.residual_rms,
            "reduced_chi2": f.extra.get("reduced_chi2"),
            "n_images": f.n_images,
            "n_observations": f.n_observations,
        }
        if f.method == "shift":
            methods[name]["drift_A"] = f.drift_A
    wc = {n: 1.0 / max(s, 1e-12) ** 2 for n, s in sig_cs.items()}
    cs = sum(wc[n] * fits[n].cs_mm for n in fits) / sum(wc.values())
    cs_sig = 1.0 / math.sqrt(sum(wc.values()))
    wd = {n: 1.0 / max(s, 1e-9) ** 2 for n, s in sig_dz.items()}
    dz = sum(wd[n] * fits[n].defocus_A for n in fits) / sum(wd.values())
    primary = min(fits, key=lambda n: sig_cs[n])
    rot_fit = fits["shift"] if "shift" in fits else fits[primary]
    k = fits[primary].aberrations.to_krivanek()
    out: dict[str, object] = {
        "cs_mm": cs,
        "cs_ci95_mm": _Z95 * cs_sig,
        "defocus_A": dz,
        "defocus_ci95_A": _Z95 / math.sqrt(sum(wd.values())),
        "tilt_frame_rotation_deg": rot_fit.frame_rotation_deg % 360.0,
        "tilt_frame_rotation_ci95_deg": _Z95 * rot_fit.frame_rotation_sigma_deg,
        "tilt_frame_rotation_modulo_180": rot_fit.rotation_modulo_180,
        "tilt_frame_mirror": rot_fit.mirror,
        "aberrations": {
            "C10_A": -dz,
            "C12_A": k["C12_A"],
            "phi12_deg": k["phi12_deg"],
            "C21_A": k["C21_A"],
            "phi21_deg": k["phi21_deg"],
            "C23_A": k["C23_A"],
            "phi23_deg": k["phi23_deg"],
            "C30_mm": cs,
            "C32_A": k["C32_A"],
            "phi32_deg": k["phi32_deg"],
            "C34_A": k["C34_A"],
            "phi34_deg": k["phi34_deg"],
        },
        "aberrations_from_method": primary,
        "methods": methods,
        "error_budget_inputs": {
            "pixel_size_rel_sigma": pixel_size_rel_sigma,
            "tilt_rel_sigma": tilt_rel_sigma,
        },
    }
    if len(fits) == 2:
        fs, ft = fits["shift"], fits["tableau"]
        z = (fs.cs_mm - ft.cs_mm) / math.hypot(sig_cs["shift"], sig_cs["tableau"])
        out["methods_agreement_sigma"] = z
    if cs_nominal_mm is not None:
        z = (cs - cs_nominal_mm) / cs_sig
        out["cs_nominal_mm"] = cs_nominal_mm
        out["cs_minus_nominal_mm"] = cs - cs_nominal_mm
        out["cs_differs_from_nominal"] = bool(abs(z) > _Z95)
    return out


@dataclass(frozen=True)
class TiltDefoci:
    """Per-image CTF fits of a tilt series.

    Attributes
    ----------
    c1_A : numpy.ndarray
        ``(n,)`` ``C1(tau) = -(dz_u + dz_v) / 2`` (Å).
    a1_A : numpy.ndarray
        ``(n,)`` complex ``A1(tau)`` (Å).
    sigma_A : numpy.ndarray
        ``(n,)`` standard error of the mean defocus from each fit (Å).
    score : numpy.ndarray
        ``(n,)`` CTF-fit correlation scores.
    cs_mm : float
        Cs used in the fits.
    n_refit : int
        Images whose fit was replaced by a fit started from the tableau prediction (the
        free search had found the other side of focus or a wrong ring count).
    """

    c1_A: np.ndarray
    a1_A: np.ndarray
    sigma_A: np.ndarray
    score: np.ndarray
    cs_mm: float
    n_refit: int = 0


def estimate_tilt_defoci(
    images: np.ndarray,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amplitude_contrast: float = 0.07,
    prepared: list[object] | None = None,
    start_defoci: list[tuple[float, float, float]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TiltDefoci:
    """CTF fit of every image: ``C1(tau)``, ``A1(tau)`` (Å) and standard errors.

    Uses :func:`temcal.calibrate.ctf_fit.fit_ctf_prepared` with
    ``allow_focus_crossing=True`` (at large tilts one principal defocus of the induced
    astigmatism is overfocus), or a local refinement from ``start_defoci``
    (``(defocus_u_A, defocus_v_A, astig_angle_deg)`` per image) when given.
    ``prepared`` caches the prepared spectra between calls (filled when an empty list).

    Raises
    ------
    CalibrationError
        If an image's Thon rings cannot be fitted.
    """
    from temcal.calibrate._ctf_engine import defocus_to_theta
    from temcal.calibrate.ctf_fit import fit_ctf_prepared, prepare_ctf_spectrum
    from temcal.physics.aberrations import c1_a1_from_defocus_astigmatism

    n = len(images)
    if prepared is None:
        prepared = []
    c1 = np.empty(n)
    a1 = np.empty(n, dtype=complex)
    se = np.empty(n)
    score = np.empty(n)
    for i in range(n):
        try:
            if len(prepared) <= i:
                prepared.append(
                    prepare_ctf_spectrum(
                        images[i],
                        pixel_size_A=pixel_size_A,
                        voltage_kV=voltage_kV,
                        amplitude_contrast=amplitude_contrast,
                    )
                )
            start = None
            if start_defoci is not None:
                start = defocus_to_theta(*start_defoci[i])
            fit, _ = fit_ctf_prepared(
                prepared[i],  # type: ignore[arg-type]
                cs_mm=cs_mm,
                allow_focus_crossing=True,
                start_theta=start,
            )
        except CalibrationError as exc:
            raise CalibrationError(f"image {i}: CTF fit failed ({exc})") from None
        c1[i], a1[i] = c1_a1_from_defocus_astigmatism(
            fit.defocus_u_A, fit.defocus_v_A, fit.astig_angle_deg
        )
        se[i] = fit.defocus_se_A if math.isfinite(fit.defocus_se_A) else 10.0
        score[i] = fit.score
        if progress is not None:
            progress(1)
    return TiltDefoci(c1, a1, se, score, float(cs_mm))


def _robust_tableau(
    d: TiltDefoci, t: np.ndarray, mirror: bool | None
) -> tuple[TiltFit, np.ndarray]:
    """Tableau fit that leaves out gross outliers (wrong side of focus); returns the mask."""
    keep = np.ones(len(t), dtype=bool)
    fit = fit_tilt_tableau(d.c1_A, d.a1_A, t, sigma_c1_A=d.sigma_A, sigma_a1_A=d.sigma_A,
                           mirror=mirror)  # fmt: skip
    for _ in range(3):
        resid = np.sqrt(np.sum((fit.observed - fit.modelled) ** 2, axis=1))
        limit = 6.0 * float(np.median(resid[keep])) + 30.0
        new = resid <= limit
        if np.array_equal(new, keep) or new.sum() < 0.6 * len(t):
            break
        keep = new
        try:
            fit = fit_tilt_tableau(
                d.c1_A[keep], d.a1_A[keep], t[keep], sigma_c1_A=d.sigma_A[keep],
                sigma_a1_A=d.sigma_A[keep], mirror=mirror,
            )  # fmt: skip
        except InputError:
            break
        # model for all images, for the outlier test
        tau = _tilts_complex(t, fit.frame_rotation_deg, fit.mirror)
        mc1, ma1 = calculate_tilt_induced_c1_a1_A(tau, fit.aberrations)
        fit = TiltFit(
            **{
                **fit.__dict__,
                "observed": np.stack([d.c1_A, d.a1_A.real, d.a1_A.imag], axis=1),
                "modelled": np.stack([mc1, ma1.real, ma1.imag], axis=1),
                "tau_rad": tau,
                "n_images": len(t),
            }
        )
    return fit, keep


def fit_tableau_from_images(
    images: np.ndarray,
    tilts_mrad: np.ndarray,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_start_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    mirror: bool | None = None,
    max_iterations: int = 4,
    start_fit: TiltFit | None = None,
    progress: Callable[[int], None] | None = None,
) -> TiltFit:
    """The tableau method from images: CTF fits, tableau, Cs iteration.

    1. Free CTF fit of every image with ``cs_start_mm`` (focus crossing allowed) or, when
       ``start_fit`` (an image-shift fit) is given, local CTF fits started from the defocus
       and astigmatism it predicts, with a free search only for images whose local fit
       scores below 0.8 of the median.
    2. Tableau fit leaving out gross outliers; images whose fit disagrees with the tableau
       prediction are refitted starting from the prediction, and the better-scoring fit
       is kept (a free search can land on the far side of focus when the induced
       astigmatism crosses it).
    3. CTF fits refined with the new Cs, tableau again, until Cs changes by < 0.02 %.
    """
    from temcal.physics.aberrations import defocus_astigmatism_from_c1_a1

    t = np.asarray(tilts_mrad, dtype=float)
    prepared: list[object] = []
    cs = float(cs_start_mm)
    if start_fit is None:
        d = estimate_tilt_defoci(
            images, pixel_size_A=pixel_size_A, voltage_kV=voltage_kV, cs_mm=cs,
            amplitude_contrast=amplitude_contrast, prepared=prepared, progress=progress,
        )  # fmt: skip
    else:
        tau0 = _tilts_complex(t, start_fit.frame_rotation_deg, start_fit.mirror)
        pc1, pa1 = calculate_tilt_induced_c1_a1_A(tau0, start_fit.aberrations)
        pred0 = [
            defocus_astigmatism_from_c1_a1(c, complex(a)) for c, a in zip(pc1, pa1, strict=True)
        ]
        d = estimate_tilt_defoci(
            images, pixel_size_A=pixel_size_A, voltage_kV=voltage_kV, cs_mm=cs,
            amplitude_contrast=amplitude_contrast, prepared=prepared, start_defoci=pred0,
            progress=progress,
        )  # fmt: skip
        poor = np.flatnonzero(d.score < 0.8 * float(np.median(d.score)))
        if poor.size:
            df = estimate_tilt_defoci(
                images[poor], pixel_size_A=pixel_size_A, voltage_kV=voltage_kV, cs_mm=cs,
                amplitude_contrast=amplitude_contrast, prepared=[prepared[i] for i in poor],
            )  # fmt: skip
            c1n, a1n, sn, scn = d.c1_A.copy(), d.a1_A.copy(), d.sigma_A.copy(), d.score.copy()
            for k, i in enumerate(poor):
                if df.score[k] > scn[i]:
                    c1n[i], a1n[i], sn[i], scn[i] = (
                        df.c1_A[k],
                        df.a1_A[k],
                        df.sigma_A[k],
                        df.score[k],
                    )
            d = TiltDefoci(c1n, a1n, sn, scn, cs)
    fit, keep = _robust_tableau(d, t, mirror)
    n_refit = 0
    if not np.all(keep):
        pred = [defocus_astigmatism_from_c1_a1(m[0], complex(m[1], m[2])) for m in fit.modelled]
        d2 = estimate_tilt_defoci(
            images, pixel_size_A=pixel_size_A, voltage_kV=voltage_kV, cs_mm=cs,
            amplitude_contrast=amplitude_contrast, prepared=prepared, start_defoci=pred,
        )  # fmt: skip
        better = (d2.score > d.score) & ~keep
        n_refit = int(better.sum())
        d = TiltDefoci(
            np.where(better, d2.c1_A, d.c1_A),
            np.where(better, d2.a1_A, d.a1_A),
            np.where(better, d2.sigma_A, d.sigma_A),
            np.where(better, d2.score, d.score),
            cs,
        )
        fit, keep = _robust_tableau(d, t, mirror)
    for _ in range(max(0, max_iterations - 1)):
        if not 0.05 < fit.cs_mm < 20:
            raise CalibrationError(
                f"the tableau fit gives an implausible Cs of {fit.cs_mm:.3g} mm; check the "
                "tilt magnitudes (mrad) and the pixel size"
            )
        if abs(fit.cs_mm - cs) / cs < 2e-4:
            break
        cs = fit.cs_mm
        starts = [
            defocus_astigmatism_from_c1_a1(c, complex(a))
            for c, a in zip(d.c1_A, d.a1_A, strict=True)
        ]
        d = estimate_tilt_defoci(
            images, pixel_size_A=pixel_size_A, voltage_kV=voltage_kV, cs_mm=cs,
            amplitude_contrast=amplitude_contrast, prepared=prepared, start_defoci=starts,
            progress=progress,
        )  # fmt: skip
        fit, keep = _robust_tableau(d, t, mirror)
    return TiltFit(
        **{
            **fit.__dict__,
            "extra": {
                **fit.extra,
                "n_outliers_left_out": int((~keep).sum()),
                "n_refit_from_prediction": n_refit,
                "ctf_cs_mm": cs,
                "ctf_scores": d.score,
            },
        }
    )


def analyse_tilt_series(
    images: np.ndarray,
    tilts_mrad: np.ndarray,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    methods: tuple[str, ...] = ("shift", "tableau"),
    cs_nominal_mm: float | None = None,
    pixel_size_rel_sigma: float = 0.0,
    tilt_rel_sigma: float = 0.0,
    drift_step_A: float = 0.5,
    mirror: bool | None = None,
    amplitude_contrast: float = 0.07,
    taper: float = 0.1,
    max_cs_iterations: int = 4,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, TiltFit], dict[str, object]]:
    """Run the image-shift and/or tableau methods on a tilt series.

    The tableau iterates Cs: per-image CTF fits with the nominal Cs (2.7 mm when none is
    given, or the image-shift result when available), tableau fit, CTF refits with the new
    Cs until it changes by less than 0.05 %.

    Returns
    -------
    tuple
        ``(fits, result)``: the :class:`TiltFit` per method and the JSON document of
        :func:`tilt_result_json`.
    """
    t = np.asarray(tilts_mrad, dtype=float)
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim != 3 or len(imgs) != len(t):
        raise InputError("images must be (n, ny, nx) with one tilt per image")
    unknown = [m for m in methods if m not in ("shift", "tableau")]
    if unknown or not methods:
        raise InputError(f"unknown method(s) {unknown}; use shift, tableau or both")
    for m in methods:  # fail fast on an unusable design
        select_terms(t, method=m, include_higher=None)
    fits: dict[str, TiltFit] = {}
    if "shift" in methods:
        meas = estimate_tilt_shifts(
            imgs, t, pixel_size_A=pixel_size_A, taper=taper, progress=progress
        )
        fits["shift"] = fit_tilt_shifts(meas, t, drift_step_A=drift_step_A, mirror=mirror)
    if "tableau" in methods:
        cs = cs_nominal_mm if cs_nominal_mm is not None else 2.7
        if "shift" in fits and 0.05 < fits["shift"].cs_mm < 20:
            cs = fits["shift"].cs_mm
        fits["tableau"] = fit_tableau_from_images(
            imgs, t, pixel_size_A=pixel_size_A, voltage_kV=voltage_kV, cs_start_mm=cs,
            amplitude_contrast=amplitude_contrast, mirror=mirror,
            max_iterations=max_cs_iterations, start_fit=fits.get("shift"), progress=progress,
        )  # fmt: skip
    result = tilt_result_json(
        fits,
        pixel_size_rel_sigma=pixel_size_rel_sigma,
        tilt_rel_sigma=tilt_rel_sigma,
        cs_nominal_mm=cs_nominal_mm,
    )
    result["n_images"] = len(imgs)
    return fits, result
