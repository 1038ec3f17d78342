"""Forward model of gold-lattice images with a known pixel matrix.

The model, step by step:

1. **Specimen.** Gold grains are FCC crystals of real atoms (lattice constant ``a``),
   cut as spheres whose diameters follow a lognormal distribution (median
   ``grain_size_nm``, log-standard deviation ``grain_size_spread``), each with a uniformly
   random 3-D orientation (a normalized 4-D Gaussian quaternion) and a random position.
   ``kind="foil"`` packs grains densely (projected area fraction ``packing``) in a band
   covering the fraction ``coverage`` of the field (a foil edge; full rings);
   ``kind="particles"`` scatters ``n_particles`` isolated nanocrystals over the field
   (partial rings made of spots).
2. **Projection and magnification.** The atoms are projected along the beam (z) and
   an atom at specimen position ``r`` (Å) is placed at detector pixel ``M^{-1} r``
   (:mod:`temcal.physics.magnification`), on a fine grid ``oversample`` times finer than
   the detector, wrapped periodically. Grains are spheres, or (``grain_thickness_nm``)
   discs of a thin foil: the slab ``|z| < t/2`` of the specimen frame, which excites
   reflections over a range ``~1/t`` along the beam and so fills the rings with fewer
   atoms.
3. **Projected potential.** Each atom is deposited with the bilinear (cloud-in-cell)
   kernel by ``numpy.bincount``; in Fourier space the kernel's transfer
   ``sinc^2(q_x) sinc^2(q_y)`` is divided out and the result multiplied by the phase
   transform of one gold atom,
   ``sigma(V) * (h^2 / (2 pi m0 e)) * f_e(s) * exp(-B_DW s^2)`` (rad Å²), where
   ``f_e(s) = sum_i a_i exp(-b_i s^2)``, ``s = |g| / 2`` (Å⁻¹), is the elastic electron
   scattering factor of neutral gold (five Gaussians of Peng et al. 1996, International
   Tables for Crystallography Vol. C, 2011, Table 4.3.2.2; ``f_e(0) = 10.57`` Å),
   ``h^2 / (2 pi m0 e) = 47.878`` V Å², ``sigma(V)`` the relativistic interaction
   constant and ``B_DW`` the Debye-Waller factor of gold (0.6 Å² at room temperature).
   This is the projection (phase-object) approximation: no dynamical scattering within
   a grain.
4. **Support film.** An amorphous carbon (or ice) film of uncorrelated carbon atoms:
   white noise filtered by the carbon scattering factor (same table), scaled to an rms
   phase ``carbon_phase_rms``; through the CTF it gives Thon rings.
5. **Image formation** with :func:`temcal.simulate.imaging.form_image`: exit wave
   ``exp((i - A') phase)`` (amplitude contrast), lens phase ``exp(i chi)`` with defocus and
   Cs (:func:`temcal.physics.ctf.calculate_chi`), B-factor envelope ``exp(-B g^2 / 4)`` on
   the wave, detector-pixel integration over the fine grid (so frequencies beyond the
   detector Nyquist alias back as on a real detector) and Poisson noise at the dose.

The wave is propagated in single precision (``form_image(..., single_precision=True)``).

Known limitation: lattice frequencies beyond the fine grid's Nyquist (``oversample``
times the detector's) fold back in the bilinear deposition. A fold by a multiple of the
fine sampling frequency is also a multiple of the detector's, so these reflections land
exactly where a detector would alias them; only their strength is approximate (weighted
by the kernel, the scattering factor and the CTF at the folded frequency).

Cost: about 0.1-0.3 µs per atom for the deposition plus a few FFTs of the fine grid
(measured in ``benchmarks/pixel_size.py``).

References
----------
Peng, L.-M., Ren, G., Dudarev, S. L. & Whelan, M. J. (1996). Robust parameterization of
elastic and absorptive electron atomic scattering factors. Acta Cryst. A52, 257-276.
https://doi.org/10.1107/S0108767395014371

Kirkland, E. J. (2010). Advanced Computing in Electron Microscopy, 2nd ed., Springer
(projected potential, interaction constant).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import fft as sfft

from temcal.errors import InputError
from temcal.physics.ctf import calculate_chi
from temcal.physics.gold import LATTICE_CONSTANT_293K_A, check_lattice_constant_A
from temcal.physics.magnification import decompose_pixel_matrix, pixel_matrix_A
from temcal.physics.scattering import electron_scattering_factor_A
from temcal.physics.wavelength import calculate_wavelength_A, check_voltage_kV
from temcal.simulate.imaging import amplitude_contrast_absorption, form_image

__all__ = [
    "GOLD_DEBYE_WALLER_A2",
    "GoldGrains",
    "SimulatedGoldImage",
    "calculate_interaction_constant",
    "electron_scattering_factor_A",
    "place_gold_grains",
    "render_gold_phase",
    "simulate_gold_image",
]

#: Debye-Waller factor ``B = 8 pi^2 <u^2>`` of gold near room temperature (Å²).
GOLD_DEBYE_WALLER_A2 = 0.6

#: ``h^2 / (2 pi m0 e)`` in V Å²: converts a scattering factor (Å) into the integral
#: of the projected potential (V Å²) (Kirkland 2010, eq. 5.15).
_POTENTIAL_PER_SCATTERING_FACTOR_V_A2 = 47.87801

_ELECTRON_REST_ENERGY_KEV = 510.99895


def calculate_interaction_constant(voltage_kV: float) -> float:
    """Relativistic interaction constant ``sigma`` in rad / (V Å).

    ``sigma = 2 pi / (lambda V) * (m0 c^2 + e V) / (2 m0 c^2 + e V)``
    (Kirkland 2010, eq. 5.6): 6.526e-4 rad/(V Å) at 300 kV.
    """
    v = check_voltage_kV(voltage_kV)
    lam = calculate_wavelength_A(v)
    e0 = _ELECTRON_REST_ENERGY_KEV
    return 2.0 * math.pi / (lam * v * 1e3) * (e0 + v) / (2.0 * e0 + v)


@dataclass(frozen=True)
class GoldGrains:
    """Gold grains placed in a field of view.

    Attributes
    ----------
    centers_px : numpy.ndarray
        Grain centres in detector pixels, shape ``(n, 2)``, ``(x, y)`` order.
    diameters_A : numpy.ndarray
        Grain diameters in Å, shape ``(n,)``.
    rotations : numpy.ndarray
        Rotation matrices (crystal frame -> specimen frame), shape ``(n, 3, 3)``.
    thickness_A : float or None
        ``None``: spherical grains. Otherwise every grain is cut to the slab
        ``|z| < thickness_A / 2`` of the specimen frame (a disc of the grain's diameter
        in a foil of that thickness; the lattice inside keeps its random orientation).
    """

    centers_px: np.ndarray
    diameters_A: np.ndarray
    rotations: np.ndarray
    thickness_A: float | None = None

    @property
    def bounding_radii_A(self) -> np.ndarray:
        """Radius (Å) of the sphere that contains each grain."""
        r = 0.5 * self.diameters_A
        if self.thickness_A is None:
            return r
        return np.sqrt(r * r + 0.25 * self.thickness_A**2)

    @property
    def n_atoms_estimate(self) -> int:
        """Approximate number of gold atoms (4 per cubic cell of 4.0782 Å)."""
        d = self.diameters_A
        if self.thickness_A is None:
            vol = math.pi / 6.0 * float(np.sum(d**3))
        else:
            t = np.minimum(self.thickness_A, d)
            vol = math.pi / 4.0 * float(np.sum(d * d * t))
        return int(vol * 4.0 / LATTICE_CONSTANT_293K_A**3)


@dataclass(frozen=True)
class SimulatedGoldImage:
    """A simulated gold-lattice image and the truth it was made from.

    Attributes
    ----------
    image : numpy.ndarray
        Detector image ``(ny, nx)``: counts per pixel (or relative intensity when no dose
        was given).
    pixel_matrix_A : numpy.ndarray
        True pixel matrix ``M`` (Å/pixel, 2x2, ``(x, y)`` order).
    pixel_size_A, pixel_major_A, pixel_minor_A, anisotropy_percent, major_angle_deg : float
        True pixel geometry (see :class:`temcal.physics.magnification.PixelGeometry`).
    kind : str
        ``"foil"`` or ``"particles"``.
    lattice_constant_A, voltage_kV, defocus_A, cs_mm, amplitude_contrast, b_factor_A2,
    carbon_phase_rms, dose_e_per_A2 : float
        Imaging parameters used.
    grain_diameters_A : numpy.ndarray
        Diameters of the simulated grains (Å).
    n_atoms : int
        Approximate number of gold atoms (from the grain volumes).
    """

    image: np.ndarray
    pixel_matrix_A: np.ndarray
    pixel_size_A: float
    pixel_major_A: float
    pixel_minor_A: float
    anisotropy_percent: float
    major_angle_deg: float
    kind: str
    lattice_constant_A: float
    voltage_kV: float
    defocus_A: float
    cs_mm: float
    amplitude_contrast: float
    b_factor_A2: float
    carbon_phase_rms: float
    dose_e_per_A2: float | None
    grain_diameters_A: np.ndarray = field(repr=False)
    n_atoms: int = 0

    def truth(self) -> dict[str, object]:
        """The truth as a JSON-ready dictionary (the sidecar of ``temcal simulate gold``)."""
        return {
            "pixel_size_A": self.pixel_size_A,
            "pixel_major_A": self.pixel_major_A,
            "pixel_minor_A": self.pixel_minor_A,
            "anisotropy_percent": self.anisotropy_percent,
            "major_angle_deg": self.major_angle_deg,
            "pixel_matrix_A": self.pixel_matrix_A.tolist(),
            "kind": self.kind,
            "lattice_constant_A": self.lattice_constant_A,
            "voltage_kV": self.voltage_kV,
            "defocus_A": self.defocus_A,
            "cs_mm": self.cs_mm,
            "amplitude_contrast": self.amplitude_contrast,
            "b_factor_A2": self.b_factor_A2,
            "carbon_phase_rms": self.carbon_phase_rms,
            "dose_e_per_A2": self.dose_e_per_A2,
            "n_grains": int(self.grain_diameters_A.size),
            "grain_diameter_median_nm": float(np.median(self.grain_diameters_A)) / 10.0
            if self.grain_diameters_A.size
            else None,
            "n_atoms": self.n_atoms,
            "shape": list(self.image.shape),
        }


def _random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random rotation matrices (normalized Gaussian quaternions)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.empty((n, 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - z * w)
    r[:, 0, 2] = 2 * (x * z + y * w)
    r[:, 1, 0] = 2 * (x * y + z * w)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - x * w)
    r[:, 2, 0] = 2 * (x * z - y * w)
    r[:, 2, 1] = 2 * (y * z + x * w)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape {shape!r} must be two integers (ny, nx)") from None
    if ny < 16 or nx < 16 or ny > 16384 or nx > 16384:
        raise InputError(f"image shape {shape!r} must lie between 16 and 16384 pixels per side")
    return ny, nx


def _check_pixel_matrix(pixel_matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(pixel_matrix, dtype=float)
    if m.shape != (2, 2) or not np.all(np.isfinite(m)):
        raise InputError("the pixel matrix must be a finite 2x2 array (Å/pixel)")
    det = float(np.linalg.det(m))
    if not det > 0:
        raise InputError("the pixel matrix must have a positive determinant")
    return m


def place_gold_grains(
    shape: tuple[int, int],
    *,
    pixel_matrix_A: np.ndarray,
    kind: Literal["foil", "particles"] = "foil",
    grain_size_nm: float = 10.0,
    grain_size_spread: float = 0.2,
    coverage: float = 0.3,
    n_particles: int = 12,
    packing: float = 1.0,
    grain_thickness_nm: float | None = None,
    rng: np.random.Generator,
) -> GoldGrains:
    """Draw the sizes, orientations and positions of gold grains in a field of view.

    Parameters
    ----------
    shape : tuple of int
        Detector image shape ``(ny, nx)``.
    pixel_matrix_A : numpy.ndarray
        Pixel matrix ``M`` (Å/pixel).
    kind : {"foil", "particles"}
        ``"foil"``: grains packed in the band ``0 <= x < coverage * nx`` (a foil with two
        straight edges in the periodic field); ``"particles"``: ``n_particles`` grains at
        uniformly random positions.
    grain_size_nm : float
        Median grain diameter in nm (lognormal distribution).
    grain_size_spread : float
        Standard deviation of ``ln(diameter)``; diameters are clipped to within
        ``exp(+-3 spread)`` of the median.
    coverage : float
        Fraction of the field covered by the foil (``kind="foil"``), in (0, 1].
    n_particles : int
        Number of particles (``kind="particles"``).
    packing : float
        Projected area of the grains per unit foil area (``kind="foil"``).
    grain_thickness_nm : float or None
        ``None``: spherical grains. Otherwise the grains are discs of this thickness
        (nm) lying in the specimen plane, as in a thin evaporated foil; thin grains
        excite more reflections per grain (fuller rings) for fewer atoms.
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    GoldGrains
    """
    ny, nx = _check_shape(shape)
    m = _check_pixel_matrix(pixel_matrix_A)
    if kind not in ("foil", "particles"):
        raise InputError(f"kind {kind!r} must be 'foil' or 'particles'")
    d_nm = float(grain_size_nm)
    if not math.isfinite(d_nm) or not 0.5 <= d_nm <= 200.0:
        raise InputError(f"grain size {grain_size_nm!r} nm must lie between 0.5 and 200 nm")
    spread = float(grain_size_spread)
    if not math.isfinite(spread) or not 0.0 <= spread <= 1.0:
        raise InputError(f"grain size spread {grain_size_spread!r} must lie in [0, 1]")
    cov = float(coverage)
    if not math.isfinite(cov) or not 0.0 < cov <= 1.0:
        raise InputError(f"coverage {coverage!r} must lie in (0, 1]")
    if not math.isfinite(packing) or not 0.0 < packing <= 5.0:
        raise InputError(f"packing {packing!r} must lie in (0, 5]")
    thickness_A = None
    if grain_thickness_nm is not None:
        t_nm = float(grain_thickness_nm)
        if not math.isfinite(t_nm) or not 0.5 <= t_nm <= 200.0:
            raise InputError(
                f"grain thickness {grain_thickness_nm!r} nm must lie between 0.5 and 200 nm"
            )
        thickness_A = 10.0 * t_nm
    area_px_A2 = float(np.linalg.det(m))
    d_med_A = 10.0 * d_nm
    mean_d2 = d_med_A**2 * math.exp(2.0 * spread**2)
    if kind == "foil":
        foil_area_A2 = cov * nx * ny * area_px_A2
        n = max(1, round(packing * foil_area_A2 / (math.pi / 4.0 * mean_d2)))
        centers = np.column_stack([rng.uniform(0.0, cov * nx, n), rng.uniform(0.0, ny, n)])
    else:
        n = int(n_particles)
        if not 1 <= n <= 100000:
            raise InputError(f"number of particles {n_particles!r} must lie in [1, 100000]")
        centers = np.column_stack([rng.uniform(0.0, nx, n), rng.uniform(0.0, ny, n)])
    logd = rng.normal(0.0, spread, n) if spread > 0 else np.zeros(n)
    diam = d_med_A * np.exp(np.clip(logd, -3.0 * spread, 3.0 * spread))
    return GoldGrains(
        centers_px=centers,
        diameters_A=diam,
        rotations=_random_rotations(n, rng),
        thickness_A=thickness_A,
    )


def _fcc_ball(radius_A: float, lattice_constant: float) -> tuple[np.ndarray, np.ndarray]:
    """FCC lattice points within ``radius_A`` of the origin, sorted by distance.

    The lattice is offset by a fixed generic vector so no atom sits exactly at the
    centre. Returns ``(positions (n, 3) Å, distances (n,) Å)`` (read-only, cached).
    """
    # Cache on the radius rounded up to 5 Å so repeated simulations reuse the ball.
    return _fcc_ball_cached(5.0 * math.ceil(radius_A / 5.0), float(lattice_constant))


@functools.lru_cache(maxsize=2)
def _fcc_ball_cached(radius_A: float, lattice_constant: float) -> tuple[np.ndarray, np.ndarray]:
    a = lattice_constant
    nmax = math.ceil(radius_A / a) + 1
    i = np.arange(-nmax, nmax + 1, dtype=float)
    cube = np.stack(np.meshgrid(i, i, i, indexing="ij"), axis=-1).reshape(-1, 3)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    pts = (cube[:, None, :] + basis[None, :, :]).reshape(-1, 3) * a
    pts += np.array([0.1234, 0.2345, 0.3456]) * a
    r = np.sqrt(np.einsum("ij,ij->i", pts, pts))
    keep = r < radius_A
    pts, r = pts[keep], r[keep]
    order = np.argsort(r, kind="stable")
    pts, r = pts[order], r[order]
    pts.flags.writeable = False
    r.flags.writeable = False
    return pts, r


def render_gold_phase(
    shape: tuple[int, int],
    grains: GoldGrains,
    *,
    pixel_matrix_A: np.ndarray,
    oversample: int = 2,
    voltage_kV: float = 300.0,
    lattice_constant_A: float = LATTICE_CONSTANT_293K_A,
    debye_waller_A2: float = GOLD_DEBYE_WALLER_A2,
    carbon_phase_rms: float = 0.0,
    rng: np.random.Generator | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Projected phase (rad) of gold grains (plus an optional carbon film) on a fine grid.

    Parameters
    ----------
    shape : tuple of int
        Detector image shape ``(ny, nx)``; the result has shape
        ``(ny * oversample, nx * oversample)``, in detector-pixel coordinates (fine sample
        ``j`` is at detector coordinate ``j / oversample``).
    grains : GoldGrains
        Grains from :func:`place_gold_grains` (centres in detector pixels).
    pixel_matrix_A : numpy.ndarray
        Pixel matrix ``M`` (Å/pixel): an atom at specimen position ``r`` (Å) relative to
        its grain centre sits at ``centre + M^{-1} r`` detector pixels.
    oversample : int
        Fine-grid points per detector pixel.
    voltage_kV : float
        Accelerating voltage (sets the interaction constant).
    lattice_constant_A : float
        Gold lattice constant in Å.
    debye_waller_A2 : float
        Debye-Waller factor of gold in Å².
    carbon_phase_rms : float
        Rms phase (rad) of an amorphous carbon film added everywhere (needs ``rng``).
    rng : numpy.random.Generator, optional
        Random generator for the carbon film.
    workers : int
        Threads for the FFTs.

    Returns
    -------
    numpy.ndarray
        Projected phase in rad, shape ``(ny * oversample, nx * oversample)``, float64.
    """
    ny, nx = _check_shape(shape)
    m = _check_pixel_matrix(pixel_matrix_A)
    os_ = int(oversample)
    if not 1 <= os_ <= 8:
        raise InputError(f"oversample {oversample!r} must lie in [1, 8]")
    a = check_lattice_constant_A(lattice_constant_A)
    sigma = calculate_interaction_constant(voltage_kV)
    if not math.isfinite(carbon_phase_rms) or not 0.0 <= carbon_phase_rms <= 10.0:
        raise InputError(f"carbon phase rms {carbon_phase_rms!r} rad must lie in [0, 10]")
    if carbon_phase_rms > 0 and rng is None:
        raise InputError("a carbon film needs a random generator (rng)")
    fy, fx = ny * os_, nx * os_
    density = np.zeros((fy, fx), dtype=np.float64)
    # Detector pixel -> fine grid (x, y) of a specimen displacement r (Å): os * M^{-1} r.
    to_fine = os_ * np.linalg.inv(m)
    n_grains = grains.diameters_A.size
    if n_grains:
        radii = grains.bounding_radii_A
        ball, dist = _fcc_ball(float(np.max(radii)), a)
        counts = np.searchsorted(dist, radii)
        bx, by, bz = (np.ascontiguousarray(ball[:, i]) for i in range(3))
        for g in range(n_grains):
            k = int(counts[g])
            if k == 0:
                continue
            rot = grains.rotations[g]
            cx, cy = os_ * grains.centers_px[g]
            # crystal -> specimen frame (rotation), project along z.
            xs = bx[:k] * rot[0, 0] + by[:k] * rot[0, 1] + bz[:k] * rot[0, 2]
            ys = bx[:k] * rot[1, 0] + by[:k] * rot[1, 1] + bz[:k] * rot[1, 2]
            if grains.thickness_A is not None:
                half = 0.5 * float(grains.thickness_A)
                r2 = 0.25 * float(grains.diameters_A[g]) ** 2
                zs = bx[:k] * rot[2, 0] + by[:k] * rot[2, 1] + bz[:k] * rot[2, 2]
                keep = (np.abs(zs) < half) & (xs * xs + ys * ys < r2)
                xs, ys = xs[keep], ys[keep]
                if xs.size == 0:
                    continue
            # specimen Å -> fine pixels: os * M^{-1} r.
            x = xs * to_fine[0, 0] + ys * to_fine[0, 1] + cx
            y = xs * to_fine[1, 0] + ys * to_fine[1, 1] + cy
            _deposit_cic(density, x, y)
    # Fourier space on the half plane of a real FFT, in single precision (the phase is
    # a smooth, band-limited field; float32 keeps 1e-7 relative accuracy).
    f = sfft.rfft2(density.astype(np.float32), workers=workers)
    del density
    qy = (sfft.fftfreq(fy) * os_).astype(np.float32)  # cycles per detector pixel
    qx = (sfft.rfftfreq(fx) * os_).astype(np.float32)
    minv_t = np.linalg.inv(m).T
    cxx = float(minv_t[0, 0] ** 2 + minv_t[1, 0] ** 2)
    cxy = float(2.0 * (minv_t[0, 0] * minv_t[0, 1] + minv_t[1, 0] * minv_t[1, 1]))
    cyy = float(minv_t[0, 1] ** 2 + minv_t[1, 1] ** 2)
    g = (cyy * qy * qy)[:, None] + (cxy * qy)[:, None] * qx[None, :]
    g += (cxx * qx * qx)[None, :]
    np.sqrt(g, out=g)  # |g| in Å^-1 (specimen frequency of each fine-grid frequency)
    # Radial filters tabulated on a fine 1-D grid of |g| and interpolated.
    g_tab = np.linspace(0.0, float(g.max()) * (1 + 1e-6), 16385)
    fine_area_A2 = float(np.linalg.det(m)) / (os_ * os_)
    gold_tab = (
        sigma
        * _POTENTIAL_PER_SCATTERING_FACTOR_V_A2
        / fine_area_A2
        * electron_scattering_factor_A(g_tab, "Au")
        * np.exp(-0.25 * debye_waller_A2 * g_tab * g_tab)
    )
    f *= np.interp(g, g_tab, gold_tab).astype(np.float32)
    # Undo the bilinear kernel's transfer sinc^2(qx) sinc^2(qy) (fine-grid cycles).
    f /= (np.sinc(sfft.fftfreq(fy)) ** 2).astype(np.float32)[:, None]
    f /= (np.sinc(sfft.rfftfreq(fx)) ** 2).astype(np.float32)[None, :]
    if carbon_phase_rms > 0:
        assert rng is not None
        # Uncorrelated carbon atoms: white noise shaped by f_C(|g|), drawn directly in
        # Fourier space (E|X|^2 = fy * fx, the transform of unit-variance white noise).
        carbon = np.interp(g, g_tab, electron_scattering_factor_A(g_tab, "C")).astype(np.float32)
        carbon[0, 0] = 0.0
        col_w = np.full(carbon.shape[1], 2.0)
        col_w[0] = 1.0
        if fx % 2 == 0:
            col_w[-1] = 1.0
        mean_sq = float(np.sum((carbon * carbon).sum(axis=0, dtype=np.float64) * col_w))
        mean_sq /= fy * fx
        carbon *= np.float32(carbon_phase_rms * math.sqrt(0.5 * fy * fx / mean_sq))
        noise = rng.standard_normal(carbon.shape, dtype=np.float32) * carbon
        f.real += noise
        noise = rng.standard_normal(carbon.shape, dtype=np.float32)
        noise *= carbon
        f.imag += noise
        del noise, carbon
    del g
    phase = sfft.irfft2(f, s=(fy, fx), workers=workers, overwrite_x=True)
    return phase.astype(np.float64)


def _deposit_cic(density: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Add unit weights at fine-grid positions ``(x, y)`` with the bilinear kernel.

    The atoms of one grain are binned on a local grid covering their bounding box (fast,
    cache-friendly), which is then added to ``density`` with periodic wrapping.
    """
    fy, fx = density.shape
    x0 = math.floor(float(x.min()))
    y0 = math.floor(float(y.min()))
    lx = x - x0
    ly = y - y0
    ix = lx.astype(np.int64)
    iy = ly.astype(np.int64)
    wx1 = lx - ix
    wy1 = ly - iy
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    w = int(ix.max()) + 2
    h = int(iy.max()) + 2
    idx = iy * w + ix
    size = h * w
    local = np.bincount(idx, wy0 * wx0, minlength=size)
    local += np.bincount(idx + 1, wy0 * wx1, minlength=size)
    local += np.bincount(idx + w, wy1 * wx0, minlength=size)
    local += np.bincount(idx + w + 1, wy1 * wx1, minlength=size)
    patch = local.reshape(h, w)
    if h > fy or w > fx:
        # Larger than the field: fold the patch onto the periodic field first.
        folded = np.zeros((min(h, fy), min(w, fx)))
        ry = np.arange(h) % fy
        rx = np.arange(w) % fx
        np.add.at(folded, (ry[:, None], rx[None, :]), patch)
        patch = folded
        h, w = patch.shape
    x0 %= fx
    y0 %= fy
    if y0 + h <= fy and x0 + w <= fx:
        density[y0 : y0 + h, x0 : x0 + w] += patch
    else:
        rows = (y0 + np.arange(h)) % fy
        cols = (x0 + np.arange(w)) % fx
        density[np.ix_(rows, cols)] += patch


def simulate_gold_image(
    shape: tuple[int, int],
    *,
    pixel_size_A: float,
    anisotropy_percent: float = 0.0,
    major_angle_deg: float = 0.0,
    kind: Literal["foil", "particles"] = "foil",
    grain_size_nm: float = 10.0,
    grain_size_spread: float = 0.2,
    coverage: float = 0.3,
    n_particles: int = 12,
    grain_thickness_nm: float | None = None,
    lattice_constant_A: float = LATTICE_CONSTANT_293K_A,
    voltage_kV: float = 300.0,
    defocus_A: float = 5000.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    b_factor_A2: float = 10.0,
    carbon_phase_rms: float = 0.1,
    dose_e_per_A2: float | None = 40.0,
    oversample: int = 2,
    rng: np.random.Generator,
    workers: int = 1,
) -> SimulatedGoldImage:
    """Simulate a TEM image of gold grains with a known pixel matrix.

    See the module docstring for the forward model.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)`` in detector pixels.
    pixel_size_A : float
        Isotropic equivalent pixel size ``sqrt(p_major p_minor)`` in Å.
    anisotropy_percent : float
        Magnification anisotropy ``100 (p_major / p_minor - 1)`` in %, in [0, 20].
    major_angle_deg : float
        Direction of ``p_major`` from +x toward +y, degrees.
    kind : {"foil", "particles"}
        Polycrystalline foil (full rings) or isolated nanocrystals (spotty partial rings).
    grain_size_nm, grain_size_spread, coverage, n_particles, grain_thickness_nm
        Grain population (see :func:`place_gold_grains`).
    lattice_constant_A : float
        Gold lattice constant in Å (4.0782 at 293 K).
    voltage_kV : float
        Accelerating voltage in kV.
    defocus_A : float
        Defocus in Å, underfocus positive.
    cs_mm : float
        Spherical aberration in mm.
    amplitude_contrast : float
        Amplitude-contrast fraction in [0, 1).
    b_factor_A2 : float
        Envelope ``exp(-B g^2 / 4)`` on the scattered wave (Å², >= 0).
    carbon_phase_rms : float
        Rms phase (rad) of the amorphous carbon support (Thon rings).
    dose_e_per_A2 : float or None
        Electron dose (e⁻/Å²) for Poisson noise; ``None`` returns the noise-free
        intensity (1 = empty beam).
    oversample : int
        Fine-grid points per detector pixel (>= 2 makes rings beyond Nyquist alias).
    rng : numpy.random.Generator
        Random generator (grains, carbon, shot noise).
    workers : int
        Threads for the FFTs.

    Returns
    -------
    SimulatedGoldImage
    """
    ny, nx = _check_shape(shape)
    p = float(pixel_size_A)
    if not math.isfinite(p) or not 0.01 <= p <= 100.0:
        raise InputError(f"pixel size {pixel_size_A!r} Å must lie between 0.01 and 100 Å")
    aniso = float(anisotropy_percent)
    if not math.isfinite(aniso) or not 0.0 <= aniso <= 20.0:
        raise InputError(f"anisotropy {anisotropy_percent!r} % must lie in [0, 20]")
    angle = float(major_angle_deg)
    if not math.isfinite(angle):
        raise InputError(f"major angle {major_angle_deg!r} must be finite")
    if not math.isfinite(defocus_A) or abs(defocus_A) > 2e5:
        raise InputError(f"defocus {defocus_A!r} Å must lie within ±200000 Å (±20 µm)")
    if not math.isfinite(cs_mm) or not 0.0 <= cs_mm <= 20.0:
        raise InputError(f"Cs {cs_mm!r} mm must lie in [0, 20] mm")
    if not math.isfinite(b_factor_A2) or not 0.0 <= b_factor_A2 <= 1000.0:
        raise InputError(f"B-factor {b_factor_A2!r} Å² must lie in [0, 1000]")
    if dose_e_per_A2 is not None and (
        not math.isfinite(dose_e_per_A2) or not 0.0 < dose_e_per_A2 <= 1e6
    ):
        raise InputError(f"dose {dose_e_per_A2!r} e/Å² must be positive (and <= 1e6)")
    absorption = amplitude_contrast_absorption(amplitude_contrast)
    check_voltage_kV(voltage_kV)
    m = pixel_matrix_A(p, aniso, angle)
    geom = decompose_pixel_matrix(m)
    grains = place_gold_grains(
        (ny, nx),
        pixel_matrix_A=m,
        kind=kind,
        grain_size_nm=grain_size_nm,
        grain_size_spread=grain_size_spread,
        coverage=coverage,
        n_particles=n_particles,
        grain_thickness_nm=grain_thickness_nm,
        rng=rng,
    )
    phase = render_gold_phase(
        (ny, nx),
        grains,
        pixel_matrix_A=m,
        oversample=oversample,
        voltage_kV=voltage_kV,
        lattice_constant_A=lattice_constant_A,
        carbon_phase_rms=carbon_phase_rms,
        rng=rng,
        workers=workers,
    )

    def chi(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return calculate_chi(gx, gy, defocus_u_A=defocus_A, cs_mm=cs_mm, voltage_kV=voltage_kV)

    def envelope(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        g2 = gx.astype(np.float32) ** 2
        g2 += gy.astype(np.float32) ** 2
        g2 *= np.float32(-0.25 * b_factor_A2)
        return np.exp(g2, out=g2)

    image = form_image(
        phase,
        pixel_matrix_A=m,
        oversample=oversample,
        chi=chi,
        absorption=absorption,
        envelope=envelope if b_factor_A2 > 0 else None,
        dose_e_per_A2=dose_e_per_A2,
        rng=rng,
        workers=workers,
        single_precision=True,
    )
    return SimulatedGoldImage(
        image=image,
        pixel_matrix_A=m,
        pixel_size_A=geom.pixel_size_A,
        pixel_major_A=geom.pixel_major_A,
        pixel_minor_A=geom.pixel_minor_A,
        anisotropy_percent=geom.anisotropy_percent,
        major_angle_deg=geom.major_angle_deg,
        kind=kind,
        lattice_constant_A=float(lattice_constant_A),
        voltage_kV=float(voltage_kV),
        defocus_A=float(defocus_A),
        cs_mm=float(cs_mm),
        amplitude_contrast=float(amplitude_contrast),
        b_factor_A2=float(b_factor_A2),
        carbon_phase_rms=float(carbon_phase_rms),
        dose_e_per_A2=None if dose_e_per_A2 is None else float(dose_e_per_A2),
        grain_diameters_A=grains.diameters_A,
        n_atoms=grains.n_atoms_estimate,
    )
