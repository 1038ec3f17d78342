"""Per-micrograph CTF fit: defocus, astigmatism and optional phase shift from Thon rings.

Method
------
1. Tile-averaged power spectrum (:func:`temcal.spectra.calculate_power_spectrum`),
   divided by a smooth radial background
   (:func:`temcal.spectra.ctf_profiles.calculate_background_normalised`).
2. Coarse global search without a starting value: in 12 azimuthal sectors of the half
   plane the radial profile is fitted by a 1-D Thon-ring model over a dense grid of
   defoci (and phase shifts); a sinusoid ``m + a1 cos 2 phi + a2 sin 2 phi`` through the
   sector defoci gives the astigmatism. The rotationally averaged fit is a second start.
3. Local refinement: Levenberg-Marquardt on every pixel of the 2-D spectrum in the band,
   model ``b(k) + a(k) sin^2(chi + arcsin A)`` with smooth ``b`` and ``a`` solved by
   linear least squares (see :mod:`temcal.calibrate._ctf_engine`), first to ~5 Å (or the
   given limit), then over the whole band.
4. The fit resolution is the mean radius of the last Thon ring whose correlation with
   the model is significant.

Conventions: defocus positive for underfocus (Å), ``defocus_u_A >= defocus_v_A``,
``astig_angle_deg`` in [0, 180) is the direction of ``defocus_u_A`` from +x toward +y
(image columns = x, rows = y), as CTFFIND.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from temcal.calibrate._ctf_engine import (
    Item,
    PreparedSpectrum,
    coarse_search,
    fit_resolution_px,
    make_band,
    prepare_spectrum,
    refine,
    rss_of,
    sampling_limit_px,
    theta_to_defocus,
)
from temcal.errors import CalibrationError, InputError
from temcal.physics.wavelength import check_voltage_kV
from temcal.spectra.power import PowerSpectrum

__all__ = [
    "CTFFit",
    "fit_ctf",
    "fit_ctf_prepared",
    "gold_exclusions_A",
    "prepare_and_fit",
    "prepare_ctf_spectrum",
]


@dataclass(frozen=True)
class CTFFit:
    """Result of a per-micrograph CTF fit.

    Attributes
    ----------
    defocus_u_A, defocus_v_A : float
        Principal defoci in Å, underfocus positive, ``defocus_u_A >= defocus_v_A``.
    astig_angle_deg : float
        Direction of ``defocus_u_A`` from +x toward +y, in [0, 180).
    phase_shift_deg : float
        Fitted (or fixed, 0) additional phase shift in [0, 180).
    score : float
        Correlation coefficient of the background-subtracted spectrum with the fitted
        Thon-ring model over the fitted band (1 = perfect).
    fit_resolution_A : float
        Resolution (Å) of the last Thon ring that still fits significantly.
    n_rings : int
        Number of rings that fit.
    cs_mm, voltage_kV, pixel_size_A, amplitude_contrast : float
        Values used.
    band_A : tuple of float
        Low- and high-resolution limits of the final fit (Å).
    defocus_se_A : float
        Standard error of the mean defocus from the fit's normal matrix (Å).
    n_pixels : int
        Spectrum pixels in the final fit.
    method : str
        Short description.
    profile : tuple of numpy.ndarray or None
        Astigmatism-corrected radial profile ``(k_per_A, data, model)`` of the
        background-subtracted spectrum and the fitted Thon-ring model (for plots).
    """

    defocus_u_A: float
    defocus_v_A: float
    astig_angle_deg: float
    phase_shift_deg: float
    score: float
    fit_resolution_A: float
    n_rings: int
    cs_mm: float
    voltage_kV: float
    pixel_size_A: float
    amplitude_contrast: float
    band_A: tuple[float, float]
    defocus_se_A: float
    n_pixels: int
    method: str = "sector search + 2-D Levenberg-Marquardt on the background-normalised spectrum"
    profile: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def defocus_mean_A(self) -> float:
        """Mean of the principal defoci (Å)."""
        return 0.5 * (self.defocus_u_A + self.defocus_v_A)

    @property
    def astigmatism_A(self) -> float:
        """``defocus_u_A - defocus_v_A`` (Å, >= 0)."""
        return self.defocus_u_A - self.defocus_v_A

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary (the per-micrograph keys of the CLI)."""
        return {
            "defocus_u_A": self.defocus_u_A,
            "defocus_v_A": self.defocus_v_A,
            "astig_angle_deg": self.astig_angle_deg,
            "phase_shift_deg": self.phase_shift_deg,
            "fit_resolution_A": self.fit_resolution_A,
            "score": self.score,
            "n_rings": self.n_rings,
            "cs_mm": self.cs_mm,
            "pixel_size_A": self.pixel_size_A,
            "voltage_kV": self.voltage_kV,
            "amplitude_contrast": self.amplitude_contrast,
            "band_A": list(self.band_A),
            "defocus_se_A": self.defocus_se_A,
        }


def gold_exclusions_A(lattice_constant: float = 4.0782) -> tuple[float, ...]:
    """d-spacings (Å) of the gold reflections, to exclude from a CTF fit."""
    from temcal.physics.gold import GOLD_REFLECTIONS, d_spacing_A

    return tuple(d_spacing_A(hkl, lattice_constant) for hkl in GOLD_REFLECTIONS)


def _check_common(pixel_size_A: float, voltage_kV: float, cs_mm: float, amp: float) -> None:
    check_voltage_kV(voltage_kV)
    if not (math.isfinite(pixel_size_A) and 0.05 <= pixel_size_A <= 100.0):
        raise InputError(f"pixel size {pixel_size_A} Å is not plausible (0.05-100 Å)")
    if not (math.isfinite(cs_mm) and 0.0 <= cs_mm <= 20.0):
        raise InputError(f"Cs {cs_mm} mm is not plausible (0-20 mm)")
    if not 0.0 <= amp < 1.0:
        raise InputError(f"amplitude contrast {amp} must lie in [0, 1)")


def prepare_ctf_spectrum(
    image_or_spectrum: np.ndarray | PowerSpectrum,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    amplitude_contrast: float = 0.07,
    resolution_range_A: tuple[float, float | None] | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    exclude_resolutions_A: tuple[float, ...] = (),
) -> PreparedSpectrum:
    """Power spectrum and normalisation of one micrograph, ready for (joint) fits.

    Parameters are those of :func:`fit_ctf`. Returns an internal object that
    :func:`fit_ctf_prepared` and :func:`temcal.calibrate.cs_ctf.fit_cs_ctf` accept.
    """
    low, high = resolution_range_A if resolution_range_A is not None else (30.0, None)
    if high is not None and not high < low:
        raise InputError(f"resolution range {resolution_range_A} Å: give (low, high), low > high")
    return prepare_spectrum(
        image_or_spectrum,
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        amplitude_contrast=amplitude_contrast,
        low_res_A=float(low),
        high_res_A=None if high is None else float(high),
        tile_size=tile_size,
        overlap=overlap,
        exclude_A=tuple(float(d) for d in exclude_resolutions_A),
    )


def fit_ctf(
    image_or_spectrum: np.ndarray | PowerSpectrum,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amplitude_contrast: float = 0.07,
    fit_phase_shift: bool = False,
    resolution_range_A: tuple[float, float | None] | None = None,
    defocus_search_A: tuple[float, float] = (2000.0, 60000.0),
    allow_focus_crossing: bool = False,
    tile_size: int | None = None,
    overlap: float | None = None,
    exclude_resolutions_A: tuple[float, ...] = (),
    max_astigmatism_A: float | None = None,
) -> CTFFit:
    """Fit defocus, astigmatism (and a phase shift) to a micrograph's Thon rings.

    Parameters
    ----------
    image_or_spectrum : numpy.ndarray or PowerSpectrum
        Micrograph ``(ny, nx)`` indexed ``[y, x]``, or its centred power spectrum.
    pixel_size_A : float
        Pixel size in Å.
    voltage_kV : float
        Accelerating voltage in kV.
    cs_mm : float
        Spherical aberration in mm (held fixed).
    amplitude_contrast : float
        Amplitude-contrast fraction A.
    fit_phase_shift : bool
        Fit an additional phase shift (phase plate) in [0, 180) degrees.
    resolution_range_A : tuple, optional
        ``(low, high)`` resolution limits in Å; ``high=None`` (default) fits out to
        0.8 Nyquist (rings aliased by the detector from beyond Nyquist bias fits near
        it). Default low limit 30 Å.
    defocus_search_A : tuple of float
        Range of the coarse search over defocus (Å, underfocus positive).
    allow_focus_crossing : bool
        Also search overfocus (negative defocus), down to ``-defocus_search_A[1] / 3``,
        so that strongly astigmatic spectra whose principal defoci have opposite signs
        are fitted (``defocus_v_A`` is then negative).
    tile_size, overlap : optional
        Welch tile size (default 1024 for images of 4096 pixels or more, else 512 or the
        largest power of two that fits; doubled while the rings are undersampled) and overlap
        (default 0 for images of 2048 pixels or more, else 0.5).
    exclude_resolutions_A : tuple of float
        Resolutions (Å) whose annuli (±4 %) are left out, e.g. gold reflections
        (:func:`gold_exclusions_A`).
    max_astigmatism_A : float, optional
        Largest astigmatism ``defocus_u_A - defocus_v_A`` (Å) the coarse search tries
        (default: a quarter of the search range, at most 25000 Å). A smaller value makes
        the search faster; the refinement is not bounded by it.

    Returns
    -------
    CTFFit
        The fit.

    Raises
    ------
    CalibrationError
        If no Thon rings fit (blank or ring-less spectrum).
    """
    _check_common(pixel_size_A, voltage_kV, cs_mm, amplitude_contrast)
    _, fit, _ = prepare_and_fit(
        image_or_spectrum,
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        fit_phase_shift=fit_phase_shift,
        resolution_range_A=resolution_range_A,
        defocus_search_A=defocus_search_A,
        allow_focus_crossing=allow_focus_crossing,
        tile_size=tile_size,
        overlap=overlap,
        exclude_resolutions_A=exclude_resolutions_A,
        max_astigmatism_A=max_astigmatism_A,
    )
    return fit


def prepare_and_fit(
    image_or_spectrum: np.ndarray | PowerSpectrum,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amplitude_contrast: float = 0.07,
    fit_phase_shift: bool = False,
    resolution_range_A: tuple[float, float | None] | None = None,
    defocus_search_A: tuple[float, float] = (2000.0, 60000.0),
    allow_focus_crossing: bool = False,
    tile_size: int | None = None,
    overlap: float | None = None,
    exclude_resolutions_A: tuple[float, ...] = (),
    max_astigmatism_A: float | None = None,
) -> tuple[PreparedSpectrum, CTFFit, np.ndarray]:
    """Prepare the spectrum and fit it (the engine of :func:`fit_ctf`).

    With the default tile, a larger tile (up to 2048) is used when the fitted defocus
    makes the Thon rings too fine for the 512-pixel tile's sampling.
    Returns the prepared spectrum, the fit and the internal parameters.
    """
    kw = dict(
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        amplitude_contrast=amplitude_contrast,
        resolution_range_A=resolution_range_A,
        overlap=overlap,
        exclude_resolutions_A=exclude_resolutions_A,
    )
    prep = prepare_ctf_spectrum(image_or_spectrum, tile_size=tile_size, **kw)  # type: ignore[arg-type]
    fit, theta = fit_ctf_prepared(
        prep,
        cs_mm=cs_mm,
        fit_phase_shift=fit_phase_shift,
        defocus_search_A=defocus_search_A,
        allow_focus_crossing=allow_focus_crossing,
        max_astigmatism_A=max_astigmatism_A,
    )
    if tile_size is not None or isinstance(image_or_spectrum, PowerSpectrum):
        return prep, fit, theta
    side = min(np.shape(image_or_spectrum))
    n = prep.pixels.tile_size
    # a larger tile only while the image still holds at least 2 x 2 of them
    while sampling_limit_px(prep, theta, cs_mm) < 0.95 * prep.r_max_px and 2 * n <= min(
        side // 2, 2048
    ):
        n *= 2
        prep2 = prepare_ctf_spectrum(image_or_spectrum, tile_size=n, **kw)  # type: ignore[arg-type]
        try:
            fit2, theta2 = fit_ctf_prepared(
                prep2, cs_mm=cs_mm, fit_phase_shift=fit_phase_shift, start_theta=theta
            )
        except CalibrationError:
            break
        prep, fit, theta = prep2, fit2, theta2
    return prep, fit, theta


def fit_ctf_prepared(
    prep: PreparedSpectrum,
    *,
    cs_mm: float,
    fit_phase_shift: bool = False,
    defocus_search_A: tuple[float, float] = (2000.0, 60000.0),
    allow_focus_crossing: bool = False,
    start_theta: np.ndarray | None = None,
    max_astigmatism_A: float | None = None,
    rtol: float = 1e-8,
) -> tuple[CTFFit, np.ndarray]:
    """:func:`fit_ctf` on a prepared spectrum; also returns the internal parameters.

    ``rtol``: the refinement stops after two steps that each lower the residual sum of
    squares by less than this fraction.
    """
    lo, hi = (float(defocus_search_A[0]), float(defocus_search_A[1]))
    if not hi > lo:
        raise InputError(f"defocus search range {defocus_search_A} Å is empty")
    if allow_focus_crossing:
        lo = min(lo, -hi / 3.0)
    free = [0, 1, 2, 3] if fit_phase_shift else [0, 1, 2]
    r_coarse = min(prep.r_max_px, max(prep.per_A_to_px(1 / 5.0), prep.r_min_px + 40))
    his = [r_coarse]
    if prep.r_max_px > 1.2 * r_coarse:
        his.append(prep.r_max_px)
    if start_theta is None:
        phases = np.radians(np.arange(0.0, 180.0, 15.0)) if fit_phase_shift else np.zeros(1)
        starts = [
            (r_hi, th)
            for r_hi in his
            for th in coarse_search(
                prep,
                cs_mm=cs_mm,
                # the full-band search rescues small defoci (few rings to 5 Å)
                dz_range_A=(lo, hi) if r_hi == r_coarse else (lo, min(hi, max(lo + 1, 15000.0))),
                r_hi_px=r_hi,
                phases_rad=phases,
                ellipse_search=r_hi == r_coarse,
                max_astigmatism_A=max_astigmatism_A,
            )
        ]
    else:
        starts = [(r_coarse, np.asarray(start_theta, dtype=float).copy())]
    band_c = make_band(prep, prep.r_min_px, r_coarse)
    # rank the starts on the coarse band, refine the two best there, then the best on all
    ranked = sorted(starts, key=lambda st: rss_of(prep, band_c, st[1], cs_mm))[:2]
    cands = []
    for _, th in ranked:
        items, _, rss_c, _ = refine(
            [Item(prep, band_c, th.copy())], cs_mm, free=free, cs_free=False, rtol=rtol
        )
        cands.append((rss_c, items[0].theta))
    cands.sort(key=lambda c: c[0])
    best: tuple[float, np.ndarray, np.ndarray | None] | None = None
    for _, th in cands[:1]:
        # stop where the rings become too fine for the spectrum's sampling
        r_hi = min(prep.r_max_px, max(sampling_limit_px(prep, th, cs_mm), r_coarse))
        band = make_band(prep, prep.r_min_px, r_hi)
        items, _, rss, inv = refine(
            [Item(prep, band, th.copy())], cs_mm, free=free, cs_free=False, rtol=rtol
        )
        best = (rss, items[0].theta, inv)
    assert best is not None
    rss, theta, inv = best
    return finish_fit(prep, theta, cs_mm, band, rss, inv, fit_phase_shift)


def finish_fit(
    prep: PreparedSpectrum,
    theta: np.ndarray,
    cs_mm: float,
    band: object,
    rss: float,
    inv: np.ndarray | None,
    fit_phase_shift: bool,
) -> tuple[CTFFit, np.ndarray]:
    """Build a :class:`CTFFit` (and check that Thon rings were found)."""
    from temcal.calibrate._ctf_engine import Band, chi_of, equivalent_profile, solve_linear

    assert isinstance(band, Band)
    theta = theta.copy()
    theta[3] = theta[3] % math.pi
    r_fit, n_rings = fit_resolution_px(
        prep, theta, cs_mm, min(prep.r_max_px, sampling_limit_px(prep, theta, cs_mm))
    )
    if n_rings < 2 or not math.isfinite(r_fit):
        raise CalibrationError(
            "no Thon rings found in the power spectrum (an amorphous area with visible "
            "rings is needed; check the pixel size, voltage and defocus range)"
        )
    x = chi_of(prep, band.sl, theta, cs_mm)
    s = np.sin(x) ** 2
    _, b_bins, a_bins = solve_linear(prep, band, s)
    d = prep.pixels.values[band.sl] - b_bins[band.bin_index]
    m = a_bins[band.bin_index] * s
    dc, mc = d - d.mean(), m - m.mean()
    score = float(dc @ mc / math.sqrt(float(dc @ dc) * float(mc @ mc) + 1e-300))
    n_pix = band.sl.stop - band.sl.start
    sigma2 = rss / max(n_pix - 20, 1)
    se = math.sqrt(sigma2 * inv[0, 0]) if inv is not None and inv[0, 0] > 0 else math.nan
    u, v, ang = theta_to_defocus(theta)
    fit = CTFFit(
        defocus_u_A=u,
        defocus_v_A=v,
        astig_angle_deg=ang,
        phase_shift_deg=float(math.degrees(theta[3])) if fit_phase_shift else 0.0,
        score=score,
        fit_resolution_A=1.0 / prep.px_to_per_A(r_fit),
        n_rings=int(n_rings),
        cs_mm=float(cs_mm),
        voltage_kV=prep.voltage_kV,
        pixel_size_A=prep.pixel_size_A,
        amplitude_contrast=prep.amplitude_contrast,
        band_A=(1.0 / prep.px_to_per_A(prep.r_min_px), 1.0 / prep.px_to_per_A(prep.r_max_px)),
        defocus_se_A=float(se),
        n_pixels=int(n_pix),
        profile=equivalent_profile(prep, theta, cs_mm, band),
    )
    return fit, theta
