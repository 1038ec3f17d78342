"""Private engine of the CTF fits: spectrum model, coarse search and Levenberg-Marquardt.

Model of a background-normalised power spectrum value at frequency ``k`` (pixel ``p``)::

    d_p = b(|k|) + a(|k|) sin^2(chi(k; theta) + arcsin A) + noise

``b`` and ``a`` are smooth functions of ``|k|`` (Legendre polynomials in the radius over
the fitted band), solved by linear least squares for every ``theta`` (variable
projection), so the Thon-ring positions alone carry the nonlinear parameters
``theta = (mean defocus, a1, a2, phase shift)`` per micrograph, with the astigmatism in
Cartesian form ``dz(phi) = m + a1 cos 2 phi + a2 sin 2 phi``, plus Cs when it is fitted.
The nonlinear parameters are refined by Levenberg-Marquardt with the analytic Jacobian
(``b`` and ``a`` held at their current least-squares values, re-solved after every step).
Several micrographs can share Cs: the normal equations then couple them through one column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from temcal.errors import CalibrationError, InputError
from temcal.physics.wavelength import calculate_wavelength_A
from temcal.spectra.ctf_profiles import (
    AnnulusPixels,
    calculate_background_normalised,
    calculate_sector_profiles,
    select_annulus_pixels,
)
from temcal.spectra.power import PowerSpectrum, calculate_power_spectrum

CS_SCALE = 1e7  # Å per mm


@dataclass
class PreparedSpectrum:
    """A micrograph's normalised spectrum ready for fitting (internal)."""

    spectrum: PowerSpectrum
    normalised: np.ndarray
    pixels: AnnulusPixels
    pixel_size_A: float
    voltage_kV: float
    wavelength_A: float
    amplitude_contrast: float
    r_min_px: float
    r_max_px: float
    k2: np.ndarray = field(repr=False)
    cos2: np.ndarray = field(repr=False)
    sin2: np.ndarray = field(repr=False)

    def px_to_per_A(self, r_px: float) -> float:
        """Convert a radius in spectrum pixels to Å⁻¹."""
        return r_px / (self.pixels.tile_size * self.pixel_size_A)

    def per_A_to_px(self, k_per_A: float) -> float:
        """Convert a frequency in Å⁻¹ to spectrum pixels."""
        return k_per_A * self.pixels.tile_size * self.pixel_size_A


def default_tile_size(shape: tuple[int, int]) -> int:
    """Welch tile side: 1024 from 4096-pixel images, else 512 (or what fits)."""
    m = min(shape)
    if m >= 4096:
        return 1024
    if m >= 512:
        return 512
    return max(64, 1 << (m.bit_length() - 1))


def prepare_spectrum(
    image: np.ndarray | PowerSpectrum,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    amplitude_contrast: float,
    low_res_A: float,
    high_res_A: float | None,
    tile_size: int | None,
    overlap: float | None,
    exclude_A: tuple[float, ...] = (),
    exclude_width: float = 0.04,
) -> PreparedSpectrum:
    """Power spectrum, background normalisation and annulus pixels.

    ``exclude_A`` lists resolutions (Å, e.g. gold reflections) whose annuli
    ``|r / r_ex - 1| < exclude_width`` are left out of the fit.
    """
    if isinstance(image, PowerSpectrum):
        spec = image
    else:
        img = np.asarray(image, dtype=float)
        if img.ndim != 2:
            raise InputError(f"CTF fit needs a 2-D image, got shape {img.shape}")
        n = tile_size or default_tile_size(img.shape)
        if overlap is None:
            overlap = 0.0 if min(img.shape) >= 2048 else 0.5
        spec = calculate_power_spectrum(img, tile_size=n, overlap=overlap)
    n = spec.tile_size
    r_min = max(n * pixel_size_A / low_res_A, 4.0)
    r_nyq = 0.5 * n
    # default 0.8 Nyquist: detector aliasing folds rings from beyond Nyquist back near it
    r_max = 0.8 * r_nyq if high_res_A is None else n * pixel_size_A / high_res_A
    if high_res_A is not None and high_res_A < 2.0 * pixel_size_A:
        raise InputError(
            f"high-resolution limit {high_res_A} Å is beyond Nyquist ({2 * pixel_size_A} Å)"
        )
    r_max = min(r_max, 0.98 * r_nyq)
    if r_max < r_min + 8:
        raise InputError(
            f"resolution range {low_res_A}-{high_res_A} Å leaves too few spectrum pixels "
            f"at pixel size {pixel_size_A} Å and tile {n}"
        )
    normalised = calculate_background_normalised(spec, r_min_px=r_min, r_max_px=r_max)
    pix = select_annulus_pixels(normalised, r_min_px=r_min, r_max_px=r_max)
    if exclude_A:
        keep = np.ones(pix.radius_px.size, dtype=bool)
        for d in exclude_A:
            r_ex = n * pixel_size_A / d
            keep &= np.abs(pix.radius_px / r_ex - 1.0) >= exclude_width
        pix = AnnulusPixels(
            kx_px=pix.kx_px[keep],
            ky_px=pix.ky_px[keep],
            radius_px=pix.radius_px[keep],
            values=pix.values[keep],
            tile_size=n,
        )
    scale = 1.0 / pixel_size_A
    kx = pix.kx_px * scale
    ky = pix.ky_px * scale
    k2 = kx * kx + ky * ky
    phi2 = 2.0 * np.arctan2(ky, kx)
    return PreparedSpectrum(
        spectrum=spec,
        normalised=normalised,
        pixels=pix,
        pixel_size_A=float(pixel_size_A),
        voltage_kV=float(voltage_kV),
        wavelength_A=calculate_wavelength_A(voltage_kV),
        amplitude_contrast=float(amplitude_contrast),
        r_min_px=float(r_min),
        r_max_px=float(r_max),
        k2=k2,
        cos2=np.cos(phi2),
        sin2=np.sin(phi2),
    )


def rescale_pixel(prep: PreparedSpectrum, pixel_size_A: float) -> PreparedSpectrum:
    """The same spectrum interpreted with another pixel size."""
    f = (prep.pixel_size_A / pixel_size_A) ** 2
    return PreparedSpectrum(
        spectrum=prep.spectrum,
        normalised=prep.normalised,
        pixels=prep.pixels,
        pixel_size_A=float(pixel_size_A),
        voltage_kV=prep.voltage_kV,
        wavelength_A=prep.wavelength_A,
        amplitude_contrast=prep.amplitude_contrast,
        r_min_px=prep.r_min_px,
        r_max_px=prep.r_max_px,
        k2=prep.k2 * f,
        cos2=prep.cos2,
        sin2=prep.sin2,
    )


# ---------------------------------------------------------------- model pieces


@dataclass
class Band:
    """A contiguous radial band of a prepared spectrum with its smooth basis."""

    sl: slice
    bin_index: np.ndarray
    basis: np.ndarray  # (n_bins, q)
    n_bins: int
    counts: np.ndarray
    bt_d: np.ndarray  # basis^T (per-bin sums of d)
    dd: float  # sum of d^2
    h11: np.ndarray  # basis^T diag(counts) basis


def make_band(prep: PreparedSpectrum, r_lo: float, r_hi: float, degree: int = 5) -> Band:
    """Band ``[r_lo, r_hi)`` in spectrum pixels with a Legendre basis of ``degree``."""
    sl = prep.pixels.band(r_lo, r_hi)
    r = prep.pixels.radius_px[sl]
    if r.size < 50:
        raise CalibrationError("too few spectrum pixels in the fitting band")
    r0 = float(np.floor(r[0]))
    bins = (r - r0).astype(np.int64)
    nb = int(bins.max()) + 1
    centres = r0 + np.arange(nb) + 0.5
    t = (centres - centres[0]) / max(centres[-1] - centres[0], 1e-9) * 2.0 - 1.0
    basis = np.polynomial.legendre.legvander(t, degree)
    counts = np.bincount(bins, minlength=nb).astype(float)
    d = prep.pixels.values[sl]
    return Band(
        sl=sl,
        bin_index=bins,
        basis=basis,
        n_bins=nb,
        counts=counts,
        bt_d=basis.T @ np.bincount(bins, weights=d, minlength=nb),
        dd=float(d @ d),
        h11=basis.T @ (counts[:, None] * basis),
    )


def chi_of(prep: PreparedSpectrum, sl: slice, theta: np.ndarray, cs_mm: float) -> np.ndarray:
    """Chi + arcsin(A) at the band's pixels; ``theta = (m, a1, a2, phase_rad)``."""
    lam = prep.wavelength_A
    k2 = prep.k2[sl]
    dz = theta[0] + theta[1] * prep.cos2[sl] + theta[2] * prep.sin2[sl]
    return (
        math.pi * lam * dz * k2
        - 0.5 * math.pi * cs_mm * CS_SCALE * lam**3 * k2 * k2
        + theta[3]
        + math.asin(prep.amplitude_contrast)
    )


def solve_linear(
    prep: PreparedSpectrum, band: Band, s: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``b`` and ``a`` for model values ``s``: (rss, b_bins, a_bins)."""
    d = prep.pixels.values[band.sl]
    idx = band.bin_index
    nb = band.n_bins
    s1 = np.bincount(idx, weights=s, minlength=nb)
    s2 = np.bincount(idx, weights=s * s, minlength=nb)
    ds = np.bincount(idx, weights=d * s, minlength=nb)
    bmat = band.basis
    q = bmat.shape[1]
    h = np.empty((2 * q, 2 * q))
    h[:q, :q] = band.h11
    h[:q, q:] = bmat.T @ (s1[:, None] * bmat)
    h[q:, :q] = h[:q, q:].T
    h[q:, q:] = bmat.T @ (s2[:, None] * bmat)
    g = np.concatenate([band.bt_d, bmat.T @ ds])
    h += np.eye(2 * q) * (1e-10 * np.trace(h) / (2 * q))
    c = np.linalg.solve(h, g)
    rss = float(band.dd - g @ c)
    return max(rss, 0.0), bmat @ c[:q], bmat @ c[q:]


def rss_of(prep: PreparedSpectrum, band: Band, theta: np.ndarray, cs_mm: float) -> float:
    """Residual sum of squares at ``theta`` (b and a solved)."""
    x = chi_of(prep, band.sl, theta, cs_mm)
    return solve_linear(prep, band, np.sin(x) ** 2)[0]


# ---------------------------------------------------------------- Levenberg-Marquardt


@dataclass
class Item:
    """One micrograph in a (joint) refinement."""

    prep: PreparedSpectrum
    band: Band
    theta: np.ndarray


def _normal_blocks(
    item: Item, cs_mm: float, free: list[int], cs_free: bool
) -> tuple[float, np.ndarray, np.ndarray]:
    prep, band = item.prep, item.band
    sl = band.sl
    x = chi_of(prep, sl, item.theta, cs_mm)
    s = np.sin(x) ** 2
    rss, b_bins, a_bins = solve_linear(prep, band, s)
    a_px = a_bins[band.bin_index]
    res = prep.pixels.values[sl] - b_bins[band.bin_index] - a_px * s
    w = a_px * np.sin(2.0 * x)  # d model / d chi
    lam = prep.wavelength_A
    k2 = prep.k2[sl]
    cols = []
    base = math.pi * lam * k2 * w
    for j in free:
        if j == 0:
            cols.append(base)
        elif j == 1:
            cols.append(base * prep.cos2[sl])
        elif j == 2:
            cols.append(base * prep.sin2[sl])
        else:
            cols.append(w)
    if cs_free:
        cols.append(-0.5 * math.pi * CS_SCALE * lam**3 * k2 * k2 * w)
    jac = np.stack(cols, axis=1)  # d model / d params
    return rss, jac.T @ jac, jac.T @ res


def refine(
    items: list[Item],
    cs_mm: float,
    *,
    free: list[int],
    cs_free: bool,
    max_iter: int = 40,
    rtol: float = 1e-8,
) -> tuple[list[Item], float, float, np.ndarray | None]:
    """Levenberg-Marquardt over per-item ``free`` parameters and optionally a shared Cs.

    Returns the refined items, Cs, the total RSS and the inverse normal matrix (for the
    covariance; ``None`` if singular).
    """
    nf = len(free)
    n_par = nf * len(items) + (1 if cs_free else 0)
    mu = 1e-3
    thetas = [it.theta.copy() for it in items]
    cs = float(cs_mm)
    inv: np.ndarray | None = None
    total_prev = math.inf
    small_steps = 0
    for _ in range(max_iter):
        jtj = np.zeros((n_par, n_par))
        jtr = np.zeros(n_par)
        total = 0.0
        for i, it in enumerate(items):
            it.theta = thetas[i]
            rss, a, g = _normal_blocks(it, cs, free, cs_free)
            total += rss
            sl = slice(i * nf, (i + 1) * nf)
            jtj[sl, sl] += a[:nf, :nf]
            jtr[sl] += g[:nf]
            if cs_free:
                jtj[sl, -1] += a[:nf, nf]
                jtj[-1, sl] += a[nf, :nf]
                jtj[-1, -1] += a[nf, nf]
                jtr[-1] += g[nf]
        diag = np.diag(jtj).copy()
        diag[diag <= 0] = 1.0
        accepted = False
        for _try in range(12):
            try:
                step = np.linalg.solve(jtj + mu * np.diag(diag), jtr)
            except np.linalg.LinAlgError:
                mu *= 10
                continue
            new_thetas = []
            for i in range(len(items)):
                th = thetas[i].copy()
                th[free] += step[i * nf : (i + 1) * nf]
                new_thetas.append(th)
            new_cs = cs + (step[-1] if cs_free else 0.0)
            new_total = sum(
                rss_of(it.prep, it.band, th, new_cs)
                for it, th in zip(items, new_thetas, strict=True)
            )
            if new_total <= total:
                thetas, cs = new_thetas, new_cs
                mu = max(mu / 4.0, 1e-9)
                accepted = True
                break
            mu *= 6.0
        try:
            inv = np.linalg.inv(jtj)
        except np.linalg.LinAlgError:
            inv = None
        if not accepted:
            break
        rel = (total - new_total) / max(total, 1e-300)
        if rel < rtol:
            small_steps += 1
            if small_steps >= 2:
                total = new_total
                break
        else:
            small_steps = 0
        total_prev = new_total
    for it, th in zip(items, thetas, strict=True):
        it.theta = th
    final = sum(rss_of(it.prep, it.band, it.theta, cs) for it in items)
    del total_prev
    return items, cs, final, inv


# ---------------------------------------------------------------- coarse search


def _highpass_profiles(
    radii: np.ndarray, prof: np.ndarray, counts: np.ndarray, degree: int, window: int
) -> np.ndarray:
    """Remove a smooth trend from each profile and equalise its local amplitude."""
    t = (radii - radii[0]) / max(radii[-1] - radii[0], 1.0) * 2 - 1
    v = np.polynomial.legendre.legvander(t, degree)
    out = np.zeros_like(prof)
    ker = np.ones(window) / window
    for i in range(prof.shape[0]):
        w = counts[i]
        ok = w > 0
        if ok.sum() < degree + 3:
            continue
        sw = np.sqrt(w[ok])
        coef = np.linalg.lstsq(v[ok] * sw[:, None], prof[i, ok] * sw, rcond=None)[0]
        hp = np.where(ok, prof[i] - v @ coef, 0.0)
        env = np.sqrt(np.convolve(hp * hp, ker, mode="same") + 1e-12)
        out[i] = hp / env * np.sqrt(w / max(float(w.max()), 1.0))
    return out


def coarse_search(
    prep: PreparedSpectrum,
    *,
    cs_mm: float,
    dz_range_A: tuple[float, float],
    r_hi_px: float,
    phases_rad: np.ndarray,
    n_sectors: int = 36,
    max_astigmatism_A: float | None = None,
    ellipse_search: bool = True,
) -> list[np.ndarray]:
    """Starting values ``theta`` from sector profiles (best first).

    The radial profile of each azimuthal sector is high-passed and correlated with
    ``-cos 2(chi + arcsin A)`` over a dense grid of defoci (and phase shifts). The
    best ellipse ``dz(phi) = m + h cos 2(phi - phi_u)`` is then found by brute force
    over ``(m, h, phi_u)`` on the summed sector scores; a sinusoid through the sector
    maxima and the rotational-average maximum are two more starts.
    """
    lam = prep.wavelength_A
    radii, prof, counts, centres = calculate_sector_profiles(
        prep.pixels, n_sectors=n_sectors, r_max_px=r_hi_px
    )
    keep = radii >= prep.r_min_px
    radii, prof, counts = radii[keep], prof[:, keep], counts[:, keep]
    prof = np.where(counts > 0, prof, 0.0)
    hp = _highpass_profiles(radii, prof, counts, degree=5, window=15)
    k = radii / (prep.pixels.tile_size * prep.pixel_size_A)
    k2 = k * k
    kmax2 = float(k2[-1])
    step = 0.25 / (math.pi * lam * kmax2)
    lo, hi = dz_range_A
    dzs = np.arange(lo, hi + step, step)
    asin_a = math.asin(prep.amplitude_contrast)
    cs_term = -0.5 * math.pi * cs_mm * CS_SCALE * lam**3 * k2 * k2
    best_total = -np.inf
    best_ph = 0.0
    score = np.zeros((dzs.size, n_sectors))
    for ph in phases_rad:
        chi = math.pi * lam * dzs[:, None] * k2[None, :] + cs_term[None, :] + ph + asin_a
        model = -np.cos(2.0 * chi)
        model -= model.mean(axis=1, keepdims=True)
        model /= np.linalg.norm(model, axis=1, keepdims=True) + 1e-12
        sc = model @ hp.T  # (J, S)
        tot = float(sc.max(axis=0).sum())
        if tot > best_total:
            best_total, best_ph, score = tot, float(ph), sc
    starts: list[np.ndarray] = []
    # brute force over ellipses on a pooled score matrix
    pool = 4
    nj = score.shape[0] // pool
    if nj >= 4 and ellipse_search:
        pooled = score[: nj * pool].reshape(nj, pool, n_sectors).max(axis=1)
        pstep = step * pool
        dz0 = dzs[0] + 0.5 * (pool - 1) * step
        hmax = (
            max_astigmatism_A if max_astigmatism_A is not None else min(0.25 * (hi - lo), 25000.0)
        )
        halves = np.arange(0.0, 0.5 * hmax + pstep, pstep)
        angles = np.radians(np.arange(0.0, 180.0, 2.0))
        best = (-np.inf, 0.0, 0.0, 0.0)
        jj = np.arange(nj)
        cols = np.arange(n_sectors)
        cosd = np.cos(2.0 * (centres[None, :] - angles[:, None]))  # (A, S)
        for h in halves:
            off = np.rint(h * cosd / pstep).astype(np.int64)  # (A, S)
            idx = jj[None, :, None] + off[:, None, :]  # (A, J, S)
            valid = (idx >= 0) & (idx < nj)
            vals = np.where(valid, pooled[np.clip(idx, 0, nj - 1), cols[None, None, :]], 0.0)
            tot = vals.sum(axis=2)  # (A, J)
            ia, j = np.unravel_index(int(np.argmax(tot)), tot.shape)
            if tot[ia, j] > best[0]:
                best = (float(tot[ia, j]), dz0 + j * pstep, float(h), float(angles[ia]))
        _, m, h, a = best
        starts.append(np.array([m, h * math.cos(2 * a), h * math.sin(2 * a), best_ph]))
    # sinusoid through the sector maxima
    best_dz = dzs[np.argmax(score, axis=0)]
    design = np.stack([np.ones(n_sectors), np.cos(2 * centres), np.sin(2 * centres)], axis=1)
    coef = np.linalg.lstsq(design, best_dz, rcond=None)[0]
    starts.append(np.array([coef[0], coef[1], coef[2], best_ph]))
    j_iso = int(np.argmax(score.sum(axis=1)))
    starts.append(np.array([dzs[j_iso], 0.0, 0.0, best_ph]))
    return starts


def theta_to_defocus(theta: np.ndarray) -> tuple[float, float, float]:
    """``(defocus_u_A, defocus_v_A, astig_angle_deg)`` from ``theta``."""
    half = math.hypot(theta[1], theta[2])
    angle = 0.5 * math.degrees(math.atan2(theta[2], theta[1])) % 180.0
    return float(theta[0] + half), float(theta[0] - half), float(angle)


def defocus_to_theta(
    defocus_u_A: float, defocus_v_A: float, astig_angle_deg: float, phase_rad: float = 0.0
) -> np.ndarray:
    """Inverse of :func:`theta_to_defocus`."""
    half = 0.5 * (defocus_u_A - defocus_v_A)
    t = 2 * math.radians(astig_angle_deg)
    return np.array(
        [0.5 * (defocus_u_A + defocus_v_A), half * math.cos(t), half * math.sin(t), phase_rad]
    )


def ring_statistics(
    prep: PreparedSpectrum, theta: np.ndarray, cs_mm: float, r_hi_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-ring (one period of sin^2) correlation of data and model.

    Returns ``(mean_radius_px, correlation, n_pixels)`` for rings in order.
    """
    sl = prep.pixels.band(prep.r_min_px, r_hi_px)
    x = chi_of(prep, sl, theta, cs_mm)
    s = np.sin(x) ** 2
    d = prep.pixels.values[sl]
    r = prep.pixels.radius_px[sl]
    ring = np.floor(np.abs(x) / math.pi).astype(np.int64)
    ring -= ring.min()
    nr = int(ring.max()) + 1
    n = np.bincount(ring, minlength=nr).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        md = np.bincount(ring, weights=d, minlength=nr) / n
        ms = np.bincount(ring, weights=s, minlength=nr) / n
        cov = np.bincount(ring, weights=d * s, minlength=nr) / n - md * ms
        vd = np.bincount(ring, weights=d * d, minlength=nr) / n - md * md
        vs = np.bincount(ring, weights=s * s, minlength=nr) / n - ms * ms
        corr = cov / np.sqrt(vd * vs)
        rm = np.bincount(ring, weights=r, minlength=nr) / n
    ok = n >= 20
    order = np.argsort(rm[ok])
    return rm[ok][order], np.nan_to_num(corr[ok][order]), n[ok][order]


def fit_resolution_px(
    prep: PreparedSpectrum, theta: np.ndarray, cs_mm: float, r_hi_px: float
) -> tuple[float, int]:
    """Radius (px) of the last ring that still fits, and the number of rings that fit."""
    rm, corr, n = ring_statistics(prep, theta, cs_mm, r_hi_px)
    thresh = np.maximum(0.05, 3.0 / np.sqrt(np.maximum(n, 1.0) / 4.0))
    good = corr > thresh
    last = -1
    misses = 0
    n_good = 0
    for i in range(rm.size):
        if good[i]:
            last = i
            misses = 0
            n_good += 1
        elif last >= 0:
            misses += 1
            if misses >= 2:
                break
    if last < 0:
        return math.nan, 0
    return float(rm[last]), n_good


def equivalent_profile(
    prep: PreparedSpectrum, theta: np.ndarray, cs_mm: float, band: Band, n_bins: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Astigmatism-corrected radial profile of data and model.

    Each pixel is moved to the frequency ``k_eq`` at which the non-astigmatic CTF with
    the mean defocus has the same phase, then data minus fitted background and the fitted
    ``a sin^2`` are averaged in bins of ``k_eq``. Returns ``(k_eq_per_A, data, model)``.
    """
    sl = band.sl
    x = chi_of(prep, sl, theta, cs_mm)
    s = np.sin(x) ** 2
    _, b_bins, a_bins = solve_linear(prep, band, s)
    d = prep.pixels.values[sl] - b_bins[band.bin_index]
    mdl = a_bins[band.bin_index] * s
    lam = prep.wavelength_A
    k2 = prep.k2[sl]
    dz = theta[0] + theta[1] * prep.cos2[sl] + theta[2] * prep.sin2[sl]
    c4 = 0.5 * cs_mm * CS_SCALE * lam**2
    target = dz * k2 - c4 * k2 * k2  # chi / (pi lam) without the constant terms
    m = theta[0]
    if abs(c4) > 0:
        disc = m * m - 4.0 * c4 * target
        with np.errstate(invalid="ignore"):
            keq2 = np.where(disc >= 0, (m - np.sqrt(np.maximum(disc, 0.0))) / (2 * c4), k2)
    else:
        keq2 = target / m if m else k2
    keq = np.sqrt(np.clip(keq2, 0.0, None))
    edges = np.linspace(float(np.sqrt(k2.min())), float(np.sqrt(k2.max())), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, keq) - 1, 0, n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        dm = np.bincount(idx, weights=d, minlength=n_bins) / cnt
        mm = np.bincount(idx, weights=mdl, minlength=n_bins) / cnt
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = cnt > 0
    return centres[ok], dm[ok], mm[ok]


def sampling_limit_px(
    prep: PreparedSpectrum, theta: np.ndarray, cs_mm: float, min_period_px: float = 2.5
) -> float:
    """Largest radius (px) where the Thon rings are still sampled by ``min_period_px``.

    The local ring period is ``pi / |d chi / d r|`` (spectrum pixels), evaluated for the
    largest absolute principal defocus; beyond the returned radius the rings are too
    fine for the spectrum's sampling (and the window blurs them out).
    """
    n = prep.pixels.tile_size
    r = np.arange(1.0, 0.5 * n)
    k = r / (n * prep.pixel_size_A)
    lam = prep.wavelength_A
    half = math.hypot(theta[1], theta[2])
    dchi_dk = [
        np.abs(2 * math.pi * lam * dz * k - 2 * math.pi * cs_mm * CS_SCALE * lam**3 * k**3)
        for dz in (theta[0] + half, theta[0] - half)
    ]
    dchi_dr = np.maximum(*dchi_dk) / (n * prep.pixel_size_A)
    period = math.pi / np.maximum(dchi_dr, 1e-12)
    bad = np.nonzero(period < min_period_px)[0]
    return float(r[bad[0]]) if bad.size else float(r[-1])
