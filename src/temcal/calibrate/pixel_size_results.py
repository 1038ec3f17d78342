"""Results of the pixel-size measurement, and how several images combine.

:class:`RingFit` (one reflection), :class:`ImagePixelSize` (one image) and
:class:`PixelSizeResult` (the joint estimate, with its JSON form), and
:func:`combine_image_results`, which averages the pixel matrices of several images with
their uncertainties (step 5 of the method in :mod:`temcal.calibrate.pixel_size`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from temcal.physics.magnification import decompose_pixel_matrix

__all__ = ["ImagePixelSize", "PixelSizeResult", "RingFit", "combine_image_results"]


@dataclass(frozen=True)
class RingFit:
    """One gold reflection as fitted in one image (or averaged over images).

    Attributes
    ----------
    hkl : str
        Miller indices, e.g. ``"111"``.
    d_A : float
        Lattice spacing used in Å.
    radius_cycles_per_px : float
        Fitted mean ring radius ``sqrt(p_major p_minor)^-1``-equivalent: ``p / d`` in
        cycles per (unbinned) pixel, where ``p`` is the fitted isotropic pixel size.
    width_per_A : float
        Fitted Gaussian-equivalent half width (sigma) of the ring profile in Å⁻¹.
    amplitude : float
        Fitted peak amplitude above the background (spectrum units).
    snr : float
        Amplitude over its standard error.
    aliased : bool
        True if the ring lies beyond Nyquist and was measured through its aliases.
    offset_percent : float or None
        Fitted shift of this ring from the shared ellipse, in % of its radius (positive:
        outward), when the rings were fitted with free offsets (their predicted
        delocalization shifts differ, see ``_fit_ring_offsets``); ``None`` otherwise.
    offset_prior_percent : float or None
        Predicted size of that shift (:func:`temcal.calibrate.ring_bias.
        calculate_ring_ctf_bias`, % of the radius), the prior standard deviation of the
        offset; ``None`` when no offsets were fitted.
    """

    hkl: str
    d_A: float
    radius_cycles_per_px: float
    width_per_A: float
    amplitude: float
    snr: float
    aliased: bool
    offset_percent: float | None = None
    offset_prior_percent: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "hkl": self.hkl,
            "d_A": self.d_A,
            "radius_cycles_per_px": self.radius_cycles_per_px,
            "width_per_A": self.width_per_A,
            "amplitude": self.amplitude,
            "snr": self.snr,
            "aliased": self.aliased,
            "offset_percent": self.offset_percent,
            "offset_prior_percent": self.offset_prior_percent,
        }


@dataclass(frozen=True)
class ImagePixelSize:
    """Pixel size measured on one image.

    Attributes
    ----------
    file : str or None
        Source file (``None`` for an array).
    pixel_matrix_A : tuple
        Fitted real-space pixel matrix ``M`` (Å/px, ``(x, y)`` order) as nested tuples.
    pixel_size_A, pixel_major_A, pixel_minor_A : float
        Isotropic equivalent ``sqrt(major * minor)`` and principal pixel sizes (Å).
    pixel_size_se_A : float
        Standard error of ``pixel_size_A`` from the fit covariance (Å).
    anisotropy_percent : float
        ``100 (major / minor - 1)``.
    major_angle_deg : float
        Direction of ``pixel_major_A`` from +x toward +y, in [0, 180).
    rings : tuple of RingFit
        Fitted reflections.
    search_significance : float
        How far the best candidate of the ring search stood out (robust z-score).
    defocus_A : float or None
        Defocus (Å, underfocus positive) of the CTF modulation fitted across the rings
        (``None`` when the fit without it was better).
    tile_size : int
        Spectrum tile size used in the fit.
    binning : int
        Binning applied to the image before the fit (1 for none).
    n_samples : int
        Number of binned spectrum samples fitted.
    header_pixel_size_A : float or None
        Pixel size found in the file header (hint only).
    header_magnification : float or None
        Magnification found in the file header.
    anisotropy_se_percent : float
        Standard error of the anisotropy (percentage points) from the scatter of the
        ring radii between azimuthal sectors.
    thon_defocus_A : float or None
        Defocus (Å, underfocus positive) fitted to the Thon rings of the support film
        (``None`` when none were found); sets the CTF-modulation uncertainty.
    ctf_bias_se_A : float
        Standard uncertainty of ``pixel_size_A`` (Å) from the CTF modulation across the
        rings (:mod:`temcal.calibrate.ring_bias`): a systematic error of this image,
        not included in ``pixel_size_se_A``.
    ring_envelope_b_A2 : float or None
        Gaussian envelope ``B`` (Å², intensity ``~ exp(-B s^2 / 2)`` beyond the gold
        scattering factor) fitted to the ring intensities, which sets the slope across
        each ring; ``None`` when fewer than two rings were significant (slope fitted).
    ring_directions : float or None
        Effective number of independent directions (of 18 sectors over half a turn)
        that carry the ring signal: about 18 for full rings, 1-5 when a few crystals'
        spots make the rings. Below 6 the scatter of single spots cannot be estimated
        from the image, a per-spot jitter model and Student-t quantiles widen the
        standard errors, and the anisotropy is poorly determined.
    min_unshifted_defocus_A : float or None
        Underfocus (Å) beyond which the CTF no longer shifts these rings
        (:func:`temcal.calibrate.ring_bias.calculate_min_unshifted_defocus_A`, for the
        ring of highest SNR): a recording recommendation for images whose
        ``ctf_bias_se_A`` matters.
    thon_sign_ambiguous : bool
        True when the Thon rings fit about as well in overfocus as in underfocus (they
        differ only through the Cs term): ``thon_defocus_A`` is then the underfocus
        value, and ``ctf_bias_se_A`` the larger of the two signs' shifts.
    crystal_tile_fraction : float or None
        Set when the image was measured on its crystal tiles alone (sparse crystals,
        see :func:`temcal.spectra.crystal_tiles.find_crystal_tiles`): the fraction of
        128-pixel tiles that hold spots; ``None`` when the whole image was used.
    free_anisotropy_percent, free_pixel_size_A : float or None
        Set when the anisotropy prior moved the result (an anisotropy the image
        determines poorly, see ``anisotropy_prior_percent`` of
        :func:`temcal.calibrate.pixel_size.measure_gold_rings`): the fit's own anisotropy
        (%) and pixel size (Å) before it; ``None`` when the prior left the fit as it was.
    relrod_correction_percent : float or None
        Set when the crystals' thickness was given (``grain_thickness_nm`` of
        :func:`temcal.calibrate.pixel_size.measure_gold_rings`): the correction applied to
        the pixel size for the inward shift of the rings of thin crystals (%, positive:
        the fit's pixel size was too small), see
        :func:`temcal.calibrate.ring_bias.calculate_relrod_shift`.
    """

    file: str | None
    pixel_matrix_A: tuple[tuple[float, float], tuple[float, float]]
    pixel_size_A: float
    pixel_size_se_A: float
    pixel_major_A: float
    pixel_minor_A: float
    anisotropy_percent: float
    major_angle_deg: float
    rings: tuple[RingFit, ...]
    search_significance: float
    defocus_A: float | None
    tile_size: int
    binning: int
    n_samples: int
    header_pixel_size_A: float | None = None
    header_magnification: float | None = None
    anisotropy_se_percent: float = float("nan")
    thon_defocus_A: float | None = None
    ctf_bias_se_A: float = 0.0
    ring_envelope_b_A2: float | None = None
    ring_directions: float | None = None
    min_unshifted_defocus_A: float | None = None
    crystal_tile_fraction: float | None = None
    thon_sign_ambiguous: bool = False
    free_anisotropy_percent: float | None = None
    free_pixel_size_A: float | None = None
    relrod_correction_percent: float | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (without the plot diagnostics)."""
        return {
            "file": self.file,
            "pixel_size_A": self.pixel_size_A,
            "pixel_size_se_A": self.pixel_size_se_A,
            "pixel_major_A": self.pixel_major_A,
            "pixel_minor_A": self.pixel_minor_A,
            "anisotropy_percent": self.anisotropy_percent,
            "major_angle_deg": self.major_angle_deg,
            "pixel_matrix_A": [list(r) for r in self.pixel_matrix_A],
            "rings": [r.to_dict() for r in self.rings],
            "search_significance": self.search_significance,
            "tile_size": self.tile_size,
            "binning": self.binning,
            "n_samples": self.n_samples,
            "header_pixel_size_A": self.header_pixel_size_A,
            "header_magnification": self.header_magnification,
            "anisotropy_se_percent": self.anisotropy_se_percent,
            "thon_defocus_A": self.thon_defocus_A,
            "ctf_bias_se_A": self.ctf_bias_se_A,
            "ring_envelope_b_A2": self.ring_envelope_b_A2,
            "ring_directions": self.ring_directions,
            "min_unshifted_defocus_A": self.min_unshifted_defocus_A,
            "crystal_tile_fraction": self.crystal_tile_fraction,
            "thon_sign_ambiguous": self.thon_sign_ambiguous,
            "free_anisotropy_percent": self.free_anisotropy_percent,
            "free_pixel_size_A": self.free_pixel_size_A,
            "relrod_correction_percent": self.relrod_correction_percent,
        }


@dataclass(frozen=True)
class PixelSizeResult:
    """Joint pixel size and anisotropic magnification of one or more gold images.

    Attributes
    ----------
    pixel_size_A : float
        ``sqrt(pixel_major_A * pixel_minor_A)`` in Å.
    pixel_size_ci95_A : float
        Half-width of the 95 % interval of ``pixel_size_A`` (Å); see ``ci_method``.
    pixel_major_A, pixel_minor_A : float
        Principal pixel sizes (Å).
    anisotropy_percent : float
        ``100 (pixel_major_A / pixel_minor_A - 1)``.
    anisotropy_ci95_percent : float
        Half-width of the 95 % interval of the anisotropy (percentage points).
    major_angle_deg : float
        Direction of ``pixel_major_A`` from +x (column index increasing) toward +y
        (row index increasing), in [0, 180).
    pixel_matrix_A : tuple
        Joint pixel matrix ``M`` (Å/px, ``(x, y)`` order).
    lattice_constant_A : float
        Gold lattice constant used (Å).
    temperature_K : float or None
        Specimen temperature behind the lattice constant (``None`` when a lattice
        constant was given directly).
    rings : tuple of RingFit
        Per-reflection results averaged over the images.
    images : tuple of ImagePixelSize
        Per-image results.
    ci_method : str
        How the statistical part of the interval was obtained: ``"student-t over
        images"`` or ``"fit covariance (one image)"``.
    method : str
        Short description of the estimator.
    pixel_size_ci95_statistical_A : float
        Statistical part of the 95 % half-width (Å).
    pixel_size_ctf_bias_se_A : float
        Standard uncertainty (Å) of the systematic shift of broad rings by the CTF
        modulation (:mod:`temcal.calibrate.ring_bias`), combined over the images with
        their weights: fully correlated within a defocus group, independent between
        groups (defoci more than 150 Å apart). ``pixel_size_ci95_A`` is
        ``sqrt(statistical^2 + (1.96 pixel_size_ctf_bias_se_A)^2)``.
    n_defocus_groups : int
        Number of groups of images with defoci within 150 Å of each other.
    refused : tuple of (str, str)
        Images left out with ``skip_refused=True`` (``--skip-refused``): their name and
        why no pixel size was measured in them.
    """

    pixel_size_A: float
    pixel_size_ci95_A: float
    pixel_major_A: float
    pixel_minor_A: float
    anisotropy_percent: float
    anisotropy_ci95_percent: float
    major_angle_deg: float
    pixel_matrix_A: tuple[tuple[float, float], tuple[float, float]]
    lattice_constant_A: float
    temperature_K: float | None
    rings: tuple[RingFit, ...]
    images: tuple[ImagePixelSize, ...]
    ci_method: str
    method: str = "joint elliptical multi-ring spectrum fit (temcal)"
    pixel_size_ci95_statistical_A: float = float("nan")
    pixel_size_ctf_bias_se_A: float = 0.0
    n_defocus_groups: int = 1
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def n_images(self) -> int:
        """Number of images measured."""
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``temcal pixel-size --json`` (plus extra keys)."""
        import temcal

        return {
            "pixel_size_A": self.pixel_size_A,
            "pixel_size_ci95_A": self.pixel_size_ci95_A,
            "pixel_major_A": self.pixel_major_A,
            "pixel_minor_A": self.pixel_minor_A,
            "anisotropy_percent": self.anisotropy_percent,
            "anisotropy_ci95_percent": self.anisotropy_ci95_percent,
            "major_angle_deg": self.major_angle_deg,
            "pixel_matrix_A": [list(r) for r in self.pixel_matrix_A],
            "lattice_constant_A": self.lattice_constant_A,
            "temperature_K": self.temperature_K,
            "rings": [r.to_dict() for r in self.rings],
            "images": [im.to_dict() for im in self.images],
            "n_images": self.n_images,
            "ci_method": self.ci_method,
            "error_budget": {
                "statistical_ci95_A": self.pixel_size_ci95_statistical_A,
                "ctf_modulation_se_A": self.pixel_size_ctf_bias_se_A,
                "ctf_modulation_ci95_A": 1.96 * self.pixel_size_ctf_bias_se_A,
                "n_defocus_groups": self.n_defocus_groups,
            },
            "refused_images": [{"file": f, "reason": r} for f, r in self.refused],
            "method": self.method,
            "temcal_version": temcal.__version__,
        }


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are set (``None`` when none is)."""
    got = [float(v) for v in values if v is not None]
    return float(np.mean(got)) if got else None


def combine_image_results(
    per: Sequence[ImagePixelSize], *, lattice_constant_A: float, temperature_K: float | None
) -> PixelSizeResult:
    """Joint estimate of several per-image results.

    The pixel matrices are averaged with weights ``1 / (se_i^2 + b_i^2)``, where
    ``se_i`` is an image's statistical error (not below the median over the images, so
    one image cannot dominate) and ``b_i`` its CTF-modulation uncertainty: images whose
    broad rings sit where the CTF shifts them most (near focus) count less. The
    statistical 95 % interval is Student-t on the weighted spread of the images, but not
    narrower than the images' own standard errors allow (``1.96 sqrt(sum w_i^2 se_i^2)``):
    a few images that agree by chance, or share a bias of the specimen, must not shrink
    it below what each measures (three benchmark images of one case agreed within
    0.004 %, an interval of 0.008 % that missed their shared -0.04 %). The
    CTF-modulation part treats images of one defocus group (within 150 Å) as fully
    correlated and different groups as independent.
    """
    Ms = np.array([np.array(im.pixel_matrix_A) for im in per])
    n = len(per)
    se_own = np.nan_to_num(np.array([im.pixel_size_se_A for im in per], dtype=float), nan=0.0)
    se = np.maximum(se_own, float(np.median(se_own)) if n else 0.0)
    bias = np.array([im.ctf_bias_se_A for im in per], dtype=float)
    var = se * se + bias * bias
    if np.all(var > 0) and np.all(np.isfinite(var)):
        wts = 1.0 / var
    else:
        wts = np.ones(n)
    wts = wts / wts.sum()
    M = np.einsum("i,ijk->jk", wts, Ms)
    geom = decompose_pixel_matrix(M)
    if n >= 2:
        ps = np.array([im.pixel_size_A for im in per])
        an = np.array([im.anisotropy_percent for im in per])
        t = float(stats.t.ppf(0.975, n - 1))
        n_eff = 1.0 / float(np.sum(wts * wts))
        sd_p = math.sqrt(float(np.sum(wts * (ps - np.sum(wts * ps)) ** 2)) * n / (n - 1))
        sd_a = math.sqrt(float(np.sum(wts * (an - np.sum(wts * an)) ** 2)) * n / (n - 1))
        ase = np.array([im.anisotropy_se_percent for im in per], dtype=float)
        own_p = math.sqrt(float(np.sum(wts * wts * se_own * se_own)))
        own_a = math.sqrt(float(np.sum(wts * wts * np.nan_to_num(ase, nan=0.0) ** 2)))
        ci = max(t * sd_p / math.sqrt(n_eff), 1.96 * own_p)
        ci_an = max(t * sd_a / math.sqrt(n_eff), 1.96 * own_a)
        method = "student-t over images"
    else:
        ci = 1.96 * per[0].pixel_size_se_A
        ci_an = 1.96 * per[0].anisotropy_se_percent
        method = "fit covariance (one image)"
    groups = _defocus_group_labels([im.thon_defocus_A for im in per])
    n_groups = int(groups.max()) + 1
    bias_se = math.sqrt(
        sum(float(np.sum(wts[groups == g] * bias[groups == g])) ** 2 for g in range(n_groups))
    )
    ci_total = math.sqrt(ci * ci + (1.96 * bias_se) ** 2)
    # per-ring summary over images
    ring_keys: dict[str, list[RingFit]] = {}
    for im in per:
        for r in im.rings:
            ring_keys.setdefault(r.hkl, []).append(r)
    rings = tuple(
        RingFit(
            hkl=k,
            d_A=v[0].d_A,
            radius_cycles_per_px=float(np.mean([r.radius_cycles_per_px for r in v])),
            width_per_A=float(np.mean([r.width_per_A for r in v])),
            amplitude=float(np.mean([r.amplitude for r in v])),
            snr=float(math.sqrt(sum(r.snr**2 for r in v if math.isfinite(r.snr)))),
            aliased=any(r.aliased for r in v),
            offset_percent=_mean_or_none([r.offset_percent for r in v]),
            offset_prior_percent=_mean_or_none([r.offset_prior_percent for r in v]),
        )
        for k, v in ring_keys.items()
    )
    return PixelSizeResult(
        pixel_size_A=geom.pixel_size_A,
        pixel_size_ci95_A=ci_total,
        pixel_major_A=geom.pixel_major_A,
        pixel_minor_A=geom.pixel_minor_A,
        anisotropy_percent=geom.anisotropy_percent,
        anisotropy_ci95_percent=ci_an,
        major_angle_deg=geom.major_angle_deg,
        pixel_matrix_A=((float(M[0, 0]), float(M[0, 1])), (float(M[1, 0]), float(M[1, 1]))),
        lattice_constant_A=lattice_constant_A,
        temperature_K=temperature_K,
        rings=rings,
        images=tuple(per),
        ci_method=method,
        pixel_size_ci95_statistical_A=ci,
        pixel_size_ctf_bias_se_A=bias_se,
        n_defocus_groups=n_groups,
    )


def _defocus_group_labels(defoci: Sequence[float | None], gap_A: float = 150.0) -> np.ndarray:
    """Group label of each image: defoci within ``gap_A`` of their neighbours share one.

    The CTF shift of a ring oscillates with defocus (period about 280 Å for the 111 ring
    at 300 kV), so images in different groups have independent shifts. When any image
    has no defocus (no Thon rings), all images form one group (conservative).
    """
    n = len(defoci)
    if n == 0 or any(d is None for d in defoci):
        return np.zeros(n, dtype=np.int64)
    vals = np.array([float(d) for d in defoci if d is not None])
    order = np.argsort(vals)
    labels = np.zeros(n, dtype=np.int64)
    g = 0
    for a, b in itertools.pairwise(order):
        if vals[b] - vals[a] > gap_A:
            g += 1
        labels[b] = g
    return labels
