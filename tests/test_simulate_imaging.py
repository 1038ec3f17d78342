"""The shared image formation reproduces the CTF of physics/ctf.py."""

from __future__ import annotations

import numpy as np
import pytest

from temcal.physics.ctf import calculate_chi, calculate_ctf
from temcal.physics.magnification import pixel_matrix_A
from temcal.simulate.imaging import (
    amplitude_contrast_absorption,
    form_image,
    specimen_frequencies_per_A,
)


def test_weak_phase_transfer_equals_ctf(rng: np.random.Generator) -> None:
    n = 128
    phase = 1e-4 * rng.normal(size=(n, n))
    m = pixel_matrix_A(1.3, 2.0, 25.0)
    kw = dict(
        defocus_u_A=12000.0, defocus_v_A=9000.0, astig_angle_deg=40.0, cs_mm=2.7, voltage_kV=300
    )
    img = form_image(
        phase,
        pixel_matrix_A=m,
        oversample=1,
        chi=lambda gx, gy: calculate_chi(gx, gy, **kw),
        absorption=amplitude_contrast_absorption(0.1),
    )
    gx, gy = specimen_frequencies_per_A((n, n), m)
    ctf = calculate_ctf(gx, gy, amplitude_contrast=0.1, **kw)
    # linear image: I - 1 = 2 * CTF * phase / sqrt(1 - A^2) ... normalised by sqrt(1+eta^2)
    eta = amplitude_contrast_absorption(0.1)
    expected = 2 * ctf * np.sqrt(1 + eta**2) * np.fft.fft2(phase)
    got = np.fft.fft2(img - 1.0)
    got[0, 0] = expected[0, 0] = 0
    # the Nyquist row/column has no distinct Hermitian partner on a discrete grid
    inside = (np.abs(np.fft.fftfreq(n))[:, None] < 0.5) & (np.abs(np.fft.fftfreq(n))[None, :] < 0.5)
    rel = np.abs(got - expected)[inside].max() / np.abs(expected).max()
    assert rel < 2e-3


def test_dose_and_binning(rng: np.random.Generator) -> None:
    phase = np.zeros((64, 64))
    m = pixel_matrix_A(0.8)
    img = form_image(
        phase,
        pixel_matrix_A=m,
        oversample=2,
        chi=lambda gx, gy: 0 * gx,
        dose_e_per_A2=50.0,
        rng=rng,
    )
    assert img.shape == (32, 32)
    assert img.mean() == pytest.approx(50.0 * 0.64, rel=0.02)
    assert img.var() == pytest.approx(50.0 * 0.64, rel=0.15)  # Poisson


def test_frequency_mapping_anisotropic() -> None:
    m = pixel_matrix_A(1.0, 10.0, 0.0)  # major along x: p_x > p_y
    gx, gy = specimen_frequencies_per_A((8, 8), m)
    # one cycle per 8 pixels along x is 1/(8 p_x) per Å
    assert gx[0, 1] == pytest.approx(1 / (8 * m[0, 0]))
    assert gy[1, 0] == pytest.approx(1 / (8 * m[1, 1]))


def test_single_precision_matches_double(rng: np.random.Generator) -> None:
    phase = 0.5 * rng.normal(size=(128, 96))
    m = pixel_matrix_A(0.9, 1.0, 10.0)
    kw = dict(defocus_u_A=8000.0, cs_mm=2.7, voltage_kV=300)
    args = dict(
        pixel_matrix_A=m,
        oversample=2,
        chi=lambda gx, gy: calculate_chi(gx, gy, **kw),
        absorption=0.07,
        envelope=lambda gx, gy: np.exp(-5.0 * (gx * gx + gy * gy)),
    )
    double = form_image(phase, **args)
    single = form_image(phase, single_precision=True, **args)
    assert single.shape == (64, 48)
    np.testing.assert_allclose(single, double, rtol=0, atol=2e-5)
