"""The gold-lattice forward model puts rings where the pixel matrix says."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temcal.errors import InputError
from temcal.physics.gold import d_spacing_A
from temcal.physics.magnification import pixel_matrix_A
from temcal.simulate.gold import (
    GoldGrains,
    calculate_interaction_constant,
    electron_scattering_factor_A,
    place_gold_grains,
    render_gold_phase,
    simulate_gold_image,
)

A = 4.0782
D111 = d_spacing_A("111", A)
D200 = d_spacing_A("200", A)


def _power(image: np.ndarray) -> np.ndarray:
    im = image - image.mean()
    return np.abs(np.fft.fftshift(np.fft.fft2(im))) ** 2


def _radial_profile(ps: np.ndarray, step: float = 0.25) -> np.ndarray:
    n = ps.shape[0]
    y, x = np.indices(ps.shape) - n // 2
    idx = np.floor(np.hypot(x, y) / step).astype(int).ravel()
    return np.bincount(idx, ps.ravel()) / np.maximum(np.bincount(idx), 1)


def _peak_radius(profile: np.ndarray, r0: float, half_width: float, step: float = 0.25) -> float:
    lo, hi = int((r0 - half_width) / step), int((r0 + half_width) / step)
    k = lo + int(np.argmax(profile[lo:hi]))
    return (k + 0.5) * step


def test_literature_constants() -> None:
    # Interaction constant at 300 kV: 6.526e-4 rad/(V Å) (Kirkland 2010, table 5.2: 0.00065262).
    assert calculate_interaction_constant(300.0) == pytest.approx(6.5262e-4, rel=2e-4)
    # Peng et al. (1996) Au: f_e(0) = sum of a_i = 10.5714 Å; f_e falls steeply with g.
    assert float(electron_scattering_factor_A(0.0)) == pytest.approx(10.5714, abs=1e-4)
    # By hand: s^2 = (0.42471 / 2)^2 = 0.045094; sum a_i exp(-b_i s^2) = 6.7504 Å.
    assert float(electron_scattering_factor_A(1 / D111)) == pytest.approx(6.7504, abs=2e-3)


def test_projected_phase_integral_counts_atoms() -> None:
    # The zero-frequency phase integral is exactly n_atoms * sigma * 47.878 V Å² * f_e(0).
    shape = (96, 96)
    m = pixel_matrix_A(0.8, 3.0, 20.0)
    rng = np.random.default_rng(3)
    grains = place_gold_grains(
        shape, pixel_matrix_A=m, kind="particles", n_particles=3, grain_size_nm=2.0, rng=rng
    )
    phase = render_gold_phase(shape, grains, pixel_matrix_A=m, oversample=2)
    fine_area = float(np.linalg.det(m)) / 4.0
    per_atom = calculate_interaction_constant(300.0) * 47.87801 * 10.5714
    n_atoms = phase.sum() * fine_area / per_atom
    # Count the atoms independently: FCC points inside each sphere.
    from temcal.simulate.gold import _fcc_ball

    _, dist = _fcc_ball(float(grains.diameters_A.max()) / 2, A)
    expected = int(np.sum(np.searchsorted(dist, grains.diameters_A / 2)))
    assert n_atoms == pytest.approx(expected, rel=1e-6)
    assert phase.shape == (192, 192)


def test_carbon_film_has_requested_rms_phase() -> None:
    empty = GoldGrains(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3, 3)))
    m = pixel_matrix_A(1.2, 2.0, 10.0)
    phase = render_gold_phase(
        (128, 160), empty, pixel_matrix_A=m, carbon_phase_rms=0.2, rng=np.random.default_rng(1)
    )
    assert phase.shape == (256, 320)
    assert abs(phase.mean()) < 1e-6
    assert phase.std() == pytest.approx(0.2, rel=0.03)


def test_rings_at_p_over_d() -> None:
    n, p = 768, 0.6
    sim = simulate_gold_image(
        (n, n),
        pixel_size_A=p,
        grain_size_nm=8.0,
        grain_thickness_nm=3.0,
        coverage=1.0,
        defocus_A=3000.0,
        dose_e_per_A2=None,
        rng=np.random.default_rng(0),
    )
    prof = _radial_profile(_power(sim.image))
    for d, tol in ((D111, 1.0), (D200, 1.5)):
        r0 = p / d * n
        assert _peak_radius(prof, r0, 6.0) == pytest.approx(r0, abs=tol)
    # A 2 % wrong pixel size would move the 111 ring by 4 px: clearly outside.
    assert abs(_peak_radius(prof, p / D111 * n, 6.0) - 1.02 * p / D111 * n) > 2.5


def test_anisotropy_gives_ellipses_with_right_axes() -> None:
    n, p, aniso, angle = 768, 0.6, 5.0, 30.0
    sim = simulate_gold_image(
        (n, n),
        pixel_size_A=p,
        anisotropy_percent=aniso,
        major_angle_deg=angle,
        grain_size_nm=8.0,
        grain_thickness_nm=3.0,
        coverage=1.0,
        defocus_A=3000.0,
        dose_e_per_A2=None,
        rng=np.random.default_rng(1),
    )
    assert sim.anisotropy_percent == pytest.approx(aniso)
    assert sim.major_angle_deg == pytest.approx(angle)
    ps = _power(sim.image)
    y, x = np.indices(ps.shape) - n // 2
    r = np.hypot(x, y)
    phi = np.degrees(np.arctan2(y, x))
    r0 = p / D111 * n

    def sector_peak(direction: float) -> float:
        dphi = (phi - direction + 90.0) % 180.0 - 90.0
        sel = (np.abs(dphi) < 12.0) & (np.abs(r - r0) < 10)
        prof = np.bincount(np.floor(r[sel] * 4).astype(int), ps[sel]) / np.maximum(
            np.bincount(np.floor(r[sel] * 4).astype(int)), 1
        )
        return (int(np.argmax(prof)) + 0.5) / 4.0

    # The ring radius is p_major / d along the major pixel axis, p_minor / d across it.
    r_major, r_minor = sector_peak(angle), sector_peak(angle + 90.0)
    assert r_major == pytest.approx(sim.pixel_major_A / D111 * n, abs=1.2)
    assert r_minor == pytest.approx(sim.pixel_minor_A / D111 * n, abs=1.2)
    assert r_major - r_minor > 6.0  # 5 % of ~196 px = 9.8 px


def test_111_ring_aliases_beyond_nyquist() -> None:
    # 1.4 Å/px: the 111 frequency p/d = 0.595 cycles/px lies beyond Nyquist (0.5); along
    # the x axis it aliases to 1 - 0.595 = 0.405 cycles/px.
    n, p = 512, 1.4
    sim = simulate_gold_image(
        (n, n),
        pixel_size_A=p,
        grain_size_nm=8.0,
        grain_thickness_nm=3.0,
        coverage=1.0,
        defocus_A=3000.0,
        dose_e_per_A2=None,
        rng=np.random.default_rng(2),
    )
    ps = _power(sim.image)
    q_alias = (1.0 - p / D111) * n
    row = ps[n // 2 - 3 : n // 2 + 4, :].sum(axis=0)  # along +-x
    prof = 0.5 * (row[n // 2 :] + row[n // 2 :: -1][: n // 2])
    k = int(np.argmax(prof[int(q_alias) - 15 : int(q_alias) + 15])) + int(q_alias) - 15
    assert k == pytest.approx(q_alias, abs=2.5)
    assert prof[k] > 3 * np.median(prof[k - 40 : k + 40])
    # Along the diagonal the ring is inside the sampled square: unaliased, at p/d.
    y, x = np.indices(ps.shape) - n // 2
    diag = np.abs(np.abs(x) - np.abs(y)) < 4
    r = np.hypot(x, y)[diag]
    prof_d = np.bincount(np.round(r).astype(int), ps[diag]) / np.maximum(
        np.bincount(np.round(r).astype(int)), 1
    )
    r_true = p / D111 * n
    kd = int(np.argmax(prof_d[int(r_true) - 15 : int(r_true) + 15])) + int(r_true) - 15
    assert kd == pytest.approx(r_true, abs=2.0)


def test_mean_counts_equal_dose_times_pixel_area() -> None:
    kw = dict(
        pixel_size_A=1.1,
        anisotropy_percent=2.0,
        kind="particles",
        n_particles=2,
        grain_size_nm=2.0,
        b_factor_A2=0.0,
    )
    clean = simulate_gold_image((256, 256), dose_e_per_A2=None, rng=np.random.default_rng(5), **kw)
    noisy = simulate_gold_image((256, 256), dose_e_per_A2=30.0, rng=np.random.default_rng(5), **kw)
    area = 1.1**2
    # A pure phase specimen (tiny gold) leaves the mean intensity at 1.
    assert clean.image.mean() == pytest.approx(1.0, abs=3e-3)
    expected = 30.0 * area * clean.image.mean()
    sigma_mean = math.sqrt(expected / clean.image.size)
    assert noisy.image.mean() == pytest.approx(expected, abs=4 * sigma_mean)
    assert np.all(noisy.image == np.round(noisy.image))
    # Variance = Poisson (= mean) + the specimen contrast scaled to counts.
    signal_var = (30.0 * area) ** 2 * clean.image.var()
    assert noisy.image.var() == pytest.approx(expected + signal_var, rel=0.05)


def test_seed_reproducibility() -> None:
    kw = dict(pixel_size_A=0.9, grain_size_nm=3.0, dose_e_per_A2=20.0)
    a = simulate_gold_image((128, 128), rng=np.random.default_rng(7), **kw)
    b = simulate_gold_image((128, 128), rng=np.random.default_rng(7), **kw)
    c = simulate_gold_image((128, 128), rng=np.random.default_rng(8), **kw)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_particles_give_spotty_partial_rings() -> None:
    n, p = 512, 0.6
    sim = simulate_gold_image(
        (n, n),
        pixel_size_A=p,
        kind="particles",
        n_particles=4,
        grain_size_nm=8.0,
        coverage=1.0,
        dose_e_per_A2=None,
        rng=np.random.default_rng(4),
    )
    ps = _power(sim.image)
    y, x = np.indices(ps.shape) - n // 2
    ring = np.abs(np.hypot(x, y) - p / D111 * n) < 2
    vals = ps[ring]
    # Spots: a few pixels of the ring carry much more than the median.
    assert vals.max() > 50 * np.median(vals)
    assert sim.grain_diameters_A.size == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixel_size_A": -1.0}, "pixel size"),
        ({"pixel_size_A": float("nan")}, "pixel size"),
        ({"anisotropy_percent": -2.0}, "anisotropy"),
        ({"kind": "powder"}, "kind"),
        ({"grain_size_nm": 0.0}, "grain size"),
        ({"coverage": 1.5}, "coverage"),
        ({"dose_e_per_A2": 0.0}, "dose"),
        ({"amplitude_contrast": 1.0}, "amplitude contrast"),
        ({"voltage_kV": -3.0}, "voltage"),
        ({"lattice_constant_A": 3.0}, "lattice constant"),
        ({"oversample": 0}, "oversample"),
        ({"cs_mm": -1.0}, "Cs"),
        ({"b_factor_A2": -5.0}, "B-factor"),
        ({"grain_thickness_nm": 0.0}, "thickness"),
    ],
)
def test_bad_parameters_raise_input_error(kwargs: dict, message: str) -> None:
    args = {"pixel_size_A": 1.0, **kwargs}
    with pytest.raises(InputError, match=message):
        simulate_gold_image((64, 64), rng=np.random.default_rng(0), **args)


def test_bad_shape_raises() -> None:
    with pytest.raises(InputError, match="shape"):
        simulate_gold_image((8, 64), pixel_size_A=1.0, rng=np.random.default_rng(0))


def test_single_crystal_spots_sit_exactly_at_mt_g() -> None:
    # A 20 nm crystal with [001] along the beam: 200/020/220/400 spots at q = M^T g
    # (cycles per detector pixel); centroids agree to < 0.02 px at r ~ 177 fine pixels,
    # i.e. the geometry is exact to ~1e-4 (a wrong transpose or M^-1 would be off by %).
    n = 384
    m = pixel_matrix_A(0.7, 2.0, 25.0)
    grains = GoldGrains(np.array([[192.0, 192.0]]), np.array([200.0]), np.eye(3)[None])
    phase = render_gold_phase((n, n), grains, pixel_matrix_A=m, oversample=2)
    power = np.abs(np.fft.fft2(phase)) ** 2
    size = 2 * n
    for g in [(2 / A, 0.0), (0.0, 2 / A), (2 / A, 2 / A), (-2 / A, 2 / A), (4 / A, 0.0)]:
        expected = m.T @ np.array(g) / 2 * size  # fine-grid index (x, y)
        ix, iy = (round(v) for v in expected)
        ys, xs = np.arange(iy - 4, iy + 5), np.arange(ix - 4, ix + 5)
        w = power[np.ix_(ys % size, xs % size)]
        centroid = ((w.sum(0) * xs).sum() / w.sum(), (w.sum(1) * ys).sum() / w.sum())
        np.testing.assert_allclose(centroid, expected, atol=0.02)
