"""Cs from Thon rings: one Cs shared by a defocus series, fitted jointly with defocus.

Over a defocus series, defocus scales the ``k^2`` term of chi and Cs the ``k^4`` term;
with one Cs shared by every micrograph they separate. The fit:

1. each micrograph's spectrum is prepared (:func:`temcal.calibrate.ctf_fit.prepare_ctf_spectrum`)
   and fitted with a starting Cs (``cs_nominal_mm`` or 2.7 mm);
2. a profile scan over Cs (every micrograph's defocus and astigmatism refitted at each Cs)
   brackets the minimum of the summed residual;
3. a joint Levenberg-Marquardt refinement of Cs and every micrograph's defocus,
   astigmatism (and phase shift) on all 2-D spectrum pixels out to each micrograph's
   fit resolution;
4. the 95 % interval combines the fit (jackknife over micrographs, and the normal-matrix
   error inflated for the correlation of neighbouring spectrum pixels, whichever is
   larger), the pixel size (Cs scales as ``p^4``: a 1 % pixel error is a 4 % Cs error)
   and the voltage (Cs scales as ``lambda^-3``).

References
----------
Rohou & Grigorieff (2015), CTFFIND4, J. Struct. Biol. 192, 216, doi:10.1016/j.jsb.2015.08.008
(the Thon-ring model and conventions; CTFFIND itself takes Cs as fixed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from temcal.calibrate._ctf_engine import (
    Item,
    PreparedSpectrum,
    defocus_to_theta,
    fit_resolution_px,
    make_band,
    refine,
    rescale_pixel,
    sampling_limit_px,
)
from temcal.calibrate.ctf_fit import (
    CTFFit,
    _check_common,
    finish_fit,
    fit_ctf_prepared,
    prepare_and_fit,
)
from temcal.errors import CalibrationError, InputError
from temcal.physics.wavelength import calculate_wavelength_A, check_voltage_kV
from temcal.spectra.power import PowerSpectrum

__all__ = [
    "CsCtfResult",
    "cs_voltage_sensitivity",
    "fit_cs_ctf",
    "pixel_sizes_from_gold",
    "refit_cs_with_pixel_size",
]


@dataclass(frozen=True)
class CsCtfResult:
    """Joint Cs fit of a defocus series.

    Attributes
    ----------
    cs_mm : float
        Spherical aberration (mm).
    cs_ci95_mm : float
        Half-width of the 95 % interval (fit, pixel size and voltage combined).
    cs_fit_ci95_mm, cs_pixel_ci95_mm, cs_voltage_ci95_mm : float
        The error budget: parts from the fit, the pixel-size interval (x4) and the voltage.
    cs_fit_se_lm_mm, cs_jackknife_se_mm : float
        Fit standard errors from the normal matrix and from a jackknife over micrographs.
    jackknife_cs_mm : tuple of float
        Cs with each micrograph left out.
    pixel_size_A : float
        Pixel size used (mean over micrographs when each has its own).
    pixel_sizes_A : tuple of float
        Each micrograph's pixel size.
    pixel_size_ci95_A : float
        95 % half-width of the pixel size that the budget assumes.
    voltage_kV, voltage_ci95_percent : float
        Voltage and its assumed 95 % relative uncertainty.
    micrographs : tuple of CTFFit
        Per-micrograph fits at the joint Cs.
    files : tuple of str
        Names of the micrographs.
    cs_nominal_mm : float or None
        Nominal Cs to compare with.
    differs_from_nominal : bool or None
        Whether ``|cs_mm - cs_nominal_mm| > cs_ci95_mm``.
    cs_scan_mm, cs_scan_rss : tuple of float
        Profile of the summed residual over Cs (defocus refitted at each Cs).
    magnification_change_percent_per_um : float or None
        Slope of the pixel size against mean defocus (per-micrograph pixel sizes only).
    magnification_change_se_percent_per_um : float or None
        Its standard error.
    n_micrographs : int
        Micrographs used.
    method : str
        Short description.
    """

    cs_mm: float
    cs_ci95_mm: float
    cs_fit_ci95_mm: float
    cs_pixel_ci95_mm: float
    cs_voltage_ci95_mm: float
    cs_fit_se_lm_mm: float
    cs_jackknife_se_mm: float
    jackknife_cs_mm: tuple[float, ...]
    pixel_size_A: float
    pixel_sizes_A: tuple[float, ...]
    pixel_size_ci95_A: float
    voltage_kV: float
    voltage_ci95_percent: float
    micrographs: tuple[CTFFit, ...]
    files: tuple[str, ...]
    cs_nominal_mm: float | None
    differs_from_nominal: bool | None
    cs_scan_mm: tuple[float, ...]
    cs_scan_rss: tuple[float, ...]
    magnification_change_percent_per_um: float | None
    magnification_change_se_percent_per_um: float | None
    n_micrographs: int
    method: str = (
        "joint Levenberg-Marquardt of one Cs and per-micrograph defocus/astigmatism on the 2-D "
        "background-normalised spectra; jackknife over micrographs"
    )
    prepared: tuple[PreparedSpectrum, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary with the keys of ``temcal cs-ctf --json``."""
        mics = []
        for name, f in zip(self.files, self.micrographs, strict=True):
            d = {"file": name}
            d.update(f.to_dict())  # type: ignore[arg-type]
            mics.append(d)
        return {
            "cs_mm": self.cs_mm,
            "cs_ci95_mm": self.cs_ci95_mm,
            "pixel_size_A": self.pixel_size_A,
            "voltage_kV": self.voltage_kV,
            "micrographs": mics,
            "error_budget_ci95_mm": {
                "fit": self.cs_fit_ci95_mm,
                "pixel_size": self.cs_pixel_ci95_mm,
                "voltage": self.cs_voltage_ci95_mm,
            },
            "pixel_size_ci95_A": self.pixel_size_ci95_A,
            "pixel_sizes_A": list(self.pixel_sizes_A),
            "voltage_ci95_percent": self.voltage_ci95_percent,
            "cs_fit_se_lm_mm": self.cs_fit_se_lm_mm,
            "cs_jackknife_se_mm": self.cs_jackknife_se_mm,
            "jackknife_cs_mm": list(self.jackknife_cs_mm),
            "cs_nominal_mm": self.cs_nominal_mm,
            "differs_from_nominal": self.differs_from_nominal,
            "magnification_change_percent_per_um": self.magnification_change_percent_per_um,
            "magnification_change_se_percent_per_um": (self.magnification_change_se_percent_per_um),
            "n_micrographs": self.n_micrographs,
            "method": self.method,
        }


def cs_voltage_sensitivity(voltage_kV: float) -> float:
    """``|d ln Cs / d ln V|`` at fixed spectrum: ``3 |d ln lambda / d ln V|``.

    The Thon rings fix ``Cs lambda^3``, so a relative voltage error ``e`` is a relative
    Cs error of about ``3 |d ln lambda / d ln V| e`` (1.84 e at 300 kV).
    """
    v = check_voltage_kV(voltage_kV)
    h = 1e-4
    dl = math.log(calculate_wavelength_A(v * (1 + h))) - math.log(
        calculate_wavelength_A(v * (1 - h))
    )
    return 3.0 * abs(dl / (2 * h))


def pixel_sizes_from_gold(
    micrographs: Sequence[np.ndarray],
    *,
    voltage_kV: float,
    temperature_K: float | None = None,
    lattice_constant_A: float | None = None,
    files: Sequence[str] | None = None,
) -> tuple[list[float], list[float]]:
    """Each micrograph's pixel size (Å) and its 95 % half-width from its gold rings.

    Uses the pixel-size calibration (:func:`temcal.calibrate.pixel_size.measure_gold_rings`).
    """
    import importlib

    try:
        pixel_mod: Any = importlib.import_module("temcal.calibrate.pixel_size")
    except ImportError:
        raise InputError(
            "pixel sizes from gold need temcal.calibrate.pixel_size, which this build lacks; "
            "give the pixel size instead"
        ) from None
    import inspect

    kw: dict[str, Any] = {"temperature_K": temperature_K, "lattice_constant_A": lattice_constant_A}
    if "voltage_kV" in inspect.signature(pixel_mod.measure_gold_rings).parameters:
        kw["voltage_kV"] = voltage_kV
    sizes: list[float] = []
    cis: list[float] = []
    for i, img in enumerate(micrographs):
        name = files[i] if files is not None else f"#{i}"
        try:
            res = pixel_mod.measure_gold_rings(img, **kw)
        except CalibrationError as exc:
            raise CalibrationError(f"{name}: gold rings: {exc}") from None
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            raise CalibrationError(
                f"{name}: gold rings could not be measured ({type(exc).__name__}: {exc})"
            ) from None
        sizes.append(float(res.pixel_size_A))
        se = float(getattr(res, "pixel_size_se_A", 0.0))
        cis.append(1.96 * se if math.isfinite(se) else 0.0)
    return sizes, cis


def _as_list(x: float | Sequence[float] | None, n: int, name: str) -> list[float] | None:
    if x is None:
        return None
    if isinstance(x, int | float):
        return [float(x)] * n
    vals = [float(v) for v in x]
    if len(vals) != n:
        raise InputError(f"{name}: got {len(vals)} values for {n} micrographs")
    return vals


def fit_cs_ctf(
    micrographs: Sequence[np.ndarray | PowerSpectrum],
    *,
    pixel_size_A: float | Sequence[float] | None = None,
    pixel_from_gold: bool = False,
    voltage_kV: float,
    amplitude_contrast: float = 0.07,
    cs_nominal_mm: float | None = None,
    pixel_size_ci95_A: float | Sequence[float] | None = None,
    voltage_ci95_percent: float = 0.1,
    fit_phase_shift: bool = False,
    resolution_range_A: tuple[float, float | None] | None = None,
    min_resolution_A: float = 4.0,
    cs_search_mm: tuple[float, float] = (0.3, 8.0),
    defocus_search_A: tuple[float, float] = (2000.0, 60000.0),
    files: Sequence[str] | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    exclude_resolutions_A: tuple[float, ...] = (),
    gold_temperature_K: float | None = None,
    gold_lattice_constant_A: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> CsCtfResult:
    """Fit one Cs shared by a defocus series, with per-micrograph defocus and astigmatism.

    Parameters
    ----------
    micrographs : sequence of numpy.ndarray or PowerSpectrum
        At least two micrographs (same shape) at different defoci, or their spectra.
    pixel_size_A : float or sequence of float
        Pixel size (Å), one for all or one per micrograph (e.g. measured from gold in
        each micrograph). Exactly one of ``pixel_size_A`` and ``pixel_from_gold``.
    pixel_from_gold : bool
        Measure each micrograph's pixel size from its gold rings
        (:func:`temcal.calibrate.pixel_size.measure_gold_rings`), use it in that
        micrograph's CTF fit (gold reflections excluded from the fit), take the pixel-size
        interval from the gold fits and report the magnification change per µm of defocus.
    voltage_kV : float
        Accelerating voltage (kV).
    amplitude_contrast : float
        Amplitude-contrast fraction.
    cs_nominal_mm : float, optional
        Nominal Cs (mm): the starting value, and the value the result is compared with.
    pixel_size_ci95_A : float or sequence, optional
        95 % half-width of the pixel size (Å) for the error budget (0 if not given:
        the budget then says nothing about the pixel size).
    voltage_ci95_percent : float
        Assumed 95 % relative uncertainty of the voltage (%), default 0.1 %.
    fit_phase_shift : bool
        Fit a phase shift per micrograph.
    resolution_range_A : tuple, optional
        ``(low, high)`` limits in Å of the spectrum used (default 30 Å to Nyquist).
    min_resolution_A : float
        Cs is reported only if the Thon rings of at least two micrographs fit beyond
        this resolution (Å).
    cs_search_mm : tuple of float
        Range of the Cs profile scan (mm).
    defocus_search_A : tuple of float
        Defocus search range of the per-micrograph fits.
    files : sequence of str, optional
        Names of the micrographs (for the result).
    tile_size, overlap : optional
        Welch spectrum options (see :func:`temcal.calibrate.ctf_fit.fit_ctf`).
    exclude_resolutions_A : tuple of float
        Resolutions (Å) left out of the CTF fits (e.g. gold reflections).
    gold_temperature_K, gold_lattice_constant_A : float, optional
        Gold lattice model for ``pixel_from_gold``.
    progress : callable, optional
        Called with 1 after each micrograph's first fit.

    Returns
    -------
    CsCtfResult

    Raises
    ------
    InputError
        Fewer than two micrographs, mixed shapes, bad options.
    CalibrationError
        No Thon rings, or rings that do not reach ``min_resolution_A``.
    """
    n = len(micrographs)
    if n < 2:
        raise InputError(
            "a single micrograph cannot separate Cs from defocus; give a defocus series of at "
            "least two (better 4-6) micrographs"
        )
    shapes = {
        (m.tile_size, m.tile_size) if isinstance(m, PowerSpectrum) else np.shape(m)
        for m in micrographs
    }
    if len(shapes) != 1:
        raise InputError(f"micrographs have different sizes {sorted(shapes)}; give one size")
    if (pixel_size_A is None) == (not pixel_from_gold):
        raise InputError("give exactly one of pixel_size_A and pixel_from_gold")
    if pixel_from_gold:
        from temcal.calibrate.ctf_fit import gold_exclusions_A

        if any(isinstance(m, PowerSpectrum) for m in micrographs):
            raise InputError("pixel_from_gold needs the micrographs, not their spectra")
        shapes_g = {np.asarray(m).shape for m in micrographs}
        if len(shapes_g) != 1:
            raise InputError(f"micrographs have different sizes {sorted(shapes_g)}; give one size")
        pixel_size_A, pixel_size_ci95_A = pixel_sizes_from_gold(
            micrographs,  # type: ignore[arg-type]
            voltage_kV=voltage_kV,
            temperature_K=gold_temperature_K,
            lattice_constant_A=gold_lattice_constant_A,
            files=files,
        )
        exclude_resolutions_A = tuple(exclude_resolutions_A) + gold_exclusions_A(
            gold_lattice_constant_A or 4.0782
        )
    pix = _as_list(pixel_size_A, n, "pixel_size_A")
    assert pix is not None
    for p in pix:
        _check_common(p, voltage_kV, 2.7, amplitude_contrast)
    if max(pix) / min(pix) > 1.05:
        raise InputError(
            f"pixel sizes differ by more than 5 % ({min(pix):.4g}-{max(pix):.4g} Å); "
            "mixed magnifications cannot share a Cs fit"
        )
    pci = _as_list(pixel_size_ci95_A, n, "pixel_size_ci95_A")
    if not 0.0 <= voltage_ci95_percent < 20.0:
        raise InputError(f"voltage uncertainty {voltage_ci95_percent} % is not plausible")
    lo_cs, hi_cs = cs_search_mm
    if not 0.0 < lo_cs < hi_cs <= 20.0:
        raise InputError(f"Cs search range {cs_search_mm} mm is not plausible")
    names = [str(f) for f in files] if files is not None else [f"#{i}" for i in range(n)]
    cs0 = float(cs_nominal_mm) if cs_nominal_mm is not None else 2.7
    if cs_nominal_mm is not None and not 0.0 < cs_nominal_mm <= 20.0:
        raise InputError(f"nominal Cs {cs_nominal_mm} mm is not plausible")

    preps: list[PreparedSpectrum] = []
    thetas: list[np.ndarray] = []
    free = [0, 1, 2, 3] if fit_phase_shift else [0, 1, 2]
    for i, m in enumerate(micrographs):
        try:
            prep, _, th = prepare_and_fit(
                m,
                pixel_size_A=pix[i],
                voltage_kV=voltage_kV,
                cs_mm=cs0,
                amplitude_contrast=amplitude_contrast,
                fit_phase_shift=fit_phase_shift,
                resolution_range_A=resolution_range_A,
                defocus_search_A=defocus_search_A,
                tile_size=tile_size,
                overlap=overlap,
                exclude_resolutions_A=exclude_resolutions_A,
            )
        except CalibrationError as exc:
            raise CalibrationError(f"{names[i]}: {exc}") from None
        preps.append(prep)
        thetas.append(th)
        if progress is not None:
            progress(1)

    result = _joint_fit(preps, thetas, cs0, free, (lo_cs, hi_cs))
    cs, thetas, inv, rss, n_pix, scan, bands = result

    # fit resolution at the joint Cs; refuse when the rings do not reach min_resolution_A
    fits: list[CTFFit] = []
    for prep, th, band in zip(preps, thetas, bands, strict=True):
        f, _ = finish_fit(prep, th, cs, band, 0.0, None, fit_phase_shift)
        fits.append(f)
    reach = sorted(f.fit_resolution_A for f in fits)
    if sum(r <= min_resolution_A for r in reach) < 2:
        raise CalibrationError(
            f"the Thon rings reach only {reach[min(1, n - 1)]:.2f} Å in the second-best "
            f"micrograph; Cs is measurable only from rings beyond ~{min_resolution_A:g} Å "
            "(the Cs phase is 1.3 rad at 4 Å at 300 kV, 2.7 mm): refusing to report a Cs"
        )

    # normal-matrix standard error, inflated for correlated neighbouring spectrum pixels
    dof = max(n_pix - inv.shape[0] - 12 * n, 1) if inv is not None else 1
    se_lm = (
        math.sqrt(2.0 * rss / dof * inv[-1, -1])
        if inv is not None and inv[-1, -1] > 0
        else math.nan
    )
    # jackknife over micrographs
    jack: list[float] = []
    if n >= 3:
        for i in range(n):
            sub_items = [Item(preps[j], bands[j], thetas[j].copy()) for j in range(n) if j != i]
            _, cs_i, _, _ = refine(sub_items, cs, free=free, cs_free=True, max_iter=4)
            jack.append(float(cs_i))
        mj = float(np.mean(jack))
        se_jack = math.sqrt((n - 1) / n * float(np.sum((np.asarray(jack) - mj) ** 2)))
    else:
        se_jack = math.nan
    from scipy import stats

    fit_ci = 1.96 * se_lm if math.isfinite(se_lm) else 0.0
    if math.isfinite(se_jack):
        fit_ci = max(fit_ci, float(stats.t.ppf(0.975, n - 1)) * se_jack)
    if not math.isfinite(fit_ci) or fit_ci > 0.5 * cs or cs <= 0:
        raise CalibrationError(
            f"Cs {cs:.3g} mm is not supported by the data (95 % fit interval ±{fit_ci:.2g} mm); "
            "use more micrographs, a wider defocus range or rings to higher resolution"
        )
    p_mean = float(np.mean(pix))
    if pci is not None:
        rel_p = float(np.mean(pci)) / p_mean
        if n > 1 and len(set(pix)) > 1:
            # independent per-micrograph pixel sizes average down in the shared Cs
            rel_p = rel_p / math.sqrt(n)
        p_ci = float(np.mean(pci)) if len(set(pix)) == 1 else rel_p * p_mean
    else:
        rel_p, p_ci = 0.0, 0.0
    pixel_ci = 4.0 * rel_p * cs
    volt_ci = cs_voltage_sensitivity(voltage_kV) * voltage_ci95_percent / 100.0 * cs
    total = math.sqrt(fit_ci**2 + pixel_ci**2 + volt_ci**2)
    differs = None if cs_nominal_mm is None else bool(abs(cs - cs_nominal_mm) > total)

    mag_slope: float | None = None
    mag_se: float | None = None
    if len(set(pix)) > 1 and n >= 3:
        dz_um = np.array([f.defocus_mean_A for f in fits]) / 1e4
        rel = (np.asarray(pix) / p_mean - 1.0) * 100.0
        a = np.stack([np.ones(n), dz_um - dz_um.mean()], axis=1)
        coef, res, *_ = np.linalg.lstsq(a, rel, rcond=None)
        mag_slope = float(coef[1])
        s2 = float(res[0]) / (n - 2) if res.size and n > 2 else 0.0
        mag_se = math.sqrt(s2 / float(np.sum((dz_um - dz_um.mean()) ** 2)))

    return CsCtfResult(
        cs_mm=float(cs),
        cs_ci95_mm=float(total),
        cs_fit_ci95_mm=float(fit_ci),
        cs_pixel_ci95_mm=float(pixel_ci),
        cs_voltage_ci95_mm=float(volt_ci),
        cs_fit_se_lm_mm=float(se_lm),
        cs_jackknife_se_mm=float(se_jack),
        jackknife_cs_mm=tuple(jack),
        pixel_size_A=p_mean,
        pixel_sizes_A=tuple(pix),
        pixel_size_ci95_A=float(p_ci),
        voltage_kV=float(voltage_kV),
        voltage_ci95_percent=float(voltage_ci95_percent),
        micrographs=tuple(fits),
        files=tuple(names),
        cs_nominal_mm=None if cs_nominal_mm is None else float(cs_nominal_mm),
        differs_from_nominal=differs,
        cs_scan_mm=tuple(float(c) for c in scan[0]),
        cs_scan_rss=tuple(float(r) for r in scan[1]),
        magnification_change_percent_per_um=mag_slope,
        magnification_change_se_percent_per_um=mag_se,
        n_micrographs=n,
        prepared=tuple(preps),
    )


def _joint_fit(
    preps: list[PreparedSpectrum],
    thetas: list[np.ndarray],
    cs0: float,
    free: list[int],
    cs_range: tuple[float, float],
    scan_cs: bool = True,
) -> tuple[
    float, list[np.ndarray], np.ndarray | None, float, int, tuple[list[float], list[float]], list
]:
    """Profile scan over Cs, then joint Levenberg-Marquardt."""
    # bands out to each micrograph's fit resolution (with a margin)
    bands = []
    for prep, th in zip(preps, thetas, strict=True):
        r_lim = min(prep.r_max_px, sampling_limit_px(prep, th, cs0))
        r_fit, _ = fit_resolution_px(prep, th, cs0, r_lim)
        r_hi = r_lim if not math.isfinite(r_fit) else min(r_lim, 1.15 * r_fit)
        bands.append(make_band(prep, prep.r_min_px, max(r_hi, prep.r_min_px + 30)))

    def profile(cs: float, start: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        total = 0.0
        out = []
        for prep, band, th in zip(preps, bands, start, strict=True):
            th2 = th.copy()
            # first-order defocus compensation of the Cs change at the band's mean k^2
            lam = prep.wavelength_A
            k2 = float(np.mean(prep.k2[band.sl]))
            th2[0] += 0.5 * (cs - cs_ref[0]) * 1e7 * lam**2 * k2
            items, _, rss, _ = refine(
                [Item(prep, band, th2)], cs, free=free, cs_free=False, max_iter=10
            )
            total += rss
            out.append(items[0].theta)
        return total, out

    cs_ref = [cs0]
    ratio = 1.25
    scan: dict[float, tuple[float, list[np.ndarray]]] = {cs0: profile(cs0, thetas)}
    # walk down and up from cs0 until the summed residual has risen twice
    for direction in (1.0 / ratio, ratio) if scan_cs else ():
        c_prev, worse = cs0, 0
        best_rss = scan[cs0][0]
        while worse < 2:
            c = c_prev * direction
            if not cs_range[0] <= c <= cs_range[1]:
                break
            cs_ref[0] = c_prev
            scan[c] = profile(c, scan[c_prev][1])
            if scan[c][0] < best_rss:
                best_rss, worse = scan[c][0], 0
            else:
                worse += 1
            c_prev = c
    cs_list = sorted(scan)
    rss_list = [scan[c][0] for c in cs_list]
    jbest = int(np.argmin(rss_list))
    c_best = cs_list[jbest]
    items = [
        Item(prep, band, th.copy())
        for prep, band, th in zip(preps, bands, scan[c_best][1], strict=True)
    ]
    items, cs, rss, inv = refine(items, c_best, free=free, cs_free=True, max_iter=60)
    n_pix = sum(b.sl.stop - b.sl.start for b in bands)
    return (
        float(cs),
        [it.theta for it in items],
        inv,
        rss,
        n_pix,
        (cs_list, rss_list),
        bands,
    )


def refit_cs_with_pixel_size(
    result: CsCtfResult, pixel_size_A: float | Sequence[float], *, fit_phase_shift: bool = False
) -> float:
    """Joint Cs of the same spectra re-interpreted with other pixel sizes (p^4 checks)."""
    n = len(result.prepared)
    pix = _as_list(pixel_size_A, n, "pixel_size_A")
    assert pix is not None
    preps = [rescale_pixel(p, q) for p, q in zip(result.prepared, pix, strict=True)]
    free = [0, 1, 2, 3] if fit_phase_shift else [0, 1, 2]
    thetas = []
    for p, f, q in zip(preps, result.micrographs, result.pixel_sizes_A, strict=True):
        # exact starting point for an isotropic rescaling: dz -> dz (p'/p)^2
        th0 = defocus_to_theta(
            f.defocus_u_A, f.defocus_v_A, f.astig_angle_deg, math.radians(f.phase_shift_deg)
        )
        th0[:3] *= (p.pixel_size_A / q) ** 2
        _, th = fit_ctf_prepared(
            p,
            cs_mm=result.cs_mm * (p.pixel_size_A / q) ** 4,
            fit_phase_shift=fit_phase_shift,
            start_theta=th0,
        )
        thetas.append(th)
    cs0 = result.cs_mm * (float(np.mean(pix)) / result.pixel_size_A) ** 4
    cs, *_ = _joint_fit(preps, thetas, cs0, free, (0.3, 20.0), scan_cs=False)
    return cs
