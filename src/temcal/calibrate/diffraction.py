"""Camera length, pattern centre, ring ellipticity and beam-tilt coils from gold diffraction.

Model
-----
A pattern of polycrystalline gold is a set of concentric rings that share one centre
``c`` and one shape: pixel ``p`` has the isotropic-equivalent radius
``rho(p) = |D^{-1} (p - c)|`` with ``D = exp(H)``, ``H = [[g1, g2], [g2, -g1]]`` (symmetric,
det ``D`` = 1). ``D`` stretches by ``exp(eta)``, ``eta = |g|``, along the major angle
``phi = atan2(g2, g1) / 2`` and shrinks by the same factor across it, so the ring
ellipticity is ``100 (exp(2 eta) - 1)`` % and every ring is an ellipse with these axes.
Ring ``hkl`` sits at ``rho = Q / d_hkl``: ``Q`` (px Å) is the isotropic-equivalent ring
radius per Å⁻¹ and ``1 / Q`` is the reciprocal pixel size (Å⁻¹ per pixel). With the
detector pixel pitch ``s`` the camera length is ``L = Q s / lambda`` (small angle,
``R = L lambda / d``); ``L exp(+-eta)`` are its values along the major and minor axes.

Fit
---
1. Rough centre without a guess: the pattern is point-symmetric about its centre, so the
   self-convolution of a high-passed, log-scaled copy of the (binned) pattern peaks at
   twice the centre.
2. Rings without a guess: peaks of the radial profile (pixel-centre radii; every bin is
   labelled by the mean radius of its pixels, so no lower-edge bias) are matched to the
   gold ratio pattern ``sqrt(3) : sqrt(4) : sqrt(8) : sqrt(11) : ...``; scales that leave
   strong inner rings unexplained are penalised (this rejects the half scale, whose
   ``sqrt(4 n)`` pattern also contains every gold ring).
3. Joint model fit of the pixels near every found ring (weighted least squares, Poisson
   weights from the model of a first pass): shared centre ``(cx, cy)`` and shape
   ``(g1, g2)``, a radius and Gaussian width per ring, the ring amplitudes and a quadratic
   background in ``rho`` per group of overlapping rings (linear, solved at every step).
   Each ring profile is a Gaussian in ``rho`` multiplied by the known intensity slope
   across a broad ring, ``f(q)^2 exp(-B q^2/2) / q``
   (:func:`temcal.physics.gold_diffraction.ring_shape_weight`), so the steep gold
   scattering factor and the ``1/q`` ring density do not pull the radius inward.
   Large patterns are binned (sum of ``b x b`` pixels, coordinates at the block centres)
   so that at most ~4e5 pixels enter the fit, keeping rings at least ~1 px wide.
4. ``Q`` is the weighted mean of ``r_k d_k`` over the rings (full covariance of the ring
   radii). Its 95 % interval is ``1.96`` standard errors from the fit covariance (scaled by
   the reduced chi-square of the pixel fit), multiplied by the Birge ratio
   ``sqrt(chi2 / (K - 1))`` of the ring-to-ring scatter when that exceeds 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, signal

from temcal.errors import CalibrationError, InputError
from temcal.io.images import check_image
from temcal.physics.gold import LATTICE_CONSTANT_293K_A, check_lattice_constant_A
from temcal.physics.gold_diffraction import GoldRing, gold_rings, ring_shape_weight
from temcal.physics.wavelength import calculate_wavelength_A

__all__ = [
    "CameraLengthResult",
    "RingFit",
    "TiltCalibrationResult",
    "check_detector_pixel_um",
    "estimate_camera_length",
    "estimate_tilt_calibration",
]

_Z95 = 1.959963984540054
_MAX_FIT_PIXELS = 150_000


@dataclass(frozen=True)
class RingFit:
    """One fitted gold ring.

    Attributes
    ----------
    label : str
        Miller indices, e.g. ``"111"``.
    d_A : float
        Interplanar spacing used (Å).
    radius_px, radius_sigma_px : float
        Isotropic-equivalent radius ``rho`` and its standard error (px).
    width_px : float
        Gaussian rms width (px).
    amplitude : float
        Peak height above the background (counts per pixel).
    scale_px_A : float
        ``radius_px * d_A``: this ring's estimate of ``Q`` (px Å).
    """

    label: str
    d_A: float
    radius_px: float
    radius_sigma_px: float
    width_px: float
    amplitude: float
    scale_px_A: float


@dataclass(frozen=True)
class CameraLengthResult:
    """Camera length and pattern geometry from the gold rings of one pattern.

    Attributes
    ----------
    camera_length_mm, camera_length_ci95_mm : float
        Camera length (isotropic equivalent: geometric mean of major and minor) and the
        half-width of its 95 % interval (mm). ``nan`` when no pixel pitch was given.
    reciprocal_pixel_per_A, reciprocal_pixel_ci95_per_A : float
        Reciprocal-space size of a pixel (Å⁻¹ per pixel) and its 95 % half-width.
    center_x_px, center_y_px : float
        Pattern centre (px; pixel ``[row, col]`` has its centre at ``x = col, y = row``).
    center_ci95_px : tuple of float
        95 % half-widths of ``center_x_px``, ``center_y_px``.
    center_cov_px2 : numpy.ndarray
        2x2 covariance of the centre (px²).
    ellipticity_percent, ellipticity_ci95_percent : float
        ``100 (major / minor - 1)`` of the rings and its 95 % half-width.
    major_angle_deg, major_angle_ci95_deg : float
        Direction of the rings' major axis from +x toward +y, in [0, 180).
    distortion_matrix : numpy.ndarray
        ``D`` (2x2, det 1): pattern displacement = ``D`` times the isotropic displacement.
    scale_px_A, scale_sigma_px_A : float
        ``Q`` (isotropic-equivalent ring radius per Å⁻¹, px Å) and its standard error.
    wavelength_A, lattice_constant_A, detector_pixel_um, voltage_kV : float
        Inputs used.
    rings : tuple of RingFit
        The fitted rings.
    n_pixels : int
        Number of (binned) pixels in the fit.
    binning : int
        Binning factor used for the fit.
    reduced_chi2 : float
        Reduced chi-square of the pixel fit (Poisson weights).
    birge_ratio : float
        ``sqrt(chi2 / (K - 1))`` of the ring-to-ring scatter of ``Q`` (1 when one ring).
    ci_method : str
        How the 95 % intervals were obtained.
    method : str
        Description of the fit.
    """

    camera_length_mm: float
    camera_length_ci95_mm: float
    reciprocal_pixel_per_A: float
    reciprocal_pixel_ci95_per_A: float
    center_x_px: float
    center_y_px: float
    center_ci95_px: tuple[float, float]
    center_cov_px2: np.ndarray
    ellipticity_percent: float
    ellipticity_ci95_percent: float
    major_angle_deg: float
    major_angle_ci95_deg: float
    distortion_matrix: np.ndarray
    scale_px_A: float
    scale_sigma_px_A: float
    wavelength_A: float
    lattice_constant_A: float
    detector_pixel_um: float
    voltage_kV: float
    rings: tuple[RingFit, ...]
    n_pixels: int
    binning: int
    reduced_chi2: float
    birge_ratio: float
    ci_method: str
    method: str = "joint ellipse fit of gold rings (shared centre and shape)"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary (the keys of ``temcal camera-length --json``)."""
        return {
            "camera_length_mm": self.camera_length_mm,
            "camera_length_ci95_mm": self.camera_length_ci95_mm,
            "reciprocal_pixel_per_A": self.reciprocal_pixel_per_A,
            "center_x_px": self.center_x_px,
            "center_y_px": self.center_y_px,
            "ellipticity_percent": self.ellipticity_percent,
            "major_angle_deg": self.major_angle_deg,
            "reciprocal_pixel_ci95_per_A": self.reciprocal_pixel_ci95_per_A,
            "center_ci95_px": list(self.center_ci95_px),
            "ellipticity_ci95_percent": self.ellipticity_ci95_percent,
            "major_angle_ci95_deg": self.major_angle_ci95_deg,
            "camera_length_major_mm": self.camera_length_mm * self._stretch,
            "camera_length_minor_mm": self.camera_length_mm / self._stretch,
            "voltage_kV": self.voltage_kV,
            "wavelength_A": self.wavelength_A,
            "lattice_constant_A": self.lattice_constant_A,
            "detector_pixel_um": self.detector_pixel_um,
            "rings": [
                {
                    "hkl": r.label,
                    "d_A": r.d_A,
                    "radius_px": r.radius_px,
                    "radius_sigma_px": r.radius_sigma_px,
                    "width_px": r.width_px,
                    "scale_px_A": r.scale_px_A,
                }
                for r in self.rings
            ],
            "n_rings": len(self.rings),
            "n_pixels": self.n_pixels,
            "binning": self.binning,
            "reduced_chi2": self.reduced_chi2,
            "birge_ratio": self.birge_ratio,
            "ci_method": self.ci_method,
            "method": self.method,
        }

    @property
    def _stretch(self) -> float:
        return math.sqrt(1.0 + self.ellipticity_percent / 100.0)


@dataclass(frozen=True)
class TiltCalibrationResult:
    """Beam-tilt coil calibration from diffraction patterns at known coil settings.

    ``tilt_mrad = mrad_per_unit @ (coil_x, coil_y) + offset_mrad``, the tilt measured along
    the pattern's x and y through the gold ring radius (``lambda / d`` rad per ring radius).

    ``mrad_per_unit`` is split by the polar decomposition ``M = U P`` (``U`` orthogonal,
    ``P`` symmetric positive definite). When ``det M > 0``, ``U = R(rotation)``; when
    ``det M < 0`` (a mirror between the coil and pattern frames, ``mirrored`` true),
    ``U = R(rotation) diag(1, -1)``: coil y is flipped, then the vector is rotated.
    ``scale_mrad_per_unit = sqrt(|det M|)`` (geometric mean of the singular values),
    ``anisotropy_percent = 100 (s_max / s_min - 1)``.

    Attributes
    ----------
    mrad_per_unit : numpy.ndarray
        ``[[m_xx, m_xy], [m_yx, m_yy]]`` (mrad per coil unit).
    mrad_per_unit_ci95 : numpy.ndarray
        95 % half-widths of the entries.
    offset_mrad : numpy.ndarray
        Tilt at coil (0, 0), relative to the pattern-frame origin used (mrad); only
        differences of tilts are physical here.
    scale_mrad_per_unit, scale_ci95_mrad_per_unit : float
        Scale and its 95 % half-width.
    rotation_deg, rotation_ci95_deg : float
        Rotation from the coil frame to the pattern frame, from +x toward +y, in [0, 360).
    mirrored : bool
        True when ``det M < 0``.
    anisotropy_percent : float
        Difference of the two singular values, ``100 (s_max / s_min - 1)``.
    mrad_per_px : float
        Tilt per pixel of central-beam displacement (isotropic equivalent, mrad/px).
    displacements_px : numpy.ndarray
        Pattern-centre positions ``(n, 2)`` relative to the fitted zero-coil position (px).
    tilts_mrad : numpy.ndarray
        Measured tilts ``(n, 2)`` relative to the fitted offset (mrad).
    residuals_mrad : numpy.ndarray
        Measured minus fitted tilts ``(n, 2)`` (mrad).
    coil_settings : numpy.ndarray
        Coil settings ``(n, 2)``.
    patterns : tuple of CameraLengthResult
        Per-pattern ring fits.
    n_patterns : int
        Number of patterns used.
    ci_method : str
        How the intervals were obtained.
    """

    mrad_per_unit: np.ndarray
    mrad_per_unit_ci95: np.ndarray
    offset_mrad: np.ndarray
    scale_mrad_per_unit: float
    scale_ci95_mrad_per_unit: float
    rotation_deg: float
    rotation_ci95_deg: float
    mirrored: bool
    anisotropy_percent: float
    mrad_per_px: float
    displacements_px: np.ndarray
    tilts_mrad: np.ndarray
    residuals_mrad: np.ndarray
    coil_settings: np.ndarray
    patterns: tuple[CameraLengthResult, ...]
    n_patterns: int
    ci_method: str
    method: str = "weighted linear fit of ring-centre tilts against coil settings"
    paths: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary (the keys of ``temcal tilt-calibrate --json``)."""
        return {
            "mrad_per_unit": self.mrad_per_unit.tolist(),
            "scale_mrad_per_unit": self.scale_mrad_per_unit,
            "rotation_deg": self.rotation_deg,
            "mrad_per_unit_ci95": self.mrad_per_unit_ci95.tolist(),
            "scale_ci95_mrad_per_unit": self.scale_ci95_mrad_per_unit,
            "rotation_ci95_deg": self.rotation_ci95_deg,
            "mirrored": self.mirrored,
            "anisotropy_percent": self.anisotropy_percent,
            "offset_mrad": self.offset_mrad.tolist(),
            "mrad_per_px": self.mrad_per_px,
            "n_patterns": self.n_patterns,
            "patterns": [
                {
                    "path": self.paths[i] if i < len(self.paths) else None,
                    "coil_x": float(self.coil_settings[i, 0]),
                    "coil_y": float(self.coil_settings[i, 1]),
                    "center_x_px": p.center_x_px,
                    "center_y_px": p.center_y_px,
                    "tilt_x_mrad": float(self.tilts_mrad[i, 0]),
                    "tilt_y_mrad": float(self.tilts_mrad[i, 1]),
                    "residual_x_mrad": float(self.residuals_mrad[i, 0]),
                    "residual_y_mrad": float(self.residuals_mrad[i, 1]),
                    "camera_length_mm": p.camera_length_mm,
                }
                for i, p in enumerate(self.patterns)
            ],
            "ci_method": self.ci_method,
            "method": self.method,
        }


# --------------------------------------------------------------------------- helpers


def check_detector_pixel_um(detector_pixel_um: float) -> float:
    """Validate a detector pixel pitch in µm (0.5-1000 µm)."""
    v = float(detector_pixel_um)
    if not math.isfinite(v) or not 0.5 <= v <= 1000.0:
        raise InputError(
            f"detector pixel pitch {detector_pixel_um!r} µm is not plausible; give the physical "
            "pixel size of the camera in µm (e.g. 14 or 15 for CCDs, 5 for direct detectors)"
        )
    return v


def _bin(image: np.ndarray, b: int) -> np.ndarray:
    if b == 1:
        return image
    ny, nx = (image.shape[0] // b) * b, (image.shape[1] // b) * b
    return image[:ny, :nx].reshape(ny // b, b, nx // b, b).sum(axis=(1, 3))


def _rough_center(image: np.ndarray) -> tuple[float, float]:
    """Centre of point symmetry: the self-convolution peaks at twice the centre."""
    b = max(1, math.ceil(max(image.shape) / 512))
    img = _bin(image, b)
    work = np.log1p(np.maximum(img - float(np.percentile(img, 1)), 0.0))
    work = work - ndimage.gaussian_filter(work, 8.0)
    work = work - float(work.mean())
    ny, nx = work.shape
    fy, fx = 2 * ny, 2 * nx
    spec = np.fft.rfft2(work, s=(fy, fx))
    conv = np.fft.irfft2(spec * spec, s=(fy, fx))
    iy, ix = np.unravel_index(int(np.argmax(conv)), conv.shape)

    def _parabola(m1: float, m0: float, p1: float) -> float:
        den = m1 - 2 * m0 + p1
        return 0.0 if den == 0 else 0.5 * (m1 - p1) / den

    dy = _parabola(conv[iy - 1, ix], conv[iy, ix], conv[(iy + 1) % fy, ix]) if iy > 0 else 0.0
    dx = _parabola(conv[iy, ix - 1], conv[iy, ix], conv[iy, (ix + 1) % fx]) if ix > 0 else 0.0
    cxb, cyb = (ix + dx) / 2.0, (iy + dy) / 2.0
    return cxb * b + (b - 1) / 2.0, cyb * b + (b - 1) / 2.0


def _radial_profile(
    image: np.ndarray,
    cx: float,
    cy: float,
    valid: np.ndarray | None,
    dinv: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity in 1-px (elliptical) radius bins, labelled by their mean radius."""
    ny, nx = image.shape
    y, x = np.ogrid[:ny, :nx]
    if dinv is None:
        r = np.hypot(x - cx, y - cy)
    else:
        vx, vy = x - cx, y - cy
        r = np.hypot(dinv[0, 0] * vx + dinv[0, 1] * vy, dinv[1, 0] * vx + dinv[1, 1] * vy)
    idx = r.astype(np.int64).ravel()
    w = np.ones(idx.size) if valid is None else valid.ravel().astype(float)
    n = np.bincount(idx, weights=w)
    s = np.bincount(idx, weights=image.ravel() * w)
    sr = np.bincount(idx, weights=r.ravel() * w)
    good = n > 0
    return sr[good] / n[good], s[good] / n[good]


@dataclass(frozen=True)
class _Match:
    rings: list[GoldRing]
    radii: list[float]
    widths: list[float]
    scale: float
    tied: list[tuple[int, float]] = field(default_factory=list)


def _match_gold(
    radius: np.ndarray,
    profile: np.ndarray,
    rings: list[GoldRing],
    r_max: float,
    *,
    consistency: float = 0.005,
) -> _Match:
    """Find profile peaks and assign them to gold rings (no prior scale needed)."""
    if radius.size < 20:
        raise CalibrationError("the pattern is too small to hold gold rings")
    step = float(np.median(np.diff(radius)))
    logp = np.log(np.maximum(profile, 1e-9) + 1.0)
    base = ndimage.median_filter(logp, size=max(9, int(25 / step) | 1), mode="nearest")
    hp = logp - base
    # Local noise of the profile (bins near the centre hold few pixels).
    dev = np.abs(np.diff(hp, prepend=hp[0]))
    noise = 1.4826 / math.sqrt(2) * ndimage.median_filter(dev, size=51, mode="nearest") + 1e-12
    peaks, _ = signal.find_peaks(hp, prominence=0.0, distance=2)
    prom_all = signal.peak_prominences(hp, peaks)[0] if peaks.size else np.zeros(0)
    keep = (
        (prom_all > 6.0 * noise[peaks])
        & (prom_all > 0.01 * (prom_all.max() if prom_all.size else 0.0))
        & (radius[peaks] > 4.0)
        & (radius[peaks] < r_max)
    )
    peaks = peaks[keep]
    if peaks.size < 2:
        raise CalibrationError(
            "no gold rings found in the pattern (fewer than two ring-like peaks in the radial "
            "profile); is it a diffraction pattern of polycrystalline gold?"
        )
    prom = signal.peak_prominences(hp, peaks)[0]
    widths = signal.peak_widths(hp, peaks, rel_height=0.5)[0] * step
    pr = radius[peaks]
    sqrt_n = np.array([math.sqrt(r.n) for r in rings])
    best: tuple[float, float, list[int], list[int]] | None = None
    for _i, r_i in enumerate(pr):
        for k in range(min(4, len(rings))):
            unit = r_i / sqrt_n[k]  # radius per sqrt(n)
            pred = unit * sqrt_n
            in_field = pred < r_max
            tol = np.maximum(2.0 * step, 0.015 * pred)
            matched_peaks: list[int] = []
            matched_rings: list[int] = []
            for j in np.nonzero(in_field)[0]:
                dist = np.abs(pr - pred[j])
                m = int(np.argmin(dist))
                if dist[m] < tol[j] and m not in matched_peaks:
                    matched_peaks.append(m)
                    matched_rings.append(int(j))
            # Three rings, or the 111/200 pair when nothing else of gold fits on the detector.
            if (
                len(matched_rings) < min(3, int(np.count_nonzero(in_field)))
                or len(matched_rings) < 2
            ):
                continue
            # Refine the scale on the matched peaks; gold ratios hold to a fraction of a
            # percent (ellipticity smears a ring but leaves its mean radius).
            rr = pr[matched_peaks]
            sn = sqrt_n[matched_rings]
            unit = float(np.sum(rr * sn) / np.sum(sn * sn))
            rel = np.abs(rr / (unit * sn) - 1.0)
            if np.any(rel > np.maximum(consistency, 1.5 * step / rr)):
                continue
            pred = unit * sqrt_n
            in_field = pred < r_max
            strong = [j for j in range(min(4, len(rings))) if in_field[j] and pred[j] > 4.0]
            missing = sum(1 for j in strong if j not in matched_rings)
            unexplained = sum(
                math.sqrt(prom[m]) for m in range(len(pr)) if m not in matched_peaks
            ) / math.sqrt(prom.max())
            score = (
                sum(math.sqrt(prom[m]) for m in matched_peaks) / math.sqrt(prom.max())
                - 2.0 * missing
                - 0.5 * unexplained
            )
            if best is None or score > best[0]:
                best = (score, unit, matched_peaks, matched_rings)
    if best is None or best[0] <= 1.0:
        raise CalibrationError(
            "no gold rings found: the radial-profile peaks do not follow the gold ratios "
            "sqrt(3):sqrt(4):sqrt(8):sqrt(11)...; is it a pattern of polycrystalline gold?"
        )
    _, unit, mp, mr = best
    order = np.argsort(mr)
    return _Match(
        rings=[rings[mr[o]] for o in order],
        radii=[float(pr[mp[o]]) for o in order],
        widths=[float(widths[mp[o]]) for o in order],
        scale=float(unit),
    )


def _initial_ellipse(
    image: np.ndarray,
    valid: np.ndarray | None,
    cx: float,
    cy: float,
    match: _Match,
    gaps: Sequence[float],
    *,
    n_sectors: int = 36,
) -> tuple[float, float, float, float, list[float]]:
    """Sector-wise ring peaks and a linear conic fit with a shared centre and shape.

    Returns ``cx, cy, g1, g2`` and the ring radii ``rho_k``. Falls back to the inputs (circle)
    when too few sector peaks are found.
    """
    ny, nx = image.shape
    y, x = np.mgrid[:ny, :nx].astype(float)
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy)
    sector = ((np.arctan2(dy, dx) + math.pi) / (2 * math.pi) * n_sectors).astype(np.int64)
    sector = np.clip(sector, 0, n_sectors - 1)
    ok = np.ones_like(r, dtype=bool) if valid is None else valid
    pts: list[tuple[float, float, int]] = []
    for k, (rk, wk) in enumerate(zip(match.radii, match.widths, strict=True)):
        half = min(max(2.0 * wk, 0.03 * rk, 4.0), 0.5 * gaps[k])
        band = ok & (np.abs(r - rk) < half)
        nb = math.ceil(2 * half) + 1
        rbin = np.clip((r[band] - (rk - half)).astype(np.int64), 0, nb - 1)
        idx = sector[band] * nb + rbin
        cnt = np.bincount(idx, minlength=n_sectors * nb).reshape(n_sectors, nb)
        tot = np.bincount(idx, weights=image[band], minlength=n_sectors * nb).reshape(n_sectors, nb)
        rsum = np.bincount(idx, weights=r[band], minlength=n_sectors * nb).reshape(n_sectors, nb)
        for j in range(n_sectors):
            good = cnt[j] > 0
            if good.sum() < 5:
                continue
            prof = tot[j, good] / cnt[j, good]
            rad = rsum[j, good] / cnt[j, good]
            prof = ndimage.uniform_filter1d(prof, 3, mode="nearest")
            m = int(np.argmax(prof))
            if m == 0 or m == prof.size - 1:
                continue
            den = prof[m - 1] - 2 * prof[m] + prof[m + 1]
            frac = 0.5 * (prof[m - 1] - prof[m + 1]) / den if den < 0 else 0.0
            rpk = rad[m] + frac * (rad[m + 1] - rad[m - 1]) / 2.0
            ang = (j + 0.5) / n_sectors * 2 * math.pi - math.pi
            pts.append((cx + rpk * math.cos(ang), cy + rpk * math.sin(ang), k))
    kk = len(match.radii)
    if len(pts) < 6 + kk:
        return cx, cy, 0.0, 0.0, list(match.radii)
    arr = np.array(pts)
    px, py, ring = arr[:, 0] - cx, arr[:, 1] - cy, arr[:, 2].astype(int)
    # s11 (x^2 - y^2) + 2 s12 x y - 2 u1 x - 2 u2 y - t_k = -2 y^2, with s22 = 2 - s11.
    a_mat = np.zeros((px.size, 4 + kk))
    a_mat[:, 0] = px * px - py * py
    a_mat[:, 1] = 2 * px * py
    a_mat[:, 2] = -2 * px
    a_mat[:, 3] = -2 * py
    a_mat[np.arange(px.size), 4 + ring] = -1.0
    rhs = -2 * py * py
    present = np.unique(ring)
    cols = [0, 1, 2, 3, *[4 + int(i) for i in present]]
    sol, *_ = np.linalg.lstsq(a_mat[:, cols], rhs, rcond=None)
    s11, s12 = sol[0], sol[1]
    smat = np.array([[s11, s12], [s12, 2.0 - s11]])
    det = float(np.linalg.det(smat))
    if det <= 0:
        return cx, cy, 0.0, 0.0, list(match.radii)
    centre = np.linalg.solve(smat, sol[2:4])
    evals, evecs = np.linalg.eigh(smat / math.sqrt(det))
    h = -0.5 * (evecs @ np.diag(np.log(evals)) @ evecs.T)
    csc = float(centre @ smat @ centre)
    radii = list(match.radii)
    for j, i in enumerate(present):
        val = (sol[4 + j] + csc) / math.sqrt(det)
        if val > 0 and abs(math.sqrt(val) - radii[int(i)]) < 0.25 * gaps[int(i)]:
            radii[int(i)] = math.sqrt(val)
    if np.hypot(*centre) > 0.2 * min(radii):
        return cx, cy, 0.0, 0.0, list(match.radii)
    return cx + float(centre[0]), cy + float(centre[1]), float(h[0, 0]), float(h[0, 1]), radii


def _shape_matrix_inv(g1: float, g2: float) -> np.ndarray:
    """``D^{-1} = exp(-H)``, ``H = [[g1, g2], [g2, -g1]]``."""
    eta = math.hypot(g1, g2)
    sh = math.sinh(eta) / eta if eta > 1e-12 else 1.0
    h = np.array([[g1, g2], [g2, -g1]])
    return math.cosh(eta) * np.eye(2) - sh * h


class _RingModel:
    """Pixels near the rings and the ring model evaluated on them (variable projection)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        data: np.ndarray,
        group: np.ndarray,
        comp_group: list[int],
        n_groups: int,
        q_scale: float,
        n_free: int,
        tied: Sequence[tuple[int, float]],
    ) -> None:
        order = np.argsort(group, kind="stable")
        self.order = order
        x, y, data, group = x[order], y[order], data[order], group[order]
        self.x, self.y, self.data = x, y, data
        self.n_groups = n_groups
        self.q_scale = q_scale
        self.n_free = n_free
        # Component c: radius = ratio * r[src], width = sigma[src] (free rings: ratio 1).
        self.src = list(range(n_free)) + [t[0] for t in tied]
        self.ratio = [1.0] * n_free + [t[1] for t in tied]
        self.sqrt_w = 1.0 / np.sqrt(np.maximum(data, 1.0))
        bounds = np.searchsorted(group, np.arange(n_groups + 1))
        self.index = [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(n_groups)]
        self.members = [
            [c for c in range(len(comp_group)) if comp_group[c] == g] for g in range(n_groups)
        ]

    def rho(self, p: np.ndarray) -> np.ndarray:
        dinv = _shape_matrix_inv(p[2], p[3])
        vx, vy = self.x - p[0], self.y - p[1]
        return np.hypot(dinv[0, 0] * vx + dinv[0, 1] * vy, dinv[1, 0] * vx + dinv[1, 1] * vy)

    def evaluate(
        self, p: np.ndarray, *, with_jacobian: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """Weighted residuals, normal matrix ``J^T J`` and ``J^T r`` (optional), amplitudes.

        The Jacobian is the variable-projection one (Kaufman): each group's block is projected
        onto the complement of its linear basis (background and ring amplitudes).
        """
        k = self.n_free
        radii, sig = p[4 : 4 + k], np.exp(np.clip(p[4 + k : 4 + 2 * k], -3.0, 6.0))
        rc = [self.ratio[c] * radii[self.src[c]] for c in range(len(self.src))]
        sc = [sig[self.src[c]] for c in range(len(self.src))]
        rho = self.rho(p)
        res = np.empty_like(rho)
        amps = np.zeros(k)
        normal = np.zeros((p.size, p.size)) if with_jacobian else None
        grad = np.zeros(p.size) if with_jacobian else None
        drho: list[np.ndarray] = []
        if with_jacobian:
            for j in range(4):
                step = 1e-4 if j < 2 else 1e-6
                dp = np.zeros_like(p)
                dp[j] = step
                drho.append((self.rho(p + dp) - self.rho(p - dp)) / (2 * step))
        for g in range(self.n_groups):
            sl = self.index[g]
            members = self.members[g]
            r = rho[sl]
            if r.size < 3 + len(members) + 1:
                res[sl] = 0.0
                continue
            w, dlnw = ring_shape_weight(r / self.q_scale)
            dlnw = dlnw / self.q_scale
            centre = float(np.mean(r))
            span = max(float(np.ptp(r)) / 2.0, 1.0)
            t = (r - centre) / span
            gauss = [w * np.exp(-0.5 * ((r - rc[c]) / sc[c]) ** 2) for c in members]
            a = np.stack([np.ones_like(t), t, t * t, *gauss], axis=1)
            sw = self.sqrt_w[sl]
            aw = a * sw[:, None]
            gram = aw.T @ aw
            gram[np.diag_indices_from(gram)] += 1e-12 * float(np.trace(gram)) + 1e-300
            try:
                chol = np.linalg.cholesky(gram)
            except np.linalg.LinAlgError:
                gram[np.diag_indices_from(gram)] += 1e-8 * float(np.trace(gram))
                chol = np.linalg.cholesky(gram)

            def _solve(rhs: np.ndarray, chol: np.ndarray = chol) -> np.ndarray:
                return np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))

            c = _solve(aw.T @ (self.data[sl] * sw))
            rg = (self.data[sl] - a @ c) * sw
            res[sl] = rg
            for j, comp in enumerate(members):
                if comp < k:
                    amps[comp] = c[3 + j]
            if normal is None or grad is None:
                continue
            srcs = sorted({self.src[comp] for comp in members})
            cols = [0, 1, 2, 3, *[4 + i for i in srcs], *[4 + k + i for i in srcs]]
            pos = {col: n for n, col in enumerate(cols)}
            block = np.zeros((r.size, len(cols)))
            dm = (c[1] + 2.0 * c[2] * t) / span
            for j, comp in enumerate(members):
                i = self.src[comp]
                gi = c[3 + j] * gauss[j]
                u = (r - rc[comp]) / sc[comp]
                dm = dm + gi * (dlnw - u / sc[comp])
                block[:, pos[4 + i]] -= gi * u / sc[comp] * self.ratio[comp] * sw
                block[:, pos[4 + k + i]] -= gi * u * u * sw
            for j in range(4):
                block[:, j] = -dm * drho[j][sl] * sw
            block -= aw @ _solve(aw.T @ block)
            ix = np.asarray(cols)
            normal[np.ix_(ix, ix)] += block.T @ block
            grad[ix] += block.T @ rg
        return res, normal, grad, amps

    def model(self, p: np.ndarray) -> np.ndarray:
        res, _, _, _ = self.evaluate(p)
        return self.data - res / self.sqrt_w


def _levenberg_marquardt(
    model: _RingModel, p0: np.ndarray, *, max_iter: int = 40
) -> tuple[np.ndarray, float, np.ndarray]:
    """Minimise the weighted residuals; returns parameters, cost (sum of squares), J^T J."""
    p = p0.copy()
    res, a, grad, _ = model.evaluate(p, with_jacobian=True)
    assert a is not None and grad is not None
    cost = float(res @ res)
    lam = 1e-3
    for _ in range(max_iter):
        diag = np.maximum(np.diag(a), 1e-12)
        improved = False
        for _ in range(12):
            try:
                step = -np.linalg.solve(a + lam * np.diag(diag), grad)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            trial = p + step
            res_t, _, _, _ = model.evaluate(trial)
            cost_t = float(res_t @ res_t)
            if np.isfinite(cost_t) and cost_t < cost:
                improved = True
                break
            lam *= 5.0
        if not improved:
            break
        gain = cost - cost_t
        p = trial
        cost = cost_t
        lam = max(lam / 5.0, 1e-9)
        res, a, grad, _ = model.evaluate(p, with_jacobian=True)
        assert a is not None and grad is not None
        # Converged when the step is a small fraction of every parameter's standard error.
        reduced = cost / max(res.size - p.size, 1)
        try:
            sd = np.sqrt(np.maximum(np.diag(np.linalg.inv(a)) * reduced, 1e-300))
        except np.linalg.LinAlgError:
            sd = np.full(p.size, np.inf)
        if np.all(np.abs(step) < 0.02 * sd) or gain < 1e-6 * cost:
            break
    return p, cost, a


def _select(
    shape: tuple[int, int],
    cx: float,
    cy: float,
    g: tuple[float, float],
    radii: Sequence[float],
    half: Sequence[float],
    valid: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int], int]:
    """Pixels within ``half`` of each ring; groups of rings whose windows overlap."""
    ny, nx = shape
    order = np.argsort(radii)
    lo = np.array([radii[i] - half[i] for i in order])
    hi = np.array([radii[i] + half[i] for i in order])
    ring_group = [0] * len(radii)
    bounds: list[list[float]] = []
    for j, i in enumerate(order):
        if bounds and lo[j] <= bounds[-1][1]:
            bounds[-1][1] = max(bounds[-1][1], hi[j])
        else:
            bounds.append([lo[j], hi[j]])
        ring_group[i] = len(bounds) - 1
    y, x = np.mgrid[:ny, :nx].astype(float)
    dinv = _shape_matrix_inv(*g)
    vx, vy = x - cx, y - cy
    rho = np.hypot(dinv[0, 0] * vx + dinv[0, 1] * vy, dinv[1, 0] * vx + dinv[1, 1] * vy)
    group = np.full(rho.shape, -1, dtype=np.int64)
    for gi, (a, b) in enumerate(bounds):
        group[(rho >= a) & (rho <= b)] = gi
    if valid is not None:
        group[~valid] = -1
    sel = group >= 0
    return np.nonzero(sel.ravel())[0], x[sel], group[sel], ring_group, len(bounds)


def _fit_rings(
    image: np.ndarray,
    valid: np.ndarray | None,
    cx: float,
    cy: float,
    match: _Match,
    q_scale: float,
    g0: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, float, int, int, list[float]]:
    """Joint ring fit; returns parameters, covariance, reduced chi2, n pixels, binning, amps."""
    k = len(match.rings)
    tied = match.tied
    sig0 = [max(w / 2.3548, 0.8) for w in match.widths]
    # Ring widths are similar in q (grain size); a width from a weak or blended profile
    # peak is pulled into the range of the others.
    med = float(np.median(sig0))
    sig0 = [min(max(sg, 0.5 * med), 2.0 * med) for sg in sig0]
    half0 = [3.5 * s + 3.0 for s in sig0]
    # Binning to bound the number of fitted pixels while keeping rings resolved.
    area = sum(2 * math.pi * r * 2 * h for r, h in zip(match.radii, half0, strict=True))
    b = 1
    while area / (b * b) > _MAX_FIT_PIXELS and min(sig0) / (b + 1) >= 1.8:
        b += 1
    img = _bin(image, b)
    vmask = None
    if valid is not None:
        vmask = _bin(valid.astype(float), b) >= b * b - 0.5
    off = (b - 1) / 2.0

    def tob(v: float) -> float:
        return (v - off) / b

    p = np.concatenate(
        [
            [tob(cx), tob(cy), g0[0], g0[1]],
            np.asarray(match.radii) / b,
            np.log(np.asarray(sig0) / b),
        ]
    )
    qb = q_scale / b
    reduced = 1.0
    cov = np.eye(p.size)
    amps: list[float] = []
    npx = 0
    for it in range(2):
        sig_now = list(np.exp(np.clip(p[4 + k :], -3.0, 6.0))) + [
            float(np.exp(np.clip(p[4 + k + t[0]], -3.0, 6.0))) for t in tied
        ]
        r_now = list(p[4 : 4 + k]) + [t[1] * float(p[4 + t[0]]) for t in tied]
        half = [
            max(3.5 * s + 2.0, 3.0) + (abs(p[2]) + abs(p[3])) * r * (1.0 if it == 0 else 0.2)
            for s, r in zip(sig_now, r_now, strict=True)
        ]
        flat, _, group, comp_group, n_groups = _select(
            img.shape, p[0], p[1], (p[2], p[3]), r_now, half, vmask
        )
        if flat.size > _MAX_FIT_PIXELS:
            # A regular subset (every n-th pixel in raster order) bounds the cost; the
            # precision stays far below the bias budget.
            stride = math.ceil(flat.size / _MAX_FIT_PIXELS)
            flat, group = flat[::stride], group[::stride]
        _ny, nx = img.shape
        ys, xs = np.divmod(flat, nx)
        data = img.ravel()[flat]
        model = _RingModel(
            xs.astype(float), ys.astype(float), data, group, comp_group, n_groups, qb, k, tied
        )
        if it > 0:
            model.sqrt_w = 1.0 / np.sqrt(np.maximum(model.model(p), 1.0))
        else:
            smooth = ndimage.uniform_filter(img, 3).ravel()[flat][model.order]
            model.sqrt_w = 1.0 / np.sqrt(np.maximum(smooth, 1.0))
        p, cost, normal = _levenberg_marquardt(model, p, max_iter=12 if it == 0 else 20)
        npx = data.size
        dof = max(npx - p.size - n_groups * 3 - k - len(tied), 1)
        reduced = float(cost / dof)
        cov = np.linalg.pinv(normal) * max(reduced, 1e-12)
        _, _, _, a = model.evaluate(p)
        amps = [float(v) for v in a]
    # Back to unbinned pixels.
    scale = np.ones(p.size)
    scale[0:2] = b
    scale[4 : 4 + k] = b
    out = p.copy()
    out[0] = p[0] * b + off
    out[1] = p[1] * b + off
    out[4 : 4 + k] = p[4 : 4 + k] * b
    out[4 + k :] = p[4 + k :] + math.log(b)
    cov = cov * np.outer(scale, scale)
    return out, cov, reduced, npx, b, amps


def estimate_camera_length(
    pattern: np.ndarray,
    *,
    voltage_kV: float,
    detector_pixel_um: float | None = None,
    lattice_constant_A: float | None = None,
    mask: np.ndarray | None = None,
) -> CameraLengthResult:
    """Camera length, reciprocal pixel size, centre and ellipticity from gold rings.

    Parameters
    ----------
    pattern : numpy.ndarray
        Diffraction pattern, shape ``(ny, nx)``, indexed ``[y, x]`` (counts; any gain).
    voltage_kV : float
        Accelerating voltage (kV).
    detector_pixel_um : float, optional
        Physical detector pixel pitch (µm); without it the camera length is ``nan`` and only
        the reciprocal pixel size is measured.
    lattice_constant_A : float, optional
        Gold lattice constant (Å); default 4.0782 Å (293 K).
    mask : numpy.ndarray of bool, optional
        True for pixels to use (e.g. to exclude a beam stop). Saturated pixels (equal to the
        maximum, when more than 3 share it) are always excluded.

    Returns
    -------
    CameraLengthResult
        See the class; the module docstring describes model and fit.

    Raises
    ------
    InputError
        Unusable pattern or options.
    CalibrationError
        No gold rings found, or the fit failed.
    """
    image = check_image(pattern, name="diffraction pattern")
    lam = calculate_wavelength_A(voltage_kV)
    pitch = check_detector_pixel_um(detector_pixel_um) if detector_pixel_um is not None else None
    a = check_lattice_constant_A(
        LATTICE_CONSTANT_293K_A if lattice_constant_A is None else lattice_constant_A
    )
    valid = None if mask is None else np.asarray(mask, dtype=bool)
    if valid is not None and valid.shape != image.shape:
        raise InputError(f"mask shape {valid.shape} differs from the pattern {image.shape}")
    vmax = float(image.max())
    if int(np.count_nonzero(image == vmax)) > 3:
        sat = image < vmax
        valid = sat if valid is None else (valid & sat)

    cx, cy = _rough_center(image if valid is None else np.where(valid, image, 0.0))
    ny, nx = image.shape
    # Radial profile on a binned copy for speed (coordinates of block centres).
    b = max(1, int(max(ny, nx) // 1024))
    img_b = _bin(image, b)
    val_b = None if valid is None else (_bin(valid.astype(float), b) >= b * b - 0.5)
    off = (b - 1) / 2.0
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], dtype=float)
    r_far = float(np.max(np.hypot(corners[:, 0] - cx, corners[:, 1] - cy)))
    r_near = float(min(cx, cy, nx - 1 - cx, ny - 1 - cy))
    # Rings need enough azimuthal coverage: up to halfway between inscribed and corner.
    r_max = max(r_near, 0.5 * (r_near + r_far)) / b
    rings_all = gold_rings(a, max_q_per_A=3.0)

    def find(cxf: float, cyf: float, dinv: np.ndarray | None, consistency: float) -> _Match:
        radius, prof = _radial_profile(img_b, (cxf - off) / b, (cyf - off) / b, val_b, dinv)
        m = _match_gold(radius, prof, rings_all, r_max, consistency=consistency)
        return _Match(
            rings=m.rings,
            radii=[r * b for r in m.radii],
            widths=[w * b for w in m.widths],
            scale=m.scale * b,
        )

    def neighbour_gaps(m: _Match) -> list[float]:
        all_pred = np.array([m.scale * math.sqrt(r.n) for r in rings_all])
        out = []
        for ring in m.rings:
            d = np.abs(all_pred - m.scale * math.sqrt(ring.n))
            out.append(float(np.min(d[d > 1e-9])))
        return out

    # Pass 1: circular profile, tolerant ratios (an elliptical ring is smeared); then the
    # centre and shape from sector-wise ring peaks; pass 2: elliptical profile, strict ratios.
    match = find(cx, cy, None, 0.015)
    cx, cy, g1_0, g2_0, _ = _initial_ellipse(image, valid, cx, cy, match, neighbour_gaps(match))
    try:
        match = find(cx, cy, _shape_matrix_inv(g1_0, g2_0), 0.005)
    except CalibrationError:
        pass

    def coverage(radius: float) -> float:
        t = np.linspace(0, 2 * math.pi, 360, endpoint=False)
        xs, ys = cx + radius * np.cos(t), cy + radius * np.sin(t)
        inside = (xs >= 0) & (xs <= nx - 1) & (ys >= 0) & (ys <= ny - 1)
        return float(np.mean(inside))

    def with_tied(rings: list[GoldRing], radii: list[float], widths: list[float]) -> _Match:
        # Rings of gold in the field that are not fitted freely enter the model with radius
        # and width tied to the nearest free ring, so that their tails cannot bias it.
        unit = float(
            np.median([r * 1.0 / math.sqrt(g.n) for r, g in zip(radii, rings, strict=True)])
        )
        free = {g.n for g in rings}
        tied: list[tuple[int, float]] = []
        for ring in rings_all:
            pred = unit * math.sqrt(ring.n)
            if ring.n in free or pred > r_max * b + 20.0:
                continue
            src = int(np.argmin([abs(math.log(pred / rr)) for rr in radii]))
            tied.append((src, math.sqrt(ring.n / rings[src].n)))
        return _Match(rings, radii, widths, unit, tied)

    # Free rings need at least half of their circle on the detector.
    keep = [i for i, r in enumerate(match.radii) if coverage(r) >= 0.5]
    if len(keep) < 2:
        raise CalibrationError(
            "fewer than two gold rings lie at least half on the detector; centre the pattern "
            "or use a shorter camera length"
        )
    match = with_tied(
        [match.rings[i] for i in keep],
        [match.radii[i] for i in keep],
        [match.widths[i] for i in keep],
    )
    q_scale0 = match.scale * math.sqrt(match.rings[0].n) / match.rings[0].q_per_A
    for _attempt in range(3):
        p, cov, reduced, npx, binning, amps = _fit_rings(
            image, valid, cx, cy, match, q_scale0, (g1_0, g2_0)
        )
        # Rings the fit cannot pin down (no signal, width running away) are dropped from the
        # free set (they stay in the model, tied to a good neighbour) and the fit is repeated.
        k = len(match.rings)
        sig = np.exp(np.clip(p[4 + k :], -3.0, 6.0))
        sd_r = np.sqrt(np.maximum(np.diag(cov)[4 : 4 + k], 0.0))
        gaps_now = neighbour_gaps(match)
        good = [
            i
            for i in range(k)
            if np.isfinite(p[4 + i])
            and amps[i] > 0
            and 0.25 < sig[i] < 0.6 * gaps_now[i] + 2.0
            and 0 < sd_r[i] < sig[i]
        ]
        if len(good) == k or len(good) < 2:
            break
        match = with_tied(
            [match.rings[i] for i in good],
            [float(p[4 + i]) for i in good],
            [match.widths[i] for i in good],
        )
        cx, cy = float(p[0]), float(p[1])
        g1_0, g2_0 = float(p[2]), float(p[3])
    k = len(match.rings)
    radii = p[4 : 4 + k]
    if not np.all(np.isfinite(p)) or np.any(radii <= 0):
        raise CalibrationError("the ring fit did not converge")
    cov_r = cov[4 : 4 + k, 4 : 4 + k]
    d = np.array([r.d_A for r in match.rings])
    q_k = radii * d
    cov_q = cov_r * np.outer(d, d)
    try:
        cinv = np.linalg.inv(cov_q)
    except np.linalg.LinAlgError:
        raise CalibrationError("ring radii covariance is singular") from None
    ones = np.ones(k)
    var_q = 1.0 / float(ones @ cinv @ ones)
    q_hat = var_q * float(ones @ cinv @ q_k)
    resid = q_k - q_hat
    birge = math.sqrt(float(resid @ cinv @ resid) / (k - 1)) if k > 1 else 1.0
    sigma_q = math.sqrt(var_q) * max(1.0, birge)
    ci_method = "fit covariance (scaled by the reduced chi-square of the pixel fit)" + (
        f", inflated by the ring-to-ring Birge ratio {birge:.2f}" if birge > 1 else ""
    )
    # Geometry.
    g1, g2 = float(p[2]), float(p[3])
    eta = math.hypot(g1, g2)
    ell = 100.0 * math.expm1(2.0 * eta)
    angle = (math.degrees(0.5 * math.atan2(g2, g1))) % 180.0
    cov_g = cov[2:4, 2:4]
    if eta > 1e-9:
        de_dg = 200.0 * math.exp(2 * eta) * np.array([g1, g2]) / eta
        da_dg = math.degrees(0.5) * np.array([-g2, g1]) / eta**2
        ell_ci = _Z95 * math.sqrt(max(float(de_dg @ cov_g @ de_dg), 0.0))
        ang_ci = min(_Z95 * math.sqrt(max(float(da_dg @ cov_g @ da_dg), 0.0)), 90.0)
    else:
        ell_ci = _Z95 * 200.0 * math.sqrt(max(float(np.trace(cov_g)) / 2.0, 0.0))
        ang_ci = 90.0
    dmat = np.linalg.inv(_shape_matrix_inv(g1, g2))
    cov_c = cov[0:2, 0:2]
    length = q_hat * pitch * 1e-3 / lam if pitch is not None else float("nan")
    length_ci = _Z95 * sigma_q * pitch * 1e-3 / lam if pitch is not None else float("nan")
    ring_fits = tuple(
        RingFit(
            label=r.label,
            d_A=r.d_A,
            radius_px=float(radii[i]),
            radius_sigma_px=float(math.sqrt(max(cov_r[i, i], 0.0))),
            width_px=float(math.exp(p[4 + k + i])),
            amplitude=amps[i] if i < len(amps) else float("nan"),
            scale_px_A=float(q_k[i]),
        )
        for i, r in enumerate(match.rings)
    )
    return CameraLengthResult(
        camera_length_mm=float(length),
        camera_length_ci95_mm=float(length_ci),
        reciprocal_pixel_per_A=1.0 / q_hat,
        reciprocal_pixel_ci95_per_A=_Z95 * sigma_q / q_hat**2,
        center_x_px=float(p[0]),
        center_y_px=float(p[1]),
        center_ci95_px=(
            _Z95 * math.sqrt(max(cov_c[0, 0], 0.0)),
            _Z95 * math.sqrt(max(cov_c[1, 1], 0.0)),
        ),
        center_cov_px2=cov_c,
        ellipticity_percent=ell,
        ellipticity_ci95_percent=ell_ci,
        major_angle_deg=angle,
        major_angle_ci95_deg=ang_ci,
        distortion_matrix=dmat,
        scale_px_A=q_hat,
        scale_sigma_px_A=sigma_q,
        wavelength_A=lam,
        lattice_constant_A=a,
        detector_pixel_um=float(pitch) if pitch is not None else float("nan"),
        voltage_kV=float(voltage_kV),
        rings=ring_fits,
        n_pixels=npx,
        binning=binning,
        reduced_chi2=reduced,
        birge_ratio=birge,
        ci_method=ci_method,
    )


def estimate_tilt_calibration(
    patterns: Sequence[np.ndarray],
    coil_settings: np.ndarray | Sequence[Sequence[float]],
    *,
    voltage_kV: float,
    lattice_constant_A: float | None = None,
) -> TiltCalibrationResult:
    """Calibrate beam-tilt coils (mrad per coil unit) from gold patterns at known settings.

    Each pattern's centre (joint ring fit, :func:`estimate_camera_length`) is converted to a
    tilt through the gold ring radius: ``tau = (lambda / Q) D^{-1} c`` rad, where ``Q`` is the
    ring radius per Å⁻¹ and ``D`` the ring distortion (both averaged over the patterns), so a
    displacement of one ring radius ``Q / d`` is a tilt of ``lambda / d``, independent of the
    image pixel size. Then ``tau = M @ coil + offset`` is fitted by generalised least
    squares with the centre covariances (offset always fitted; a (0, 0) pattern is just one
    more point).

    Parameters
    ----------
    patterns : sequence of numpy.ndarray
        Diffraction patterns of gold, all of the same shape.
    coil_settings : array_like
        Coil settings ``(n, 2)`` (coil_x, coil_y), in the coils' own units.
    voltage_kV : float
        Accelerating voltage (kV).
    lattice_constant_A : float, optional
        Gold lattice constant (Å); default 4.0782 Å.

    Returns
    -------
    TiltCalibrationResult

    Raises
    ------
    InputError
        Fewer than 3 patterns, coil settings all on one line, or patterns of different shapes.
    CalibrationError
        A pattern without gold rings.
    """
    coils = np.asarray(coil_settings, dtype=float)
    n = len(patterns)
    if coils.ndim != 2 or coils.shape != (n, 2):
        raise InputError(f"coil_settings must have shape ({n}, 2), got {coils.shape}")
    if not np.all(np.isfinite(coils)):
        raise InputError("coil settings contain NaN or infinite values")
    if n < 3:
        raise InputError(
            f"tilt calibration needs at least 3 patterns (6 unknowns: a 2x2 matrix and the "
            f"zero-coil position), got {n}"
        )
    centred = coils - coils.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[0] == 0 or sv[1] < 1e-6 * sv[0]:
        raise InputError(
            "the coil settings lie on one line; record at least 3 settings that are not "
            "collinear (e.g. (0, 0), (u, 0) and (0, u))"
        )
    shapes = {np.shape(p) for p in patterns}
    if len(shapes) != 1:
        raise InputError(
            "the diffraction patterns have different sizes: "
            + ", ".join(f"{s[1]}x{s[0]}" for s in sorted(shapes) if len(s) == 2)
        )
    fits = []
    for i, pat in enumerate(patterns):
        try:
            fits.append(
                estimate_camera_length(
                    pat, voltage_kV=voltage_kV, lattice_constant_A=lattice_constant_A
                )
            )
        except CalibrationError as exc:
            raise CalibrationError(f"pattern {i + 1}: {exc}") from None
    lam = fits[0].wavelength_A
    qs = np.array([f.scale_px_A for f in fits])
    qw = 1.0 / np.array([f.scale_sigma_px_A for f in fits]) ** 2
    q = float(np.sum(qs * qw) / np.sum(qw))
    q_rel = float(math.sqrt(1.0 / np.sum(qw)) / q)
    q_rel = max(q_rel, float(np.std(qs, ddof=1) / math.sqrt(n) / q) if n > 1 else 0.0)
    dinv = np.mean([np.linalg.inv(f.distortion_matrix) for f in fits], axis=0)
    conv = 1e3 * lam / q * dinv  # mrad per px (2x2)
    centres = np.array([[f.center_x_px, f.center_y_px] for f in fits])
    tilts = centres @ conv.T
    covs = [conv @ f.center_cov_px2 @ conv.T for f in fits]
    # GLS: rows (x, y) per pattern, unknowns [m_xx, m_xy, m_yx, m_yy, t0x, t0y].
    design = np.zeros((2 * n, 6))
    design[0::2, 0:2] = coils
    design[0::2, 4] = 1.0
    design[1::2, 2:4] = coils
    design[1::2, 5] = 1.0
    rhs = tilts.ravel()
    wrows = np.zeros_like(design)
    wrhs = np.zeros_like(rhs)
    for i, c in enumerate(covs):
        c = c + np.eye(2) * (1e-12 + 1e-9 * float(np.trace(c)))
        li = np.linalg.inv(np.linalg.cholesky(c))
        wrows[2 * i : 2 * i + 2] = li @ design[2 * i : 2 * i + 2]
        wrhs[2 * i : 2 * i + 2] = li @ rhs[2 * i : 2 * i + 2]
    beta, *_ = np.linalg.lstsq(wrows, wrhs, rcond=None)
    cov_b = np.linalg.inv(wrows.T @ wrows)
    dof = 2 * n - 6
    chi2 = float(np.sum((wrows @ beta - wrhs) ** 2))
    factor = max(1.0, chi2 / dof) if dof > 0 else 1.0
    cov_b = cov_b * factor
    m = beta[:4].reshape(2, 2)
    cov_m = cov_b[:4, :4] + q_rel**2 * np.outer(beta[:4], beta[:4])
    fitted = (design @ beta).reshape(n, 2)
    resid = tilts - fitted
    offset = beta[4:6]
    scale, rot, mirrored, aniso = _decompose(m)
    jac = np.zeros((2, 4))
    for j in range(4):
        dm = np.zeros(4)
        hstep = 1e-6 * max(float(np.abs(beta[:4]).max()), 1e-12)
        dm[j] = hstep
        s1, r1, _, _ = _decompose((beta[:4] + dm).reshape(2, 2))
        s0, r0, _, _ = _decompose((beta[:4] - dm).reshape(2, 2))
        jac[0, j] = (s1 - s0) / (2 * hstep)
        jac[1, j] = (((r1 - r0 + 180.0) % 360.0) - 180.0) / (2 * hstep)
    cov_sr = jac @ cov_m @ jac.T
    ci_method = "generalised least squares on the ring-fit centre covariances"
    if dof > 0:
        ci_method += f", scaled by the reduced chi-square {chi2 / dof:.2f} when above 1"
    ci_method += "; ring-radius (Q) uncertainty added in quadrature"
    return TiltCalibrationResult(
        mrad_per_unit=m,
        mrad_per_unit_ci95=_Z95 * np.sqrt(np.maximum(np.diag(cov_m), 0.0)).reshape(2, 2),
        offset_mrad=offset,
        scale_mrad_per_unit=scale,
        scale_ci95_mrad_per_unit=_Z95 * math.sqrt(max(cov_sr[0, 0], 0.0)),
        rotation_deg=rot,
        rotation_ci95_deg=_Z95 * math.sqrt(max(cov_sr[1, 1], 0.0)),
        mirrored=mirrored,
        anisotropy_percent=aniso,
        mrad_per_px=1e3 * lam / q,
        displacements_px=centres - np.linalg.solve(conv, offset),
        tilts_mrad=tilts - offset,
        residuals_mrad=resid,
        coil_settings=coils,
        patterns=tuple(fits),
        n_patterns=n,
        ci_method=ci_method,
    )


def _decompose(m: np.ndarray) -> tuple[float, float, bool, float]:
    """Scale, rotation (deg, [0, 360)), mirror flag and anisotropy (%) of a 2x2 matrix."""
    u, s, vt = np.linalg.svd(m)
    rot_part = u @ vt  # orthogonal factor of the polar decomposition M = U P
    mirrored = bool(np.linalg.det(rot_part) < 0)
    if mirrored:
        rot_part = rot_part @ np.diag([1.0, -1.0])
    angle = math.degrees(math.atan2(rot_part[1, 0], rot_part[0, 0])) % 360.0
    scale = math.sqrt(abs(float(np.linalg.det(m))))
    aniso = 100.0 * (s[0] / s[1] - 1.0) if s[1] > 0 else float("inf")
    return scale, angle, mirrored, aniso
