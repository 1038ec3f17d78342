"""Gold diffraction: simulator physics, camera length / centre / ellipticity, tilt coils."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temcal.calibrate.diffraction import (
    _decompose,
    estimate_camera_length,
    estimate_tilt_calibration,
)
from temcal.errors import CalibrationError, InputError
from temcal.physics.gold import d_spacing_A
from temcal.physics.gold_diffraction import calculate_bragg_angle_mrad, gold_rings
from temcal.physics.wavelength import calculate_wavelength_A
from temcal.simulate.diffraction import distortion_matrix, simulate_gold_diffraction


def _rot(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


# ----------------------------------------------------------------------------- physics


def test_bragg_angles_match_physics_notes() -> None:
    d111 = d_spacing_A("111", 4.0782)
    assert calculate_bragg_angle_mrad(d111, 300) == pytest.approx(8.36, abs=0.005)
    assert calculate_bragg_angle_mrad(d111, 200) == pytest.approx(10.65, abs=0.005)
    # Small angle: lambda / d agrees to 1e-5 relative.
    assert 1e3 * calculate_wavelength_A(300) / d111 == pytest.approx(8.36, abs=0.005)


def test_gold_rings_order_and_multiplicities() -> None:
    rings = gold_rings(4.0782, max_q_per_A=1.12)
    assert [r.n for r in rings] == [3, 4, 8, 11, 12, 16, 19, 20]
    assert [r.label for r in rings] == ["111", "200", "220", "311", "222", "400", "331", "420"]
    assert [r.multiplicity for r in rings] == [8, 6, 12, 24, 8, 6, 24, 24]
    assert rings[0].d_A == pytest.approx(2.35455, abs=1e-5)


def test_distortion_matrix_axes() -> None:
    d = distortion_matrix(2.0, 30.0)
    assert np.linalg.det(d) == pytest.approx(1.0)
    major = d @ np.array([math.cos(math.radians(30)), math.sin(math.radians(30))])
    minor = d @ np.array([-math.sin(math.radians(30)), math.cos(math.radians(30))])
    assert np.linalg.norm(major) / np.linalg.norm(minor) == pytest.approx(1.02)


def test_simulated_ring_radius_is_camera_length_times_bragg_angle() -> None:
    sim = simulate_gold_diffraction(
        (256, 256), voltage_kV=300, camera_length_mm=400, detector_pixel_um=30, rng=None
    )
    r111_mm = sim.ring_radii_px["111"] * 30e-3
    assert 1e3 * r111_mm / 400 == pytest.approx(8.36, abs=0.005)
    assert sim.reciprocal_pixel_per_A == pytest.approx(
        30e-3 / (400 * calculate_wavelength_A(300)), rel=1e-12
    )


def test_tilt_of_lambda_over_d_moves_central_beam_onto_the_ring() -> None:
    lam = calculate_wavelength_A(200)
    d111 = d_spacing_A("111", 4.0782)
    base = {
        "voltage_kV": 200,
        "camera_length_mm": 300,
        "detector_pixel_um": 30,
        "center_xy_px": (100.0, 128.0),
        "beam_divergence_mrad": 0.01,
    }
    sim0 = simulate_gold_diffraction((256, 256), **base)
    tilt = 1e3 * lam / d111
    sim = simulate_gold_diffraction((256, 256), beam_tilt_mrad=(tilt, 0.0), **base)
    r111 = sim0.ring_radii_px["111"]
    assert sim.pattern_center_xy_px[0] == pytest.approx(100.0 + r111, abs=1e-9)
    # The brightest pixel (central beam) of the noise-free pattern is there.
    iy, ix = np.unravel_index(np.argmax(sim.pattern), sim.pattern.shape)
    assert abs(ix - (100.0 + r111)) <= 0.5 and iy == 128
    # ... where the untilted pattern had its 111 ring along +x.
    row = sim0.pattern[128, 160:]
    assert abs(160 + int(np.argmax(row)) - (100.0 + r111)) <= 1.0


# ----------------------------------------------------------------------------- camera length

_CASES = [
    # kV, L (mm), pitch, ellipticity, angle, grain, counts, centre offset
    (300, 700, 28, 1.0, 30.0, 8.0, 2e7, (7.3, -4.6)),
    (200, 450, 28, 0.0, 0.0, 5.0, 1e7, (-11.2, 3.7)),
    (300, 800, 28, 2.0, 125.0, 20.0, 3e7, (2.5, 9.1)),
]


@pytest.mark.parametrize(
    ("kv", "length", "pitch", "ell", "angle", "grain", "counts", "off"), _CASES
)
def test_camera_length_recovered(
    kv: float,
    length: float,
    pitch: float,
    ell: float,
    angle: float,
    grain: float,
    counts: float,
    off: tuple[float, float],
    rng: np.random.Generator,
) -> None:
    n = 512
    sim = simulate_gold_diffraction(
        (n, n),
        voltage_kV=kv,
        camera_length_mm=length,
        detector_pixel_um=pitch,
        center_xy_px=((n - 1) / 2 + off[0], (n - 1) / 2 + off[1]),
        ellipticity_percent=ell,
        major_angle_deg=angle,
        grain_size_nm=grain,
        total_counts=counts,
        rng=rng,
    )
    res = estimate_camera_length(sim.pattern, voltage_kV=kv, detector_pixel_um=pitch)
    # Issue target 0.2 %; a half-pixel bias of the ring radius would cost ~0.2-0.3 % here.
    assert res.camera_length_mm == pytest.approx(length, rel=2e-4)
    assert res.reciprocal_pixel_per_A == pytest.approx(sim.reciprocal_pixel_per_A, rel=2e-4)
    assert abs(res.camera_length_mm - length) < max(res.camera_length_ci95_mm * 4, 1e-4 * length)
    assert res.center_x_px == pytest.approx(sim.pattern_center_xy_px[0], abs=0.05)
    assert res.center_y_px == pytest.approx(sim.pattern_center_xy_px[1], abs=0.05)
    assert res.ellipticity_percent == pytest.approx(ell, abs=0.03)
    if ell > 0:
        assert abs(((res.major_angle_deg - angle + 90) % 180) - 90) < 1.5
    assert len(res.rings) >= 2
    assert [r.label for r in res.rings][:2] == ["111", "200"]
    assert res.to_dict().keys() >= {
        "camera_length_mm",
        "camera_length_ci95_mm",
        "reciprocal_pixel_per_A",
        "center_x_px",
        "center_y_px",
        "ellipticity_percent",
        "major_angle_deg",
    }


def test_lattice_constant_scales_camera_length(rng: np.random.Generator) -> None:
    sim = simulate_gold_diffraction(
        (512, 512), voltage_kV=300, camera_length_mm=600, detector_pixel_um=28, rng=rng
    )
    a = estimate_camera_length(sim.pattern, voltage_kV=300, detector_pixel_um=28)
    b = estimate_camera_length(
        sim.pattern, voltage_kV=300, detector_pixel_um=28, lattice_constant_A=4.0782 * 1.01
    )
    assert b.camera_length_mm / a.camera_length_mm == pytest.approx(1.01, rel=1e-6)


def test_saturated_central_beam_is_ignored(rng: np.random.Generator) -> None:
    sim = simulate_gold_diffraction(
        (512, 512),
        voltage_kV=300,
        camera_length_mm=600,
        detector_pixel_um=28,
        total_counts=2e7,
        saturation_counts=2000.0,
        rng=rng,
    )
    assert np.count_nonzero(sim.pattern == 2000.0) > 3
    res = estimate_camera_length(sim.pattern, voltage_kV=300, detector_pixel_um=28)
    assert res.camera_length_mm == pytest.approx(600, rel=2e-4)


def test_no_gold_rings_raises(rng: np.random.Generator) -> None:
    y, x = np.mgrid[:256, :256]
    blob = 1e4 * np.exp(-((x - 128.0) ** 2 + (y - 128.0) ** 2) / (2 * 30.0**2)) + 20
    with pytest.raises(CalibrationError, match="gold"):
        estimate_camera_length(rng.poisson(blob).astype(float), voltage_kV=300)
    with pytest.raises(InputError):
        estimate_camera_length(np.ones((256, 256)), voltage_kV=300)
    with pytest.raises(InputError, match="pixel pitch"):
        estimate_camera_length(blob, voltage_kV=300, detector_pixel_um=1e6)


# ----------------------------------------------------------------------------- tilt coils


def _tilt_series(
    matrix: np.ndarray, coils: np.ndarray, rng: np.random.Generator, shape: int = 384
) -> list[np.ndarray]:
    out = []
    for c in coils:
        t = matrix @ c
        out.append(
            simulate_gold_diffraction(
                (shape, shape),
                voltage_kV=200,
                camera_length_mm=400,
                detector_pixel_um=40,
                ellipticity_percent=0.8,
                major_angle_deg=60,
                grain_size_nm=10,
                beam_tilt_mrad=(float(t[0]), float(t[1])),
                total_counts=1e7,
                rng=rng,
            ).pattern
        )
    return out


@pytest.mark.parametrize(("angle", "mirror"), [(25.0, False), (200.0, True)])
def test_tilt_calibration_rotation_and_mirror(
    angle: float, mirror: bool, rng: np.random.Generator
) -> None:
    scale = 0.012
    true_m = scale * _rot(angle) @ np.diag([1.0, -1.0 if mirror else 1.0])
    coils = np.array([[0, 0], [150, 0], [0, 150], [-150, -150]], dtype=float)
    res = estimate_tilt_calibration(
        _tilt_series(true_m, coils, rng, shape=320), coils, voltage_kV=200
    )
    np.testing.assert_allclose(res.mrad_per_unit, true_m, atol=2e-3 * scale)
    assert res.scale_mrad_per_unit == pytest.approx(scale, rel=2e-3)
    assert abs(((res.rotation_deg - angle + 180) % 360) - 180) < 0.1
    assert res.mirrored is mirror
    assert res.anisotropy_percent < 0.2
    assert np.all(np.abs(res.residuals_mrad) < 1e-3)
    assert set(res.to_dict()) >= {"mrad_per_unit", "scale_mrad_per_unit", "rotation_deg"}


def test_tilt_calibration_three_patterns_anisotropic(rng: np.random.Generator) -> None:
    true_m = np.array([[0.010, -0.003], [0.002, 0.013]])
    coils = np.array([[0, 0], [100, 0], [0, 100]], dtype=float)
    res = estimate_tilt_calibration(_tilt_series(true_m, coils, rng), coils, voltage_kV=200)
    np.testing.assert_allclose(res.mrad_per_unit, true_m, atol=2e-3 * 0.01)


def test_tilt_calibration_bad_designs(rng: np.random.Generator) -> None:
    pats = _tilt_series(np.eye(2) * 0.01, np.zeros((1, 2)), rng, shape=128) * 3
    with pytest.raises(InputError, match="at least 3"):
        estimate_tilt_calibration(pats[:2], [[0, 0], [1, 0]], voltage_kV=200)
    with pytest.raises(InputError, match="one line"):
        estimate_tilt_calibration(pats, [[0, 0], [1, 1], [2, 2]], voltage_kV=200)
    with pytest.raises(InputError, match="different sizes"):
        estimate_tilt_calibration(
            [*pats[:2], np.ones((130, 128))], [[0, 0], [1, 0], [0, 1]], voltage_kV=200
        )


@pytest.mark.parametrize("angle", [0.0, 37.0, 123.0, 271.0])
@pytest.mark.parametrize("mirror", [False, True])
def test_decompose_rotation_scale_mirror(angle: float, mirror: bool) -> None:
    m = 0.02 * _rot(angle) @ np.diag([1.0, -1.0 if mirror else 1.0]) @ np.diag([1.05, 1 / 1.05])
    scale, rot, mirrored, aniso = _decompose(m)
    assert scale == pytest.approx(0.02)
    assert abs(((rot - angle + 180) % 360) - 180) < 1e-9
    assert mirrored is mirror
    assert aniso == pytest.approx(100 * (1.05**2 - 1))


def test_camera_length_robust_to_profile_halo_and_psf(rng: np.random.Generator) -> None:
    # Model mismatch: Lorentzian tails, amorphous-carbon halo under the rings, detector PSF.
    sim = simulate_gold_diffraction(
        (512, 512),
        voltage_kV=300,
        camera_length_mm=500,
        detector_pixel_um=28,
        ellipticity_percent=1.0,
        major_angle_deg=60,
        grain_size_nm=5,
        ring_profile_eta=0.5,
        amorphous_fraction=0.2,
        central_beam_fraction=0.25,
        background_fraction=0.35,
        detector_blur_px=1.0,
        total_counts=2e7,
        rng=rng,
    )
    res = estimate_camera_length(sim.pattern, voltage_kV=300, detector_pixel_um=28)
    assert res.camera_length_mm == pytest.approx(500, rel=5e-4)
    assert res.center_x_px == pytest.approx(sim.pattern_center_xy_px[0], abs=0.05)
    assert res.ellipticity_percent == pytest.approx(1.0, abs=0.05)
