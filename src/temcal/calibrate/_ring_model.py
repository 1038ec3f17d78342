"""The joint ring model of the pixel-size fit and its statistics.

Part of :mod:`temcal.calibrate.pixel_size` (its docstring describes the method, step 3):
the spectrum samples near the rings (:func:`_collect`), the variable-projection model of
those samples with one shared ellipse (:class:`_RingModel`, and :class:`_OffsetRingModel`
with a free offset per ring), the bounded least-squares fit (:func:`_fit`), and what the
fit tells about each ring (amplitudes, SNRs, the envelope behind the ring slopes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import optimize

from temcal.spectra.profiles import polar_bin, unfold_spectrum

_MAX_UNFOLDED_F = 2.2  # highest true frequency (cycles/px) fitted through aliasing

# bound of the shared log-slope beta * s0 of the ring modulation (scattering factor,
# envelopes, MTF): |d ln I / ds| <= ~15 Å at s0 ~ 0.42 Å⁻¹
_BETA_MAX = 6.0

# largest Gaussian envelope B (Å²) of the ring intensities taken from their amplitudes
_ENVELOPE_B_MAX_A2 = 60.0
# smallest amplitude SNR of a ring that enters the envelope of the ring intensities: the
# log-amplitude's linearized error 1/SNR holds from about 3. (At 5, a 200 ring near SNR 5
# switched the envelope on and off as the fit's start moved by 0.1 %: 0.18 % in the pixel
# size of a few crystals. On the robustness images 3 improved 19 results and worsened 7.)
_ENVELOPE_MIN_SNR = 3.0

#: Geometric exponent of the ring profile: 1 for randomly oriented 3-D crystallites.
RING_GEOMETRY_EXPONENT = 1.0


@dataclass
class _FitData:
    qx: np.ndarray
    qy: np.ndarray
    y: np.ndarray
    count: np.ndarray
    weight: np.ndarray
    seg: np.ndarray  # segment index of each sample
    seg_range: list[tuple[float, float]]
    ring_idx: list[int]  # indices into the ring list used
    sector: np.ndarray  # azimuthal sector of each sample (samples sorted by it)
    n_sectors: int

    @property
    def sector_slices(self) -> list[slice]:
        """Contiguous sample ranges of each sector."""
        edges = np.searchsorted(self.sector, np.arange(self.n_sectors + 1))
        return [slice(int(edges[k]), int(edges[k + 1])) for k in range(self.n_sectors)]


def _pseudo_voigt(x: np.ndarray, w: float | np.ndarray, eta: float) -> np.ndarray:
    t = x / w
    hwhm = 1.1774100225154747
    return (1.0 - eta) * np.exp(-0.5 * t * t) + eta / (1.0 + (t / hwhm) ** 2)


class _Normal:
    """Normal equations of a weighted design (columns scaled to unit norm), factorized once.

    Shared by a model's residual and its Jacobian at the same parameters (the
    variable-projection Jacobian needs the same projector the residual used).
    """

    def __init__(self, full: np.ndarray) -> None:
        from scipy import linalg

        norm = np.sqrt(np.einsum("ij,ij->j", full, full))
        self.norm = norm
        self.live = norm > 1e-12 * max(float(norm.max()), 1e-300)
        self.Xn = full[:, self.live] / norm[self.live]
        A = self.Xn.T @ self.Xn + 1e-10 * np.eye(self.Xn.shape[1])
        self._A = A
        try:
            self._cho: Any = linalg.cho_factor(A, check_finite=False)
        except linalg.LinAlgError:
            self._cho = None

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``A^-1 b`` for the normal matrix ``A`` of the scaled live columns."""
        if self._cho is not None:
            from scipy import linalg

            return np.asarray(linalg.cho_solve(self._cho, b, check_finite=False))
        return np.linalg.solve(self._A, b)

    def projection_terms(self, Dc: np.ndarray, DTr: np.ndarray) -> np.ndarray:
        """``P Dc + (X^+)^T DTr`` of the variable-projection Jacobian (Golub and Pereyra).

        ``Dc``: ``(m, k)`` derivatives of the design times its coefficients;
        ``DTr``: ``(n_columns, k)`` the derivatives' transposes times the residuals.
        """
        Xn, live = self.Xn, self.live
        term1 = Dc - Xn @ self.solve(Xn.T @ Dc)
        term2 = Xn @ self.solve(DTr[live] / self.norm[live][:, None])
        return term1 + term2


class _RingModel:
    """Variable-projection model of the spectrum samples near the rings."""

    def __init__(
        self,
        data: _FitData,
        radii: np.ndarray,
        p0: float,
        s_ref: float,
        with_ctf: bool,
        optics: tuple[float, float] = (300.0, 2.7),
        ring_slopes: np.ndarray | None = None,
    ) -> None:
        from temcal.physics.wavelength import calculate_wavelength_A

        self.lam = calculate_wavelength_A(optics[0])
        self.cs_A = optics[1] * 1e7
        self.d = data
        self.radii = radii  # 1/d of used rings (Å⁻¹)
        self.p0 = p0
        self.s_ref = s_ref
        self.with_ctf = with_ctf
        self.nr = len(radii)
        # fixed log-slope of each ring's own modulation (Å): exp(-slope_j (s - R_j))
        self.ring_slopes = (
            np.zeros(self.nr) if ring_slopes is None else np.asarray(ring_slopes, dtype=float)
        )
        # envelope B (Å²) the slopes came from and its standard error (0: not used)
        self.envelope_b_A2: float | None = None
        self.envelope_se_A2 = 0.0
        self.n_seg = len(data.seg_range)
        self._seg_idx = [np.flatnonzero(data.seg == k) for k in range(self.n_seg)]

    # parameter vector: e1, e2, e3, log w_j (nr), eta_raw, beta, [a, b, c, gamma_raw]
    def unpack(self, th: np.ndarray) -> dict[str, Any]:
        nr = self.nr
        out = {
            "W": np.array([[1.0 + th[0], th[2]], [th[2], 1.0 + th[1]]]) / self.p0,
            "w": np.exp(th[3 : 3 + nr]) * self.radii,
            "eta": 0.5 * (1.0 + math.tanh(th[3 + nr])),
            "beta": th[4 + nr] / self.s_ref,
        }
        if self.with_ctf:
            out["defocus_A"], out["c"] = th[5 + nr] * 1e4, th[6 + nr]
            out["gamma"] = 0.5 * (1.0 + math.tanh(th[7 + nr]))
        return out

    def s(self, W: np.ndarray) -> np.ndarray:
        d = self.d
        return np.hypot(W[0, 0] * d.qx + W[0, 1] * d.qy, W[1, 0] * d.qx + W[1, 1] * d.qy)

    def modulation(self, s: np.ndarray, par: dict[str, Any]) -> np.ndarray:
        m = np.exp(-par["beta"] * (s - self.s_ref))
        if self.with_ctf:
            s2 = s * s
            lam = self.lam
            chi = (
                par["c"]
                + math.pi * lam * par["defocus_A"] * s2
                - 0.5 * math.pi * self.cs_A * lam**3 * s2 * s2
            )
            m = m * (1.0 - par["gamma"] * np.cos(2.0 * chi))
        return m

    def design(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        par = self.unpack(th)
        s = self.s(par["W"])
        mod = self.modulation(s, par)
        nr, nseg = self.nr, self.n_seg
        X = np.zeros((s.size, nr + 4 * nseg))
        geo = 1.0 / s if RING_GEOMETRY_EXPONENT == 1.0 else s ** (-RING_GEOMETRY_EXPONENT)
        for j in range(nr):
            rj = self.radii[j]
            prof = _pseudo_voigt(s - rj, par["w"][j], par["eta"])
            X[:, j] = prof * (rj * geo) * mod
            if self.ring_slopes[j] != 0.0:
                X[:, j] *= np.exp(-self.ring_slopes[j] * (s - rj))
        for k, idx in enumerate(self._seg_idx):  # per-sector background level of each segment
            X[idx, nr + k] = 1.0
        for k, (idx, (lo, hi)) in enumerate(zip(self._seg_idx, self.d.seg_range, strict=True)):
            t = (2.0 * s[idx] - lo - hi) / (hi - lo)
            col = nr + nseg + 3 * k
            X[idx, col] = t  # shared background shape: t, t^2, t^3
            X[idx, col + 1] = t * t
            X[idx, col + 2] = t * t * t
        return X, s

    def solve(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals, per-sector linear coefficients ``(K, c)`` and the design matrix.

        Ring amplitudes and backgrounds are solved separately in each azimuthal sector
        (spotty rings of few crystals, azimuthally varying background), while the
        geometry, widths and modulation are shared.
        """
        X, _ = self.design(th)
        w = self.d.weight
        Xw = X * w[:, None]
        yw = self.d.y * w
        c = X.shape[1]
        n_loc = self.nr + self.n_seg
        K = self.d.n_sectors
        m = X.shape[0]
        if K == 1:
            full = Xw
        else:
            full = np.zeros((m, K * n_loc + c - n_loc))
            rows = np.arange(m)
            for j in range(n_loc):
                full[rows, self.d.sector * n_loc + j] = Xw[:, j]
            full[:, K * n_loc :] = Xw[:, n_loc:]
        normal = _Normal(full)
        sol = np.zeros(full.shape[1])
        try:
            sol[normal.live] = normal.solve(normal.Xn.T @ yw) / normal.norm[normal.live]
        except np.linalg.LinAlgError:
            sol[normal.live] = np.linalg.lstsq(full[:, normal.live], yw, rcond=None)[0]
        coef = np.zeros((K, c))
        coef[:, :n_loc] = sol[: K * n_loc].reshape(K, n_loc)
        coef[:, n_loc:] = sol[K * n_loc :]
        self.last_full = full
        self._normal = normal
        return yw - full @ sol, coef, X

    def residual(self, th: np.ndarray) -> np.ndarray:
        r, coef, _ = self.solve(th)
        self._last = (np.array(th, dtype=float), coef, r)
        return r

    def jacobian(self, th: np.ndarray) -> np.ndarray:
        """Exact variable-projection Jacobian of :meth:`residual` (Golub and Pereyra).

        With ``r = P y`` (``P`` the projector onto the complement of the weighted
        design's columns) and ``D_k = dX_w / dtheta_k``:
        ``dr/dtheta_k = -(P D_k c + (X_w^+)^T D_k^T r)``. Every derivative of the design
        is analytic, the CTF modulation's included. Only for one sector.
        """
        last = getattr(self, "_last", None)
        if last is None or not np.array_equal(last[0], th):
            self.residual(th)
            last = self._last
        c_vec = last[1][0]
        r = last[2]
        par = self.unpack(th)
        d = self.d
        W = par["W"]
        ux = W[0, 0] * d.qx + W[0, 1] * d.qy
        uy = W[1, 0] * d.qx + W[1, 1] * d.qy
        s = np.hypot(ux, uy)
        beta, eta = float(par["beta"]), float(par["eta"])
        e_mod = np.exp(-beta * (s - self.s_ref))
        nr, nseg = self.nr, self.n_seg
        # the CTF modulation C = 1 - gamma cos 2 chi and its derivatives (s, then the
        # parameters defocus (1e4 Å units), c and the raw gamma)
        if self.with_ctf:
            lam, gam = self.lam, float(par["gamma"])
            s2 = s * s
            chi = (
                par["c"]
                + math.pi * lam * par["defocus_A"] * s2
                - 0.5 * math.pi * self.cs_A * lam**3 * s2 * s2
            )
            sin2, cos2 = np.sin(2.0 * chi), np.cos(2.0 * chi)
            ctf = 1.0 - gam * cos2
            dchi_ds = (
                2.0 * math.pi * lam * par["defocus_A"] * s
                - 2.0 * math.pi * (self.cs_A * lam**3) * s2 * s
            )
            dctf_ds = 2.0 * gam * sin2 * dchi_ds
            dgam = 0.5 * (1.0 - math.tanh(th[7 + nr]) ** 2)
            dctf = [
                2.0 * gam * sin2 * math.pi * lam * s2 * 1e4,
                2.0 * gam * sin2,
                -cos2 * dgam,
            ]
        else:
            ctf, dctf_ds, dctf = np.ones_like(s), np.zeros_like(s), []
        mod = e_mod * ctf
        e = RING_GEOMETRY_EXPONENT
        geo = s ** (-e)
        dgeo = -e * geo / s
        hw = 1.1774100225154747
        m, nc = s.size, nr + 4 * nseg
        dXds = np.zeros((m, nc))
        d_logw = np.zeros((m, nr))
        d_eta = np.zeros((m, nr))
        d_beta = np.zeros((m, nr))
        d_ctf = np.zeros((len(dctf), m, nr))
        deta = 0.5 * (1.0 - math.tanh(th[3 + nr]) ** 2)
        for j in range(nr):
            rj = self.radii[j]
            wj = float(par["w"][j])
            t = (s - rj) / wj
            g = np.exp(-0.5 * t * t)
            lo = 1.0 / (1.0 + (t / hw) ** 2)
            pv = (1.0 - eta) * g + eta * lo
            dpv_dx = ((1.0 - eta) * g * (-t) + eta * (-2.0 * t / hw**2) * lo * lo) / wj
            dpv_dlogw = (1.0 - eta) * g * t * t + eta * 2.0 * (t / hw) ** 2 * lo * lo
            slope_j = float(self.ring_slopes[j])
            slope_e = np.exp(-slope_j * (s - rj)) if slope_j != 0.0 else 1.0
            mod_j = mod * slope_e
            base = rj * geo * mod_j
            pv_e = rj * pv * geo * e_mod * slope_e  # column j without the CTF modulation
            dXds[:, j] = rj * mod_j * (dpv_dx * geo + pv * dgeo - pv * geo * (beta + slope_j))
            if self.with_ctf:
                dXds[:, j] += pv_e * dctf_ds
                for k, dk in enumerate(dctf):
                    d_ctf[k, :, j] = pv_e * dk
            d_logw[:, j] = base * dpv_dlogw
            d_eta[:, j] = base * (lo - g) * deta
            d_beta[:, j] = -rj * pv * geo * (s - self.s_ref) * mod_j / self.s_ref
        for k, (idx, (lo_k, hi_k)) in enumerate(zip(self._seg_idx, d.seg_range, strict=True)):
            t = (2.0 * s[idx] - lo_k - hi_k) / (hi_k - lo_k)
            dt = 2.0 / (hi_k - lo_k)
            col = nr + nseg + 3 * k
            dXds[idx, col] = dt
            dXds[idx, col + 1] = 2.0 * t * dt
            dXds[idx, col + 2] = 3.0 * t * t * dt
        w = d.weight
        p0 = self.p0
        ds = [ux * d.qx / (p0 * s), uy * d.qy / (p0 * s), (ux * d.qy + uy * d.qx) / (p0 * s)]
        normal = self._normal
        n_par = 5 + nr + len(dctf)
        Dc = np.zeros((m, n_par))  # D_k c
        DTr = np.zeros((nc, n_par))  # D_k^T r
        wr = w * r
        for k in range(3):
            Dc[:, k] = (dXds @ c_vec) * ds[k] * w
            DTr[:, k] = dXds.T @ (ds[k] * wr)
        for j in range(nr):
            Dc[:, 3 + j] = d_logw[:, j] * c_vec[j] * w
            DTr[j, 3 + j] = float(d_logw[:, j] @ wr)
        Dc[:, 3 + nr] = (d_eta @ c_vec[:nr]) * w
        DTr[:nr, 3 + nr] = d_eta.T @ wr
        Dc[:, 4 + nr] = (d_beta @ c_vec[:nr]) * w
        DTr[:nr, 4 + nr] = d_beta.T @ wr
        for k in range(len(dctf)):
            Dc[:, 5 + nr + k] = (d_ctf[k] @ c_vec[:nr]) * w
            DTr[:nr, 5 + nr + k] = d_ctf[k].T @ wr
        return -normal.projection_terms(Dc, DTr)


class _OffsetRingModel(_RingModel):
    """:class:`_RingModel` with a free relative offset per ring and a Gaussian prior on it.

    The parameter vector is the base model's followed by one offset ``delta_j`` per
    ring: ring ``j`` is centred at ``R_j (1 + delta_j)`` on the shared ellipse. The
    residual vector gets one row ``sqrt(2) delta_j / prior_sd_j`` per ring (the data
    rows are normalized to unit variance per segment by the caller, and every sample is
    in the data twice, at q and -q, so the prior is counted twice as well). A ring whose
    shift the optics predict to be large (``prior_sd_j``) then moves freely and leaves
    the scale to the rings predicted to stay in place.
    """

    def __init__(self, base: _RingModel, data: _FitData, prior_sd: np.ndarray, n_base: int) -> None:
        super().__init__(
            data,
            base.radii,
            base.p0,
            base.s_ref,
            with_ctf=base.with_ctf,
            ring_slopes=base.ring_slopes,
        )
        self.lam, self.cs_A = base.lam, base.cs_A
        self.envelope_b_A2, self.envelope_se_A2 = base.envelope_b_A2, base.envelope_se_A2
        self.radii0 = np.array(base.radii, dtype=float)
        self.prior_sd = np.asarray(prior_sd, dtype=float)
        self.n_base = int(n_base)

    def offsets(self, th: np.ndarray) -> np.ndarray:
        """The rings' relative offsets ``delta_j`` in a parameter vector."""
        return np.asarray(th, dtype=float)[self.n_base : self.n_base + self.nr]

    def unpack(self, th: np.ndarray) -> dict[str, Any]:
        return super().unpack(np.asarray(th, dtype=float)[: self.n_base])

    def design(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        th = np.asarray(th, dtype=float)
        self.radii = (
            self.radii0 * (1.0 + self.offsets(th)) if th.size > self.n_base else self.radii0
        )
        try:
            return super().design(th[: self.n_base])
        finally:
            self.radii = self.radii0

    def residual(self, th: np.ndarray) -> np.ndarray:
        r, coef, _ = self.solve(th)
        self._last = (np.array(th, dtype=float), coef, r)
        return np.concatenate([r, math.sqrt(2.0) * self.offsets(th) / self.prior_sd])

    def jacobian(self, th: np.ndarray) -> np.ndarray:
        """Jacobian of :meth:`residual` (variable projection, as in the base model).

        The base model's columns at the offset radii, the offsets' columns and the prior
        rows; the widths' dependence on the offsets (a factor ``1 + delta_j``) is
        neglected.
        """
        th = np.asarray(th, dtype=float)
        last = getattr(self, "_last", None)
        if last is None or not np.array_equal(last[0], th):
            self.residual(th)
            last = self._last
        base = th[: self.n_base]
        nr = self.nr
        self.radii = self.radii0 * (1.0 + self.offsets(th))
        try:
            self._last = (base, last[1], last[2])
            j_base = super().jacobian(base)
            par = super().unpack(base)
            d = self.d
            s = self.s(par["W"])
            mod = self.modulation(s, par)
            eta = float(par["eta"])
            geo = s ** (-RING_GEOMETRY_EXPONENT)
            hw = 1.1774100225154747
            m = s.size
            w = d.weight
            c_vec = last[1][0]
            r = last[2]
            n_loc = self.nr + 4 * self.n_seg
            dc = np.zeros((m, nr))
            dtr = np.zeros((n_loc, nr))
            for j in range(nr):
                rj = float(self.radii[j])
                wj = float(par["w"][j])
                t = (s - rj) / wj
                g = np.exp(-0.5 * t * t)
                lo = 1.0 / (1.0 + (t / hw) ** 2)
                dpv_dx = ((1.0 - eta) * g * (-t) + eta * (-2.0 * t / hw**2) * lo * lo) / wj
                slope_j = float(self.ring_slopes[j])
                mod_j = mod * np.exp(-slope_j * (s - rj)) if slope_j != 0.0 else mod
                # d/d delta_j of column j: the profile moves by R0_j d delta
                col = -float(self.radii0[j]) * dpv_dx * rj * geo * mod_j
                dc[:, j] = col * c_vec[j] * w
                dtr[j, j] = float(col @ (w * r))
            j_off = -self._normal.projection_terms(dc, dtr)
        finally:
            self.radii = self.radii0
            self._last = last
        top = np.hstack([j_base, j_off])
        prior = np.zeros((nr, top.shape[1]))
        prior[:, self.n_base :] = np.diag(math.sqrt(2.0) / self.prior_sd)
        return np.vstack([top, prior])


def _segments(radii: np.ndarray, half: np.ndarray) -> list[tuple[float, float, list[int]]]:
    order = np.argsort(radii)
    segs: list[tuple[float, float, list[int]]] = []
    for j in order:
        lo, hi = radii[j] - half[j], radii[j] + half[j]
        if segs and lo <= segs[-1][1]:
            a, b, js = segs[-1]
            segs[-1] = (a, max(b, hi), [*js, int(j)])
        else:
            segs.append((lo, hi, [int(j)]))
    return segs


def _collect(
    spec: np.ndarray,
    W: np.ndarray,
    radii: np.ndarray,
    half: np.ndarray,
    *,
    n_sectors: int,
    bin_width: float,
) -> _FitData | None:
    n = spec.shape[0]
    fmin = 5.0 / n
    # frequency bound: elliptical radius s ~ |q| / p
    p_max = 1.0 / float(np.linalg.eigvalsh(W).min())
    fmax = min(_MAX_UNFOLDED_F, float((radii + half).max()) * p_max * 1.01)
    keep = np.ones((n, n), dtype=bool)
    c = n // 2
    keep[c - 2 : c + 3, :] = False  # the tile-edge cross, whatever the window leaves
    keep[:, c - 2 : c + 3] = False
    u = unfold_spectrum(
        spec, max_frequency=fmax, min_frequency=fmin, keep=keep, min_alias_base_frequency=0.06
    )
    if u.values.size == 0:
        return None
    s = np.hypot(W[0, 0] * u.qx + W[0, 1] * u.qy, W[1, 0] * u.qx + W[1, 1] * u.qy)
    segs = _segments(radii, half)
    seg = np.full(s.shape, -1)
    for k, (lo, hi, _) in enumerate(segs):
        seg[(s >= lo) & (s < hi)] = k
    m = seg >= 0
    # a pixel whose several aliases fall near rings is ambiguous (overlapping arcs)
    pix = u.pixel[m]
    dup = np.bincount(pix, minlength=n * n)[pix] > 1
    idx = np.flatnonzero(m)[~dup]
    if idx.size < 200:
        return None
    qx, qy, vals, ss, sg = u.qx[idx], u.qy[idx], u.values[idx], s[idx], seg[idx]
    mx, my, mv, cnt = polar_bin(
        qx, qy, vals, radius=ss, bin_width=bin_width, n_sectors=n_sectors, group=sg
    )
    ms = np.hypot(W[0, 0] * mx + W[0, 1] * my, W[1, 0] * mx + W[1, 1] * my)
    bseg = np.full(ms.shape, -1)
    for k, (lo, hi, _) in enumerate(segs):
        bseg[(ms >= lo) & (ms < hi)] = k
    ok = bseg >= 0
    mx, my, mv, cnt, bseg = mx[ok], my[ok], mv[ok], cnt[ok], bseg[ok]
    level = np.empty_like(mv)
    for k in range(len(segs)):
        sel = bseg == k
        if sel.any():
            level[sel] = np.median(mv[sel])
    weight = np.sqrt(cnt) / np.maximum(level, 1e-30)
    ring_idx = sorted(j for _, _, js in segs for j in js)
    n_amp = 1
    phi = np.arctan2(my, mx)
    sector = np.minimum(((phi + np.pi) / (2 * np.pi) * n_amp).astype(np.int64), n_amp - 1)
    order = np.argsort(sector, kind="stable")
    return _FitData(
        qx=mx[order],
        qy=my[order],
        y=mv[order],
        count=cnt[order],
        weight=weight[order],
        seg=bseg[order],
        seg_range=[(lo, hi) for lo, hi, _ in segs],
        ring_idx=ring_idx,
        sector=sector[order],
        n_sectors=n_amp,
    )


def _fit(
    model: _RingModel,
    th0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    geom_span: float = 0.012,
) -> optimize.OptimizeResult:
    lower, upper = lower.copy(), upper.copy()
    # the geometry may move only a little from its start (found by the search / stage 1)
    lower[:3] = np.maximum(lower[:3], th0[:3] - geom_span)
    upper[:3] = np.minimum(upper[:3], th0[:3] + geom_span)
    th0 = np.clip(th0, lower + 1e-9, upper - 1e-9)
    return optimize.least_squares(
        model.residual,
        th0,
        jac=model.jacobian if model.d.n_sectors == 1 else "2-point",
        bounds=(lower, upper),
        x_scale="jac",
        method="trf",
        max_nfev=60,
        xtol=1e-8,
        ftol=1e-8,
    )


def _floor_widths(lower: np.ndarray, radii: np.ndarray, n: int, pb: float) -> None:
    """Raise the lower bounds of the ring widths to 0.15 spectrum pixel (in place).

    The spectrum estimator's window broadens every ring to about a pixel, so a narrower
    fitted ring is a fit onto a few bright spots (few large grains), not a ring.
    """
    nr = radii.size
    lower[3 : 3 + nr] = np.maximum(lower[3 : 3 + nr], np.log(0.15 / (n * pb * radii)))


def _bounds(nr: int, with_ctf: bool) -> tuple[np.ndarray, np.ndarray]:
    lo = [-0.1, -0.1, -0.1, *([math.log(1e-4)] * nr), -3.0, -_BETA_MAX]
    hi = [0.1, 0.1, 0.1, *([math.log(0.06)] * nr), 3.0, _BETA_MAX]
    if with_ctf:
        lo += [-3.0, -np.inf, -3.0]
        hi += [8.0, np.inf, 3.0]
    return np.array(lo, dtype=float), np.array(hi, dtype=float)


def _coefficient_variances(design: np.ndarray, s2: float) -> np.ndarray:
    """Variances of least-squares coefficients, ``diag((X^T X)^-1) s2``.

    Computed on the columns scaled to unit norm (as :meth:`_RingModel.solve` solves), so
    that a column many orders of magnitude smaller than the others (a ring profile that
    falls between the samples) gets the large variance it has, not the zero that a
    pseudo-inverse of the unscaled normal matrix gives it (which made SNRs of 1e13).
    Directions with a relative eigenvalue below 1e-10 are floored there; empty columns get
    ``inf``.
    """
    norm = np.sqrt(np.einsum("ij,ij->j", design, design))
    live = norm > 1e-12 * max(float(norm.max()), 1e-300)
    var = np.full(design.shape[1], np.inf)
    try:
        xn = design[:, live] / norm[live]
        lam, vec = np.linalg.eigh(xn.T @ xn)
        lam = np.maximum(lam, 1e-10 * max(float(lam.max()), 1e-300))
        var[live] = np.einsum("ij,j,ij->i", vec, 1.0 / lam, vec) / norm[live] ** 2 * s2
    except np.linalg.LinAlgError:
        var[:] = np.nan
    return var


def _ring_amplitudes(
    model: _RingModel, coef: np.ndarray, s2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ring amplitudes (inverse-variance mean over sectors) and their standard errors."""
    nr = model.nr
    K = model.d.n_sectors
    n_loc = nr + model.n_seg
    var = _coefficient_variances(model.last_full, s2)
    amp_mean = np.zeros(nr)
    amp_se = np.full(nr, np.inf)
    for j in range(nr):
        a = coef[:, j]
        v = var[np.arange(K) * n_loc + j]
        ok = np.isfinite(v) & (v > 0) & (np.abs(a) > 0)
        if ok.any():
            wv = 1.0 / v[ok]
            amp_mean[j] = float(np.sum(a[ok] * wv) / np.sum(wv))
            amp_se[j] = float(1.0 / math.sqrt(np.sum(wv)))
    return amp_mean, amp_se


def _envelope_slopes(
    model: _RingModel, th: np.ndarray, hkls: Sequence[tuple[int, int, int]]
) -> tuple[np.ndarray, float, float] | None:
    """Log-slope of each ring's modulation from the intensities of all rings.

    A broad ring's position is degenerate with the log-slope of the intensity across it
    (a Gaussian times ``exp(-beta s)`` is a shifted Gaussian), so the slope is taken from
    the rings' integrated intensities instead. Kinematically, ring ``j`` carries
    ``I_j ~ m_j f_e(R_j)^2 E(R_j) / R_j`` (multiplicity ``m_j``, FCC structure factor
    ``4 f_e``, the ``1/R`` of a 3-D powder shell cut by the image plane), and the model's
    integrated ring is ``~ A_j R_j w_j``. The envelope ``E(s) = exp(-B s^2 / 2)`` (Debye-
    Waller, coherence envelopes, detector MTF, all in one Gaussian) is fitted to
    ``ln(A_j R_j^2 w_j / (m_j f_e^2))`` weighted by the rings' SNR, ``B`` clipped to
    ``[0, 60]`` Å² (nothing in the imaging raises intensity with frequency), and ring
    ``j``'s slope is ``-d ln(f_e^2 E) / ds`` at ``R_j``.

    Returns
    -------
    tuple or None
        ``(slopes_A, B_A2, se_B_A2)``, or ``None`` with fewer than two rings of SNR above
        ``_ENVELOPE_MIN_SNR`` (3).
    """
    from temcal.physics.gold import reflection_multiplicity
    from temcal.physics.scattering import electron_scattering_factor_A

    resid, coef, _ = model.solve(th)
    dof = max(1, resid.size - th.size - coef.size)
    amp, amp_se = _ring_amplitudes(model, coef, float(resid @ resid) / dof)
    par = model.unpack(th)
    R = model.radii
    w = np.asarray(par["w"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = amp / amp_se
    ok = np.isfinite(snr) & (snr > _ENVELOPE_MIN_SNR) & (amp > 0)
    if ok.sum() < 2:
        return None
    mult = np.array([reflection_multiplicity(h) for h in hkls], dtype=float)
    fe = electron_scattering_factor_A(R)
    peak = amp * np.exp(-float(par["beta"]) * (R - model.s_ref))
    y = np.log(np.abs(peak) * R**2 * w / (mult * fe**2))[ok]
    sy = np.hypot(1.0 / snr[ok], 0.05)  # 5 %: profile-shape mismatch between rings
    X = np.stack([np.ones(int(ok.sum())), -0.5 * R[ok] ** 2], axis=1)
    Wt = 1.0 / sy**2
    A = X.T @ (X * Wt[:, None])
    try:
        cov = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        return None
    b_raw = float((cov @ (X.T @ (Wt * y)))[1])
    b = min(max(b_raw, 0.0), _ENVELOPE_B_MAX_A2)
    se = min(math.hypot(math.sqrt(max(float(cov[1, 1]), 0.0)), b_raw - b), _ENVELOPE_B_MAX_A2)
    h = 1e-5
    dln_fe2 = (
        2.0
        * (
            np.log(electron_scattering_factor_A(R + h))
            - np.log(electron_scattering_factor_A(R - h))
        )
        / (2.0 * h)
    )
    return -dln_fe2 + b * R, b, se


def _segment_of_ring(model: _RingModel, j: int) -> int:
    """Index of the spectrum segment that holds ring ``j``."""
    r = float(model.radii[j])
    ranges = model.d.seg_range
    for k, (lo, hi) in enumerate(ranges):
        if lo <= r <= hi:
            return k
    return int(np.argmin([abs(0.5 * (lo + hi) - r) for lo, hi in ranges]))


def _segment_variances(model: _RingModel, resid: np.ndarray) -> np.ndarray:
    """Residual variance of the weighted fit in each segment (4 linear terms per sector)."""
    out = np.ones(model.n_seg)
    for k, idx in enumerate(model._seg_idx):
        dof = max(1, idx.size - 4 * model.d.n_sectors)
        out[k] = max(float(resid[idx] @ resid[idx]) / dof, 1e-30)
    return out


def _ring_snrs(model: _RingModel, th: np.ndarray, *, per_segment: bool = True) -> np.ndarray:
    """Each ring's amplitude SNR (against its own segment's residuals or the whole fit's).

    With ``per_segment`` the residual variance is that of the ring's own segment. The
    misfit of strong rings (spots of few grains, profiles the model does not quite
    follow) inflates the residual variance of their segments; measured against the
    variance of the whole fit, a clean weak ring elsewhere looked insignificant (the 220
    ring of the 0.40 Å/px benchmark images: SNR 1.6 against 27 when fitted alone).
    """
    resid, coef, _ = model.solve(th)
    full = model.last_full
    dof = max(1, resid.size - full.shape[1] - th.size)
    s2 = float(resid @ resid) / dof
    var = _coefficient_variances(full, s2)
    snr = np.full(model.nr, np.nan)
    if np.isnan(var).all() or s2 <= 0:
        return snr
    seg_var = _segment_variances(model, resid) if per_segment else np.full(model.n_seg, s2)
    n_loc = model.nr + model.n_seg
    for j in range(model.nr):
        v = var[np.arange(model.d.n_sectors) * n_loc + j] * (
            seg_var[_segment_of_ring(model, j)] / s2
        )
        a = coef[:, j]
        good = np.isfinite(v) & (v > 0)
        if not good.any():
            snr[j] = 0.0
            continue
        wv = 1.0 / v[good]
        snr[j] = float(np.sum(a[good] * wv) / np.sqrt(np.sum(wv)))
    return snr


def _ring_amplitude_ok(
    model: _RingModel, th: np.ndarray, *, per_segment: bool = False
) -> np.ndarray:
    """Rings whose fitted amplitude is significant (SNR > 3) and not degenerate.

    The SNR is taken against the residual variance of the whole fit, or with
    ``per_segment`` of the ring's own segment (:func:`_ring_snrs`; used only where the
    rings get free offsets: on the random images of ``pixel_size_robustness.py`` it
    everywhere admitted weak rings that made images measurable 3-60 % off).
    """
    snr = _ring_snrs(model, th, per_segment=per_segment)
    if np.isnan(snr).all():
        return np.ones(model.nr, dtype=bool)
    return (snr > 3.0) & (snr < 1e5)


def _refit_rings(
    spec: np.ndarray,
    stage: tuple[_RingModel, optimize.OptimizeResult, _FitData],
    ok: np.ndarray,
    radii: np.ndarray,
    half: np.ndarray,
    hk_used: Sequence[tuple[int, int, int]],
    bin_w: float,
    n: int,
    pb: float,
) -> tuple[_RingModel, optimize.OptimizeResult, _FitData]:
    """Drop the rings not ``ok``, refit, and set the rings' slopes from their envelope.

    ``stage`` is the joint fit of all usable rings (model, result, data); ``radii``,
    ``half`` and ``hk_used`` are indexed like ``data.ring_idx``. Returns the final
    model without the CTF modulation (its ``radii`` and ``data.ring_idx`` name the rings
    kept).
    """
    model2, res, data2 = stage
    radii2 = model2.radii
    nr2 = model2.nr
    s_ref = model2.s_ref
    # drop rings the joint fit cannot see (an alias lost in other rings or the
    # background: no significant or a degenerate amplitude) and refit without them
    if 1 <= ok.sum() < ok.size:
        sel = [data2.ring_idx[i] for i in np.flatnonzero(ok)]
        W2 = model2.unpack(res.x)["W"]
        data3 = _collect(spec, W2, radii[sel], half[sel], n_sectors=36, bin_width=bin_w)
        if data3 is not None and len(data3.ring_idx) >= 1:
            kept = [sel[i] for i in data3.ring_idx]
            pos = {j: i for i, j in enumerate(data2.ring_idx)}
            th3 = np.array(
                [*res.x[:3], *(res.x[3 + pos[j]] for j in kept), res.x[3 + nr2], res.x[4 + nr2]]
            )
            data3 = replace(data3, ring_idx=kept)
            radii2, nr2, data2 = radii[kept], len(kept), data3
            model2 = _RingModel(data2, radii2, pb, s_ref, with_ctf=False)
            lo2, hi2 = _bounds(nr2, False)
            _floor_widths(lo2, radii2, n, pb)
            res = _fit(model2, th3, lo2, hi2, geom_span=0.01)
    hk2 = [hk_used[j] for j in data2.ring_idx]
    # broad rings: the slope of the intensity across each ring from the envelope of the
    # ring intensities (the fit alone cannot tell it from the ring positions)
    # (iterated: the amplitudes depend a little on the slopes)
    b_prev = math.inf
    for _ in range(4):
        env = _envelope_slopes(model2, res.x, hk2)
        if env is None or abs(env[1] - b_prev) < 0.5:
            break
        b_prev = env[1]
        model_e = _RingModel(data2, radii2, pb, s_ref, with_ctf=False, ring_slopes=env[0])
        model_e.envelope_b_A2, model_e.envelope_se_A2 = env[1], env[2]
        lo2, hi2 = _bounds(nr2, False)
        _floor_widths(lo2, radii2, n, pb)
        lo2[4 + nr2], hi2[4 + nr2] = -1e-6, 1e-6  # the shared slope is replaced
        th_e = res.x.copy()
        th_e[4 + nr2] = 0.0
        res = _fit(model_e, th_e, lo2, hi2, geom_span=0.01)
        model2 = model_e
    return model2, res, data2
