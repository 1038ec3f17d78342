"""The CTF's part in the gold ring positions: the support's defocus and the ring shifts.

Part of :mod:`temcal.calibrate.pixel_size` (its docstring describes the method, step 3):
the Thon-ring defocus of the support in the same spectrum (:func:`_thon_defocus`), the
uncertainty it puts on the pixel size (:func:`_with_ctf_bias`), the CTF modulation of the
rings near focus (:func:`_fit_ctf`), and the free ring offsets where the rings' predicted
shifts differ (:func:`_fit_ring_offsets`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import optimize

from temcal.calibrate._ring_model import (
    _bounds,
    _fit,
    _floor_widths,
    _OffsetRingModel,
    _RingModel,
    _segment_variances,
)
from temcal.calibrate.pixel_size_results import ImagePixelSize

# in focus (support's Thon defocus within this, Å) the rings get the CTF model
# ``1 - gamma cos 2 chi`` with that defocus fixed: there ``sin^2 chi`` varies strongly across
# a broad ring (measured on case G, in focus: +0.79/+0.62/+0.60 % -> see docs/pixel_size.md);
# at 0.3-2 µm the same model was neutral on 134 random images, so it is not used there
_IN_FOCUS_A = 500.0

# free ring offsets (_fit_ring_offsets): used when the largest predicted ring shift is at
# least this (relative) and the smallest below the ratio times it; offsets bounded
_OFFSET_MIN_PRIOR = 2e-3
_OFFSET_PRIOR_RATIO = 0.5
_OFFSET_MAX = 0.03
_OFFSET_MIN_SNR = 5.0

# a regular Thon fit below this defocus (Å), or none, is checked against a near-focus start
_NEAR_FOCUS_CHECK_A = 3000.0
# ... and kept only with this correlation score: spurious near-focus fits of images at
# 0.06-0.1 µm scored 0.24-0.29, the in-focus 4096² benchmark images 0.82-0.88
_NEAR_FOCUS_MIN_SCORE = 0.5

#: Relative RSS change at which the Thon-ring refinements of :func:`_thon_defocus` stop.
#: The defocus only predicts the rings' CTF shifts: 1e-5 moved it by less than 0.03 Å on
#: the benchmark images (against 1e-8) and cut the refinement time near focus by a third.
_THON_RTOL = 1e-5


def _thon_defocus(
    spec: np.ndarray,
    pb: float,
    ctf_optics: tuple[float, float],
    lattice_constant_A: float,
) -> tuple[float | None, bool]:
    """Mean defocus (Å, underfocus positive) from the support's Thon rings, or None.

    The Thon rings are fitted in the rings' spectrum ``spec`` (pixel size ``pb``). At
    large defocus and small pixel sizes they can be too dense for it (measured: 3 µm at
    0.40 Å/px with 512² tiles), and the CTF uncertainty then falls back to its worst
    case. A second fit in a spectrum of finer frequency steps found those, but added
    0.3-1 s CPU to a 4096² image without Thon rings (bare gold, focus), and its faster
    variants found spurious defoci in focus, so it is not done (docs/pixel_size.md).

    In focus the Thon rings start only where the Cs term reaches them (3.2 Å at 300 kV
    and 2.7 mm), beyond the ~5 Å band on which the regular fit ranks its starting
    values; it found none, or a wrong defocus, on in-focus images. So when it finds none
    or less than ``_NEAR_FOCUS_CHECK_A``, a fit started at zero defocus and refined on the
    whole band is tried, and kept when its Thon rings correlate with the model (score at
    least ``_NEAR_FOCUS_MIN_SCORE``) and it fits the regular fit's band better.

    Returns ``(defocus_A, sign_ambiguous)``. Out to ~4-5 Å the Thon rings of ``+dz``
    and ``-dz`` differ only through the Cs term: a fit that may cross focus took 8 of
    56 underfocused random images (0.3-1.7 µm) for overfocus. So an overfocus result is
    checked by a fit restricted to underfocus; when that also finds Thon rings the sign
    is ambiguous and the underfocus value is returned (gold is recorded in underfocus),
    and the caller takes the larger CTF shift of the two signs.
    """
    from temcal.calibrate import _ctf_engine as eng
    from temcal.calibrate.ctf_fit import (
        finish_fit,
        fit_ctf_prepared,
        gold_exclusions_A,
        prepare_ctf_spectrum,
    )
    from temcal.errors import TemcalError
    from temcal.spectra.power import PowerSpectrum

    voltage_kV, cs_mm = ctf_optics
    bad = (TemcalError, ValueError, np.linalg.LinAlgError)
    try:
        prep = prepare_ctf_spectrum(
            PowerSpectrum(data=spec, tile_size=spec.shape[0], n_tiles=1),
            pixel_size_A=pb,
            voltage_kV=voltage_kV,
            exclude_resolutions_A=gold_exclusions_A(lattice_constant_A),
        )
    except bad:
        return None, False

    def regular(allow_focus_crossing: bool) -> tuple[float, np.ndarray] | None:
        try:
            fit, theta = fit_ctf_prepared(
                prep,
                cs_mm=cs_mm,
                defocus_search_A=(300.0, 60000.0),
                allow_focus_crossing=allow_focus_crossing,
                # only the mean defocus is needed: a narrow astigmatism search is enough
                max_astigmatism_A=5000.0,
                rtol=_THON_RTOL,
            )
        except bad:
            return None
        return 0.5 * (fit.defocus_u_A + fit.defocus_v_A), theta

    def band_of(theta: np.ndarray) -> Any:
        r_hi = min(prep.r_max_px, eng.sampling_limit_px(prep, theta, cs_mm))
        return eng.make_band(prep, prep.r_min_px, r_hi)

    def near_focus(reg: tuple[float, np.ndarray] | None) -> float | None:
        try:
            th0 = np.zeros(4)
            items, _, rss, inv = eng.refine(
                [eng.Item(prep, band_of(th0), th0)],
                cs_mm,
                free=[0, 1, 2],
                cs_free=False,
                rtol=_THON_RTOL,
            )
            theta = items[0].theta
            fit, theta = finish_fit(prep, theta, cs_mm, band_of(theta), rss, inv, False)
            if fit.score < _NEAR_FOCUS_MIN_SCORE:
                return None
            if reg is not None:
                band = band_of(reg[1])
                if eng.rss_of(prep, band, theta, cs_mm) >= eng.rss_of(prep, band, reg[1], cs_mm):
                    return None
        except bad:
            return None
        return 0.5 * (fit.defocus_u_A + fit.defocus_v_A)

    reg = regular(True)
    if reg is None or abs(reg[0]) < _NEAR_FOCUS_CHECK_A:
        near = near_focus(reg)
        if near is not None:
            return near, False
    if reg is None or reg[0] >= 0.0:
        return (None if reg is None else reg[0]), False
    under = regular(False)
    if under is None:
        return reg[0], True
    return under[0], True


def _with_ctf_bias(
    out: ImagePixelSize,
    thon: tuple[float | None, bool],
    pb: float,
    ctf_optics: tuple[float, float],
) -> ImagePixelSize:
    """Attach the CTF-modulation uncertainty (``thon`` from :func:`_thon_defocus`)."""
    from temcal.calibrate.ring_bias import (
        calculate_min_unshifted_defocus_A,
        calculate_ring_ctf_bias,
        calculate_worst_ring_ctf_bias,
        combine_ring_biases,
    )

    voltage_kV, cs_mm = ctf_optics
    defocus, ambiguous = thon
    eta = float(out.diagnostics.get("eta", 0.0))
    # an unknown sign of the defocus: the larger shift of the two
    signs = (1.0, -1.0) if ambiguous else (1.0,)
    rel, info = [], []
    for r in out.rings:
        radius = 1.0 / r.d_A
        if defocus is None:
            b = calculate_worst_ring_ctf_bias(r.width_per_A)
        else:
            b = max(
                calculate_ring_ctf_bias(
                    radius,
                    r.width_per_A,
                    eta=eta,
                    defocus_A=sg * defocus,
                    voltage_kV=voltage_kV,
                    cs_mm=cs_mm,
                )
                for sg in signs
            )
        rel.append(b / radius)
        # (also with free ring offsets the rings are weighted by SNR^2 here, not by the
        # weights the offsets give them: a ring predicted to stay in place is not always
        # unshifted -- image 52 of pixel_size_robustness.py, 26 nm grains at 0.31 µm,
        # has both rings 1.3 % low -- and the prediction is not trusted to shrink the
        # uncertainty)
        info.append(max(r.snr, 0.0) ** 2 if math.isfinite(r.snr) else 0.0)
    # standard uncertainty: the amplitude b itself (not its rms b / sqrt 2 over the phase):
    # on the simulator the strongly scattering grains shift rings up to ~2 b
    se = out.pixel_size_A * combine_ring_biases(rel, info)
    # the recommendation follows the ring that carries the fit (highest SNR): a faint
    # narrow one (a few spots) would ask for far more defocus than the result needs
    fitted = [r for r in out.rings if r.width_per_A > 0 and math.isfinite(r.snr)]
    min_dz = None
    if fitted:
        top = max(fitted, key=lambda r: r.snr)
        min_dz = calculate_min_unshifted_defocus_A(
            1.0 / top.d_A, top.width_per_A, voltage_kV=voltage_kV, cs_mm=cs_mm
        )
    return replace(
        out,
        thon_defocus_A=defocus,
        thon_sign_ambiguous=ambiguous,
        ctf_bias_se_A=float(se),
        min_unshifted_defocus_A=min_dz,
    )


def _fit_ctf(
    model: _RingModel, th_base: np.ndarray, nr: int, *, defocus_A: float | None = None
) -> optimize.OptimizeResult | None:
    """Fit with the CTF modulation ``1 - gamma cos 2 chi`` from a grid of defoci.

    ``chi = c + pi lambda dz s^2 - pi/2 Cs lambda^3 s^4`` with the given voltage and
    Cs; the defocus ``dz`` (grid from -1 to 5 µm, then refined, or fixed at
    ``defocus_A``), the phase offset ``c`` and the modulation depth ``gamma`` are
    fitted. A model with fixed ring slopes keeps the shared slope at zero.
    """
    lo, hi = _bounds(nr, True)
    th_base = np.array(th_base, dtype=float)
    if np.any(model.ring_slopes != 0.0):
        lo[4 + nr], hi[4 + nr] = -1e-6, 1e-6
        th_base[4 + nr] = 0.0
    if defocus_A is not None:
        dz = defocus_A / 1e4
        lo[5 + nr], hi[5 + nr] = dz - 1e-5, dz + 1e-5
        best_fixed = None
        for c in np.linspace(0.0, math.pi, 8, endpoint=False):
            for g in (-1.0, 0.5, 2.0):
                th = np.array([*th_base, dz, c, g])
                r = float(np.sum(model.residual(th) ** 2))
                if best_fixed is None or r < best_fixed[0]:
                    best_fixed = (r, th)
        assert best_fixed is not None
        try:
            return _fit(model, best_fixed[1], lo, hi, geom_span=0.01)
        except (ValueError, np.linalg.LinAlgError):
            return None
    W0 = np.array([[1.0 + th_base[0], th_base[2]], [th_base[2], 1.0 + th_base[1]]]) / model.p0
    s = model.s(W0)
    span_s2 = float(np.percentile(s, 99) ** 2 - np.percentile(s, 1) ** 2)
    step_um = 0.8 / (math.pi * model.lam * max(span_s2, 1e-6)) / 1e4
    grid = np.arange(-1.0, 5.0, max(step_um, 0.005))
    best = None
    for dz in grid:
        for c in (0.0, math.pi / 2.0):
            th = np.array([*th_base, dz, c, 0.0])
            r = float(np.sum(model.residual(th) ** 2))
            if best is None or r < best[0]:
                best = (r, th)
    assert best is not None
    try:
        return _fit(model, best[1], lo, hi, geom_span=0.01)
    except (ValueError, np.linalg.LinAlgError):
        return None


def _ring_shift_priors(
    model: _RingModel,
    th: np.ndarray,
    thon: tuple[float | None, bool],
    ctf_optics: tuple[float, float],
) -> np.ndarray | None:
    """Predicted relative shift of each ring from the defocus (``None`` without one).

    :func:`temcal.calibrate.ring_bias.calculate_ring_ctf_bias` over the ring's radius;
    with an ambiguous defocus sign, the larger of the two.
    """
    from temcal.calibrate.ring_bias import calculate_ring_ctf_bias

    defocus, ambiguous = thon
    if defocus is None:
        return None
    par = model.unpack(th)
    signs = (1.0, -1.0) if ambiguous else (1.0,)
    out = np.zeros(model.nr)
    for j in range(model.nr):
        radius = float(model.radii[j])
        out[j] = (
            max(
                calculate_ring_ctf_bias(
                    radius,
                    float(par["w"][j]),
                    eta=float(par["eta"]),
                    defocus_A=sg * defocus,
                    voltage_kV=ctf_optics[0],
                    cs_mm=ctf_optics[1],
                )
                for sg in signs
            )
            / radius
        )
    return out


def _with_offset_scale(base: ImagePixelSize, off: ImagePixelSize) -> ImagePixelSize:
    """The fit without offsets, rescaled to the isotropic scale of the fit with them.

    Only the scale is taken from the fit with free ring offsets: the anisotropy, its
    uncertainty and the direction stay those of the fit without them (the offsets are
    isotropic, and on the random images of ``pixel_size_robustness.py`` the reweighted
    segments moved the anisotropy by up to 4 pp). The statistical uncertainty is the
    larger of the two fits' (the reweighting, unit residual variance per segment, also
    shrank the sector-scatter estimate: 5 of 40 images fell outside their intervals).
    The rings (with their fitted offsets) and the plot diagnostics come from the fit
    with offsets.
    """
    k = off.pixel_size_A / base.pixel_size_A
    m = base.pixel_matrix_A
    return replace(
        base,
        pixel_matrix_A=(
            (m[0][0] * k, m[0][1] * k),
            (m[1][0] * k, m[1][1] * k),
        ),
        pixel_size_A=off.pixel_size_A,
        pixel_major_A=base.pixel_major_A * k,
        pixel_minor_A=base.pixel_minor_A * k,
        pixel_size_se_A=max(base.pixel_size_se_A * k, off.pixel_size_se_A),
        rings=off.rings,
        n_samples=off.n_samples,
        diagnostics={**off.diagnostics, "offset_free_pixel_size_A": base.pixel_size_A},
    )


def _offsets_apply(priors: np.ndarray) -> bool:
    """Whether the rings' predicted shifts differ enough to fit free offsets."""
    if priors.size < 2:
        return False
    top = float(priors.max())
    return top >= _OFFSET_MIN_PRIOR and float(priors.min()) <= _OFFSET_PRIOR_RATIO * top


def _fit_ring_offsets(
    model: _RingModel,
    res: optimize.OptimizeResult,
    priors: np.ndarray,
    n: int,
    pb: float,
) -> tuple[_OffsetRingModel, optimize.OptimizeResult] | None:
    """Refit with a free offset per ring when the rings' predicted shifts differ.

    Each ring gets a free relative offset with prior standard deviation ``priors[j]``
    (its predicted shift from the delocalization of the lattice fringes, see
    :mod:`temcal.calibrate.ring_bias`). Rings predicted to shift by much more than
    others then no longer set the scale: at 0.5 µm and 0.40 Å/px the 111 and 200 rings
    of 10 nm grains are predicted to shift by 0.5-1.1 % and, fitted alone, gave pixel
    sizes 0.3-1.1 % too small (they sit at lower frequency), while 220 (whose defocus and
    Cs delocalizations cancel there) is predicted to stay within 0.2 % and gave -0.10 to
    +0.09 %. The data rows are normalized to unit residual
    variance in each segment first (a segment that the model misfits, like the spots of
    few grains, would otherwise outweigh the prior). Used only when the largest
    predicted shift is at least ``_OFFSET_MIN_PRIOR`` and the smallest is below
    ``_OFFSET_PRIOR_RATIO`` times it (otherwise the offsets could not be told from the
    scale); returns ``None`` then, or when the fit fails.
    """
    nr = model.nr
    if not _offsets_apply(priors):
        return None
    resid, _, _ = model.solve(res.x)
    seg_var = _segment_variances(model, resid)
    weight = model.d.weight.copy()
    for k, idx in enumerate(model._seg_idx):
        weight[idx] /= math.sqrt(seg_var[k])
    data = replace(model.d, weight=weight)
    n_base = res.x.size
    prior_sd = np.maximum(priors, 1e-4)
    off = _OffsetRingModel(model, data, prior_sd, n_base)
    lo, hi = _bounds(nr, model.with_ctf)
    _floor_widths(lo, model.radii, n, pb)
    if np.any(model.ring_slopes != 0.0):
        lo[4 + nr], hi[4 + nr] = -1e-6, 1e-6
    if model.with_ctf:  # the defocus stays where it was fitted or fixed
        lo[5 + nr], hi[5 + nr] = res.x[5 + nr] - 1e-5, res.x[5 + nr] + 1e-5
    lo = np.concatenate([lo, np.full(nr, -_OFFSET_MAX)])
    hi = np.concatenate([hi, np.full(nr, _OFFSET_MAX)])
    th0 = np.concatenate([res.x, np.zeros(nr)])
    try:
        fit = _fit(off, th0, lo, hi, geom_span=0.01)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not fit.success or not np.all(np.isfinite(fit.x)):
        return None
    return off, fit
