"""Wavelength and gold lattice against literature values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temcal.errors import InputError
from temcal.physics import (
    GOLD_REFLECTIONS,
    calculate_wavelength_A,
    d_spacing_A,
    lattice_constant_A,
    parse_hkl,
)
from temcal.physics.gold import check_lattice_constant_A, parse_rings, reflection_multiplicity


@pytest.mark.parametrize(("kv", "expected"), [(200, 0.025079), (300, 0.019687), (100, 0.037014)])
def test_wavelength_literature(kv: float, expected: float) -> None:
    assert calculate_wavelength_A(kv) == pytest.approx(expected, abs=2e-6)


def test_wavelength_nonrelativistic_limit() -> None:
    # At 1 kV the relativistic correction is ~0.05 %: compare with h / sqrt(2 m e V).
    h, m, e = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19
    classic = h / math.sqrt(2 * m * e * 1e3) * 1e10
    lam = calculate_wavelength_A(1)
    assert lam < classic
    assert lam == pytest.approx(classic, rel=1e-3)


@pytest.mark.parametrize("kv", [0, -300, float("nan"), 1e6])
def test_wavelength_rejects_absurd_voltage(kv: float) -> None:
    with pytest.raises(InputError, match="voltage"):
        calculate_wavelength_A(kv)


def test_gold_room_temperature_spacings() -> None:
    a = lattice_constant_A()
    assert a == 4.0782
    expected = {"111": 2.35455, "200": 2.03910, "220": 1.44186, "311": 1.22962, "222": 1.17727}
    for hkl, d in expected.items():
        assert d_spacing_A(hkl, a) == pytest.approx(d, abs=6e-5)


def test_gold_cryo_model() -> None:
    assert lattice_constant_A(80) == pytest.approx(4.06565, abs=1e-5)
    assert lattice_constant_A(100) == pytest.approx(4.06678, abs=1e-5)
    assert lattice_constant_A(20) == lattice_constant_A(43)
    # 293 K -> 80 K shrinks the lattice by ~0.31 %
    shrink = 1 - lattice_constant_A(80) / lattice_constant_A(293)
    assert shrink == pytest.approx(0.0031, abs=0.0002)
    # the cryo model meets the room-temperature value within 0.012 %
    assert lattice_constant_A(292.999) == pytest.approx(4.0782, rel=1.2e-4)


def test_reflections_are_allowed_and_ordered() -> None:
    g2 = [h * h + k * k + l * l for h, k, l in GOLD_REFLECTIONS]
    assert g2 == sorted(g2)
    assert g2 == [3, 4, 8, 11, 12, 16, 19, 20]


@pytest.mark.parametrize("bad", ["110", "100", "abc", "1,2", "000"])
def test_parse_hkl_rejects(bad: str) -> None:
    with pytest.raises(InputError):
        parse_hkl(bad)


def test_reflection_multiplicities() -> None:
    # powder multiplicities of the cubic forms (International Tables, any powder text)
    expected = {"111": 8, "200": 6, "220": 12, "311": 24, "222": 8, "400": 6, "331": 24, "420": 24}
    for hkl, m in expected.items():
        assert reflection_multiplicity(tuple(int(c) for c in hkl)) == m  # type: ignore[arg-type]


def test_parse_rings() -> None:
    assert parse_rings("220, 111,200") == ((1, 1, 1), (2, 0, 0), (2, 2, 0))
    assert parse_rings(None) == GOLD_REFLECTIONS
    with pytest.raises(InputError):
        parse_rings(" ")


@pytest.mark.parametrize("bad", [0.0, 2.35, 40.0, float("inf")])
def test_lattice_constant_rejects_absurd(bad: float) -> None:
    with pytest.raises(InputError, match="lattice constant"):
        check_lattice_constant_A(bad)


@given(st.floats(min_value=43, max_value=292.9))
def test_cryo_lattice_monotonic(t: float) -> None:
    assert lattice_constant_A(t) <= lattice_constant_A(t + 0.1)


def test_pixel_matrix_round_trip() -> None:
    import numpy as np

    from temcal.physics.magnification import decompose_pixel_matrix, pixel_matrix_A

    m = pixel_matrix_A(1.05, 1.5, 30.0)
    g = decompose_pixel_matrix(m)
    assert g.pixel_size_A == pytest.approx(1.05, rel=1e-12)
    assert g.anisotropy_percent == pytest.approx(1.5, rel=1e-9)
    assert g.major_angle_deg == pytest.approx(30.0, abs=1e-9)
    # pixel size along the major direction is |M u|
    u = np.array([np.cos(np.radians(30)), np.sin(np.radians(30))])
    assert np.linalg.norm(m @ u) == pytest.approx(g.pixel_major_A, rel=1e-12)


@given(st.floats(0.05, 5.0), st.floats(0.0, 5.0), st.floats(0.0, 179.9))
def test_pixel_matrix_hypothesis(p: float, aniso: float, ang: float) -> None:
    from temcal.physics.magnification import decompose_pixel_matrix, pixel_matrix_A

    g = decompose_pixel_matrix(pixel_matrix_A(p, aniso, ang))
    assert g.pixel_size_A == pytest.approx(p, rel=1e-9)
    assert g.anisotropy_percent == pytest.approx(aniso, abs=1e-7)
    if aniso > 1e-3:
        d = (g.major_angle_deg - ang + 90) % 180 - 90
        assert abs(d) < 1e-4


def test_ctf_scherzer_and_signs() -> None:
    import numpy as np

    from temcal.physics.ctf import calculate_chi, calculate_ctf

    # 300 kV, Cs 2.7 mm: the Cs phase term is 0.5 rad at 5 A, 1.3 rad at 4 A, 4.0 rad at 3 A
    for d, expected in [(5.0, 0.5), (4.0, 1.3), (3.0, 4.0)]:
        chi = calculate_chi(
            np.array(1 / d), np.array(0.0), defocus_u_A=0.0, cs_mm=2.7, voltage_kV=300
        )
        assert -float(chi) == pytest.approx(expected, abs=0.06)
    # underfocus positive: chi > 0 at low k; first zero of sin(chi) at k^2 = 1/(lambda dz)
    lam = calculate_wavelength_A(300)
    k0 = 1 / np.sqrt(lam * 10000.0)
    chi0 = calculate_chi(
        np.array(k0), np.array(0.0), defocus_u_A=10000.0, cs_mm=0.0, voltage_kV=300
    )
    assert float(chi0) == pytest.approx(np.pi, rel=1e-12)
    # astigmatism: defocus_u along astig angle
    chi_u = calculate_chi(
        np.cos(0.5) * 0.1,
        np.sin(0.5) * 0.1,
        defocus_u_A=2e4,
        defocus_v_A=1e4,
        astig_angle_deg=np.degrees(0.5),
        cs_mm=0,
        voltage_kV=300,
    )
    assert float(chi_u) == pytest.approx(np.pi * lam * 2e4 * 0.01, rel=1e-12)
    # amplitude contrast: CTF(0) = -A
    assert float(
        calculate_ctf(
            np.array(0.0),
            np.array(0.0),
            defocus_u_A=1e4,
            cs_mm=2.7,
            voltage_kV=300,
            amplitude_contrast=0.07,
        )
    ) == pytest.approx(-0.07)
