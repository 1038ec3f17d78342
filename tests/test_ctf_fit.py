"""CTF model extensions, the simulated defocus series and the per-micrograph CTF fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temcal.calibrate.ctf_fit import fit_ctf
from temcal.errors import CalibrationError, InputError
from temcal.physics.ctf import (
    CTFParameters,
    calculate_chi,
    calculate_ctf,
    calculate_envelope,
    calculate_spatial_envelope,
    calculate_temporal_envelope,
)
from temcal.physics.magnification import pixel_matrix_A
from temcal.physics.wavelength import calculate_wavelength_A
from temcal.simulate.ctf_series import simulate_ctf_micrograph, simulate_ctf_series
from temcal.simulate.imaging import specimen_frequencies_per_A


def test_temporal_envelope_value() -> None:
    lam = calculate_wavelength_A(300)
    k = 1 / 3.0
    e = calculate_temporal_envelope(np.array(k), focal_spread_A=40.0, voltage_kV=300)
    assert float(e) == pytest.approx(math.exp(-0.5 * (math.pi * lam * 40.0) ** 2 * k**4))


def test_spatial_envelope_uses_chi_gradient() -> None:
    kw = dict(defocus_u_A=15000.0, defocus_v_A=9000.0, astig_angle_deg=25.0, cs_mm=2.7)
    kx, ky, h = 0.21, -0.13, 1e-7
    gx = (
        calculate_chi(kx + h, ky, voltage_kV=300, **kw)
        - calculate_chi(kx - h, ky, voltage_kV=300, **kw)
    ) / (2 * h)
    gy = (
        calculate_chi(kx, ky + h, voltage_kV=300, **kw)
        - calculate_chi(kx, ky - h, voltage_kV=300, **kw)
    ) / (2 * h)
    lam = calculate_wavelength_A(300)
    alpha = 0.02e-3
    expected = math.exp(-((alpha / (2 * lam)) ** 2) * float(gx**2 + gy**2))
    got = calculate_spatial_envelope(
        np.array(kx), np.array(ky), voltage_kV=300, illumination_semiangle_mrad=0.02, **kw
    )
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # isotropic closed form
    k = 0.25
    iso = calculate_spatial_envelope(
        np.array(k),
        np.array(0.0),
        defocus_u_A=10000.0,
        cs_mm=2.7,
        voltage_kV=300,
        illumination_semiangle_mrad=0.05,
    )
    closed = math.exp(
        -((math.pi * 0.05e-3 / lam) ** 2) * (10000.0 * lam * k - 2.7e7 * lam**3 * k**3) ** 2
    )
    assert float(iso) == pytest.approx(closed, rel=1e-9)


def test_frequency_matrix_matches_pixel_matrix() -> None:
    # frequencies computed with a nominal pixel size p map to specimen frequencies p M^-T q
    m = pixel_matrix_A(1.1, 3.0, 40.0)
    gx, gy = specimen_frequencies_per_A((32, 32), m)
    qx = np.fft.fftfreq(32)[None, :] * np.ones((32, 1))
    qy = np.fft.fftfreq(32)[:, None] * np.ones((1, 32))
    p = 1.1
    f = p * np.linalg.inv(m).T
    kw = dict(defocus_u_A=12000.0, defocus_v_A=8000.0, astig_angle_deg=70.0, cs_mm=2.7)
    a = calculate_chi(qx / p, qy / p, voltage_kV=300, frequency_matrix=f, **kw)
    b = calculate_chi(gx, gy, voltage_kV=300, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_parameter_bundle_matches_functions() -> None:
    prm = CTFParameters(
        defocus_u_A=20000.0,
        defocus_v_A=18000.0,
        astig_angle_deg=10.0,
        cs_mm=2.7,
        voltage_kV=200,
        b_factor_A2=30.0,
        focal_spread_A=50.0,
    )
    kx = np.linspace(-0.3, 0.3, 7)[:, None] * np.ones((1, 7))
    ky = kx.T
    env = calculate_envelope(
        kx, ky, defocus_u_A=2e4, cs_mm=2.7, voltage_kV=200, b_factor_A2=30.0, focal_spread_A=50.0
    )
    ref = calculate_ctf(
        kx,
        ky,
        defocus_u_A=20000.0,
        defocus_v_A=18000.0,
        astig_angle_deg=10.0,
        cs_mm=2.7,
        voltage_kV=200,
        b_factor_A2=30.0,
        focal_spread_A=50.0,
    )
    np.testing.assert_allclose(prm.ctf(kx, ky), ref, atol=1e-12)
    assert float(env.max()) == pytest.approx(1.0)
    assert float(env[0, 0]) < 0.9


def _fit_case(
    rng: np.random.Generator,
    u: float,
    v: float,
    angle: float,
    phase: float = 0.0,
    **fit_kw: object,
) -> tuple[CTFParameters, object]:
    prm = CTFParameters(
        defocus_u_A=u,
        defocus_v_A=v,
        astig_angle_deg=angle,
        cs_mm=2.7,
        voltage_kV=300,
        phase_shift_deg=phase,
        b_factor_A2=5.0,
    )
    img = simulate_ctf_micrograph(prm, (512, 512), pixel_size_A=1.0, rng=rng, dose_e_per_A2=100)
    fit = fit_ctf(img, pixel_size_A=1.0, voltage_kV=300, cs_mm=2.7, **fit_kw)  # type: ignore[arg-type]
    return prm, fit


def _angle_diff(a: float, b: float) -> float:
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


@pytest.mark.parametrize(
    ("u", "v", "angle"),
    [(3600.0, 3000.0, 20.0), (10500.0, 9500.0, 135.0), (21000.0, 19000.0, 75.0)],
)
def test_fit_recovers_defocus(rng: np.random.Generator, u: float, v: float, angle: float) -> None:
    _, fit = _fit_case(rng, u, v, angle)
    assert fit.defocus_u_A == pytest.approx(u, rel=5e-3)  # type: ignore[attr-defined]
    assert fit.defocus_v_A == pytest.approx(v, rel=5e-3)  # type: ignore[attr-defined]
    mean = 0.5 * (fit.defocus_u_A + fit.defocus_v_A)  # type: ignore[attr-defined]
    assert mean == pytest.approx(0.5 * (u + v), rel=2e-3)
    assert _angle_diff(fit.astig_angle_deg, angle) < 2.0  # type: ignore[attr-defined]
    assert fit.defocus_u_A >= fit.defocus_v_A  # type: ignore[attr-defined]
    assert 2.0 < fit.fit_resolution_A < 8.0  # type: ignore[attr-defined]
    assert fit.score > 0.3  # type: ignore[attr-defined]


def test_fit_focus_crossing(rng: np.random.Generator) -> None:
    # Zemlin-tableau case: principal defoci of opposite signs
    _, fit = _fit_case(rng, 9000.0, -2500.0, 115.0, allow_focus_crossing=True)
    assert fit.defocus_u_A == pytest.approx(9000.0, abs=60.0)  # type: ignore[attr-defined]
    assert fit.defocus_v_A == pytest.approx(-2500.0, abs=60.0)  # type: ignore[attr-defined]
    assert _angle_diff(fit.astig_angle_deg, 115.0) < 1.0  # type: ignore[attr-defined]


def test_fit_strong_astigmatism(rng: np.random.Generator) -> None:
    # +-0.5 µm of induced astigmatism around 0.8 µm
    _, fit = _fit_case(rng, 13000.0, 3000.0, 40.0, allow_focus_crossing=True)
    assert fit.defocus_u_A == pytest.approx(13000.0, rel=5e-3)  # type: ignore[attr-defined]
    assert fit.defocus_v_A == pytest.approx(3000.0, rel=1e-2)  # type: ignore[attr-defined]
    assert _angle_diff(fit.astig_angle_deg, 40.0) < 1.0  # type: ignore[attr-defined]


def test_fit_phase_shift(rng: np.random.Generator) -> None:
    _, fit = _fit_case(rng, 6300.0, 5700.0, 60.0, phase=90.0, fit_phase_shift=True)
    assert fit.phase_shift_deg == pytest.approx(90.0, abs=5.0)  # type: ignore[attr-defined]
    assert fit.defocus_u_A == pytest.approx(6300.0, rel=5e-3)  # type: ignore[attr-defined]
    assert _angle_diff(fit.astig_angle_deg, 60.0) < 2.0  # type: ignore[attr-defined]


def test_no_thon_rings(rng: np.random.Generator) -> None:
    noise = rng.poisson(50.0, size=(512, 512)).astype(float)
    with pytest.raises(CalibrationError, match="Thon rings"):
        fit_ctf(noise, pixel_size_A=1.0, voltage_kV=300, cs_mm=2.7)


def test_fit_bad_options(rng: np.random.Generator) -> None:
    img = rng.normal(size=(256, 256))
    with pytest.raises(InputError):
        fit_ctf(img, pixel_size_A=1.0, voltage_kV=-5, cs_mm=2.7)
    with pytest.raises(InputError):
        fit_ctf(img, pixel_size_A=1.0, voltage_kV=300, cs_mm=2.7, resolution_range_A=(3, 30))


def test_series_truth(rng: np.random.Generator) -> None:
    s = simulate_ctf_series(
        n_micrographs=3,
        shape=(128, 128),
        pixel_size_A=1.0,
        voltage_kV=200,
        cs_mm=2.0,
        rng=rng,
        defocus_range_A=(5000.0, 15000.0),
        astigmatism_A=400.0,
        magnification_change_percent_per_um=1.0,
    )
    means = [0.5 * (t.defocus_u_A + t.defocus_v_A) for t in s.truths]
    assert means == pytest.approx([5000.0, 10000.0, 15000.0])
    assert all(t.defocus_u_A - t.defocus_v_A == pytest.approx(400.0) for t in s.truths)
    assert s.pixel_sizes_A[0] == pytest.approx(0.995) and s.pixel_sizes_A[2] == pytest.approx(1.005)
    assert s.images[0].mean() == pytest.approx(100.0, rel=0.05)  # dose 100 e/Å², 1 Å pixels


def test_fit_with_gold_edge(rng: np.random.Generator) -> None:
    from temcal.calibrate.ctf_fit import gold_exclusions_A

    prm = CTFParameters(
        defocus_u_A=8400.0,
        defocus_v_A=7600.0,
        astig_angle_deg=130.0,
        cs_mm=2.7,
        voltage_kV=300,
        b_factor_A2=5.0,
    )
    img = simulate_ctf_micrograph(
        prm, (512, 512), pixel_size_A=0.9, rng=rng, dose_e_per_A2=100, gold_edge=True
    )
    # the gold foil (grains ~10 nm, phase ~1 rad) darkens a band of the image
    cols = img.mean(axis=0)
    assert cols[: int(0.15 * 512)].mean() < 0.97 * cols[int(0.3 * 512) :].mean()
    fit = fit_ctf(
        img,
        pixel_size_A=0.9,
        voltage_kV=300,
        cs_mm=2.7,
        exclude_resolutions_A=gold_exclusions_A(),
    )
    assert fit.defocus_mean_A == pytest.approx(8000.0, rel=3e-3)
    assert _angle_diff(fit.astig_angle_deg, 130.0) < 3.0
