"""Simulated defocus series of an amorphous specimen (Thon rings with a known answer).

Each micrograph is formed by :func:`temcal.simulate.imaging.form_image`: a weak random
phase object (amorphous carbon / ice: Gaussian random phase with a 1/f-like power
spectrum ``P(k) ~ 1 / sqrt(k^2 + k0^2)``) with amplitude contrast, the lens transfer
``exp(+i chi)`` with defocus, astigmatism, Cs and an optional phase shift, the temporal,
spatial and B-factor envelopes, detector-pixel integration and Poisson noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import fft as sfft

from temcal.errors import InputError
from temcal.physics.ctf import CTFParameters, calculate_envelope
from temcal.physics.magnification import pixel_matrix_A as make_pixel_matrix
from temcal.physics.wavelength import check_voltage_kV
from temcal.simulate.imaging import amplitude_contrast_absorption, form_image

__all__ = [
    "CtfSeries",
    "simulate_amorphous_phase",
    "simulate_ctf_micrograph",
    "simulate_ctf_series",
]


@dataclass(frozen=True)
class CtfSeries:
    """A simulated defocus series and its truth.

    Attributes
    ----------
    images : tuple of numpy.ndarray
        Micrographs (counts per pixel), each of shape ``shape``.
    truths : tuple of CTFParameters
        The CTF each micrograph was simulated with.
    pixel_size_A : float
        Isotropic pixel size in Å.
    pixel_sizes_A : tuple of float
        Each micrograph's own pixel size in Å (differs from ``pixel_size_A`` when a
        magnification change with defocus was simulated).
    voltage_kV, cs_mm : float
        Accelerating voltage and spherical aberration.
    dose_e_per_A2 : float
        Dose of each micrograph.
    """

    images: tuple[np.ndarray, ...]
    truths: tuple[CTFParameters, ...]
    pixel_size_A: float
    pixel_sizes_A: tuple[float, ...]
    voltage_kV: float
    cs_mm: float
    dose_e_per_A2: float


def simulate_amorphous_phase(
    shape: tuple[int, int],
    *,
    pixel_size_A: float,
    rng: np.random.Generator,
    rms_phase_rad: float = 0.1,
    corner_frequency_per_A: float = 0.02,
) -> np.ndarray:
    """Random projected phase of an amorphous film with a 1/f-like spectrum.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    pixel_size_A : float
        Grid spacing in Å.
    rng : numpy.random.Generator
        Random generator.
    rms_phase_rad : float
        Root-mean-square phase (rad) of the film.
    corner_frequency_per_A : float
        ``k0`` of the power spectrum ``1 / sqrt(k^2 + k0^2)`` (Å⁻¹).

    Returns
    -------
    numpy.ndarray
        Phase in rad, zero mean, shape ``shape``.
    """
    ny, nx = shape
    ky = sfft.fftfreq(ny, d=pixel_size_A)
    kx = sfft.rfftfreq(nx, d=pixel_size_A)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    amp = (k2 + corner_frequency_per_A**2) ** -0.25
    amp[0, 0] = 0.0
    noise = rng.standard_normal((ny, nx))
    field = sfft.irfft2(sfft.rfft2(noise) * amp, s=(ny, nx))
    field -= field.mean()
    return field * (rms_phase_rad / float(field.std()))


def simulate_ctf_micrograph(
    params: CTFParameters,
    shape: tuple[int, int],
    *,
    pixel_size_A: float,
    rng: np.random.Generator,
    dose_e_per_A2: float | None = 40.0,
    oversample: int = 2,
    rms_phase_rad: float = 0.1,
    anisotropy_percent: float = 0.0,
    anisotropy_angle_deg: float = 0.0,
    extra_phase_rad: np.ndarray | None = None,
    gold_edge: bool = False,
) -> np.ndarray:
    """One micrograph of an amorphous film imaged with the CTF ``params``.

    Parameters
    ----------
    params : CTFParameters
        Defocus (Å, underfocus positive), astigmatism, Cs, voltage, amplitude contrast,
        phase shift and envelopes.
    shape : tuple of int
        Detector image shape ``(ny, nx)``.
    pixel_size_A : float
        Isotropic equivalent detector pixel size in Å.
    rng : numpy.random.Generator
        Random generator (specimen and shot noise).
    dose_e_per_A2 : float or None
        Dose in e⁻/Å²; ``None`` gives the noise-free intensity.
    oversample : int
        Fine grid points per detector pixel (detector integration and aliasing).
    rms_phase_rad : float
        RMS phase of the amorphous film.
    anisotropy_percent, anisotropy_angle_deg : float
        Anisotropic magnification of the pixel matrix (see
        :func:`temcal.physics.magnification.pixel_matrix_A`).
    extra_phase_rad : numpy.ndarray, optional
        Additional projected phase on the fine grid (e.g. gold grains).
    gold_edge : bool
        Add a polycrystalline gold foil (10 nm grains) over the left 20 % of the field
        (:mod:`temcal.simulate.gold`), as a HexAuFoil hole edge.

    Returns
    -------
    numpy.ndarray
        Image of shape ``shape``.
    """
    ny, nx = shape
    os_ = int(oversample)
    fine = (ny * os_, nx * os_)
    phase = simulate_amorphous_phase(
        fine, pixel_size_A=pixel_size_A / os_, rng=rng, rms_phase_rad=rms_phase_rad
    )
    if extra_phase_rad is not None:
        phase = phase + extra_phase_rad
    m = make_pixel_matrix(pixel_size_A, anisotropy_percent, anisotropy_angle_deg)
    if gold_edge:
        from temcal.simulate.gold import place_gold_grains, render_gold_phase

        grains = place_gold_grains(
            shape, pixel_matrix_A=m, kind="foil", coverage=0.2, grain_size_nm=10.0, rng=rng
        )
        phase = phase + render_gold_phase(
            shape, grains, pixel_matrix_A=m, oversample=os_, voltage_kV=params.voltage_kV
        )
    has_env = params.b_factor_A2 or params.focal_spread_A or params.illumination_semiangle_mrad
    return form_image(
        phase,
        pixel_matrix_A=m,
        oversample=os_,
        # chi(0) = 0: a phase shift acts on the scattered wave only (the shared
        # form_image keeps the phase of the zero-frequency transfer)
        chi=lambda gx, gy: np.where((gx == 0) & (gy == 0), 0.0, params.chi(gx, gy)),
        absorption=amplitude_contrast_absorption(params.amplitude_contrast),
        envelope=(
            (
                lambda gx, gy: calculate_envelope(
                    gx,
                    gy,
                    defocus_u_A=params.defocus_u_A,
                    defocus_v_A=params.defocus_v_A,
                    astig_angle_deg=params.astig_angle_deg,
                    cs_mm=params.cs_mm,
                    voltage_kV=params.voltage_kV,
                    focal_spread_A=params.focal_spread_A,
                    illumination_semiangle_mrad=params.illumination_semiangle_mrad,
                    b_factor_A2=params.b_factor_A2,
                )
            )
            if has_env
            else None
        ),
        dose_e_per_A2=dose_e_per_A2,
        rng=rng,
    )


def simulate_ctf_series(
    *,
    n_micrographs: int,
    shape: tuple[int, int],
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    rng: np.random.Generator,
    defocus_range_A: tuple[float, float] = (5000.0, 25000.0),
    astigmatism_A: float = 500.0,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float = 0.0,
    b_factor_A2: float = 10.0,
    focal_spread_A: float = 0.0,
    illumination_semiangle_mrad: float = 0.0,
    dose_e_per_A2: float | None = 100.0,
    oversample: int = 2,
    magnification_change_percent_per_um: float = 0.0,
    gold_edge: bool = False,
) -> CtfSeries:
    """A defocus series: mean defoci evenly spaced over ``defocus_range_A``.

    Each micrograph gets the astigmatism ``defocus_u - defocus_v = astigmatism_A`` at a
    random azimuth. ``magnification_change_percent_per_um`` makes the pixel size of
    micrograph ``i`` equal ``pixel_size_A * (1 + c (dz_i - dz_mean) / 1e4 / 100)``.
    ``gold_edge`` adds a gold foil edge to every micrograph (see
    :func:`simulate_ctf_micrograph`).

    Returns
    -------
    CtfSeries
        Images and truth.
    """
    check_voltage_kV(voltage_kV)
    if n_micrographs < 1:
        raise InputError("a series needs at least one micrograph")
    if pixel_size_A <= 0 or not math.isfinite(pixel_size_A):
        raise InputError(f"pixel size {pixel_size_A} Å must be positive")
    lo, hi = defocus_range_A
    means = np.linspace(lo, hi, n_micrographs) if n_micrographs > 1 else np.array([lo])
    base = CTFParameters(
        defocus_u_A=0.0,
        defocus_v_A=0.0,
        astig_angle_deg=0.0,
        cs_mm=cs_mm,
        voltage_kV=voltage_kV,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_shift_deg,
        b_factor_A2=b_factor_A2,
        focal_spread_A=focal_spread_A,
        illumination_semiangle_mrad=illumination_semiangle_mrad,
    )
    images, truths, pixels = [], [], []
    dz_mean = float(np.mean(means))
    for dz in means:
        angle = float(rng.uniform(0.0, 180.0))
        p = replace(
            base,
            defocus_u_A=float(dz + 0.5 * astigmatism_A),
            defocus_v_A=float(dz - 0.5 * astigmatism_A),
            astig_angle_deg=angle,
        )
        pix = pixel_size_A * (1.0 + magnification_change_percent_per_um * (dz - dz_mean) / 1e6)
        images.append(
            simulate_ctf_micrograph(
                p,
                shape,
                pixel_size_A=pix,
                rng=rng,
                dose_e_per_A2=dose_e_per_A2,
                oversample=oversample,
                gold_edge=gold_edge,
            )
        )
        truths.append(p)
        pixels.append(float(pix))
    return CtfSeries(
        images=tuple(images),
        truths=tuple(truths),
        pixel_size_A=float(pixel_size_A),
        pixel_sizes_A=tuple(pixels),
        voltage_kV=float(voltage_kV),
        cs_mm=float(cs_mm),
        dose_e_per_A2=float(dose_e_per_A2) if dose_e_per_A2 is not None else float("nan"),
    )
