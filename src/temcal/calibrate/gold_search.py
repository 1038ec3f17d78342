"""Find the gold lattice rings in a power spectrum without knowing the pixel size.

Step 2 of :mod:`temcal.calibrate.pixel_size` (see its docstring for the method): the
spectrum of the image and of 4x and 16x binned copies is reduced to log-frequency
profiles (mean power, and the spectrum over its own azimuthal median, which keeps aliased
arcs and crystal spots but not smooth Thon rings), unfolded through the detector's
aliasing; every candidate pixel size on a log grid is scored by the height of its gold
rings above their flanks, minus a penalty for peaks at positions the FCC lattice forbids.
The best candidate is accepted only when it stands clearly above every unrelated one;
otherwise :class:`~temcal.errors.CalibrationError` says no gold was found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from temcal.errors import CalibrationError, InputError
from temcal.spectra.power import calculate_power_spectrum
from temcal.spectra.profiles import centred_frequencies, unfold_spectrum

#: Plausible pixel sizes searched without a guess (Å/px).
SEARCH_RANGE_A = (0.025, 6.0)

# acceptance of the search's best candidate (tuned on simulated gold and amorphous images,
# see tests/test_pixel_size_search.py): score, number of rings standing out on their own,
# and how far the best candidate stands above the best unrelated one
_MIN_SIGNIFICANCE = 4.5
# without a guess, a candidate scoring between this and _MIN_SIGNIFICANCE (that passes the
# other checks) is returned flagged ``weak``: the caller measures it and keeps the result
# only when the fit confirms two of the 111, 200 and 220 rings (3 nm grains score 3.9-4.0:
# their very broad rings stand out less above their flanks)
_MIN_SIGNIFICANCE_CONFIRMED = 3.5
_MIN_SIGNIFICANCE_GUESS = 3.0
_MIN_RING_PEAK = 3.0
_MIN_DETECTED_PEAK = 3.0
_MAX_SECOND_RATIO = 0.7
_MIN_SECOND_MARGIN = 6.0
# positions h^2 + k^2 + l^2 = N (in units of 1 / a^2) that FCC forbids, between the
# strong gold rings: periodic structure (Thon rings) that matches gold rings shows here too;
# 2.25 (= 0.75 * 3) is the 111 of the pixel size 2 / sqrt 3 times smaller: a candidate that
# takes the 200 ring for its 111 finds the true 111 there, inside its own innermost ring
_FORBIDDEN_N = (1, 2, 2.25, 5, 6, 7, 9, 10)
_FORBIDDEN_WEIGHT = 2.0
# FCC-allowed h^2 + k^2 + l^2 (all even or all odd)
_ALLOWED_N = (3, 4, 8, 11, 12, 16, 19, 20, 24, 27, 32, 35, 36, 40)
_SEARCH_DX = 0.001  # step of the log-frequency search profile
# highest true frequency (cycles/px) the search looks at through aliasing: beyond, the
# detector MTF leaves little of a ring and ghosts of the aliased arcs dominate
_SEARCH_MAX_F = 1.8
# search weights of the reflections by their radius relative to the first one used
# (typical relative strengths of gold rings in TEM images: 111 > 200 > 220 ~ 311 > ...)
_RING_WEIGHT = {1.15: 0.8, 1.63: 0.6, 1.91: 0.6, 2.0: 0.4, 2.31: 0.3, 2.52: 0.3, 2.58: 0.3}


def _bin_image(img: np.ndarray, b: int) -> np.ndarray:
    if b == 1:
        return img
    ny, nx = img.shape[0] // b, img.shape[1] // b
    acc = np.zeros((ny, nx))
    for i in range(b):  # strided sums: several times faster than a reshaped mean
        for j in range(b):
            acc += img[i : ny * b : b, j : nx * b : b]
    acc /= b * b
    return acc


def _pow2_at_most(n: int) -> int:
    return 1 << math.floor(math.log2(n))


def _spectrum(img: np.ndarray, tile: int) -> np.ndarray:
    overlap = 0.5 if min(img.shape) < 4 * tile else 0.0
    return calculate_power_spectrum(img, tile_size=tile, overlap=overlap, dtype=np.float32).data


def _all_aliased_hint(
    pixel_size_A: float, d_A: Sequence[float] | np.ndarray, lead: str = "at"
) -> str:
    """A hint for error messages when every gold ring lies beyond the spectrum's corner.

    Returns ``""`` when the ring of the largest spacing ``d`` lies inside the corner
    (``p / d < sqrt(2) / 2`` cycles/px), else a clause (starting with ``lead``) saying
    that only aliases of the rings reach the image and which pixel sizes would show them.
    """
    d_max = float(np.max(d_A))
    corner = math.sqrt(0.5)
    if pixel_size_A / d_max < corner:
        return ""
    return (
        f"{lead} {pixel_size_A:.3g} Å/px, every gold ring lies beyond Nyquist (only "
        f"overlapping aliases of them reach the image): gold rings are measurable below "
        f"about {corner * d_max:.2f} Å/px; record the gold at a higher magnification"
    )


# --------------------------------------------------------------------------------------
# search


@dataclass(frozen=True)
class _SearchResult:
    pixel_size_A: float
    significance: float
    n_rings: int
    #: scored below ``_MIN_SIGNIFICANCE`` (but at least ``_MIN_SIGNIFICANCE_CONFIRMED``):
    #: the result stands only when the ring fit confirms it (see ``_search_in_profile``)
    weak: bool = False
    #: why a weak candidate was not accepted outright (for the caller's refusal)
    problem: str = ""


def _radial_median(spec: np.ndarray, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthal median of a centred spectrum in rings of ``step`` pixels.

    Returns ``(radius_px, median)`` of the non-empty rings (radius = mean pixel radius).
    """
    n = spec.shape[0]
    f = centred_frequencies(n) * n
    r = np.hypot(f[None, :], f[:, None]).ravel()
    rb = (r / step).astype(np.int64)
    v = spec.ravel()
    order = np.lexsort((v, rb))
    nb = int(rb.max()) + 1
    edges = np.searchsorted(rb[order], np.arange(nb + 1))
    start, end = edges[:-1], edges[1:]
    has = end > start
    med = v[order[((start + end - 1) // 2)[has]]]
    rc = np.bincount(rb, weights=r, minlength=nb)[has] / (end - start)[has]
    return rc, med


def _level_profile(spec: np.ndarray, fmax: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search profile of one spectrum: flattened z-score on a log-frequency axis.

    Two radial profiles of the alias-unfolded spectrum are combined: the log of the
    mean power (``zA``: rings and every other circular structure, e.g. Thon rings) and
    the mean of the spectrum divided by its own azimuthal median (``zW``: structure that
    is not a circle around the origin -- aliased rings, which are circles around the
    reciprocal-lattice points ``n``, and the spots of crystals; smooth Thon rings vanish).
    Below Nyquist the profile is ``(zA + zW) / sqrt 2``, beyond it ``zW``. Pixels on
    strong circular features inside the spectrum (a ring at radius ``rho``) are not
    unfolded to their aliases, where they would make ghost rings at ``|n| -+ rho``.

    Returns ``(x, z, zA)`` with ``x`` = ln(frequency in cycles/pixel); ``zA`` alone
    gives the unbiased ring positions (``zW`` of an elliptical ring peaks at its edges).
    """
    n = spec.shape[0]
    fmin = 6.0 / n
    bw = 0.5 / n
    u = unfold_spectrum(spec, max_frequency=fmax, min_frequency=fmin, min_alias_base_frequency=0.06)
    r = np.hypot(u.qx, u.qy)
    b = ((r - fmin) / bw).astype(np.int64)
    # the azimuthal median sees full circles (rings, Thon rings), not aliased arcs
    rc, med = _radial_median(spec)
    logm = np.log(np.maximum(med, 1e-30))
    f = centred_frequencies(n)
    rpix = np.hypot(f[None, :], f[:, None]).ravel()
    w = spec.ravel() / np.exp(np.interp(rpix * n, rc, logm))
    keep = np.ones(r.shape, dtype=bool)
    inner = rc >= fmin * n
    if inner.sum() > 20:
        zm = _flatten(np.log(rc[inner]), logm[inner])
        strong = ndimage.binary_dilation(zm > _MIN_RING_PEAK, iterations=2).astype(float)
        ghost = np.interp(rpix * n, rc[inner], strong, left=0.0, right=0.0) > 0.5
        prim = (u.alias[:, 0] == 0) & (u.alias[:, 1] == 0)
        keep = prim | ~ghost[u.pixel]
    bk = b[keep]
    cnt = np.bincount(bk).astype(float)
    fm = np.bincount(bk, weights=r[keep], minlength=cnt.size) / np.maximum(cnt, 1)
    va = np.bincount(bk, weights=u.values[keep], minlength=cnt.size)
    vw = np.bincount(bk, weights=w[u.pixel[keep]], minlength=cnt.size)
    ok = (cnt >= 8) & (va > 0) & (vw > 0)
    x = np.log(fm[ok])
    if x.size <= 20:
        return x, np.zeros_like(x), np.zeros_like(x)
    za = _flatten(x, np.log(va[ok] / cnt[ok]))
    zw = _flatten(x, np.log(vw[ok] / cnt[ok]))
    return x, np.where(x < math.log(0.5), (za + zw) / math.sqrt(2.0), zw), za


def _flatten(
    x: np.ndarray, y: np.ndarray, *, width: float = 0.07, smooth: float = 0.003
) -> np.ndarray:
    """Robust z-score of a log profile above a running low-percentile background.

    ``width``: half-width of the background window, ``smooth``: Gaussian smoothing (both
    in ln frequency).
    """
    dx = float(np.median(np.diff(x)))
    grid = np.arange(x[0], x[-1] + dx, dx)
    yg = np.interp(grid, x, y)
    half = max(3, round(width / dx))
    bg = ndimage.percentile_filter(yg, 25, size=2 * half + 1, mode="nearest")
    bg = ndimage.uniform_filter1d(bg, size=half, mode="nearest")
    r = yg - bg
    sm = ndimage.gaussian_filter1d(r, sigma=max(1.0, smooth / dx))
    # robust spread of the flattened profile (rings cover a small part of it)
    noise = 1.4826 * float(np.median(np.abs(sm - np.median(sm))))
    z = sm / max(noise, 1e-9)
    return np.interp(x, grid, z)


def _resolve_factor_two(
    best: int,
    lp: np.ndarray,
    score: np.ndarray,
    usable: np.ndarray,
    xg: np.ndarray,
    z0: np.ndarray,
    d_list: Sequence[float],
    span: tuple[float, float],
) -> int:
    """Prefer twice the pixel size when the candidate's 111 and 200 rings are absent.

    ``d_222 = d_111 / 2`` and ``d_400 = d_200 / 2``: a pixel size ``p / 2`` puts its 222
    and 400 rings exactly on the 111 and 200 rings of ``p``, and scores almost as well
    when few rings are visible (a CTF zero on one ring, rings near Nyquist). Gold's 111
    and 200 rings are its strongest, so a candidate whose own 111 and 200 are not seen
    (flattened z < 3) while those of ``2 p`` are is replaced by ``2 p``.
    """
    d = np.asarray(d_list, dtype=float)
    d1 = float(d.max())
    d2 = [float(x) for x in d if abs(x / d1 - 0.866) < 0.01]  # 200
    if not np.any(np.abs(d / d1 - 0.5) < 1e-3):  # 222 not among the rings
        return best
    lo, hi = span

    def z_at(lpp: float, dd: float) -> float:
        x = lpp - math.log(dd)
        return float(np.interp(x, xg, z0)) if lo <= x <= hi else float("nan")

    cur = best
    for _ in range(3):
        j2 = int(np.argmin(np.abs(lp - (lp[cur] + math.log(2.0)))))
        if abs(lp[j2] - lp[cur] - math.log(2.0)) > 0.002 or not usable[j2]:
            break
        # allow the refined peak near 2 p
        win = np.abs(lp - lp[j2]) < 0.01
        j2 = int(np.flatnonzero(win)[np.argmax(np.where(usable[win], score[win], -np.inf))])
        own = [z_at(float(lp[cur]), x) for x in (d1, *d2)]
        dbl = [z_at(float(lp[j2]), x) for x in (d1, *d2)]
        own_max = max((v for v in own if math.isfinite(v)), default=float("nan"))
        if not (math.isfinite(own_max) and own_max < 3.0 and max(dbl) > 3.0):
            break
        cur = j2
    return cur


def _search_profile(
    img: np.ndarray, full_spectrum: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened z-score profiles of the alias-unfolded spectrum on a log-frequency grid.

    ``full_spectrum``: the image's own Welch spectrum of 256-pixel tiles when the caller
    has it (:func:`_spectrum`); the unbinned level then uses it instead of a second pass
    over the image.

    Returns ``(xg, z, za)``: ``xg`` = ln(frequency in cycles/pixel) on a 0.001 grid,
    ``z`` the search profile and ``za`` its mean-power part (see :func:`_level_profile`;
    NaN where no level covers the grid).
    """
    levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    b = 1
    sub = img
    while min(img.shape) // b >= 128:
        if b > 1:
            sub = _bin_image(sub, 4)  # binned step by step from the previous level
        tile = min(256, _pow2_at_most(min(sub.shape)))
        if b == 1 and full_spectrum is not None and full_spectrum.shape == (tile, tile):
            spec = full_spectrum
        else:
            spec = _spectrum(sub, tile)
        fmax = _SEARCH_MAX_F if b == 1 else 0.45
        x, zz, za = _level_profile(spec, fmax)
        if x.size > 20:
            levels.append((x - math.log(b), zz, za))
        b *= 4
    if not levels:
        raise InputError("image too small to search for gold rings")
    dx = _SEARCH_DX
    lo = min(float(lv[0][0]) for lv in levels)
    hi = max(float(lv[0][-1]) for lv in levels)
    xg = np.arange(lo, hi, dx)
    z = np.full(xg.shape, np.nan)
    zg = np.full(xg.shape, np.nan)
    for x, zz, za in levels:  # later (more binned) levels resolve low frequencies better
        inside = (xg >= x[0]) & (xg <= x[-1])
        z[inside] = np.interp(xg[inside], x, zz)
        zg[inside] = np.interp(xg[inside], x, za)
    return xg, z, zg


def _refine_pixel_size(xg: np.ndarray, za: np.ndarray, d_list: Sequence[float], p: float) -> float:
    """Refine a candidate within ±0.6 % on the mean-power profile of its rings.

    Uses the rings inside Nyquist (``p / d < 0.45``) that stand out (``za >= 3``);
    returns ``p`` unchanged when there are none.
    """
    lo, hi = float(xg[0]), float(xg[-1])
    za0 = np.nan_to_num(za, nan=0.0)
    lnd = np.log(np.asarray(d_list, dtype=float))
    use = [
        j
        for j in range(len(d_list))
        if p / d_list[j] < 0.45
        and lo <= math.log(p) - lnd[j] <= hi
        and float(np.interp(math.log(p) - lnd[j], xg, za0)) >= _MIN_RING_PEAK
    ]
    if not use:
        return p
    lp = math.log(p) + np.arange(-0.006, 0.0061, 0.0002)
    total = np.zeros_like(lp)
    for j in use:
        wj = _RING_WEIGHT.get(round(d_list[0] / d_list[j], 2), 0.5) if j else 1.0
        total += wj * np.interp(lp - lnd[j], xg, za0)
    return math.exp(float(lp[int(np.argmax(total))]))


def _peak_over_flanks(
    z0: np.ndarray, offset: float, others: Sequence[float], dx: float
) -> np.ndarray:
    """Height of the profile above the higher of its flanks, for a ring at ``offset``.

    A gold ring must stand above its flanks (Thon rings and other periodic structure
    have neighbours of similar height): flank windows 7-15 % away (in ln frequency),
    trimmed 4 % short of the other gold rings (``others``: their ln offsets).
    """
    flank = np.full(z0.shape, -np.inf)
    for a0, a1 in ((-0.15, -0.07), (0.07, 0.15)):
        lo_o, hi_o = a0, a1
        for o in others:
            rel = o - offset
            if abs(rel) < 1e-9:
                continue
            if a0 < 0 and a0 - 0.04 < rel < 0:
                lo_o = max(lo_o, rel + 0.04)
            if a1 > 0 and 0 < rel < a1 + 0.04:
                hi_o = min(hi_o, rel - 0.04)
        if hi_o - lo_o < 0.01:
            continue
        k0, k1 = round(lo_o / dx), round(hi_o / dx)
        mf = ndimage.maximum_filter1d(z0, size=k1 - k0 + 1, mode="nearest")
        flank = np.maximum(flank, np.roll(mf, -((k0 + k1) // 2)))  # window centre
    flank = np.where(np.isfinite(flank), np.maximum(flank, 0.0), 0.0)
    return np.clip(z0 - flank, -3.0, 25.0)


def _lattice_constant_from_spacings(d_list: Sequence[float]) -> float | None:
    """The FCC lattice constant behind a list of gold spacings (``None`` if unclear)."""
    d = np.asarray(d_list, dtype=float)
    allowed = np.array(_ALLOWED_N, dtype=float)
    for n0 in _ALLOWED_N:
        a = float(d.max()) * math.sqrt(n0)
        n_all = (a / d) ** 2
        if np.all(np.min(np.abs(n_all[:, None] - allowed[None, :]), axis=1) < 1e-3):
            return a
    return None


@dataclass(frozen=True)
class _Scores:
    lp: np.ndarray  # ln(candidate pixel size in Å)
    score: np.ndarray  # gold-ring score minus the penalty for peaks at forbidden positions
    usable: np.ndarray  # at least 1.5 (weighted) rings inside the profile
    ring_peak: np.ndarray  # (n_rings, n_candidates) height of each ring above its flanks
    ring_valid: np.ndarray  # (n_rings, n_candidates) ring inside the profile


def _score_candidates(
    xg: np.ndarray,
    z: np.ndarray,
    d_list: Sequence[float],
    p_range: tuple[float, float],
) -> _Scores:
    """Score every candidate pixel size on a log grid against the gold ring pattern.

    The score is the weighted mean height of the gold rings above their flanks, minus
    ``_FORBIDDEN_WEIGHT`` times the mean positive height of the peaks at the positions
    that the FCC lattice forbids (h^2 + k^2 + l^2 = 1, 2, 5, 6, 7, 9, 10): structure with
    a regular period (Thon rings) that happens to fit the gold ratios fills those too.
    """
    dx = _SEARCH_DX
    lo, hi = float(xg[0]), float(xg[-1])
    z0 = np.nan_to_num(z, nan=0.0)
    inside = np.isfinite(z).astype(float)
    plo, phi = p_range
    # a fixed grid (multiples of the step, not anchored at the range's end): the
    # candidates, and the fit started from the best, do not move with the guess
    step = 0.0005
    lp = np.arange(math.ceil(math.log(plo) / step), math.floor(math.log(phi) / step) + 1) * step
    lnd = np.log(np.asarray(d_list, dtype=float))
    offsets = list(-lnd)  # ln(p / d) - ln p
    total = np.zeros_like(lp)
    count = np.zeros_like(lp)
    peaks, valids = [], []
    for j, d in enumerate(d_list):
        wj = _RING_WEIGHT.get(round(d_list[0] / d, 2), 0.5) if j else 1.0
        peak = _peak_over_flanks(z0, offsets[j], offsets, dx)
        xr = lp + offsets[j]
        zi = np.interp(xr, xg, peak, left=0.0, right=0.0)
        valid = (xr >= lo) & (xr <= hi) & (np.interp(xr, xg, inside) > 0.5)
        total += np.where(valid, wj * zi, 0.0)
        count += np.where(valid, wj * wj, 0.0)
        peaks.append(zi)
        valids.append(valid)
    usable = (count > 0) & (count >= min(1.5, float(count.max())))
    score = np.where(usable, total / np.sqrt(np.maximum(count, 1)), -np.inf)
    a = _lattice_constant_from_spacings(d_list)
    if a is not None:
        f_sum = np.zeros_like(lp)
        f_cnt = np.zeros_like(lp)
        # folded arcs of rings beyond Nyquist pile up at radius |n| - p / d (tangent to
        # that circle, n a reciprocal detector lattice vector): not a forbidden peak
        ghosts = [nn - np.exp(lp + o) for o in offsets for nn in (1.0, math.sqrt(2.0), 2.0)]
        for nf in _FORBIDDEN_N:
            off = math.log(math.sqrt(nf) / a)
            peak = _peak_over_flanks(z0, off, offsets, dx)
            xr = lp + off
            zi = np.interp(xr, xg, peak, left=0.0, right=0.0)
            valid = (xr >= lo) & (xr <= hi) & (np.interp(xr, xg, inside) > 0.5)
            fq = np.exp(xr)
            for gq in ghosts:
                valid &= ~((gq > 0) & (np.abs(fq / np.maximum(gq, 1e-12) - 1.0) < 0.02))
            f_sum += np.where(valid, np.maximum(zi, 0.0), 0.0)
            f_cnt += valid
        score = score - _FORBIDDEN_WEIGHT * f_sum / np.maximum(f_cnt, 1)
    return _Scores(lp, score, usable, np.array(peaks), np.array(valids))


def _search_pixel_size(
    img: np.ndarray,
    d_list: Sequence[float],
    *,
    guess_pixel_size_A: float | None,
    full_spectrum: np.ndarray | None = None,
) -> _SearchResult:
    """Best gold pixel size of an image (see :func:`_search_in_profile`).

    ``full_spectrum``: see :func:`_search_profile`.

    With a guess the search without it runs first, and its result stands when it is
    accepted (a clear pattern is not overruled: the caller refuses a result far from the
    guess); the guess relaxes the search only when that fails. So a guess never loses an
    image the search alone would measure.
    """
    xg, z, za = _search_profile(img, full_spectrum)
    try:
        found = _search_in_profile(
            xg, z, d_list, guess_pixel_size_A=None, allow_weak=guess_pixel_size_A is None
        )
    except CalibrationError:
        if guess_pixel_size_A is None:
            raise
        found = _search_in_profile(xg, z, d_list, guess_pixel_size_A=guess_pixel_size_A)
    p = _refine_pixel_size(xg, za, d_list, found.pixel_size_A)
    return replace(found, pixel_size_A=p)


def _no_clear_pattern(
    p: float, problem: str, d_arr: np.ndarray, *, guessed: bool
) -> CalibrationError:
    """The refusal of a best candidate (pixel size ``p``, Å/px) that failed ``problem``."""
    return CalibrationError(
        "no gold lattice rings found in the power spectrum (best candidate pixel size "
        f"{p:.4g} Å/px {problem}); is there gold in the image? "
        + (
            "(--rings may help with weak rings)"
            if guessed
            else "(--guess or --rings may help with weak rings)"
        )
        + (
            ". " + hint
            if (hint := _all_aliased_hint(p, d_arr, "If the pixel size is near"))
            else ""
        )
    )


def weak_candidate_refusal(found: _SearchResult, d_list: Sequence[float]) -> CalibrationError:
    """The search's refusal of a ``weak`` candidate that the ring fit did not confirm."""
    return _no_clear_pattern(
        found.pixel_size_A,
        found.problem + ", and its fit did not confirm two of the 111, 200 and 220 rings",
        np.asarray(d_list, dtype=float),
        guessed=False,
    )


def _search_in_profile(
    xg: np.ndarray,
    z: np.ndarray,
    d_list: Sequence[float],
    *,
    guess_pixel_size_A: float | None,
    allow_weak: bool = False,
) -> _SearchResult:
    """Best gold pixel size for a search profile (see :func:`_search_profile`).

    Accepted only if it scores at least ``_MIN_SIGNIFICANCE``, at least two of its rings
    stand ``_MIN_RING_PEAK`` above their flanks (one ring alone cannot tell 111 from
    200 or 220), and no unrelated candidate (more than 3 % away) scores more than
    ``_MAX_SECOND_RATIO`` times as much; otherwise :class:`CalibrationError`. With a
    guess (the search stays within ×1.25 of it) one ring suffices, a lower score is
    accepted, and when the best candidate lies within 10 % of the guess only candidates
    within 10 % of it compete.
    """
    lo, hi = float(xg[0]), float(xg[-1])
    z0 = np.nan_to_num(z, nan=0.0)
    if guess_pixel_size_A is not None:
        p_range = (guess_pixel_size_A / 1.25, guess_pixel_size_A * 1.25)
    else:
        p_range = SEARCH_RANGE_A
    sc = _score_candidates(xg, z, d_list, p_range)
    lp, usable = sc.lp, sc.usable
    # gold's strongest rings are 111 and 200: a candidate needs one of them to stand out
    # where they fall inside the spectrum (else its 220 and 311 on another candidate's
    # 111 and 200, or a few rings far out in the aliases, can outscore the truth)
    d_arr = np.asarray(d_list, dtype=float)
    low = d_arr / d_arr.max() > 0.8  # 111 and 200 (of the rings used)
    low_seen = np.any((sc.ring_peak[low] >= _MIN_RING_PEAK) & sc.ring_valid[low], axis=0)
    low_inside = np.any(sc.ring_valid[low], axis=0)
    if not usable.any():
        raise CalibrationError(
            "no gold lattice rings found: no plausible pixel size puts two gold rings inside "
            "the spectrum (image too small?)"
        )
    usable = usable & (low_seen | ~low_inside)
    score = np.where(usable, sc.score, -np.inf)
    if not usable.any():
        hint = ""
        if guess_pixel_size_A is not None:
            hint = _all_aliased_hint(guess_pixel_size_A, d_arr, "Near the guessed")
        raise CalibrationError(
            "no gold lattice rings found in the power spectrum: the strongest gold ring "
            "stands out at no plausible pixel size; is there gold in the image?"
            + (" " + hint if hint else "")
        )
    best = int(np.argmax(score))
    best = _resolve_factor_two(best, lp, score, usable, xg, z0, d_list, (lo, hi))
    # unrelated candidates: more than 3 % away. Half the pixel size puts its 222 and 400
    # rings on our 111 and 200 (see _resolve_factor_two); it counts as unrelated only
    # when one of its rings that do not fall on ours stands out too
    dist = lp[best] - lp
    far = np.abs(dist) > 0.03
    half = int(np.argmin(np.abs(dist - math.log(2.0))))
    if abs(dist[half] - math.log(2.0)) < 0.002:
        on_ours = np.array([np.any(np.abs(2.0 * dj / d_arr - 1.0) < 1e-3) for dj in d_arr])
        own = (sc.ring_peak[:, half] >= _MIN_RING_PEAK) & sc.ring_valid[:, half] & ~on_ours
        if not own.any():
            far &= np.abs(dist - math.log(2.0)) > 0.03
    # where every gold ring lies beyond the spectrum's corner, only overlapping aliases
    # reach the image (such pixel sizes are refused as unmeasurable, see
    # _all_aliased_hint): a candidate there can score on the unfolded aliases of a
    # measurable pattern's spots, but cannot make that pattern ambiguous
    corner_A = math.sqrt(0.5) * float(d_arr.max())
    if math.exp(float(lp[best])) < corner_A:
        far &= np.exp(lp) < corner_A
    if guess_pixel_size_A is not None:
        # the guess is information too: when the best candidate lies within 10 % of it,
        # only candidates that close compete (111 and 200 on the same ring are 15 % apart)
        near_guess = np.abs(lp - math.log(guess_pixel_size_A)) < math.log(1.1)
        if near_guess[best]:
            far &= near_guess
    second = float(np.max(score[far & usable])) if (far & usable).any() else 0.0
    sig = float(score[best])
    p = math.exp(float(lp[best]))
    n_det = int(np.sum((sc.ring_peak[:, best] >= _MIN_DETECTED_PEAK) & sc.ring_valid[:, best]))
    problem = None
    # a guess leaves few candidates (and no factor-of-1.6 confusion): weaker rings do
    min_sig = _MIN_SIGNIFICANCE if guess_pixel_size_A is None else _MIN_SIGNIFICANCE_GUESS
    min_det = min(2, len(d_list)) if guess_pixel_size_A is None else 1
    ambiguous = second > _MAX_SECOND_RATIO * sig and sig - second < _MIN_SECOND_MARGIN
    if sig < min_sig:
        problem = f"scores {sig:.1f} < {min_sig:g}"
        if allow_weak and sig >= _MIN_SIGNIFICANCE_CONFIRMED and n_det >= min_det and not ambiguous:
            return _SearchResult(
                pixel_size_A=p, significance=sig, n_rings=n_det, weak=True, problem=problem
            )
    elif n_det < min_det:
        problem = f"only {n_det} ring(s) stand out"
    elif ambiguous:
        problem = f"scores {sig:.1f}, ambiguous with another pixel size scoring {second:.1f}"
    if problem is not None:
        raise _no_clear_pattern(p, problem, d_arr, guessed=guess_pixel_size_A is not None)
    return _SearchResult(pixel_size_A=p, significance=sig, n_rings=n_det)
