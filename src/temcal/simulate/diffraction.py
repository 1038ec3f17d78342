"""Simulated selected-area diffraction patterns of polycrystalline gold, with known truth.

Geometry
--------
A scattering angle ``theta`` (2-vector, rad, along the pattern's x and y) lands on the
detector at ``p = c + D (L / pitch) theta`` pixels, where ``c`` is the position of the
untilted central beam, ``L`` the camera length, ``pitch`` the detector pixel pitch and
``D`` the detector/projector distortion: a symmetric 2x2 matrix with determinant 1 that
stretches by ``sqrt(1 + e)`` along the major angle and shrinks by the same factor across
it (``e = ellipticity_percent / 100``, so ``major / minor = 1 + e``; the camera length is
the geometric mean of the major and minor values). Small-angle optics: a ring of spacing
``d`` has radius ``R = L lambda / d`` (``tan 2theta = 2theta`` to 3e-5 at 10 mrad).

A beam tilt ``tau`` (rad) moves the central beam *and* the whole ring pattern, which stays
centred on the transmitted beam, to ``c + D (L / pitch) tau``: a tilt of ``lambda / d``
puts the central beam where ring ``d`` was.

Intensities (expected counts per pixel, before Poisson noise)
--------------------------------------------------------------
* Rings: the allowed FCC reflections (:func:`temcal.physics.gold_diffraction.gold_rings`),
  integrated intensity ``m |F|^2 / q`` spread over the ring with a Gaussian radial profile
  in reciprocal space (Scherrer width ``FWHM_q = 0.9 / D`` for grain size ``D``, in
  quadrature with the beam divergence ``alpha / lambda`` and the pixel box ``1/sqrt(12)``
  px) multiplied by ``f(q)^2 exp(-B q^2/2) / q`` across the width
  (:func:`~temcal.physics.gold_diffraction.ring_shape_weight`).
* Central beam: a Gaussian spot of rms radius ``L alpha / pitch`` (at least 0.7 px) plus a
  weak Lorentzian halo (the tail of the probe and small-angle inelastic scattering).
  The detector is modelled as a counting detector without blooming; with
  ``saturation_counts`` every pixel is clipped there (a saturated core with flat top, no
  bleeding into neighbours).
* Diffuse background (inelastic, thermal diffuse, amorphous support):
  ``(q_b^2 / (q^2 + q_b^2))^1.5`` with ``q_b = 0.15`` Å⁻¹, plus a flat floor of 2 %.
* Each part is normalised to its share of ``total_counts``; Poisson noise is drawn with
  ``rng`` (``rng=None`` returns the noise-free expectation).

Intensities are evaluated at pixel centres (the pixel box enters only as the 1/12 px²
variance above); pixel ``[row, col]`` has its centre at ``(x, y) = (col, row)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from temcal.errors import InputError
from temcal.physics.gold import LATTICE_CONSTANT_293K_A, check_lattice_constant_A
from temcal.physics.gold_diffraction import gold_rings, ring_shape_weight
from temcal.physics.wavelength import calculate_wavelength_A

__all__ = ["SimulatedDiffraction", "distortion_matrix", "simulate_gold_diffraction"]

_SCHERRER_K = 0.9
_BACKGROUND_Q_PER_A = 0.15


@dataclass(frozen=True)
class SimulatedDiffraction:
    """A simulated gold diffraction pattern and the truth it was made with.

    Attributes
    ----------
    pattern : numpy.ndarray
        Counts, shape ``(ny, nx)``, float64, indexed ``[y, x]``.
    voltage_kV, wavelength_A, camera_length_mm, detector_pixel_um, lattice_constant_A
        Optics and specimen.
    center_xy_px : tuple of float
        Untilted central-beam position ``(x, y)`` in pixels.
    pattern_center_xy_px : tuple of float
        Centre of this pattern (central beam and rings) with the beam tilt applied.
    ellipticity_percent, major_angle_deg : float
        Distortion: ``100 (major / minor - 1)`` and the major-axis angle (from +x toward +y,
        degrees in [0, 180)).
    reciprocal_pixel_per_A : float
        Reciprocal-space size of one pixel (Å⁻¹ per pixel, isotropic equivalent):
        ``pitch / (L lambda)``.
    beam_tilt_mrad : tuple of float
        Beam tilt along the pattern's x and y (mrad).
    grain_size_nm, beam_divergence_mrad : float
        Ring broadening parameters.
    ring_radii_px : dict
        Isotropic-equivalent ring radius ``L lambda / d / pitch`` (px) per ring label.
    """

    pattern: np.ndarray
    voltage_kV: float
    wavelength_A: float
    camera_length_mm: float
    detector_pixel_um: float
    lattice_constant_A: float
    center_xy_px: tuple[float, float]
    pattern_center_xy_px: tuple[float, float]
    ellipticity_percent: float
    major_angle_deg: float
    reciprocal_pixel_per_A: float
    beam_tilt_mrad: tuple[float, float]
    grain_size_nm: float
    beam_divergence_mrad: float
    ring_radii_px: dict[str, float] = field(default_factory=dict)


def distortion_matrix(ellipticity_percent: float, major_angle_deg: float) -> np.ndarray:
    """Symmetric distortion ``D`` (det 1) with ``major / minor = 1 + ellipticity / 100``.

    ``D = R(phi) diag(sqrt(1 + e), 1 / sqrt(1 + e)) R(-phi)``, ``(x, y)`` order.
    """
    e = float(ellipticity_percent) / 100.0
    if not math.isfinite(e) or e <= -1.0:
        raise InputError(f"ellipticity {ellipticity_percent!r} % is not plausible")
    eta = 0.5 * math.log1p(e)
    phi = math.radians(float(major_angle_deg))
    c, s = math.cos(2 * phi), math.sin(2 * phi)
    h = np.array([[c, s], [s, -c]])
    return math.cosh(eta) * np.eye(2) + math.sinh(eta) * h


def _positive(name: str, value: float, lo: float, hi: float, unit: str) -> float:
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} {value!r} {unit} is not plausible (expected {lo}-{hi} {unit})")
    return v


def simulate_gold_diffraction(
    shape: tuple[int, int],
    *,
    voltage_kV: float,
    camera_length_mm: float,
    detector_pixel_um: float,
    center_xy_px: tuple[float, float] | None = None,
    ellipticity_percent: float = 0.0,
    major_angle_deg: float = 0.0,
    lattice_constant_A: float = LATTICE_CONSTANT_293K_A,
    grain_size_nm: float = 10.0,
    beam_divergence_mrad: float = 0.03,
    beam_tilt_mrad: tuple[float, float] = (0.0, 0.0),
    total_counts: float = 5e7,
    central_beam_fraction: float = 0.3,
    background_fraction: float = 0.4,
    saturation_counts: float | None = None,
    ring_profile_eta: float = 0.0,
    amorphous_fraction: float = 0.0,
    detector_blur_px: float = 0.0,
    rng: np.random.Generator | None = None,
) -> SimulatedDiffraction:
    """Simulate a powder diffraction pattern of gold on a pixelated detector.

    Parameters
    ----------
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    voltage_kV : float
        Accelerating voltage (kV).
    camera_length_mm : float
        Camera length ``L`` (mm), isotropic equivalent (geometric mean of major and minor).
    detector_pixel_um : float
        Detector pixel pitch (µm).
    center_xy_px : tuple of float, optional
        Untilted central-beam position ``(x, y)`` in pixels; default the detector centre
        ``((nx - 1) / 2, (ny - 1) / 2)``.
    ellipticity_percent : float
        Ring ellipticity ``100 (major / minor - 1)`` from projector/detector distortion.
    major_angle_deg : float
        Direction of the major axis, from +x toward +y (degrees).
    lattice_constant_A : float
        Gold lattice constant (Å).
    grain_size_nm : float
        Mean grain size (nm), sets the ring width (Scherrer).
    beam_divergence_mrad : float
        Rms illumination divergence (mrad): central-beam size and extra ring width.
    beam_tilt_mrad : tuple of float
        Beam tilt ``(tx, ty)`` along the pattern's x and y (mrad).
    total_counts : float
        Expected electrons in the whole pattern.
    central_beam_fraction, background_fraction : float
        Shares of ``total_counts`` in the central beam and the diffuse background; the rest
        is in the rings.
    saturation_counts : float, optional
        Clip every pixel at this value (saturated central beam); ``None`` for no clipping.
    ring_profile_eta : float
        Lorentzian fraction of a pseudo-Voigt ring profile with the same FWHM (0: Gaussian).
        Real grain-size distributions give such long tails; the fit assumes a Gaussian, so
        this tests its robustness to profile mismatch.
    amorphous_fraction : float
        Share of ``total_counts`` in two broad halos of an amorphous carbon support
        (``q = 0.47`` and ``0.85`` Å⁻¹, rms widths 0.08 and 0.10 Å⁻¹), under the gold rings.
    detector_blur_px : float
        Rms radius of a Gaussian detector point-spread function (px), applied before noise.
    rng : numpy.random.Generator, optional
        Source of the Poisson noise; ``None`` gives the noise-free expectation.

    Returns
    -------
    SimulatedDiffraction
        Pattern and truth.
    """
    ny, nx = (int(shape[0]), int(shape[1]))
    if ny < 16 or nx < 16:
        raise InputError(f"detector shape {shape} is too small")
    lam = calculate_wavelength_A(voltage_kV)
    length = _positive("camera length", camera_length_mm, 1.0, 1e5, "mm")
    pitch = _positive("detector pixel pitch", detector_pixel_um, 0.5, 1000.0, "µm")
    a = check_lattice_constant_A(lattice_constant_A)
    grain = _positive("grain size", grain_size_nm, 0.5, 1e5, "nm")
    div = _positive("beam divergence", beam_divergence_mrad, 0.0, 10.0, "mrad") * 1e-3
    fc, fb = float(central_beam_fraction), float(background_fraction)
    if not (0 <= fc < 1 and 0 <= fb < 1 and fc + fb < 1):
        raise InputError("central_beam_fraction + background_fraction must be below 1")
    total = _positive("total counts", total_counts, 1.0, 1e15, "counts")
    eta = _positive("ring profile eta", ring_profile_eta, 0.0, 1.0, "")
    fa = _positive("amorphous fraction", amorphous_fraction, 0.0, 0.9, "")
    blur = _positive("detector blur", detector_blur_px, 0.0, 50.0, "px")
    if fc + fb + fa >= 1:
        raise InputError("central beam + background + amorphous fractions must be below 1")
    if center_xy_px is None:
        center_xy_px = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    cx0, cy0 = (float(center_xy_px[0]), float(center_xy_px[1]))
    tilt = np.asarray(beam_tilt_mrad, dtype=float) * 1e-3
    dmat = distortion_matrix(ellipticity_percent, major_angle_deg)
    dinv = np.linalg.inv(dmat)
    l_px = length * 1e3 / pitch  # pixels per rad
    q_scale = l_px * lam  # pixels per Å⁻¹ (ring radius = q_scale / d)
    shift = dmat @ (l_px * tilt)
    cx, cy = cx0 + shift[0], cy0 + shift[1]

    y = np.arange(ny, dtype=float)[:, None] - cy
    x = np.arange(nx, dtype=float)[None, :] - cx
    ux = dinv[0, 0] * x + dinv[0, 1] * y
    uy = dinv[1, 0] * x + dinv[1, 1] * y
    rho = np.hypot(ux, uy)  # isotropic-equivalent radius (px)
    del ux, uy
    q = rho / q_scale  # Å⁻¹

    # Rings.
    q_max = float(rho.max()) / q_scale + 0.05
    rings = gold_rings(a, max_q_per_A=q_max)
    sigma_q2 = (_SCHERRER_K / (grain * 10.0) / 2.3548) ** 2 + (div / lam) ** 2
    sigma_px = math.sqrt(sigma_q2 * q_scale**2 + 1.0 / 12.0)
    weight, _ = ring_shape_weight(q)
    ring_img = np.zeros((ny, nx))
    for ring in rings:
        r0 = q_scale / ring.d_A
        band = np.abs(rho - r0) < (7.0 if eta == 0 else 40.0) * sigma_px
        if not band.any():
            continue
        # Integrated intensity m |F(q_hkl)|^2 / q_hkl (F = 4 f, Lorentz factor 1/q); per unit
        # area it is spread over the circumference 2 pi q with the Gaussian profile, and f(q)^2
        # exp(-Bq^2/2) / q varies across the width (``weight``).
        amp = ring.multiplicity * 16.0 / ring.q_per_A
        u = (rho[band] - r0) / sigma_px
        prof = np.exp(-0.5 * u * u)
        if eta > 0:
            # Pseudo-Voigt with equal FWHM; the Lorentzian's peak height is matched to the
            # Gaussian's area: gamma = sigma sqrt(2 ln 2), height sqrt(pi/2 ln 2) ... / pi.
            gamma = sigma_px * math.sqrt(2.0 * math.log(2.0))
            lor = (gamma * gamma / ((rho[band] - r0) ** 2 + gamma * gamma)) * (
                math.sqrt(2 * math.pi) * sigma_px / (math.pi * gamma)
            )
            prof = (1.0 - eta) * prof + eta * lor
        ring_img[band] += amp * prof * weight[band] / (2 * math.pi)
    # Central beam.
    sig_c = max(l_px * div, 0.7)
    r2 = (x * x + y * y) / (sig_c * sig_c)
    beam = np.exp(-0.5 * r2) + 1e-4 * 1.0 / (1.0 + r2 / 25.0) ** 1.5
    del r2
    # Diffuse background.
    bg = (_BACKGROUND_Q_PER_A**2 / (q * q + _BACKGROUND_Q_PER_A**2)) ** 1.5
    bg = bg + 0.02 * float(bg.mean())
    halo = np.zeros((ny, nx))
    if fa > 0:
        for q0, sq, h in ((0.47, 0.08, 1.0), (0.85, 0.10, 0.5)):
            halo += h * np.exp(-0.5 * ((q - q0) / sq) ** 2)
    expected = np.zeros((ny, nx))
    parts = ((ring_img, 1.0 - fc - fb - fa), (beam, fc), (bg, fb), (halo, fa))
    for part, share in parts:
        s = float(part.sum())
        if s > 0 and share > 0:
            expected += part * (share * total / s)
    if blur > 0:
        from scipy import ndimage

        expected = ndimage.gaussian_filter(expected, blur, mode="nearest")
    pattern = rng.poisson(expected).astype(np.float64) if rng is not None else expected
    if saturation_counts is not None:
        pattern = np.minimum(pattern, float(saturation_counts))
    radii = {r.label: q_scale / r.d_A for r in rings}
    return SimulatedDiffraction(
        pattern=pattern,
        voltage_kV=float(voltage_kV),
        wavelength_A=lam,
        camera_length_mm=length,
        detector_pixel_um=pitch,
        lattice_constant_A=a,
        center_xy_px=(cx0, cy0),
        pattern_center_xy_px=(float(cx), float(cy)),
        ellipticity_percent=float(ellipticity_percent),
        major_angle_deg=float(major_angle_deg) % 180.0,
        reciprocal_pixel_per_A=1.0 / q_scale,
        beam_tilt_mrad=(float(tilt[0] * 1e3), float(tilt[1] * 1e3)),
        grain_size_nm=grain,
        beam_divergence_mrad=div * 1e3,
        ring_radii_px=radii,
    )
