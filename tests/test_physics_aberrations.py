import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temcal.physics.aberrations import (
    AxialAberrations,
    c1_a1_from_defocus_astigmatism,
    calculate_aberration_function_A,
    calculate_aberration_gradient_A,
    calculate_tilt_image_shift_A,
    calculate_tilt_induced_c1_a1_A,
    defocus_astigmatism_from_c1_a1,
)


def _random_ab(rng: np.random.Generator) -> AxialAberrations:
    def c(scale: float) -> complex:
        return complex(rng.normal(0, scale), rng.normal(0, scale))

    return AxialAberrations(
        C1_A=rng.normal(0, 5000),
        A1_A=c(100),
        B2_A=c(2000),
        A2_A=c(3000),
        C3_A=rng.normal(2.7e7, 1e6),
        S3_A=c(1e5),
        A3_A=c(1e5),
    )


def _krivanek_w(alpha: np.ndarray, phi: np.ndarray, k: dict[str, float]) -> np.ndarray:
    """Krivanek polar W written term by term (independent of the module's code)."""
    r = np.radians
    return (
        0.5 * alpha**2 * (k["C10_A"] + k["C12_A"] * np.cos(2 * (phi - r(k["phi12_deg"]))))
        + alpha**3
        / 3
        * (
            k["C21_A"] * np.cos(phi - r(k["phi21_deg"]))
            + k["C23_A"] * np.cos(3 * (phi - r(k["phi23_deg"])))
        )
        + 0.25
        * alpha**4
        * (
            k["C30_A"]
            + k["C32_A"] * np.cos(2 * (phi - r(k["phi32_deg"])))
            + k["C34_A"] * np.cos(4 * (phi - r(k["phi34_deg"])))
        )
    )


def test_krivanek_equals_ceos_w(rng):
    for _ in range(5):
        ab = _random_ab(rng)
        k = ab.to_krivanek()
        alpha = rng.uniform(0, 0.02, 200)
        phi = rng.uniform(-np.pi, np.pi, 200)
        w_complex = calculate_aberration_function_A(alpha * np.exp(1j * phi), ab)
        np.testing.assert_allclose(w_complex, _krivanek_w(alpha, phi, k), rtol=1e-9, atol=1e-9)


def test_notation_factors():
    # C21 = 3 |B2|, C32 = 4 |S3|, angles: A1 = C12 e^{2 i phi12}
    ab = AxialAberrations.from_krivanek(
        C12_A=10, phi12_deg=30, C21_A=300, phi21_deg=200, C32_A=400, phi32_deg=10
    )
    assert abs(ab.B2_A) == pytest.approx(100)
    assert abs(ab.S3_A) == pytest.approx(100)
    assert np.angle(ab.A1_A, deg=True) == pytest.approx(60)
    assert np.angle(ab.B2_A, deg=True) % 360 == pytest.approx(200)


_ang = st.floats(-720, 720, allow_nan=False)
_mag = st.floats(0.01, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    c10=st.floats(-1e5, 1e5, allow_nan=False),
    c12=_mag,
    p12=_ang,
    c21=_mag,
    p21=_ang,
    c23=_mag,
    p23=_ang,
    c30=st.floats(-1e8, 1e8, allow_nan=False),
    c32=_mag,
    p32=_ang,
    c34=_mag,
    p34=_ang,
)
def test_polar_round_trip(c10, c12, p12, c21, p21, c23, p23, c30, c32, p32, c34, p34):
    ab = AxialAberrations.from_krivanek(
        C10_A=c10,
        C12_A=c12,
        phi12_deg=p12,
        C21_A=c21,
        phi21_deg=p21,
        C23_A=c23,
        phi23_deg=p23,
        C30_A=c30,
        C32_A=c32,
        phi32_deg=p32,
        C34_A=c34,
        phi34_deg=p34,
    )
    k = ab.to_krivanek()
    for name, m, mag, ang in (
        ("12", 2, c12, p12),
        ("21", 1, c21, p21),
        ("23", 3, c23, p23),
        ("32", 2, c32, p32),
        ("34", 4, c34, p34),
    ):
        assert k[f"C{name}_A"] == pytest.approx(mag, rel=1e-9)
        period = 360.0 / m
        got = k[f"phi{name}_deg"]
        assert 0.0 <= got < period
        d = (got - ang) % period
        assert min(d, period - d) < 1e-6 * period
    back = AxialAberrations.from_krivanek(**k)
    np.testing.assert_allclose(back.to_vector(), ab.to_vector(), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(
        AxialAberrations.from_vector(ab.to_vector()).to_vector(), ab.to_vector()
    )


def test_gradient_is_finite_difference_of_w(rng):
    h = 1e-7
    for _ in range(5):
        ab = _random_ab(rng)
        w = rng.uniform(-0.01, 0.01, 50) + 1j * rng.uniform(-0.01, 0.01, 50)
        gx = (
            calculate_aberration_function_A(w + h, ab) - calculate_aberration_function_A(w - h, ab)
        ) / (2 * h)
        gy = (
            calculate_aberration_function_A(w + 1j * h, ab)
            - calculate_aberration_function_A(w - 1j * h, ab)
        ) / (2 * h)
        g = calculate_aberration_gradient_A(w, ab)
        np.testing.assert_allclose(g.real, gx, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g.imag, gy, rtol=1e-5, atol=1e-5)


def test_image_shift_formula_term_by_term(rng):
    # physics.md's delta(tau) written out here, checked against the implementation
    ab = _random_ab(rng)
    t = 0.007 * np.exp(1j * 0.3)
    tb, tt = np.conj(t), abs(t) ** 2
    expected = (
        ab.C1_A * t
        + ab.A1_A * tb
        + 2 * ab.B2_A * tt
        + np.conj(ab.B2_A) * t**2
        + ab.A2_A * tb**2
        + ab.C3_A * tt * t
        + 3 * ab.S3_A * tt * tb
        + np.conj(ab.S3_A) * t**3
        + ab.A3_A * tb**3
    )
    assert calculate_tilt_image_shift_A(t, ab) == pytest.approx(expected, rel=1e-12)


def test_cs_shift_literature_value():
    ab = AxialAberrations(C3_A=2.7e7)
    assert abs(calculate_tilt_image_shift_A(0.010, ab)) == pytest.approx(27.0)  # 2.7 nm


def test_induced_c1_a1_is_hessian_of_w(rng):
    h = 1e-5
    for _ in range(5):
        ab = _random_ab(rng)
        t = complex(rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01))

        def w(z: complex, ab: AxialAberrations = ab) -> float:
            return float(calculate_aberration_function_A(z, ab))

        hxx = (w(t + h) - 2 * w(t) + w(t - h)) / h**2
        hyy = (w(t + 1j * h) - 2 * w(t) + w(t - 1j * h)) / h**2
        hxy = (w(t + h + 1j * h) - w(t + h - 1j * h) - w(t - h + 1j * h) + w(t - h - 1j * h)) / (
            4 * h * h
        )
        c1, a1 = calculate_tilt_induced_c1_a1_A(t, ab)
        scale = 1e-4 * (abs(ab.C1_A) + 1e4)
        assert float(c1) == pytest.approx(0.5 * (hxx + hyy), abs=scale)
        assert complex(a1).real == pytest.approx(0.5 * (hxx - hyy), abs=scale)
        assert complex(a1).imag == pytest.approx(hxy, abs=scale)


def test_round_lens_defocus_along_and_across_tilt():
    cs = 2.7e7
    c1 = -8000.0
    tau = 0.01 * np.exp(1j * math.radians(35))
    ab = AxialAberrations(C1_A=c1, C3_A=cs)
    c1t, a1t = calculate_tilt_induced_c1_a1_A(tau, ab)
    u, v, ang = defocus_astigmatism_from_c1_a1(float(c1t), complex(a1t))
    # Krivanek C10 along tilt is C1 + 3 Cs tau^2 -> defocus = -(that)
    assert v == pytest.approx(-(c1 + 3 * cs * 1e-4))  # along: least underfocus, -100 Å
    assert u == pytest.approx(-(c1 + cs * 1e-4))  # across: 5300 Å
    assert ang == pytest.approx(125.0)  # defocus_u across the tilt (35 + 90)
    assert v < 0 < u  # crosses focus


def test_defocus_astigmatism_round_trip_and_direction(rng):
    for _ in range(20):
        c1 = rng.normal(-5000, 3000)
        a1 = complex(rng.normal(0, 500), rng.normal(0, 500))
        u, v, ang = defocus_astigmatism_from_c1_a1(c1, a1)
        assert u >= v and 0 <= ang < 180
        c1b, a1b = c1_a1_from_defocus_astigmatism(u, v, ang)
        assert c1b == pytest.approx(c1)
        assert a1b == pytest.approx(a1)
        # defocus along phi from W's quadratic form: -(C1 + Re(A1 e^{-2 i phi}))
        phi = math.radians(ang)
        assert -(c1 + (a1 * np.exp(-2j * phi)).real) == pytest.approx(u)


def test_rotated_frame_invariance(rng):
    ab = _random_ab(rng)
    w = rng.normal(0, 0.01, 20) + 1j * rng.normal(0, 0.01, 20)
    rot = ab.rotated(37.0)
    np.testing.assert_allclose(
        calculate_aberration_function_A(w * np.exp(1j * math.radians(37.0)), rot),
        calculate_aberration_function_A(w, ab),
        rtol=1e-9,
        atol=1e-9,
    )
