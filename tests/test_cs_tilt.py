import math

import numpy as np
import pytest

from temcal.calibrate.cs_tilt import (
    estimate_tilt_shifts,
    fit_tilt_shifts,
    fit_tilt_tableau,
    select_terms,
)
from temcal.calibrate.registration import estimate_shift_px
from temcal.errors import InputError
from temcal.physics.aberrations import (
    AxialAberrations,
    calculate_tilt_image_shift_A,
    calculate_tilt_induced_c1_a1_A,
    defocus_astigmatism_from_c1_a1,
)
from temcal.physics.ctf import calculate_ctf
from temcal.simulate.tilt_series import (
    design_tilts_mrad,
    manifest_to_image_tilt_rad,
    simulate_tilt_series,
)

AB = AxialAberrations.from_krivanek(
    C10_A=-8000, C30_A=2.7e7, C12_A=30, phi12_deg=20, C21_A=1000, phi21_deg=70,
    C23_A=500, phi23_deg=10,
)  # fmt: skip


def test_simulated_image_shift_is_physics_delta_with_sign(rng):
    tilts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, -7.0]])
    s = simulate_tilt_series(
        tilts, aberrations=AB, pixel_size_A=1.0, voltage_kV=300, shape=(256, 256), rng=rng,
        frame_rotation_deg=0.0,
    )  # fmt: skip
    for i in (1, 2):
        tau = 1e-3 * complex(*tilts[i])
        delta = calculate_tilt_image_shift_A(tau, AB)
        # underfocus: C1 < 0, so the image moves against the tilt by ~ 80 Å at 10 mrad
        est = estimate_shift_px(s.images[0], s.images[i])
        assert est.shift_px[0] == pytest.approx(delta.real, abs=0.05)
        assert est.shift_px[1] == pytest.approx(delta.imag, abs=0.05)
    assert calculate_tilt_image_shift_A(0.01, AB).real < -50


def test_registration_without_cubic_term_is_biased(rng):
    # the tilt-induced coma biases a plain shift fit; the cubic model removes it
    tilts = np.array([[0.0, 0.0], [10.0, 0.0]])
    s = simulate_tilt_series(
        tilts, aberrations=AB, pixel_size_A=1.0, voltage_kV=300, shape=(256, 256), rng=rng
    )
    truth = calculate_tilt_image_shift_A(0.01, AB).real
    good = estimate_shift_px(s.images[0], s.images[1]).shift_px[0]
    plain = estimate_shift_px(s.images[0], s.images[1], cubic=False).shift_px[0]
    assert abs(good - truth) < 0.05 < abs(plain - truth)


def test_tilted_power_spectrum_has_induced_defocus(rng):
    n = 256
    tau = 0.01 * np.exp(1j * math.radians(35))
    s = simulate_tilt_series(
        np.array([[10 * math.cos(math.radians(35)), 10 * math.sin(math.radians(35))]]),
        aberrations=AB, pixel_size_A=1.0, voltage_kV=300, shape=(n, n), rng=rng,
        phase_rms_rad=0.01, b_factor_A2=0.0,
    )  # fmt: skip
    c1, a1 = calculate_tilt_induced_c1_a1_A(tau, AB)
    u, v, ang = defocus_astigmatism_from_c1_a1(float(c1), complex(a1))
    assert v < 0 < u  # crosses focus
    img = s.images[0]
    spec = np.abs(np.fft.fft2(img - img.mean()))
    # reference: the same specimen's phase spectrum x |CTF| (weak phase: |I| = 2|Phi||CTF|)
    rng2 = np.random.default_rng(12345)  # same seed as the fixture -> same specimen
    from temcal.simulate.tilt_series import simulate_amorphous_phase

    phase = simulate_amorphous_phase((n, n), pixel_size_A=1.0, rng=rng2, phase_rms_rad=0.01)
    phi_ft = np.abs(np.fft.fft2(phase))
    g = np.fft.fftfreq(n)
    gx, gy = np.meshgrid(g, g)
    sel = (np.hypot(gx, gy) > 0.05) & (np.hypot(gx, gy) < 0.3)

    def corr(u_, v_, a_):
        ctf = np.abs(
            calculate_ctf(
                gx,
                gy,
                defocus_u_A=u_,
                defocus_v_A=v_,
                astig_angle_deg=a_,
                cs_mm=2.7,
                voltage_kV=300,
                amplitude_contrast=0.07,
            )
        )
        return np.corrcoef(spec[sel], 2 * phi_ft[sel] * ctf[sel])[0, 1]

    good = corr(u, v, ang)
    assert good > 0.99
    assert corr(u, v, ang + 90) < 0.8  # astigmatism turned: clearly worse
    assert corr(-(AB.C1_A + 2 * AB.C3_A * 1e-4), None, 0) < 0.8  # no astigmatism: worse


@pytest.mark.slow
def test_shift_method_known_answer(rng):
    tilts = design_tilts_mrad((5.0, 10.0), 12)
    s = simulate_tilt_series(
        tilts, aberrations=AB, pixel_size_A=1.0, voltage_kV=300, shape=(512, 512), rng=rng,
        frame_rotation_deg=200.0, drift_step_A=0.3, dose_e_per_A2=50.0,
    )  # fmt: skip
    meas = estimate_tilt_shifts(s.images, tilts, pixel_size_A=1.0)
    fit = fit_tilt_shifts(meas, tilts, drift_step_A=0.3, mirror=None)
    assert fit.cs_mm == pytest.approx(2.7, rel=0.02)
    assert fit.defocus_A == pytest.approx(8000, rel=0.005)
    assert abs((fit.frame_rotation_deg - 200.0 + 180) % 360 - 180) < 1.0
    assert not fit.mirror
    assert 1.96 * fit.cs_sigma_mm < 0.1  # a useful interval
    assert abs(fit.cs_mm - 2.7) < 4 * fit.cs_sigma_mm + 0.005


def test_shift_method_finds_mirror_and_pixel_scaling(rng):
    tilts = design_tilts_mrad((5.0, 10.0), 8)
    s = simulate_tilt_series(
        tilts, aberrations=AB, pixel_size_A=1.25, voltage_kV=300, shape=(192, 192), rng=rng,
        frame_rotation_deg=-40.0, mirror=True,
    )  # fmt: skip
    meas = estimate_tilt_shifts(s.images, tilts, pixel_size_A=1.25)
    fit = fit_tilt_shifts(meas, tilts, drift_step_A=0.05, mirror=None)
    assert fit.mirror
    assert fit.frame_rotation_deg == pytest.approx(320.0, abs=0.5)
    assert fit.cs_mm == pytest.approx(2.7, rel=0.01)
    # the same shifts analysed with a pixel size 2 % too large give Cs 2 % too large (Cs ~ p)
    meas2 = estimate_tilt_shifts(s.images, tilts, pixel_size_A=1.25 * 1.02)
    fit2 = fit_tilt_shifts(meas2, tilts, drift_step_A=0.05, mirror=True)
    assert fit2.cs_mm / fit.cs_mm == pytest.approx(1.02, abs=0.002)


def test_tableau_algebra_recovers_aberrations(rng):
    tilts = design_tilts_mrad((5.0, 10.0), 12)
    tau = manifest_to_image_tilt_rad(tilts, frame_rotation_deg=200.0)
    c1, a1 = calculate_tilt_induced_c1_a1_A(tau, AB)
    c1 = c1 + rng.normal(0, 5, len(c1))
    a1 = a1 + rng.normal(0, 5, len(a1)) + 1j * rng.normal(0, 5, len(a1))
    fit = fit_tilt_tableau(c1, a1, tilts, mirror=None)
    assert fit.cs_mm == pytest.approx(2.7, rel=0.003)
    assert fit.defocus_A == pytest.approx(8000, abs=10)
    assert fit.frame_rotation_deg == pytest.approx(20.0, abs=0.5)  # 200 mod 180
    assert fit.rotation_modulo_180 and not fit.mirror
    k = fit.aberrations.rotated(180.0).to_krivanek()  # back to the 200-degree frame
    assert k["C21_A"] == pytest.approx(1000, rel=0.05)
    assert k["phi21_deg"] == pytest.approx(70, abs=3)


def test_design_checks():
    one_mag = design_tilts_mrad((10.0,), 12)
    with pytest.raises(InputError, match="cannot determine"):
        select_terms(one_mag, method="shift")
    assert select_terms(one_mag, method="tableau", include_higher=False)
    few = design_tilts_mrad((5.0, 10.0), 2)
    with pytest.raises(InputError):
        select_terms(few, method="shift")
    full = select_terms(design_tilts_mrad((5.0, 10.0), 12), method="shift")
    assert len(full) == 12


@pytest.mark.slow
def test_tableau_from_images_handles_focus_crossing(rng):
    from temcal.calibrate.cs_tilt import fit_tableau_from_images

    tilts = design_tilts_mrad((10.0,), 4)
    s = simulate_tilt_series(
        tilts, aberrations=AB, pixel_size_A=1.0, voltage_kV=300, shape=(384, 384), rng=rng,
        frame_rotation_deg=200.0, dose_e_per_A2=100.0,
    )  # fmt: skip
    c1, a1 = calculate_tilt_induced_c1_a1_A(s.tau_rad[1:], AB)
    dz_v = [
        defocus_astigmatism_from_c1_a1(float(c), complex(a))[1] for c, a in zip(c1, a1, strict=True)
    ]
    assert max(dz_v) < 0  # every tilted image crosses focus
    fit = fit_tableau_from_images(
        s.images,
        tilts,
        pixel_size_A=1.0,
        voltage_kV=300,
        cs_start_mm=2.4,
        mirror=False,
        max_iterations=2,
    )
    assert fit.cs_mm == pytest.approx(2.7, rel=0.01)
    assert fit.defocus_A == pytest.approx(8000, rel=0.005)
    assert fit.frame_rotation_deg == pytest.approx(20.0, abs=1.0)


def test_failed_registration_is_left_out(rng):
    from temcal.calibrate.cs_tilt import ShiftMeasurement

    tilts = design_tilts_mrad((5.0, 10.0), 12)
    tau = manifest_to_image_tilt_rad(tilts, frame_rotation_deg=75.0)
    delta = calculate_tilt_image_shift_A(tau, AB)
    drift = np.cumsum(rng.normal(0, 0.2, (len(tilts), 2)), axis=0)
    drift[0] = 0
    pos = np.stack([delta.real, delta.imag], axis=1) + drift
    pairs = np.array([(0, i) for i in range(1, len(tilts))] + [(1, 2), (3, 4), (5, 6)])
    shifts = pos[pairs[:, 1]] - pos[pairs[:, 0]] + rng.normal(0, 0.02, (len(pairs), 2))
    sig = np.full(len(pairs), 0.02)
    clean = fit_tilt_shifts(ShiftMeasurement(pairs, shifts, sig), tilts, drift_step_A=0.2)
    bad = shifts.copy()
    bad[14] += (9.0, -6.0)  # a registration that locked onto a wrong peak
    fit = fit_tilt_shifts(ShiftMeasurement(pairs, bad, sig), tilts, drift_step_A=0.2)
    naive = fit_tilt_shifts(
        ShiftMeasurement(pairs, bad, sig), tilts, drift_step_A=0.2, max_outliers=0
    )
    assert fit.extra["n_outliers_left_out"] == 1
    assert fit.cs_mm == pytest.approx(clean.cs_mm, rel=0.002)
    assert abs(naive.cs_mm - 2.7) > abs(fit.cs_mm - 2.7)
