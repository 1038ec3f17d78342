"""Sub-pixel registration of images taken at different beam tilts.

``moving(r) = reference(r - s)`` means a shift ``s`` (pixels, ``(x, y)``). Under a beam
tilt the image is not simply shifted: the transfer of the wave scattered to ``g`` is
``exp(i chi_tau(g))`` whose odd part in ``g`` is, for aberrations up to third order, a
polynomial *linear plus cubic* in ``g``. For two weak-phase images ``a`` and ``b`` of one
specimen the cross-power spectrum is

``C(g) = B(g) conj(A(g)) = 4 |Phi(g)|^2 sin(chi_b,even) sin(chi_a,even) exp(i (chi_b,odd -
chi_a,odd))``,

a real (sign-changing) weight times a phase ``-2 pi g.s + cubic(g)``. Doubling the phase
(``(C / |C|)^2``) removes the sign changes of the two CTFs; a weighted linear least-squares
fit of the doubled phase with a linear plus a general odd cubic term gives the shift free of
the bias that the cubic (tilt-induced coma) term puts into a plain cross-correlation peak.
The fit runs over growing frequency bands, each one demodulated by the previous model, so
the phase never has to be unwrapped. A coarse integer shift comes first from the peak of
a low-pass filtered cross-correlation.

References
----------
Koster & de Jong, Ultramicroscopy 38 (1991) 235. doi:10.1016/0304-3991(91)90158-Q
Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33 (2008) 156. doi:10.1364/OL.33.000156
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from temcal.errors import CalibrationError, InputError

__all__ = ["ShiftEstimate", "estimate_shift_px"]


@dataclass(frozen=True)
class ShiftEstimate:
    """Shift of ``moving`` relative to ``reference``.

    Attributes
    ----------
    shift_px : numpy.ndarray
        ``(sx, sy)`` in pixels: ``moving(r) = reference(r - s)`` (low-frequency limit).
    sigma_px : numpy.ndarray
        Standard errors of ``(sx, sy)`` in pixels (from the phase-fit residuals).
    cubic : numpy.ndarray
        Cubic phase coefficients (rad) of ``qx^3, qx^2 qy, qx qy^2, qy^3`` with ``q`` in
        cycles per pixel (the odd part of ``chi_moving - chi_reference`` beyond the shift).
    n_frequencies : int
        Number of Fourier components used in the final fit.
    """

    shift_px: np.ndarray
    sigma_px: np.ndarray
    cubic: np.ndarray
    n_frequencies: int


def _taper(shape: tuple[int, int], fraction: float) -> np.ndarray:
    def tukey(n: int) -> np.ndarray:
        w = np.ones(n)
        m = round(fraction * n / 2)
        if m > 0:
            ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(m) + 0.5) / m))
            w[:m] = ramp
            w[-m:] = ramp[::-1]
        return w

    return tukey(shape[0])[:, None] * tukey(shape[1])[None, :]


def estimate_shift_px(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    max_frequency: float = 0.25,
    min_frequency: float = 0.01,
    cubic: bool = True,
    taper: float = 0.0,
    n_candidates: int = 8,
    workers: int = 1,
) -> ShiftEstimate:
    """Estimate the sub-pixel shift of ``moving`` relative to ``reference``.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        Images of the same shape ``(ny, nx)``.
    max_frequency : float
        Highest spatial frequency used in the phase fit, cycles per pixel (<= 0.5).
    min_frequency : float
        Frequencies below this (cycles/pixel) are ignored (background, gain gradients).
    cubic : bool
        Fit the odd cubic phase of tilt-induced coma along with the shift (recommended for
        beam-tilt images; ``False`` fits a pure shift).
    n_candidates : int
        Number of cross-correlation peaks refined; the one whose phase fit agrees best
        with the data wins (guards against a wrong coarse peak).
    taper : float
        Fraction of each edge tapered by a cosine (Tukey) window before the FFT; use
        ~0.1 for non-periodic real images, 0 for periodic simulations.
    workers : int
        FFT threads.

    Returns
    -------
    ShiftEstimate

    Raises
    ------
    InputError
        If the shapes differ.
    CalibrationError
        If the images share no usable signal.
    """
    a = np.asarray(reference, dtype=float)
    b = np.asarray(moving, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"images of different shapes {a.shape} and {b.shape} cannot be registered")
    if not 0 < max_frequency <= 0.5:
        raise InputError(f"max_frequency {max_frequency} must lie in (0, 0.5] cycles/pixel")
    ny, nx = a.shape
    win = _taper(a.shape, taper) if taper > 0 else 1.0
    fa = sfft.fft2((a - a.mean()) * win, workers=workers)
    fb = sfft.fft2((b - b.mean()) * win, workers=workers)
    cross = fb * np.conj(fa)
    qy = sfft.fftfreq(ny)[:, None]
    qx = sfft.fftfreq(nx)[None, :]
    q2 = qx * qx + qy * qy
    mag = np.abs(cross)
    if not np.any(mag > 0):
        raise CalibrationError("the two images share no signal; cannot register them")

    # coarse: peaks of a low-pass, amplitude-flattened cross-correlation
    low = np.exp(-q2 / (2 * 0.04**2)) * (q2 > min_frequency**2)
    cc = np.abs(sfft.ifft2(cross / np.sqrt(mag + 1e-30 * mag.max()) * low, workers=workers))
    starts: list[np.ndarray] = []
    for _ in range(n_candidates):
        peak = np.unravel_index(int(np.argmax(cc)), cc.shape)
        s0 = np.array([peak[1], peak[0]], dtype=float)
        # parabolic sub-pixel interpolation of the peak
        for axis, idx in ((1, 0), (0, 1)):
            c0 = cc[peak]
            pm = list(peak)
            pp = list(peak)
            pm[axis] = (peak[axis] - 1) % cc.shape[axis]
            pp[axis] = (peak[axis] + 1) % cc.shape[axis]
            cm, cp = cc[tuple(pm)], cc[tuple(pp)]
            den = cm - 2 * c0 + cp
            if den < 0:
                s0[idx] += float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))
        s0[0] = s0[0] - nx if s0[0] > nx / 2 else s0[0]
        s0[1] = s0[1] - ny if s0[1] > ny / 2 else s0[1]
        starts.append(s0)
        yy = (np.arange(ny) - peak[0] + ny // 2) % ny - ny // 2
        xx = (np.arange(nx) - peak[1] + nx // 2) % nx - nx // 2
        cc[np.ix_(np.abs(yy) <= 4, np.abs(xx) <= 4)] = 0.0

    # fine: doubled phase, linear + cubic, growing bands; half plane only (Hermitian)
    half = (qx > 0) | ((qx == 0) & (qy > 0))
    sel_all = half & (q2 >= min_frequency**2) & (q2 <= max_frequency**2)
    qxs = np.broadcast_to(qx, cross.shape)[sel_all]
    qys = np.broadcast_to(qy, cross.shape)[sel_all]
    u = (cross[sel_all] / np.maximum(mag[sel_all], 1e-300)) ** 2
    w = mag[sel_all]
    qr = np.sqrt(qxs * qxs + qys * qys)
    order = np.argsort(qr, kind="stable")  # bands become prefixes: no copies per band
    qxs, qys, u, w, qr = qxs[order], qys[order], u[order], w[order], qr[order]
    ncols = 6 if cubic else 2
    design = np.empty((len(qxs), ncols))
    design[:, 0] = -4 * math.pi * qxs
    design[:, 1] = -4 * math.pi * qys
    if cubic:
        design[:, 2] = 2 * qxs**3
        design[:, 3] = 2 * qxs**2 * qys
        design[:, 4] = 2 * qxs * qys**2
        design[:, 5] = 2 * qys**3
    # the lowest frequencies carry little phase contrast: start at a band of 0.1
    first = min(0.08, max_frequency)
    stages: list[tuple[float, int]] = [(first, 2)]
    stages += [(b, ncols) for b in (0.08, 0.11, 0.15, 0.2, 0.28, 0.4) if b < max_frequency]
    stages.append((max_frequency, ncols))
    best: tuple[float, np.ndarray, np.ndarray, np.ndarray, int] | None = None
    # screen every candidate on the first band, refine the two best fully
    screened = []
    for s0 in starts:
        pre = _refine(s0, design, u, w, qr, stages[:1])
        if pre is not None:
            screened.append((pre[0], s0))
    screened.sort(key=lambda item: -item[0])
    contenders = [s0 for sc, s0 in screened[:2] if sc >= 0.7 * screened[0][0]]
    for s0 in contenders:
        fit = _refine(s0, design, u, w, qr, stages)
        if fit is not None and (best is None or fit[0] > best[0]):
            best = fit
    if best is None:
        raise CalibrationError("registration failed: the images share too little signal")
    _, params, hess, grad_cov, n_used = best
    try:
        hinv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        raise CalibrationError("registration failed: the images share too little signal") from None
    cov = hinv @ grad_cov @ hinv.T
    sigma = np.sqrt(np.maximum(np.diag(cov)[:2], 0.0))
    if not np.all(np.isfinite(params)):
        raise CalibrationError("registration failed: the images share too little signal")
    return ShiftEstimate(
        shift_px=params[:2].copy(),
        sigma_px=sigma,
        cubic=params[2:].copy() if cubic else np.zeros(4),
        n_frequencies=n_used,
    )


def _refine(
    s0: np.ndarray,
    design: np.ndarray,
    u: np.ndarray,
    w: np.ndarray,
    qr: np.ndarray,
    stages: list[tuple[float, int]],
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Robust Newton steps maximising ``sum w cos(r)`` over growing bands.

    ``r`` is the doubled-phase residual: components dominated by noise (random ``r``)
    contribute nothing on average, and nothing has to be unwrapped. Returns the normalised
    objective, parameters, Hessian, gradient covariance and number of components used.
    """
    ncols = design.shape[1]
    params = np.zeros(ncols)
    params[0], params[1] = s0
    out = None
    for band, k in stages:
        n_band = int(np.searchsorted(qr, band, side="right"))
        if n_band < 3 * k:
            continue
        d_all = design[:n_band]
        d = d_all[:, :k]
        us, ws = u[:n_band], w[:n_band]
        for _ in range(4 if band == stages[-1][0] else 2):
            r = np.angle(us * np.exp(-1j * (d_all @ params)))
            wc = ws * np.maximum(np.cos(r), 0.0)
            h = d.T @ (d * wc[:, None])
            try:
                step = np.linalg.solve(h, d.T @ (ws * np.sin(r)))
            except np.linalg.LinAlgError:
                return None
            big = float(np.max(np.abs(step[:2])))
            if big > 0.5:  # damp: at most half a pixel per step
                step = step * (0.5 / big)
            params[:k] = params[:k] + step
        r = np.angle(us * np.exp(-1j * (d_all @ params)))
        hess = d_all.T @ (d_all * (ws * np.cos(r))[:, None])
        grad_cov = d_all.T @ (d_all * ((ws * np.sin(r)) ** 2)[:, None])
        score = float(np.sum(ws * np.cos(r)) / max(float(np.sum(ws)), 1e-300))
        out = (score, params.copy(), hess, grad_cov, n_band)
    return out
