"""Pixel size and anisotropic magnification from the gold lattice rings of images.

Method
------
1. **Spectrum.** Welch tile-averaged power spectra
   (:func:`temcal.spectra.calculate_power_spectrum`).
2. **Search** (:mod:`temcal.calibrate.gold_search`; no guess needed, about 0.03-3.5 Å/px).
   The spectrum of the full image and of 4x and 16x binned copies are *unfolded* (each pixel
   ``q`` also placed at its aliases ``q + n`` up to 1.8 cycles/px, so rings beyond Nyquist
   count at their true radius; pixels on circles around the origin, which the azimuthal
   median shows, are not unfolded, as they would make ghost rings at ``|n| -+ rho``). Two
   log-frequency radial profiles are flattened by a running low percentile and scaled by
   their robust noise: the mean power, and the mean of the spectrum divided by its azimuthal
   median, which keeps only what is not a circle around the origin (aliased rings, crystal
   spots) and drops smooth Thon rings; below Nyquist the two are averaged, beyond it the
   second is used. Every candidate pixel size ``p`` on a log grid is scored at the predicted
   radii ``p / d_hkl`` of all gold reflections at once (the gold ratio pattern sqrt 3 : sqrt
   4 : sqrt 8 : sqrt 11 ...). Each ring's score is its height above its flanks (7-15 %
   away), so Thon rings and other periodic structure score low, and twice the mean height of
   the peaks at the positions FCC forbids (h^2 + k^2 + l^2 = 1, 2, 5, 6, 7, 9, 10; a regular
   comb like Thon rings fills them) is subtracted. A candidate needs its 111 or 200 ring to
   stand out. The best one is accepted only if it scores >= 4.5, two of its rings stand out
   (one ring alone cannot tell 111 from 200 or 220), and no unrelated candidate comes close
   (ratio > 0.7 and margin < 6); else :class:`~temcal.errors.CalibrationError` ("no gold
   lattice rings found"). Without a guess, a best candidate that passes the other checks
   but scores only 3.5-4.5 (the broad rings of 3 nm grains) is measured, and kept only if
   the ring fit confirms two of the 111, 200 and 220 rings. A guess relaxes these only
   when they fail (within ×1.25 of it: score >= 3 and one ring); a result more than 10 %
   from a guess is refused (mislabelled reflections). These
   thresholds were tuned on simulated gold and amorphous carbon images (none of 140
   carbon-only images passed; one of 260 later ones did, and is now refused by the
   anisotropy limit in step 3). The best candidate is then refined within ±0.6 % on the
   mean-power profile of its rings inside Nyquist. Factor two: ``d_222 = d_111 / 2`` and
   ``d_400 = d_200 / 2``, so ``p / 2`` puts its 222 and 400 rings on the 111 and 200 rings
   of ``p``; a best candidate whose own 111 and 200 rings are not seen while those of twice
   its pixel size are (a CTF zero on the 111 ring, rings near Nyquist) is replaced by twice
   its pixel size.
3. **Fit.** A model of the 2-D spectrum near all usable rings is fitted by least squares
   to the spectrum samples (alias-unfolded, averaged in small bins of elliptical radius
   and azimuth, each bin placed at the mean frequency of its pixel centres):

   ``S(q) = B_k(s) + sum_j A_j (R_j / s)^kappa P(s - R_j; w_j, eta) exp(-beta (s - s0))``
   ``      * (1 - gamma cos 2 chi(s))``,  with ``s = |W q|``,  ``R_j = 1 / d_j``,

   where ``W = M^{-1}`` (``M`` the real-space pixel matrix, symmetric, 3 parameters)
   maps pixel frequencies ``q`` (cycles/pixel) to specimen frequencies (Å⁻¹), so all
   rings are one shared ellipse. ``P`` is a pseudo-Voigt ring profile with its own
   width per ring; ``(R_j / s)^kappa`` is the geometric factor of randomly oriented
   crystallites (the Debye factor of a spherical shell, ``kappa = 1``);
   ``exp(-beta (s - s0))`` is one shared log-slope (atomic scattering factor, envelopes,
   detector MTF); ``1 - gamma cos 2 chi`` with
   ``chi = c + pi lambda dz s^2 - pi/2 Cs lambda^3 s^4`` (voltage and Cs given, defocus
   ``dz`` fitted from a grid) is the CTF modulation ``sin^2 chi`` (partially washed
   out by ``gamma``), shared by all rings -- optional (``fit_ctf=True``), off by
   default because on the project's physical simulator it does not yet remove the
   CTF-induced shift of broad rings (see docs/benchmarks.md); ``B_k`` is a cubic
   background per group of overlapping rings. Amplitudes and background coefficients
   are solved linearly inside the nonlinear fit (variable projection). A naive peak
   position of a broad ring (small grains) is shifted by every factor that varies
   across it; this model carries the smooth ones explicitly.

   **Slope across each ring.** The fit alone cannot tell the log-slope across a broad
   ring from its position, so with two or more rings of amplitude SNR above 3 the slope
   is taken from the rings' integrated intensities instead: kinematically ring ``j`` carries
   ``m_j f_e(R_j)^2 E(R_j) / R_j`` (multiplicity ``m_j``, gold's electron scattering
   factor ``f_e``, Peng et al. 1996); a Gaussian envelope ``E = exp(-B s^2 / 2)``
   (Debye-Waller, coherence envelopes, detector MTF) is fitted to the measured
   intensities (``B`` in [0, 60] Å², iterated with the fit), and ring ``j`` then gets
   the fixed slope ``-d ln(f_e^2 E) / ds`` at ``R_j`` in place of the shared ``beta``.
   Its uncertainty (that of ``B`` and a model allowance of 2 in ``beta * s0``) is
   propagated into the pixel size. With one ring, ``beta`` stays a free parameter.

   The CTF modulation of a broad ring cannot be separated from its position in one
   image (a Gaussian times ``exp(a s)`` is a shifted Gaussian) and its phase depends on
   the specimen: on the project's simulator the modulation of strongly scattering gold
   is not ``sin^2 chi`` (a fitted ``sin^2 chi`` model did not remove the shift of random
   specimens at 0.5-2 µm even with the true defocus; in focus it removed most of it).
   It is therefore carried as an uncertainty (:mod:`temcal.calibrate.ring_bias`; the
   defocus comes from the Thon rings of the support in the same spectrum), and corrected
   only in focus: when that defocus lies within ``_IN_FOCUS_A`` of focus, the rings get
   the modulation with it fixed (``gamma``, ``c`` free; docs/pixel_size.md). Where the
   rings' predicted shifts differ (the defocus and Cs delocalizations cancel for one
   ring and not for another), the isotropic scale comes from a refit in which every
   ring has a free offset with its predicted shift as prior standard deviation
   (:func:`temcal.calibrate._ring_ctf._fit_ring_offsets`; the anisotropy and the
   uncertainties stay those of the fit without offsets). Rings the joint fit cannot see
   (SNR <= 3, or a degenerate amplitude) are dropped and the fit repeated. A result
   whose anisotropy (after the prior of :func:`_with_anisotropy_prior`) exceeds
   ``_MAX_ANISOTROPY`` (5 %) is refused unless the rings were chosen: more than TEM
   cameras show (astigmatic Thon rings of a film once passed for gold with 5.5 %).
4. **Uncertainty of one image:** the larger of the fit covariance (doubled: the spectrum is
   centrosymmetric, every sample appears at q and -q) and an HC3 sandwich estimate from
   the scatter of the ring radius between 18 sectors of half a turn (spotty rings), plus
   the ring shift the slope uncertainty could cause (slopes from the ring intensities),
   or, with one ring, when the free log-slope is left at its bound, the shift it could
   cause; the CTF-modulation uncertainty separately (``ctf_bias_se_A``).
5. **Several images:** the pixel matrices are averaged with weights
   ``1 / (statistical^2 + CTF^2)``; the statistical 95 % interval is Student-t on the
   weighted spread; the CTF part is fully correlated within a group of images whose
   defoci lie within 150 Å of each other and independent between groups; the two are
   added in quadrature (``error_budget`` in the JSON).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from temcal.calibrate._ring_ctf import (
    _IN_FOCUS_A,
    _OFFSET_MIN_SNR,
    _fit_ctf,
    _fit_ring_offsets,
    _offsets_apply,
    _ring_shift_priors,
    _thon_defocus,
    _with_ctf_bias,
    _with_offset_scale,
)
from temcal.calibrate._ring_model import (
    _BETA_MAX,
    _MAX_UNFOLDED_F,
    RING_GEOMETRY_EXPONENT,
    _bounds,
    _coefficient_variances,
    _collect,
    _fit,
    _floor_widths,
    _OffsetRingModel,
    _refit_rings,
    _ring_amplitude_ok,
    _ring_amplitudes,
    _ring_snrs,
    _RingModel,
)
from temcal.calibrate.gold_search import (
    _all_aliased_hint,
    _bin_image,
    _pow2_at_most,
    _search_pixel_size,
    _SearchResult,
    _spectrum,
    weak_candidate_refusal,
)
from temcal.calibrate.pixel_size_results import (
    ImagePixelSize,
    PixelSizeResult,
    RingFit,
    combine_image_results,
)
from temcal.errors import CalibrationError, InputError
from temcal.io.images import ImageData, check_image, read_image
from temcal.physics.gold import (
    GOLD_REFLECTIONS,
    check_lattice_constant_A,
    d_spacing_A,
    lattice_constant_A,
    parse_rings,
)
from temcal.physics.magnification import decompose_pixel_matrix
from temcal.spectra.profiles import (
    calculate_radial_profile,
    centred_frequencies,
    unfold_spectrum,
)

__all__ = [
    "ANISOTROPY_PRIOR_PERCENT",
    "DEFAULT_TEMPERATURE_K",
    "MIN_RING_DIRECTIONS",
    "RING_GEOMETRY_EXPONENT",
    "ImagePixelSize",
    "PixelSizeResult",
    "RingFit",
    "check_anisotropy_prior",
    "check_grain_thickness",
    "combine_image_results",
    "estimate_pixel_size",
    "measure_gold_rings",
]

#: Default specimen temperature (K) when neither a lattice constant nor a temperature is
#: given: room temperature (a = 4.0782 Å). Cryo users pass ``temperature_K=80``.
DEFAULT_TEMPERATURE_K = 293.0


# widest ring accepted, relative to the width of the most significant one
_MAX_WIDTH_RATIO = 2.5

# radial bins of the joint fit (see _stage2_bin_width): an eighth of the narrowest ring
# width, between 0.1 and 0.4 spectrum pixel
_RING_WIDTH_PER_BIN = 8.0
_MIN_BIN_PX, _MAX_BIN_PX = 0.1, 0.4

# standard uncertainty of the ring slopes from the ring intensities, in units of
# beta * s_ref, for the profile shape being only roughly kinematic
_SLOPE_MODEL_SD = 2.0
#: Fewer independent directions than this carry the rings (``ring_directions``): the
#: rings are a few crystals' spots, whose scatter the image cannot show; a model value
#: and Student-t quantiles widen the standard errors (see ``_sector_scale_se``).
MIN_RING_DIRECTIONS = 6.0
# radial jitter of one crystal's spot, as a fraction of the ring's relative width
_SPOT_JITTER = 0.35
# squared coefficient of variation of one crystal's spot intensity (spots per sector
# from the sectors' participation ratio, see _spots_fraction). With _SPOT_JITTER, set on
# 150 random simulated images of 1-30 crystals per ring: 95 % intervals missed the
# truth on 4 % (pixel size) and 5 % (anisotropy) of the 74 measured
_SPOT_CV2 = 2.0
# below this many directions one crystal carries all the rings: refused unless --rings
_MIN_ONE_CRYSTAL = 1.5
# a larger anisotropy (%) fitted to a few crystals' spots (fewer than MIN_RING_DIRECTIONS)
# is refused: magnification anisotropy of TEM cameras is a few % at most, and an ellipse
# through spots of different reflections taken for the same one needs more
_MAX_FEW_CRYSTAL_ANISOTROPY = 5.0
# any result (rings not chosen with --rings) with more anisotropy (%, after the prior) is
# refused: on 385 measurements of gold (benchmarks/pixel_size_robustness.py and
# pixel_size.py, true anisotropy 0-2 %) the largest was 3.2 %; the astigmatic Thon rings
# of an amorphous film (one of 260 simulated) passed the search at 4.5 times its pixel
# size with 5.5 %
_MAX_ANISOTROPY = 5.0
#: Prior standard deviation (%) of each component of the magnification anisotropy
#: (``anisotropy_percent`` times ``cos 2 angle`` and ``sin 2 angle``), centred on 0: the
#: anisotropy of TEM cameras and projector systems is a few % at most. An image whose own
#: anisotropy standard error is large (a few crystals' spots) has its anisotropy shrunk
#: toward 0 and its pixel size toward the isotropic fit's (see ``_with_anisotropy_prior``).
ANISOTROPY_PRIOR_PERCENT = 2.0
# the prior is applied when it moves the anisotropy by more than this fraction
_PRIOR_MIN_SHRINK = 0.05
# with a guess: a result farther from it (relative) is refused (the rings are probably
# mislabelled: 111 and 200 lie 15 % apart), and a result this close to it lets the guess
# assign the reflections of a lone crystal's spots (the single-crystal refusal is waived)
_GUESS_MAX_DEVIATION = 0.10
_GUESS_ASSIGNS = 0.05
# sparse crystals (see _measure): tile side (px) of the spot search, the fewest tiles
# with spots that count as crystals (a tile of noise passes with probability 1e-3), and
# the largest fraction of such tiles for which masking is tried
_CRYSTAL_TILE = 128
_MIN_CRYSTAL_TILES = 3
_MAX_CRYSTAL_FRACTION = 0.6
_HKL = {r: "".join(map(str, r)) for r in GOLD_REFLECTIONS}


# --------------------------------------------------------------------------------------
# helpers


def resolve_lattice_constant(
    lattice_constant_A_: float | None, temperature_K: float | None
) -> tuple[float, float | None]:
    """Lattice constant (Å) and temperature (K) from the user's options.

    Raises
    ------
    InputError
        If both are given, or either is absurd.
    """
    if lattice_constant_A_ is not None and temperature_K is not None:
        raise InputError(
            "give either a lattice constant or a temperature, not both "
            "(the temperature only serves to compute the lattice constant)"
        )
    if lattice_constant_A_ is not None:
        return check_lattice_constant_A(lattice_constant_A_), None
    t = DEFAULT_TEMPERATURE_K if temperature_K is None else float(temperature_K)
    return lattice_constant_A(t), t


def _load(item: Any, index: int) -> tuple[np.ndarray, ImageData | None, str | None]:
    if isinstance(item, ImageData):
        return (
            check_image(item.data, name=str(item.path or f"image {index}"), dtype=np.float32),
            item,
            (str(item.path) if item.path is not None else None),
        )
    if isinstance(item, str | Path):
        im = read_image(item, dtype=np.float32)
        return im.data, im, str(item)
    return check_image(np.asarray(item), name=f"image {index}", dtype=np.float32), None, None


# --------------------------------------------------------------------------------------
# fit


def measure_gold_rings(
    image: np.ndarray | ImageData | str | Path,
    *,
    lattice_constant_A: float | None = None,
    temperature_K: float | None = None,
    guess_pixel_size_A: float | None = None,
    rings: str | Sequence[str] | None = None,
    voltage_kV: float | None = None,
    cs_mm: float = 2.7,
    fit_ctf: bool = False,
    anisotropy_prior_percent: float = ANISOTROPY_PRIOR_PERCENT,
    grain_thickness_nm: float | None = None,
) -> ImagePixelSize:
    """Measure the pixel matrix of one gold image from its lattice rings.

    Parameters
    ----------
    image : numpy.ndarray, ImageData, str or pathlib.Path
        A 2-D image (``[y, x]``), a movie (summed), or a file.
    lattice_constant_A : float, optional
        Gold lattice constant in Å (overrides ``temperature_K``).
    temperature_K : float, optional
        Specimen temperature (K) for the lattice constant; default 293 K.
    guess_pixel_size_A : float, optional
        Rough pixel size (Å/px). The search without it runs first; only when that finds
        no clear gold pattern does the guess relax it (within a factor 1.25 of the guess,
        one ring suffices). A result more than 10 % from the guess is refused (its
        reflections are probably mislabelled); one within 5 % of it lets the guess assign
        the reflections of a lone crystal's spots, which are otherwise refused. Without
        it, a refusal names the file header's pixel size (when recorded) as a guess to
        try; the header value is never used on its own.
    rings : str or sequence of str, optional
        Reflections to use, e.g. ``"111,200,220"``; default all that are measurable.
    voltage_kV : float, optional
        Accelerating voltage (kV) for the CTF model of the rings: the file header's
        value when recorded, else 300 kV. Only the shape of the ring modulation
        depends on it, not the pixel-size scale.
    cs_mm : float
        Spherical aberration (mm) for the CTF model of the rings (default 2.7).
    fit_ctf : bool
        Model the CTF modulation of the rings (recommended; off only for diagnostics).
    anisotropy_prior_percent : float
        Prior standard deviation (%) of each component of the anisotropy, centred on 0
        (default ``ANISOTROPY_PRIOR_PERCENT``, 2 %): an anisotropy the image determines
        poorly (a few crystals' spots) is shrunk toward 0, and the pixel size with it.
        0 turns the prior off.
    grain_thickness_nm : float, optional
        Thickness (nm) of a gold foil whose crystals span it (plate-like, faces normal
        to the beam). Such thin crystals shift every ring inward (their relrods: -0.05 %
        in the pixel size at 3 nm, -0.01 % at 20 nm, measured on the project's
        simulator), and with it given that shift is corrected
        (:func:`temcal.calibrate.ring_bias.calculate_relrod_shift`;
        ``relrod_correction_percent`` of the result). Not for particles: a sphere's
        relrods fall off much faster, and 8 nm spheres showed no shift. Default: not
        corrected.

    Returns
    -------
    ImagePixelSize
        Pixel matrix, principal pixel sizes, anisotropy and per-ring fits.

    Raises
    ------
    InputError
        For an unreadable, blank or NaN image or absurd options.
    CalibrationError
        If no gold rings are found or the fit fails.
    """
    a_A, _ = resolve_lattice_constant(lattice_constant_A, temperature_K)
    _check_guess(guess_pixel_size_A)
    check_anisotropy_prior(anisotropy_prior_percent)
    check_grain_thickness(grain_thickness_nm)
    hkls = parse_rings(rings if rings is None or isinstance(rings, str) else list(rings))
    img, meta, name = _load(image, 0)
    return _measure(
        img,
        meta,
        name,
        a_A,
        hkls,
        guess_pixel_size_A,
        _optics(meta, voltage_kV, cs_mm, fit_ctf),
        _optics(meta, voltage_kV, cs_mm, True) or (300.0, 2.7),
        anisotropy_prior_percent=anisotropy_prior_percent,
        grain_thickness_nm=grain_thickness_nm,
    )


def _optics(
    meta: ImageData | None, voltage_kV: float | None, cs_mm: float, fit_ctf: bool
) -> tuple[float, float] | None:
    from temcal.physics.wavelength import check_voltage_kV

    if not fit_ctf:
        return None
    v = voltage_kV
    if v is None and meta is not None and meta.voltage_kV is not None:
        v = meta.voltage_kV
    v = 300.0 if v is None else float(v)
    check_voltage_kV(v)
    if not math.isfinite(cs_mm) or not 0.0 <= cs_mm <= 20.0:
        raise InputError(f"Cs {cs_mm!r} mm must lie in [0, 20] mm")
    return (v, float(cs_mm))


def _check_guess(guess: float | None) -> None:
    if guess is None:
        return
    g = float(guess)
    if not math.isfinite(g) or not 0.005 <= g <= 50.0:
        raise InputError(
            f"pixel-size guess {guess!r} Å/px is absurd; give the pixel size in Å per pixel "
            "(typically 0.03-5)"
        )


def check_anisotropy_prior(prior_percent: float) -> None:
    """Raise :class:`InputError` unless ``prior_percent`` is a usable anisotropy prior (%)."""
    p = float(prior_percent)
    if not math.isfinite(p) or not 0.0 <= p <= 100.0:
        raise InputError(
            f"anisotropy prior {prior_percent!r} % is absurd; give the standard deviation "
            "of each anisotropy component in % (default 2; 0 turns the prior off)"
        )


def check_grain_thickness(thickness_nm: float | None) -> None:
    """Raise :class:`InputError` unless ``thickness_nm`` is ``None`` or 0.5-1000 nm."""
    if thickness_nm is None:
        return
    t = float(thickness_nm)
    if not math.isfinite(t) or not 0.5 <= t <= 1000.0:
        raise InputError(
            f"grain thickness {thickness_nm!r} nm is absurd; give the thickness of the gold "
            "foil whose crystals span it, in nm (0.5-1000), or leave it out"
        )


def _with_relrod_correction(out: ImagePixelSize, thickness_A: float) -> ImagePixelSize:
    """Correct the pixel size for the inward shift of thin crystals' rings (relrods).

    Each ring's shift (:func:`temcal.calibrate.ring_bias.calculate_relrod_shift`, for its
    fitted width, the fit's profile shape and window) is combined over the rings with
    weights SNR² (:func:`temcal.calibrate.ring_bias.combine_ring_biases`), and the pixel
    matrix is divided by ``1 + b``. A quarter of the correction is added to the standard
    error: on ``benchmarks/pixel_size_thickness.py`` the predicted shifts agreed with the
    measured ones to about that.
    """
    from temcal.calibrate.ring_bias import calculate_relrod_shift, combine_ring_biases

    eta = float(out.diagnostics.get("eta", 0.0))
    pb = out.pixel_size_A * out.binning
    n = out.tile_size
    rel, info = [], []
    for ring in out.rings:
        radius = 1.0 / ring.d_A
        w = ring.width_per_A
        half = float(np.clip(max(5.0 * w, 0.05 * radius), 6.0 / (n * pb), 0.1 * radius))
        shift = calculate_relrod_shift(
            radius, w, eta=min(max(eta, 0.0), 1.0), thickness_A=thickness_A, half_window_per_A=half
        )
        rel.append(shift / radius)
        info.append(ring.snr**2)
    b = combine_ring_biases(rel, info)
    if not math.isfinite(b):
        return out
    k = 1.0 / (1.0 + b)
    m = np.array(out.pixel_matrix_A, dtype=float) * k
    correction = 100.0 * (k - 1.0)
    se = math.hypot(out.pixel_size_se_A * k, 0.25 * abs(k - 1.0) * out.pixel_size_A)
    return replace(
        out,
        pixel_matrix_A=((float(m[0, 0]), float(m[0, 1])), (float(m[1, 0]), float(m[1, 1]))),
        pixel_size_A=out.pixel_size_A * k,
        pixel_size_se_A=se,
        pixel_major_A=out.pixel_major_A * k,
        pixel_minor_A=out.pixel_minor_A * k,
        relrod_correction_percent=correction,
    )


def _header_hint_A(meta: ImageData | None) -> float | None:
    """The file header's pixel size when it is worth suggesting as a guess, else ``None``.

    Exactly 1 Å/px is what many programs write when the pixel size is unknown, so it
    is no hint; neither is a value outside the range :func:`_check_guess` accepts.
    """
    if meta is None or meta.pixel_size_A is None:
        return None
    h = float(meta.pixel_size_A)
    if not math.isfinite(h) or not 0.005 <= h <= 50.0 or abs(h - 1.0) < 1e-6:
        return None
    return h


def _measure(
    img: np.ndarray,
    meta: ImageData | None,
    name: str | None,
    a_A: float,
    hkls: Sequence[tuple[int, int, int]],
    guess: float | None,
    optics: tuple[float, float] | None,
    ctf_optics: tuple[float, float] = (300.0, 2.7),
    *,
    anisotropy_prior_percent: float = ANISOTROPY_PRIOR_PERCENT,
    grain_thickness_nm: float | None = None,
) -> ImagePixelSize:
    """Measure one image; a refusal without a guess suggests the header's pixel size.

    The header value is never used on its own: on the robustness benchmark's images
    refused without a guess, retrying with it (a header within 3 % of the truth) measured
    12 of 114 more, but 5 of those 12 intervals missed the truth (one result 3.3 % off).
    So the error names it for the user to confirm with ``--guess``. The anisotropy
    prior (:func:`_with_anisotropy_prior`) is applied last, then the correction for thin
    crystals' relrods when their thickness is given (:func:`_with_relrod_correction`).
    """
    try:
        out = _measure_sparse(img, meta, name, a_A, hkls, guess, optics, ctf_optics)
        out = _with_anisotropy_prior(out, anisotropy_prior_percent)
        _check_anisotropy_plausible(out, hkls)
        if grain_thickness_nm is not None:
            out = _with_relrod_correction(out, 10.0 * float(grain_thickness_nm))
        return out
    except CalibrationError as err:
        hint = _header_hint_A(meta) if guess is None else None
        if hint is None:
            raise
        raise CalibrationError(
            f"{err} (the file header records {hint:.4g} Å/px: if that is about right, "
            f"try --guess {hint:.4g})"
        ) from None


def _check_anisotropy_plausible(out: ImagePixelSize, hkls: Sequence[tuple[int, int, int]]) -> None:
    """Refuse an anisotropy beyond ``_MAX_ANISOTROPY`` (after the prior; not with ``--rings``).

    The prior has already shrunk an anisotropy the image determines poorly, so what is
    left above the limit is measured: more than TEM cameras show.
    """
    chosen = sorted(map(tuple, hkls)) != sorted(GOLD_REFLECTIONS)
    if out.anisotropy_percent > _MAX_ANISOTROPY and not chosen:
        raise CalibrationError(
            f"the fit needs an anisotropy of {out.anisotropy_percent:.1f} % to put the rings "
            "on one ellipse, more than TEM cameras show: more likely the rings are not "
            "gold's (the astigmatic Thon rings of a support film can pass for them) or not "
            "the reflections assumed; give --rings (and --guess) to accept such a fit"
        )


def _measure_sparse(
    img: np.ndarray,
    meta: ImageData | None,
    name: str | None,
    a_A: float,
    hkls: Sequence[tuple[int, int, int]],
    guess: float | None,
    optics: tuple[float, float] | None,
    ctf_optics: tuple[float, float] = (300.0, 2.7),
) -> ImagePixelSize:
    """Measure one image; sparse crystals get a second try on their tiles alone.

    When the whole image yields no gold pattern and only a small part of it holds crystal
    spots (:func:`temcal.spectra.crystal_tiles.find_crystal_tiles`), the image is masked
    to those tiles and measured again: the empty tiles' noise no longer dilutes the
    spots. The support's Thon rings are still taken from the whole image. Without
    ``--guess`` or ``--rings`` that result must hold two of the 111, 200 and 220 rings.
    If it fails, the first error stands.
    """
    img = np.asarray(img, dtype=np.float32)
    try:
        return _measure_image(img, meta, name, a_A, hkls, guess, optics, ctf_optics)
    except CalibrationError as err:
        masked = _crystal_masked(img)
        if masked is None:
            raise
        try:
            out = _measure_image(
                masked[0], meta, name, a_A, hkls, guess, optics, ctf_optics, thon_image=img
            )
        except CalibrationError:
            raise err from None
        # a few crystals' spots alias into ghost rings: without --guess or --rings, two
        # of the strong low-order rings must agree (one ring, or one with a far alias,
        # cannot tell 111 from 200; measured: 3 of 12 such images off by 13-22 %)
        chosen = sorted(map(tuple, hkls)) != sorted(GOLD_REFLECTIONS)
        low_order = {r.hkl for r in out.rings} & {"111", "200", "220"}
        if guess is None and not chosen and len(low_order) < 2:
            raise err from None
    return replace(out, crystal_tile_fraction=masked[1])


def _crystal_masked(img: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The image masked to its tiles with crystal spots, and their fraction (or None).

    None when the image is too small for enough tiles, when too few tiles hold spots to
    be a crystal rather than chance (``_MIN_CRYSTAL_TILES``), or when so many do
    (``_MAX_CRYSTAL_FRACTION``) that masking gains little.
    """
    from temcal.spectra.crystal_tiles import find_crystal_tiles

    if min(img.shape) < 4 * _CRYSTAL_TILE:
        return None
    tiles = find_crystal_tiles(img, tile_size=_CRYSTAL_TILE)
    if tiles.n_selected < _MIN_CRYSTAL_TILES or tiles.fraction > _MAX_CRYSTAL_FRACTION:
        return None
    mask = tiles.mask()
    level = float(np.sum(img * mask) / max(float(np.sum(mask)), 1.0))
    return ((img - level) * mask).astype(np.float32), tiles.fraction


def _measure_image(
    img: np.ndarray,
    meta: ImageData | None,
    name: str | None,
    a_A: float,
    hkls: Sequence[tuple[int, int, int]],
    guess: float | None,
    optics: tuple[float, float] | None,
    ctf_optics: tuple[float, float] = (300.0, 2.7),
    *,
    thon_image: np.ndarray | None = None,
) -> ImagePixelSize:
    d_all = np.array([d_spacing_A(h, a_A) for h in hkls])
    found = _search_with_rings(img, d_all, a_A, guess)
    if not found.weak:
        return _measure_found(
            img, meta, name, a_A, hkls, guess, optics, ctf_optics, thon_image, d_all, found
        )
    # a search candidate that scored below the usual threshold (3 nm grains: their broad
    # rings stand out less above their flanks) stands only when the fit confirms two of the
    # strong low-order rings; any other failure is the search's refusal
    try:
        out = _measure_found(
            img, meta, name, a_A, hkls, guess, optics, ctf_optics, thon_image, d_all, found
        )
    except CalibrationError:
        raise weak_candidate_refusal(found, list(d_all)) from None
    if len({r.hkl for r in out.rings} & {"111", "200", "220"}) < 2:
        raise weak_candidate_refusal(found, list(d_all))
    return out


def _measure_found(
    img: np.ndarray,
    meta: ImageData | None,
    name: str | None,
    a_A: float,
    hkls: Sequence[tuple[int, int, int]],
    guess: float | None,
    optics: tuple[float, float] | None,
    ctf_optics: tuple[float, float],
    thon_image: np.ndarray | None,
    d_all: np.ndarray,
    found: _SearchResult,
) -> ImagePixelSize:
    """Fit the gold rings of one image around the search's pixel size ``found``."""
    p0 = found.pixel_size_A
    # binning for small frequencies: bring the first ring to >= ~0.12 cycles/px
    f1 = p0 / float(d_all.max())
    b = 1
    while f1 * b * 2 <= 0.3 and min(img.shape) // (b * 2) >= 256:
        b *= 2
    sub = _bin_image(img, b)
    pb = p0 * b
    side = min(sub.shape)
    tile = 512 if side >= 1024 else _pow2_at_most(side)
    spec = _spectrum(sub, tile)
    n = tile
    radii_all = 1.0 / d_all
    # usable rings: inside [~6 px, fmax], not straddling Nyquist lines ambiguously
    f_all = pb * radii_all
    use = (f_all * n >= 12.0) & (f_all <= _MAX_UNFOLDED_F)
    below = use & (f_all < 0.47)
    if below.sum() >= 2:  # rings inside Nyquist suffice: leave the aliased ones out
        use = below
    if use.sum() == 0:
        raise CalibrationError(
            "no gold ring falls in the measurable frequency range"
            + ("; " + h if (h := _all_aliased_hint(p0, d_all)) else "")
        )
    radii = radii_all[use]
    hk_used = [hkls[int(i)] for i in np.flatnonzero(use)]
    bin_w = 0.4 / (n * pb)  # 0.4 spectrum pixel, in Å⁻¹
    # stage 1: each ring alone in the isotropic (unfolded) radial profile
    fit1 = _initial_rings(spec, pb, radii)
    strong = np.array([f is not None and f[3] > 3.0 for f in fit1])
    if not strong.any():
        raise CalibrationError(
            "no gold lattice rings found: no ring is significant in the spectrum fit"
        )
    # every ring of the same grains has about the same width (size broadening; strain
    # adds a little at higher orders): a weak ring far broader than the most significant
    # one is a bump of the background or of the aliases, not gold
    snr1 = np.array([f[3] if f is not None else -np.inf for f in fit1])
    f_best = fit1[int(np.argmax(snr1))]
    if f_best is not None:
        strong &= np.array(
            [
                f is not None and (f[1] <= _MAX_WIDTH_RATIO * f_best[1] or f[3] >= 0.5 * f_best[3])
                for f in fit1
            ]
        )
    consistent = _select_rings(fit1, radii)
    # scale: the rings fitted alone when two or more agree, else the search's value
    scale = 1.0
    if consistent.sum() >= 2:
        sc = float(
            np.median(
                [f[0] / r for f, r, k in zip(fit1, radii, consistent, strict=True) if k and f]
            )
        )
        if abs(sc - 1.0) < 0.04:
            scale = sc
            # only rings that agree with that scale: aliases of far rings that happen to
            # show a bump elsewhere would pull the joint fit
            strong = strong & consistent
    wj = np.array([f[1] for f, k in zip(fit1, strong, strict=True) if k and f])
    wj = np.clip(wj, 0.002 * radii[strong], 0.03 * radii[strong])
    radii, hk_used = radii[strong], [h for h, k in zip(hk_used, strong, strict=True) if k]
    nr = len(radii)
    s_ref = float(radii[0])
    W1 = np.eye(2) / (scale * pb)
    half = np.clip(np.maximum(5.0 * wj, 0.05 * radii) + 0.012 * radii, 8.0 / (n * pb), 0.1 * radii)
    data1 = _collect(spec, W1, radii, half, n_sectors=24, bin_width=2 * bin_w)
    if data1 is None:
        raise CalibrationError(
            "gold ring fit failed: too few spectrum samples near the rings"
            + ("; " + h if (h := _all_aliased_hint(p0, d_all)) else "")
        )
    radii, wj = radii[data1.ring_idx], wj[data1.ring_idx]
    hk_used = [hk_used[i] for i in data1.ring_idx]
    nr = len(radii)
    model = _RingModel(data1, radii, pb, s_ref, with_ctf=False)
    lo, hi = _bounds(nr, False)
    _floor_widths(lo, radii, n, pb)
    th0 = np.array([1.0 / scale - 1.0, 1.0 / scale - 1.0, 0.0, *np.log(wj / radii), 0.0, 0.0])
    best = _fit(model, th0, lo, hi)
    par = model.unpack(best.x)
    best_x = best.x
    # stage 2: windows from the fitted widths, elliptical binning with the fitted W
    W1 = par["W"]
    wj = np.asarray(par["w"])
    bin_w = _stage2_bin_width(float(wj.min()), n, pb)
    half = np.clip(np.maximum(5.0 * wj, 0.05 * radii), 6.0 / (n * pb), 0.1 * radii)
    data2 = _collect(spec, W1, radii, half, n_sectors=36, bin_width=bin_w)
    if data2 is None:
        raise CalibrationError(
            "gold ring fit failed: too few spectrum samples near the rings"
            + ("; " + h if (h := _all_aliased_hint(p0, d_all)) else "")
        )
    radii2 = radii[data2.ring_idx]
    hk2 = [hk_used[i] for i in data2.ring_idx]
    nr2 = len(radii2)
    e = (W1 * pb - np.eye(2)).ravel()
    th_geom = [e[0], e[3], e[1]]
    th_w = list(np.log(wj[data2.ring_idx] / radii2))
    th_base = [*th_geom, *th_w, best_x[3 + nr], best_x[4 + nr]]
    model2 = _RingModel(data2, radii2, pb, s_ref, with_ctf=False)
    lo2, hi2 = _bounds(nr2, False)
    _floor_widths(lo2, radii2, n, pb)
    res = _fit(model2, np.array(th_base), lo2, hi2)
    # the support's Thon rings give the defocus, and with it each ring's predicted shift
    # (rings whose predicted shifts differ get free offsets below)
    spec_thon = spec if thon_image is None else _spectrum(_bin_image(thon_image, b), tile)
    thon = _thon_defocus(spec_thon, pb, ctf_optics, a_A)
    priors = _ring_shift_priors(model2, res.x, thon, ctf_optics)
    offset_mode = priors is not None and _offsets_apply(priors)
    stage2 = (model2, res, data2)
    ok = _ring_amplitude_ok(model2, res.x)
    model2, res, data2 = _refit_rings(spec, stage2, ok, radii, half, hk_used, bin_w, n, pb)
    radii2 = model2.radii
    hk2 = [hk_used[j] for j in data2.ring_idx]
    nr2 = len(radii2)
    # the fit with free ring offsets may also use rings that are significant against
    # their own segment's residuals only (weak rings far from misfit strong ones)
    offset_stage = None
    if offset_mode:
        ok_seg = _ring_amplitude_ok(stage2[0], stage2[1].x, per_segment=True)
        if np.array_equal(ok_seg, ok):
            offset_stage = (model2, res, data2)
        else:
            offset_stage = _refit_rings(spec, stage2, ok_seg, radii, half, hk_used, bin_w, n, pb)
    if optics is not None:
        model_c = _RingModel(data2, radii2, pb, s_ref, with_ctf=True, optics=optics)
        res_c = _fit_ctf(model_c, res.x, nr2)
        if res_c is not None and res_c.cost < res.cost:
            model2, res = model_c, res_c
    elif thon[0] is not None and abs(thon[0]) < _IN_FOCUS_A:
        # in focus: the CTF modulation with the support's defocus (slopes kept)
        model_c = _RingModel(
            data2,
            radii2,
            pb,
            s_ref,
            with_ctf=True,
            optics=ctf_optics,
            ring_slopes=model2.ring_slopes,
        )
        model_c.envelope_b_A2 = model2.envelope_b_A2
        model_c.envelope_se_A2 = model2.envelope_se_A2
        res_c = _fit_ctf(model_c, res.x, nr2, defocus_A=thon[0])
        if res_c is not None and res_c.cost <= res.cost:
            model2, res = model_c, res_c
    # rings whose predicted delocalization shifts differ: a free offset per ring, for the
    # isotropic scale only (not where the CTF modulation was fitted, in focus; and only
    # between rings significant without offsets: an offset can move a ring onto a bump
    # of the noise)
    fitted = hk_o = None
    if offset_stage is not None and not model2.with_ctf:
        m_o, r_o, d_o = offset_stage
        hk_o = [hk_used[j] for j in d_o.ring_idx]
        priors = _ring_shift_priors(m_o, r_o.x, thon, ctf_optics)
        snr_o = _ring_snrs(m_o, r_o.x, per_segment=True)
        if priors is not None and np.sum(snr_o > _OFFSET_MIN_SNR) >= 2:
            fitted = _fit_ring_offsets(m_o, r_o, priors, n, pb)
    _check_strong_rings_kept(
        hk2,
        [h for h, u in zip(hkls, use, strict=True) if u],
        p0,
        guessed=guess is not None,
        lattice_constant_A=a_A,
    )
    out = _finish(model2, res, hk2, radii2, pb, b, n, found, meta, name, a_A)
    base = out  # (before the ring offsets' scale)
    if fitted is not None and hk_o is not None:
        m_f, r_f = fitted
        try:
            off = _finish(m_f, r_f, hk_o, m_f.radii0, pb, b, n, found, meta, name, a_A)
            out = _with_offset_scale(out, off)
        except CalibrationError:
            pass  # (no ring significant with offsets: the fit without them stands)
    chosen = sorted(map(tuple, hkls)) != sorted(GOLD_REFLECTIONS)
    assigned = chosen
    if guess is not None:
        dev = out.pixel_size_A / guess - 1.0
        if abs(dev) > _GUESS_MAX_DEVIATION:
            raise CalibrationError(
                f"the gold rings fit {out.pixel_size_A:.4g} Å/px, {100 * dev:+.0f} % from the "
                f"guess {guess:.4g} Å/px: so far from it the reflections may be mislabelled "
                "(111 and 200 lie 15 % apart); correct the guess or leave it out"
            )
        # a guess this close assigns the reflections of a lone crystal's spots: every
        # other assignment (111 for 200, 220 for 311, ...) lies 15 % or more away. (Spots
        # of a few crystals that need a large anisotropy are still refused below.)
        assigned = chosen or abs(dev) < _GUESS_ASSIGNS
    if out.ring_directions is not None and out.ring_directions < _MIN_ONE_CRYSTAL and not assigned:
        raise CalibrationError(
            "the gold rings are the spots of a single crystal (signal in "
            f"~{out.ring_directions:.1f} direction): which reflections they are cannot be "
            "checked against each other; image more crystals, or give --rings (and --guess) "
            "to assign them yourself"
        )
    if (
        out.ring_directions is not None
        and out.ring_directions < MIN_RING_DIRECTIONS
        and out.anisotropy_percent > _MAX_FEW_CRYSTAL_ANISOTROPY
        and not chosen
    ):
        raise CalibrationError(
            f"the fit needs an anisotropy of {out.anisotropy_percent:.1f} % to put the spots "
            f"of a few crystals (~{out.ring_directions:.1f} directions) on one ellipse: more "
            "likely they belong to other reflections than assumed; image more crystals, or "
            "give --rings (and --guess) to assign them yourself"
        )
    # what the anisotropy prior needs of the free fit (before the offsets' scale)
    out.diagnostics["free_fit"] = {
        "W": base.diagnostics["W"],
        "binning": b,
        "pixel_size_A": base.pixel_size_A,
        "sector_prior_inputs": base.diagnostics["sector_prior_inputs"],
    }
    out = _with_ctf_bias(out, thon, pb, ctf_optics)
    out.diagnostics["spectrum"] = spec.astype(np.float32)
    return out


def _stage2_bin_width(width_min: float, n: int, pb: float) -> float:
    """Radial bin width (Å⁻¹) of the joint fit's samples, from the narrowest ring's width.

    The model is evaluated at each bin's mean position, so a bin must be narrow against
    the ring: with 0.4-pixel bins the narrow, spotty rings of large crystals (widths
    ~0.8 spectrum pixel) moved by up to 0.6 % when the bins shifted by a fraction of a
    pixel. An eighth of the narrowest width, between 0.1 and 0.4 spectrum pixel.
    """
    px = 1.0 / (n * pb)
    return float(np.clip(width_min / _RING_WIDTH_PER_BIN, _MIN_BIN_PX * px, _MAX_BIN_PX * px))


def _with_anisotropy_prior(out: ImagePixelSize, prior_percent: float) -> ImagePixelSize:
    """Shrink a poorly determined anisotropy toward 0 (prior ``prior_percent``, 0: off).

    In the sector regression of :func:`_sector_scale_se` a relative change of ``W``
    (spatial frequency per pixel frequency) along direction ``phi`` is
    ``c + a cos 2 phi + b sin 2 phi``, and the fit's own anisotropy is ``v = (a, b)``
    (``anisotropy_percent = 200 |v|``) with covariance ``C`` (the reported one). With a
    prior ``N(0, sp^2 I)`` on ``v`` (``sp = prior_percent / 200``) the
    posterior mean is ``v - C (C + sp^2 I)^-1 v`` and its covariance
    ``C - C (C + sp^2 I)^-1 C``. The scale follows the anisotropy's change ``dv`` as in
    the sectors' weighted regression with ``v`` held fixed: ``dc = -F_00^-1 F_0v dv``
    (``F`` the sectors' information on ``(c, a, b)``). For full rings ``F_0v`` is about 0
    and ``C`` small: the result hardly moves. For a few crystals' spots (``ring_directions``
    of 2-5) the ellipse through the spots of few directions is ill-posed, and its
    anisotropy error feeds the pixel size; the prior stabilises both. The free fit's
    ``W``, sector information and covariance come from ``out.diagnostics["free_fit"]``
    (before the ring offsets rescaled it: their scale ratio is kept).
    """
    free = out.diagnostics.get("free_fit")
    s_free = out.anisotropy_se_percent
    sp = prior_percent / 200.0
    if free is None or free["sector_prior_inputs"] is None or not math.isfinite(s_free):
        return out
    if sp <= 0.0 or sp * sp / (sp * sp + (s_free / 200.0) ** 2) > 1.0 - _PRIOR_MIN_SHRINK:
        return out
    info, cov = (np.asarray(x, dtype=float) for x in free["sector_prior_inputs"])
    W = np.asarray(free["W"], dtype=float)
    w0 = math.sqrt(float(np.linalg.det(W)))
    d = W / w0 - np.eye(2)  # ~ [[a, b], [b, -a]] to first order
    v = np.array([0.5 * (d[0, 0] - d[1, 1]), 0.5 * (d[0, 1] + d[1, 0])])
    try:
        gain = cov @ np.linalg.inv(cov + sp * sp * np.eye(2))
    except np.linalg.LinAlgError:
        return out
    dv = -gain @ v
    dc = -float(info[0, 1:] @ dv) / float(info[0, 0]) if info[0, 0] > 0 else 0.0
    cov_post = cov - gain @ cov
    w_post = W * (1.0 + dc) + w0 * np.array([[dv[0], dv[1]], [dv[1], -dv[0]]])
    m = np.linalg.inv(w_post) / int(free["binning"])
    m = 0.5 * (m + m.T) * (out.pixel_size_A / float(free["pixel_size_A"]))
    geom = decompose_pixel_matrix(m)
    return replace(
        out,
        pixel_matrix_A=((float(m[0, 0]), float(m[0, 1])), (float(m[1, 0]), float(m[1, 1]))),
        pixel_size_A=geom.pixel_size_A,
        pixel_size_se_A=out.pixel_size_se_A * geom.pixel_size_A / out.pixel_size_A,
        pixel_major_A=geom.pixel_major_A,
        pixel_minor_A=geom.pixel_minor_A,
        anisotropy_percent=geom.anisotropy_percent,
        major_angle_deg=geom.major_angle_deg,
        anisotropy_se_percent=200.0 * math.sqrt(max(0.5 * float(np.trace(cov_post)), 0.0)),
        free_anisotropy_percent=out.anisotropy_percent,
        free_pixel_size_A=out.pixel_size_A,
        diagnostics={
            **out.diagnostics,
            "anisotropy_prior": {
                "prior_percent": prior_percent,
                "free_anisotropy_se_percent": s_free,
            },
        },
    )


def _check_strong_rings_kept(
    kept: Sequence[tuple[int, int, int]],
    measurable: Sequence[tuple[int, int, int]],
    p_A: float,
    *,
    guessed: bool = False,
    lattice_constant_A: float = 4.0782,
) -> None:
    """Refuse a result that rests only on weaker rings while 111 and 200 were measurable.

    Gold's 111 and 200 rings are its strongest. When either lies inside the measured
    frequency range but the fit kept neither, the rings it did keep are most likely
    other features (an alias, a Thon ring, a spot) taken for gold at a wrong pixel size:
    a clear error, not a number. (Rings chosen with ``--rings`` are not second-guessed:
    111 and 200 are then not among the measurable ones.)
    """
    strong = {(1, 1, 1), (2, 0, 0)}
    if any(tuple(h) in strong for h in measurable) and not any(tuple(h) in strong for h in kept):
        names = ", ".join("".join(map(str, h)) for h in kept)
        hint = _all_aliased_hint(p_A, [d_spacing_A(h, lattice_constant_A) for h in strong])
        where = "" if hint else ", inside the spectrum,"
        advice = (
            "; give --rings to choose the rings yourself"
            if guessed
            else "; give --guess (or --rings) if the pixel size is roughly known"
        )
        raise CalibrationError(
            f"no consistent gold ring pattern: at {p_A:.4g} Å/px the fit kept only the "
            f"{names} ring(s), while the stronger 111 and 200 rings{where} were not found"
            + (": " + hint if hint else advice)
        )


def _search_with_rings(
    img: np.ndarray, d_used: np.ndarray, a_A: float, guess: float | None
) -> _SearchResult:
    """Find the pixel size; ``rings`` restricts the fit, not the search.

    One or two chosen rings have no ratio pattern to recognise (any peak matches one ring),
    so the search first uses every gold reflection and falls back to the chosen ones only
    when that fails (both searches share the unbinned spectrum).
    """
    d_every = np.array([d_spacing_A(h, a_A) for h in GOLD_REFLECTIONS])
    if d_used.size == d_every.size and np.allclose(np.sort(d_used), np.sort(d_every)):
        return _search_pixel_size(img, list(d_used), guess_pixel_size_A=guess)
    tile = min(256, _pow2_at_most(min(img.shape)))
    full = _spectrum(img, tile) if min(img.shape) >= 128 else None

    def search(d: np.ndarray) -> _SearchResult:
        return _search_pixel_size(img, list(d), guess_pixel_size_A=guess, full_spectrum=full)

    try:
        return search(d_every)
    except CalibrationError:
        return search(d_used)


def _select_rings(
    fit1: list[tuple[float, float, float, float] | None], radii: np.ndarray
) -> np.ndarray:
    """Rings found alone at a consistent scale, significant and not absurdly broad."""
    snr = np.array([f[3] if f is not None else -np.inf for f in fit1])
    if not np.isfinite(snr).any() or snr.max() < 5.0:
        return np.zeros(len(fit1), dtype=bool)
    ref = int(np.argmax(snr))
    f_ref = fit1[ref]
    assert f_ref is not None
    scale = f_ref[0] / radii[ref]
    keep = np.zeros(len(fit1), dtype=bool)
    for j, f in enumerate(fit1):
        if f is None:
            continue
        ok_pos = abs(f[0] / radii[j] / scale - 1.0) < 0.006 + 1.5 * f[1] / radii[j]
        ok_width = f[1] <= _MAX_WIDTH_RATIO * f_ref[1] or f[3] >= 0.5 * f_ref[3]
        keep[j] = f[3] > 5.0 and ok_pos and ok_width and f[1] < 0.05 * radii[j]
    return keep


def _single_ring_problem(
    x: np.ndarray, yw: np.ndarray, wt: np.ndarray, Bw: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """Residual and exact Jacobian of one Gaussian ring on a weighted quadratic background.

    Parameters ``t = (shift, sigma)``; the ring amplitude and the background (columns
    ``Bw``) are solved linearly (variable projection; normal equations of 4 columns).
    The Jacobian is Golub and Pereyra's: only the ring column ``g`` depends on ``t``, so
    ``dr/dt_k = -(c_0 (I - P_X) dg_k + X (X^T X)^{-1} e_0 (dg_k . r))``.
    """

    def solve(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        u = (x - t[0]) / t[1]
        g = np.exp(-0.5 * u * u) * wt
        X = np.column_stack([g, Bw])
        A = X.T @ X
        try:
            coef = np.linalg.solve(A, X.T @ yw)
        except np.linalg.LinAlgError:
            coef = np.linalg.lstsq(X, yw, rcond=None)[0]
        return X, A, coef, u

    def resid(t: np.ndarray) -> np.ndarray:
        X, _, coef, _ = solve(t)
        return np.asarray(yw - X @ coef)

    def jac(t: np.ndarray) -> np.ndarray:
        X, A, coef, u = solve(t)
        r = yw - X @ coef
        g = X[:, 0]
        dg = np.stack([g * u / t[1], g * u * u / t[1]], axis=1)
        try:
            Ainv = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            Ainv = np.linalg.pinv(A)
        proj = X @ (Ainv @ (X.T @ dg))
        term1 = coef[0] * (dg - proj)
        term2 = np.outer(X @ Ainv[:, 0], dg.T @ r)
        return np.asarray(-(term1 + term2))

    return resid, jac


def _initial_rings(
    spec: np.ndarray, pb: float, radii: np.ndarray
) -> list[tuple[float, float, float, float] | None]:
    """Fit each ring alone (Gaussian on a line) in the isotropic radial profile.

    Returns, per ring, ``(radius, sigma, amplitude, snr)`` in Å⁻¹ (or ``None``).
    """
    n = spec.shape[0]
    # unfold only the bands around the rings (±12 %, merged where they overlap)
    bands: list[list[float]] = []
    for rj in np.sort(radii):
        lo_f = max(4.0 / n, 0.88 * rj * pb)
        hi_f = min(_MAX_UNFOLDED_F, 1.12 * rj * pb)
        if hi_f <= lo_f:
            continue
        if bands and lo_f <= bands[-1][1]:
            bands[-1][1] = max(bands[-1][1], hi_f)
        else:
            bands.append([lo_f, hi_f])
    rad_parts, val_parts = [], []
    for lo_f, hi_f in bands:
        u = unfold_spectrum(
            spec, max_frequency=hi_f, min_frequency=lo_f, min_alias_base_frequency=0.06
        )
        rad_parts.append(np.hypot(u.qx, u.qy) / pb)
        val_parts.append(u.values)
    if not rad_parts or sum(a.size for a in rad_parts) == 0:
        return [None] * len(radii)
    r, v, c = calculate_radial_profile(
        np.concatenate(rad_parts),
        np.concatenate(val_parts),
        bin_width=0.5 / (n * pb),
        r_min=4.0 / (n * pb),
    )
    out: list[tuple[float, float, float, float] | None] = []
    for rj in radii:
        m = (r > rj * 0.9) & (r < rj * 1.1)
        if m.sum() < 12:
            out.append(None)
            continue
        x, y, wt = r[m] - rj, v[m], np.sqrt(c[m])
        level = float(np.median(y))
        wt = wt / level
        xs = x / (0.1 * rj)  # background columns on a unit scale (well-conditioned)
        Bw = np.stack([np.ones_like(x), xs, xs * xs], axis=1) * wt[:, None]
        yw = y * wt

        resid, jac = _single_ring_problem(x, yw, wt, Bw)
        best = None
        for wf in (0.003, 0.01, 0.03):
            try:
                res = optimize.least_squares(
                    resid,
                    [0.0, wf * rj],
                    jac=jac,
                    bounds=([-0.03 * rj, 2e-4 * rj], [0.03 * rj, 0.06 * rj]),
                    max_nfev=60,
                )
            except ValueError:
                continue
            if best is None or res.cost < best.cost:
                best = res
        if best is None:
            out.append(None)
            continue
        t = best.x
        g = np.exp(-0.5 * ((x - t[0]) / t[1]) ** 2)
        X = np.column_stack([g * wt, Bw])
        coef, *_ = np.linalg.lstsq(X, yw, rcond=None)
        res_v = yw - X @ coef
        s2 = float(res_v @ res_v) / max(1, x.size - 6)
        var0 = float(_coefficient_variances(X, s2)[0])
        snr = float(coef[0] / math.sqrt(max(var0, 1e-300))) if math.isfinite(var0) else 0.0
        out.append((float(rj + t[0]), float(t[1]), float(coef[0]), snr))
    return out


def _spots_fraction(n_dir: float, n_sectors: int) -> float:
    """One over the number of crystals' spots per sector, from the participation ratio.

    Sector intensities that are sums of ``N`` spots of random strength scatter with a
    squared coefficient of variation ``~ _SPOT_CV2 / N``, and the participation ratio of
    ``K`` sectors is ``K / (1 + CV^2)``; so ``1 / N ~ (K / n_dir - 1) / _SPOT_CV2``,
    capped at 1 (one spot).
    """
    return min(1.0, max(n_sectors / max(n_dir, 1e-9) - 1.0, 0.0) / _SPOT_CV2)


def _sector_scale_se(
    model: _RingModel,
    th: np.ndarray,
    coef: np.ndarray,
    resid: np.ndarray,
    n_sectors: int = 18,
    jitter: float = 0.0,
) -> tuple[float, float, float, tuple[np.ndarray, np.ndarray] | None]:
    """Relative standard errors of the isotropic scale and of the anisotropy (fractions).

    From the scatter between sectors (18 over half a turn: the spectrum is
    centrosymmetric). Returns ``(scale_se, aniso_se, n_dir)``.

    Each sector's own ring strength ``rho_k`` (its ring signal over the ring model's,
    regressed with a constant so that a streak raising the whole sector does not count)
    scales the model's derivative with respect to a common scale of ``W``. Each
    sector's residuals regressed on that derivative give its preferred scale shift
    ``delta_k`` and its information ``h_k``: a spotty ring's information sits in the
    sectors that hold its spots. The fitted ellipse removes the mean and the
    ``cos 2 phi``, ``sin 2 phi`` components of ``delta_k``; the spread of what is left
    gives the (HC3) sandwich covariance of the mean and of the two 2-fold components
    (robust to correlations within a sector).

    ``n_dir``, the participation ratio of the sectors' ring signal, counts the
    independent directions that carry the rings. With few crystals the ellipse passes
    through their spots and the residuals cannot show the spots' scatter, so each
    sector's squared residual is at least ``jitter**2`` (the radial jitter of one
    crystal's spot, relative) over its number of spots (:func:`_spots_fraction`). Below
    ``MIN_RING_DIRECTIONS`` the standard errors are also multiplied by the Student-t
    quantile for ``n_dir - 1`` degrees of freedom over the normal one.
    """
    eps = 1e-5
    W = model.unpack(th)["W"]
    th2 = np.array(th, dtype=float)
    th2[0] = (1.0 + th[0]) * (1.0 + eps) - 1.0
    th2[1] = (1.0 + th[1]) * (1.0 + eps) - 1.0
    th2[2] = th[2] * (1.0 + eps)
    X0, _ = model.design(th)
    X1, _ = model.design(th2)
    rows = coef[model.d.sector]
    qx = W[0, 0] * model.d.qx + W[0, 1] * model.d.qy
    qy = W[1, 0] * model.d.qx + W[1, 1] * model.d.qy
    # the spectrum is centrosymmetric: the samples at q and -q are the same data, so
    # sectors are taken over half a turn (each holds both halves) to be independent
    phi = np.mod(np.arctan2(qy, qx), np.pi)
    k = np.minimum((phi / np.pi * n_sectors).astype(np.int64), n_sectors - 1)
    # each sector's own ring strength: a spotty ring (few grains) carries its position
    # information in the few sectors that hold spots, not evenly around the ring
    nr = model.nr
    w2 = model.d.weight**2
    bg = X0[:, nr:] @ rows[0, nr:] if rows.shape[0] else np.zeros(X0.shape[0])
    # (regressions within each sector with a constant: a streak of the support or of a
    # foil edge raises a whole sector, not its ring)
    r0 = model.d.y - bg
    sw2 = np.maximum(np.bincount(k, weights=w2, minlength=n_sectors), 1e-300)

    def _centred(v: np.ndarray) -> np.ndarray:
        return v - (np.bincount(k, weights=w2 * v, minlength=n_sectors) / sw2)[k]

    rc = _centred(r0)
    rho = np.zeros((n_sectors, nr))
    for j in range(nr):
        xj = _centred(X0[:, j])
        num = np.bincount(k, weights=w2 * xj * rc, minlength=n_sectors)
        den = np.bincount(k, weights=w2 * xj * xj, minlength=n_sectors) * rows[0, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            rho[:, j] = np.where(den > 0, num / den, 0.0)
    rho = np.clip(rho, 0.0, None)
    ring_c = _centred(X0[:, :nr] @ rows[0, :nr])
    dcol = (X1 - X0) / eps
    dm = np.einsum("ij,ij->i", dcol[:, :nr] * rho[k], rows[:, :nr])
    dmw = dm * model.d.weight
    h = np.bincount(k, weights=dmw * dmw, minlength=n_sectors)
    u = np.bincount(k, weights=dmw * resid, minlength=n_sectors)
    # how many independent directions carry the ring signal (participation ratio of the
    # sectors' ring strengths): ~n_sectors for a full ring, a few for a few crystals
    sig = np.clip(np.bincount(k, weights=w2 * rc * ring_c, minlength=n_sectors), 0.0, None)
    n_dir = float(sig.sum()) ** 2 / max(float(np.sum(sig * sig)), 1e-300) if sig.any() else 0.0
    ok = h > 1e-6 * max(float(h.max()), 1e-300)
    var_mean, cov = 0.0, np.zeros((3, 3))
    info = None
    if ok.sum() >= 3:
        delta = u[ok] / h[ok]
        hk = h[ok]
        centre = (np.arange(n_sectors)[ok] + 0.5) / n_sectors * np.pi
        A = np.stack([np.ones_like(centre), np.cos(2 * centre), np.sin(2 * centre)], axis=1)
        sw = np.sqrt(hk)
        coef_e, *_ = np.linalg.lstsq(A * sw[:, None], delta * sw, rcond=None)
        left = delta - A @ coef_e
        # sandwich covariance of the weighted fit of delta_k on (1, cos 2 phi, sin 2 phi),
        # HC3 form (MacKinnon & White 1985): each sector's residual is divided by 1 - its
        # leverage, as the few bright sectors of a spotty ring pull the fit onto
        # themselves and their own residuals understate the scatter
        bread = np.linalg.pinv(A.T @ (A * hk[:, None]))
        lev = np.clip(hk * np.einsum("ij,jk,ik->i", A, bread, A), 0.0, 0.9)
        e2 = (left / (1.0 - lev)) ** 2
        # the residuals cannot show the scatter of single crystals' spots when the
        # ellipse passes through them: each sector's spread is at least the per-crystal
        # jitter (a fraction of the ring width: the CTF fringes and the crystal's shape
        # move the peak of a lone spot within it) over the sector's number of spots
        e2 = np.maximum(e2, jitter * jitter * _spots_fraction(n_dir, n_sectors))
        meat = A.T @ (A * (hk * hk * e2)[:, None])
        cov = bread @ meat @ bread
        # the isotropic scale: the sandwich variance of the weighted mean (the full
        # covariance above is unstable for the intercept when few sectors carry the rings)
        var_mean = float(np.sum(hk * hk * e2)) / float(hk.sum()) ** 2
        info = A.T @ (A * hk[:, None])
    else:  # no sector to regress (one or two spots): the jitter of one spot
        var_mean = jitter * jitter
        cov = np.diag([jitter * jitter, 2.0 * jitter * jitter, 2.0 * jitter * jitter])
    # with few directions the scatter is estimated from few numbers: Student-t quantile
    # with n_dir - 1 degrees of freedom (n_dir - 3 for the anisotropy made its intervals
    # about 3x too wide on simulated images of 1-30 crystals per ring)
    f_scale = f_aniso = 1.0
    if n_dir < MIN_RING_DIRECTIONS:
        f_scale = f_aniso = float(stats.t.ppf(0.975, max(n_dir - 1.0, 1.0))) / 1.959964
    scale_se = math.sqrt(max(var_mean, 0.0)) * f_scale
    # a relative radius change a cos 2 phi + b sin 2 phi is an anisotropy of 2 sqrt(a^2 + b^2)
    aniso_se = 2.0 * math.sqrt(max(0.5 * float(cov[1, 1] + cov[2, 2]), 0.0)) * f_aniso
    # for the anisotropy prior: the sectors' information on (mean, cos, sin) and the
    # covariance of the (cos, sin) components as reported
    prior_in = None if info is None else (info, cov[1:, 1:] * f_aniso * f_aniso)
    return scale_se, aniso_se, n_dir, prior_in


def _finish(
    model: _RingModel,
    res: optimize.OptimizeResult,
    hkls: Sequence[tuple[int, int, int]],
    radii: np.ndarray,
    pb: float,
    b: int,
    n: int,
    found: _SearchResult,
    meta: ImageData | None,
    name: str | None,
    a_A: float,
) -> ImagePixelSize:
    par = model.unpack(res.x)
    resid, coef, X = model.solve(res.x)
    W = par["W"]
    M = np.linalg.inv(W) / b  # Å per unbinned pixel
    M = 0.5 * (M + M.T)
    geom = decompose_pixel_matrix(M)
    # covariance of the nonlinear parameters (variable projection Jacobian)
    J = res.jac
    dof = max(1, resid.size - J.shape[1] - coef.size)
    s2 = float(resid @ resid) / dof
    try:
        # parameters held at a bound are fixed; nuisance directions the data do not
        # constrain at all (relative eigenvalue < 1e-10) are left out, not inflated
        free = np.asarray(getattr(res, "active_mask", np.zeros(J.shape[1]))) == 0
        free[:3] = True
        Jf = J[:, free]
        cov = np.zeros((J.shape[1], J.shape[1]))
        # every sample appears twice (q and -q of the centrosymmetric spectrum): the
        # information J^T J counts it twice, so the covariance is doubled
        cov[np.ix_(free, free)] = np.linalg.pinv(Jf.T @ Jf, rcond=1e-10, hermitian=True) * s2 * 2.0
    except np.linalg.LinAlgError:
        cov = np.full((J.shape[1], J.shape[1]), np.nan)

    # p = 1 / sqrt(det W) / b; gradient w.r.t. (e1, e2, e3) numerically
    def _p(th: np.ndarray) -> float:
        Wt = np.array([[1.0 + th[0], th[2]], [th[2], 1.0 + th[1]]]) / pb
        return 1.0 / math.sqrt(float(np.linalg.det(Wt))) / b

    g = np.zeros(J.shape[1])
    for k in range(3):
        dt = np.zeros(J.shape[1])
        dt[k] = 1e-6
        g[k] = (_p(res.x + dt) - _p(res.x - dt)) / 2e-6
    se = float(math.sqrt(max(float(g @ cov @ g), 0.0)))
    # spotty rings (few large grains) leave residuals correlated within each spot, and the
    # covariance above is then far too small: take the larger of it and a sector-level
    # sandwich estimate
    # a ring is at least one spectrum pixel wide (the tile's resolution)
    wr = np.maximum(np.asarray(par["w"], dtype=float), 1.0 / (n * pb)) / np.asarray(radii)
    sec_scale, sec_aniso, n_dir, prior_in = _sector_scale_se(
        model, res.x, coef, resid, jitter=_SPOT_JITTER * float(np.median(wr))
    )
    se_sector = sec_scale * geom.pixel_size_A
    se = max(se, se_sector)
    aniso_se = 100.0 * sec_aniso
    nr = len(radii)
    amp_mean, amp_se = _ring_amplitudes(model, coef, s2)
    p_iso = geom.pixel_size_A
    offsets = prior_sd = None
    if isinstance(model, _OffsetRingModel):
        offsets, prior_sd = model.offsets(res.x), model.prior_sd
    ring_fits = []
    for j, hkl in enumerate(hkls):
        amp = float(amp_mean[j])
        ring_fits.append(
            RingFit(
                hkl=_HKL.get(hkl, "".join(map(str, hkl))),
                d_A=float(1.0 / radii[j]),
                radius_cycles_per_px=float(p_iso * radii[j]),
                width_per_A=float(par["w"][j]),
                amplitude=amp,
                snr=float(amp / amp_se[j]),
                aliased=bool(p_iso * radii[j] * (1 + geom.anisotropy_percent / 200) > 0.5),
                offset_percent=None if offsets is None else 100.0 * float(offsets[j]),
                offset_prior_percent=None if prior_sd is None else 100.0 * float(prior_sd[j]),
            )
        )
    # the shared log-slope beta of the ring modulation shifts each ring by w^2 beta, which
    # is nearly degenerate with the scale; when the fit leaves it at its bound it is not
    # determined, and the shift it could cause (rings weighted by SNR^2) is added
    w_par = np.asarray(par["w"], dtype=float)
    info = np.array([max(r.snr, 0.0) ** 2 if math.isfinite(r.snr) else 0.0 for r in ring_fits])
    if model.envelope_b_A2 is not None and info.sum() > 0:
        # the slopes from the ring intensities are uncertain (the envelope B, and the
        # profile shape being only roughly kinematic: _SLOPE_MODEL_SD in beta * s_ref);
        # a slope error d beta shifts ring j by w_j^2 d beta
        sd_beta = math.hypot(model.envelope_se_A2 * model.s_ref, _SLOPE_MODEL_SD / model.s_ref)
        rel = float(np.sum(info * w_par**2 / radii) / info.sum()) * sd_beta
        se = math.hypot(se, rel * geom.pixel_size_A)
    elif abs(float(par["beta"])) * model.s_ref >= 0.98 * _BETA_MAX:
        if info.sum() > 0:
            rel = float(np.sum(info * w_par**2 / radii) / info.sum()) * _BETA_MAX / model.s_ref
            se = math.hypot(se, rel * geom.pixel_size_A)
    n_sig = sum(r.snr > 5.0 and r.amplitude > 0 for r in ring_fits)
    if n_sig < 1:
        raise CalibrationError(
            "no gold lattice rings found: no fitted ring is significant (SNR > 5)"
        )
    rows_coef = coef[model.d.sector]
    model_vals = np.einsum("ij,ij->i", X, rows_coef)
    s = model.s(W)
    diagnostics = {
        "s_per_A": s,
        "data": model.d.y,
        "model": model_vals,
        "background": np.einsum("ij,ij->i", X[:, nr:], rows_coef[:, nr:]),
        "radii_per_A": radii,
        "hkl": [r.hkl for r in ring_fits],
        "W": W,
        "binned_pixel_size_A": pb,
        "tile_size": n,
        "binning": b,
        "eta": float(par["eta"]),
        "lattice_constant_A": a_A,
        "envelope_b_A2": model.envelope_b_A2,
        "ring_slopes_A": model.ring_slopes.copy(),
        "ring_offsets": None if offsets is None else np.array(offsets, dtype=float),
        "sector_prior_inputs": prior_in,
    }
    return ImagePixelSize(
        file=name,
        pixel_matrix_A=((float(M[0, 0]), float(M[0, 1])), (float(M[1, 0]), float(M[1, 1]))),
        pixel_size_A=p_iso,
        pixel_size_se_A=se,
        anisotropy_se_percent=aniso_se,
        pixel_major_A=geom.pixel_major_A,
        pixel_minor_A=geom.pixel_minor_A,
        anisotropy_percent=geom.anisotropy_percent,
        major_angle_deg=geom.major_angle_deg,
        rings=tuple(ring_fits),
        search_significance=found.significance,
        defocus_A=float(par["defocus_A"]) if "defocus_A" in par else None,
        tile_size=n,
        binning=b,
        n_samples=int(model.d.y.size),
        header_pixel_size_A=meta.pixel_size_A if meta is not None else None,
        header_magnification=meta.magnification if meta is not None else None,
        ring_envelope_b_A2=model.envelope_b_A2,
        ring_directions=n_dir,
        diagnostics=diagnostics,
    )


def estimate_pixel_size(
    images: Sequence[np.ndarray | ImageData | str | Path] | np.ndarray | str | Path,
    *,
    lattice_constant_A: float | None = None,
    temperature_K: float | None = None,
    guess_pixel_size_A: float | None = None,
    rings: str | Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    voltage_kV: float | None = None,
    cs_mm: float = 2.7,
    fit_ctf: bool = False,
    skip_refused: bool = False,
    anisotropy_prior_percent: float = ANISOTROPY_PRIOR_PERCENT,
    grain_thickness_nm: float | None = None,
) -> PixelSizeResult:
    """Joint pixel size and anisotropic magnification from one or more gold images.

    Parameters
    ----------
    images : sequence of (numpy.ndarray, ImageData, str, Path), or one of them
        Images of gold (2-D arrays ``[y, x]``, movies summed, or files).
    lattice_constant_A : float, optional
        Gold lattice constant in Å; overrides the temperature.
    temperature_K : float, optional
        Specimen temperature in K for the lattice constant (default 293 K, room
        temperature; cryo users pass 80). Giving both options is an error.
    guess_pixel_size_A : float, optional
        Rough pixel size in Å/px (the search stays within a factor 1.25; see
        :func:`measure_gold_rings` for how a guess is used).
    rings : str or sequence of str, optional
        Reflections to use, e.g. ``"111,200,220"``.
    progress : callable, optional
        Called with ``1`` after each image.
    voltage_kV : float, optional
        Accelerating voltage (kV) for the CTF model of the rings (header value, else 300).
    cs_mm : float
        Spherical aberration (mm) for the CTF model of the rings (default 2.7).
    fit_ctf : bool
        Model the CTF modulation of the rings.
    skip_refused : bool
        Leave out images in which no pixel size can be measured (no gold found, a
        pattern that fails a consistency check) and combine the others; they are listed
        in ``PixelSizeResult.refused``. By default one such image is an error. Unreadable
        or blank images are errors either way.
    anisotropy_prior_percent : float
        Prior standard deviation (%) of each anisotropy component, centred on 0 (see
        :func:`measure_gold_rings`; 0 turns it off).
    grain_thickness_nm : float, optional
        Thickness (nm) of a gold foil whose crystals span it; their relrods' inward
        shift of the rings is then corrected (see :func:`measure_gold_rings`; not for
        particles).

    Returns
    -------
    PixelSizeResult
        Joint estimate; the 95 % interval is Student-t over images when there are
        several, else from the fit covariance (see ``ci_method``).

    Raises
    ------
    CalibrationError
        If an image is refused (every image, with ``skip_refused``).
    """
    a_A, t_K = resolve_lattice_constant(lattice_constant_A, temperature_K)
    _check_guess(guess_pixel_size_A)
    check_anisotropy_prior(anisotropy_prior_percent)
    check_grain_thickness(grain_thickness_nm)
    hkls = parse_rings(rings if rings is None or isinstance(rings, str) else list(rings))
    if isinstance(images, str | Path | ImageData) or (
        isinstance(images, np.ndarray) and images.ndim == 2
    ):
        items: list[Any] = [images]
    else:
        items = list(images)
    if not items:
        raise InputError("no images given")
    per: list[ImagePixelSize] = []
    refused: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        img, meta, name = _load(item, i)
        try:
            optics = _optics(meta, voltage_kV, cs_mm, fit_ctf)
            ctf_optics = _optics(meta, voltage_kV, cs_mm, True) or (300.0, 2.7)
            per.append(
                _measure(
                    img,
                    meta,
                    name,
                    a_A,
                    hkls,
                    guess_pixel_size_A,
                    optics,
                    ctf_optics,
                    anisotropy_prior_percent=anisotropy_prior_percent,
                    grain_thickness_nm=grain_thickness_nm,
                )
            )
        except CalibrationError as exc:
            label = name or f"image {i}"
            if not skip_refused:
                raise CalibrationError(f"{label}: {exc}") from None
            refused.append((label, str(exc)))
        if progress is not None:
            progress(1)
    if not per:
        raise CalibrationError(
            f"no pixel size measured: all {len(items)} image(s) were refused (first: "
            f"{refused[0][0]}: {refused[0][1]})"
        )
    out = combine_image_results(per, lattice_constant_A=a_A, temperature_K=t_K)
    return replace(out, refused=tuple(refused))


# keep the frequency helper importable for the plot
_centred_frequencies = centred_frequencies
