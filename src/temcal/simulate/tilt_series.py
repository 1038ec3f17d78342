"""Simulate beam-tilt series of an amorphous specimen with known axial aberrations.

For a beam tilt ``tau`` (complex, rad, image frame) the incident wave is
``exp(2 pi i tau.r / lambda)``; the exit-wave component at specimen frequency ``g`` passes
the lens at ``g + tau / lambda`` and so picks up ``W(tau + lambda g)``. The tilt carrier
drops out of the intensity, so the image is :func:`temcal.simulate.imaging.form_image` with

``chi(g) = -(2 pi / lambda) [W(tau + lambda g) - W(tau)]``

(temcal's underfocus-positive chi, ``chi = -2 pi W / lambda``), built from the full set of
:class:`~temcal.physics.aberrations.AxialAberrations` (defocus, astigmatism, coma, three-fold,
Cs, star, four-fold). Its linear part shifts the image by ``delta(tau) = 2 dW/dwbar``; its
even part is a CTF with the tilt-induced defocus and astigmatism.

Tilts are given in the *microscope's* (manifest) frame; the image-frame tilt is
``tau = exp(i theta) t`` (or ``exp(i theta) conj(t)`` with ``mirror``), ``theta`` =
``frame_rotation_deg``. The specimen drifts as a Gaussian random walk in acquisition order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft as sfft

from temcal.errors import InputError
from temcal.physics.aberrations import (
    AxialAberrations,
    calculate_aberration_function_A,
    calculate_tilt_image_shift_A,
)
from temcal.physics.wavelength import calculate_wavelength_A
from temcal.simulate.imaging import (
    amplitude_contrast_absorption,
    form_image,
    specimen_frequencies_per_A,
)

__all__ = [
    "TiltSeries",
    "calculate_tilted_chi",
    "design_tilts_mrad",
    "manifest_to_image_tilt_rad",
    "simulate_amorphous_phase",
    "simulate_tilt_series",
    "write_tilt_series",
]


def design_tilts_mrad(
    magnitudes_mrad: tuple[float, ...] | list[float] = (5.0, 10.0),
    n_azimuths: int = 12,
    *,
    reference_every: int = 0,
    start_azimuth_deg: float = 0.0,
    interleave: bool = True,
) -> np.ndarray:
    """A tilt design in acquisition order, ``(n, 2)`` array of ``(tilt_x, tilt_y)`` in mrad.

    The series starts with an untilted reference. Azimuths are visited as ``+tau, -tau``
    pairs (when ``n_azimuths`` is even) so that the drift between the two images of a pair
    is one step. With ``interleave`` (default) the magnitudes alternate pair by pair and
    the azimuth pairs are visited in a stride order (0, h/2, 1, h/2 + 1, ...), so that the
    even (coma, three-fold) terms and the ``|tau|^2`` terms change quickly along the
    acquisition order and are not mistaken for a slow drift; otherwise the magnitudes are
    recorded one after the other, azimuths in order. ``reference_every > 0`` inserts an
    untilted image after every that many tilted images.
    """
    if n_azimuths < 1:
        raise InputError(f"n_azimuths={n_azimuths} must be >= 1")
    if n_azimuths % 2 == 0:
        half = n_azimuths // 2
        pair_order = list(range(half))
        if interleave:
            h2 = (half + 1) // 2
            pair_order = [j for k in range(h2) for j in (k, k + h2) if j < half]
        groups = [[j, j + half] for j in pair_order]
    else:
        groups = [[k] for k in range(n_azimuths)]
    mags = list(magnitudes_mrad)
    if interleave:
        sequence = [(m, k) for g in groups for m in mags for k in g]
    else:
        sequence = [(m, k) for m in mags for g in groups for k in g]
    rows: list[tuple[float, float]] = [(0.0, 0.0)]
    for count, (mag, k) in enumerate(sequence, start=1):
        phi = math.radians(start_azimuth_deg + 360.0 * k / n_azimuths)
        rows.append((mag * math.cos(phi), mag * math.sin(phi)))
        if reference_every > 0 and count % reference_every == 0:
            rows.append((0.0, 0.0))
    return np.asarray(rows, dtype=float)


def manifest_to_image_tilt_rad(
    tilts_mrad: np.ndarray, *, frame_rotation_deg: float, mirror: bool = False
) -> np.ndarray:
    """Image-frame complex tilts (rad) from manifest tilts ``(n, 2)`` in mrad.

    ``tau = 1e-3 exp(i theta) t`` with ``t = tilt_x + i tilt_y`` (``conj(t)`` if mirrored).
    """
    t = np.asarray(tilts_mrad, dtype=float)
    z = t[:, 0] + 1j * t[:, 1]
    if mirror:
        z = np.conj(z)
    return 1e-3 * np.exp(1j * math.radians(frame_rotation_deg)) * z


def calculate_tilted_chi(
    gx_per_A: np.ndarray,
    gy_per_A: np.ndarray,
    *,
    tau_rad: complex,
    aberrations: AxialAberrations,
    voltage_kV: float,
) -> np.ndarray:
    """Phase aberration chi (rad, temcal sign) of the wave scattered to ``g`` at tilt ``tau``.

    ``chi(g) = -(2 pi / lambda) [W(tau + lambda g) - W(tau)]``; ``g`` in Å⁻¹.
    """
    lam = calculate_wavelength_A(voltage_kV)
    omega = tau_rad + lam * (np.asarray(gx_per_A) + 1j * np.asarray(gy_per_A))
    w = calculate_aberration_function_A(omega, aberrations)
    w0 = float(calculate_aberration_function_A(complex(tau_rad), aberrations))
    return -(2.0 * math.pi / lam) * (w - w0)


def simulate_amorphous_phase(
    shape: tuple[int, int],
    *,
    pixel_size_A: float,
    rng: np.random.Generator,
    phase_rms_rad: float = 0.1,
    correlation_length_A: float = 1.0,
) -> np.ndarray:
    """Carbon-like amorphous projected phase: Gaussian random field (periodic).

    White noise low-pass filtered by ``exp(-(pi g L)^2)`` (``L`` = correlation length, Å),
    scaled to an rms phase of ``phase_rms_rad``.
    """
    ny, nx = shape
    gy = sfft.fftfreq(ny, d=pixel_size_A)[:, None]
    gx = sfft.fftfreq(nx, d=pixel_size_A)[None, :]
    filt = np.exp(-((math.pi * correlation_length_A) ** 2) * (gx * gx + gy * gy))
    noise = sfft.fft2(rng.standard_normal(shape))
    field_ = sfft.ifft2(noise * filt).real
    field_ -= field_.mean()
    return field_ * (phase_rms_rad / float(field_.std()))


@dataclass(frozen=True)
class TiltSeries:
    """A simulated tilt series and its ground truth.

    Attributes
    ----------
    images : numpy.ndarray
        Images ``(n, ny, nx)`` in acquisition order (counts, or relative intensity).
    tilts_mrad : numpy.ndarray
        Manifest-frame tilts ``(n, 2)`` in mrad.
    tau_rad : numpy.ndarray
        Image-frame complex tilts (rad).
    drift_A : numpy.ndarray
        Specimen drift ``(n, 2)`` in Å, ``(x, y)``, zero for the first image.
    shift_A : numpy.ndarray
        True image shifts ``(n, 2)`` (Å): ``delta(tau)`` plus drift.
    aberrations : AxialAberrations
        Lens aberrations (image frame).
    pixel_size_A, voltage_kV, frame_rotation_deg : float
        Sampling, voltage and tilt-frame rotation.
    mirror : bool
        Whether the tilt frame is mirrored relative to the image frame.
    dose_e_per_A2 : float or None
        Dose per image (``None`` = noise-free).
    """

    images: np.ndarray
    tilts_mrad: np.ndarray
    tau_rad: np.ndarray
    drift_A: np.ndarray
    shift_A: np.ndarray
    aberrations: AxialAberrations
    pixel_size_A: float
    voltage_kV: float
    frame_rotation_deg: float
    mirror: bool
    dose_e_per_A2: float | None
    extra: dict[str, float] = field(default_factory=dict)


def simulate_tilt_series(
    tilts_mrad: np.ndarray,
    *,
    aberrations: AxialAberrations,
    pixel_size_A: float,
    voltage_kV: float,
    shape: tuple[int, int],
    rng: np.random.Generator,
    frame_rotation_deg: float = 0.0,
    mirror: bool = False,
    drift_step_A: float = 0.0,
    dose_e_per_A2: float | None = None,
    amplitude_contrast: float = 0.07,
    b_factor_A2: float = 20.0,
    phase_rms_rad: float = 0.1,
    workers: int = 1,
) -> TiltSeries:
    """Simulate images of one amorphous area at a series of beam tilts.

    Parameters
    ----------
    tilts_mrad : numpy.ndarray
        ``(n, 2)`` tilts in the microscope (manifest) frame, mrad, in acquisition order.
    aberrations : AxialAberrations
        Axial aberrations in the image frame (Å).
    pixel_size_A : float
        Pixel size (Å, isotropic).
    voltage_kV : float
        Accelerating voltage.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    rng : numpy.random.Generator
        Random generator (specimen, drift, shot noise).
    frame_rotation_deg : float
        Angle turning a manifest tilt into the image frame (+x toward +y).
    mirror : bool
        Mirror the tilt frame (``t -> conj(t)`` before rotating).
    drift_step_A : float
        RMS length of each random-walk drift step between consecutive images (Å).
    dose_e_per_A2 : float, optional
        Dose per image; ``None`` gives noise-free intensities.
    amplitude_contrast : float
        Amplitude-contrast fraction.
    b_factor_A2 : float
        Amplitude envelope ``exp(-B g^2 / 4)`` on the scattered wave.
    phase_rms_rad : float
        RMS projected phase of the amorphous specimen.
    workers : int
        FFT threads.

    Returns
    -------
    TiltSeries
    """
    t = np.asarray(tilts_mrad, dtype=float)
    if t.ndim != 2 or t.shape[1] != 2 or len(t) < 1:
        raise InputError("tilts_mrad must be an (n, 2) array")
    if pixel_size_A <= 0:
        raise InputError(f"pixel size {pixel_size_A} Å must be positive")
    n = len(t)
    tau = manifest_to_image_tilt_rad(t, frame_rotation_deg=frame_rotation_deg, mirror=mirror)
    steps = rng.normal(0.0, drift_step_A / math.sqrt(2.0), size=(n, 2))
    steps[0] = 0.0
    drift = np.cumsum(steps, axis=0)
    phase = simulate_amorphous_phase(
        shape, pixel_size_A=pixel_size_A, rng=rng, phase_rms_rad=phase_rms_rad
    )
    phase_ft = sfft.fft2(phase, workers=workers)
    m = np.diag([pixel_size_A, pixel_size_A])
    gx, gy = specimen_frequencies_per_A(shape, m, 1)
    absorption = amplitude_contrast_absorption(amplitude_contrast)

    def envelope(ex: np.ndarray, ey: np.ndarray) -> np.ndarray:
        return np.exp(-0.25 * b_factor_A2 * (ex * ex + ey * ey))

    images = np.empty((n, *shape), dtype=np.float64)
    for i in range(n):
        # specimen drifted by d: f(r - d)  <->  F(g) exp(-2 pi i g.d)
        ramp = np.exp(-2j * math.pi * (gx * drift[i, 0] + gy * drift[i, 1]))
        ph = sfft.ifft2(phase_ft * ramp, workers=workers).real
        tau_i = complex(tau[i])

        def chi(ex: np.ndarray, ey: np.ndarray, tau_i: complex = tau_i) -> np.ndarray:
            return calculate_tilted_chi(
                ex, ey, tau_rad=tau_i, aberrations=aberrations, voltage_kV=voltage_kV
            )

        images[i] = form_image(
            ph,
            pixel_matrix_A=m,
            oversample=1,
            chi=chi,
            absorption=absorption,
            envelope=envelope,
            dose_e_per_A2=dose_e_per_A2,
            rng=rng,
            workers=workers,
        )
    delta = calculate_tilt_image_shift_A(tau, aberrations)
    shift = np.stack([delta.real, delta.imag], axis=1) + drift
    return TiltSeries(
        images=images,
        tilts_mrad=t,
        tau_rad=tau,
        drift_A=drift,
        shift_A=shift,
        aberrations=aberrations,
        pixel_size_A=float(pixel_size_A),
        voltage_kV=float(voltage_kV),
        frame_rotation_deg=float(frame_rotation_deg),
        mirror=bool(mirror),
        dose_e_per_A2=dose_e_per_A2,
    )


def write_tilt_series(series: TiltSeries, outdir: Path, *, overwrite: bool = False) -> Path:
    """Write MRC images, ``tilts.csv`` (``path,tilt_x_mrad,tilt_y_mrad``) and ``truth.json``.

    Returns the manifest path. Refuses to overwrite existing files unless ``overwrite``.
    """
    from temcal.io.images import write_mrc
    from temcal.io.output import check_output_path, write_json, write_text

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    names = [f"tilt_{i:03d}.mrc" for i in range(len(series.images))]
    manifest = outdir / "tilts.csv"
    truth_path = outdir / "truth.json"
    for p in [manifest, truth_path, *(outdir / nm for nm in names)]:
        check_output_path(p, overwrite=overwrite)
    for nm, img in zip(names, series.images, strict=True):
        write_mrc(outdir / nm, img, pixel_size_A=series.pixel_size_A, overwrite=overwrite)
    lines = ["path,tilt_x_mrad,tilt_y_mrad"]
    lines += [
        f"{nm},{tx:.6f},{ty:.6f}" for nm, (tx, ty) in zip(names, series.tilts_mrad, strict=True)
    ]
    write_text(manifest, "\n".join(lines) + "\n", overwrite=overwrite)
    k = series.aberrations.to_krivanek()
    truth = {
        "cs_mm": series.aberrations.C3_A * 1e-7,
        "defocus_A": -series.aberrations.C1_A,
        "tilt_frame_rotation_deg": series.frame_rotation_deg % 360.0,
        "mirror": series.mirror,
        "pixel_size_A": series.pixel_size_A,
        "voltage_kV": series.voltage_kV,
        "dose_e_per_A2": series.dose_e_per_A2,
        "aberrations_krivanek": k,
        "drift_A": series.drift_A,
        "shift_A": series.shift_A,
    }
    write_json(truth_path, truth, overwrite=overwrite)
    return manifest
