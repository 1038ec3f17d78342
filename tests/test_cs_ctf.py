"""Joint Cs fit over a simulated defocus series (and the p^-4 law)."""

from __future__ import annotations

import numpy as np
import pytest

from temcal.calibrate.cs_ctf import (
    CsCtfResult,
    cs_voltage_sensitivity,
    fit_cs_ctf,
    refit_cs_with_pixel_size,
)
from temcal.errors import CalibrationError, InputError
from temcal.simulate.ctf_series import CtfSeries, simulate_ctf_series


@pytest.fixture(scope="module")
def series() -> CtfSeries:
    return simulate_ctf_series(
        n_micrographs=4,
        shape=(512, 512),
        pixel_size_A=1.0,
        voltage_kV=300,
        cs_mm=2.7,
        rng=np.random.default_rng(7),
        defocus_range_A=(4000.0, 12000.0),
        astigmatism_A=600.0,
        b_factor_A2=5.0,
        dose_e_per_A2=100.0,
        oversample=1,
    )


@pytest.fixture(scope="module")
def result(series: CtfSeries) -> CsCtfResult:
    return fit_cs_ctf(
        list(series.images),
        pixel_size_A=1.0,
        voltage_kV=300,
        cs_nominal_mm=2.2,
        pixel_size_ci95_A=0.002,
    )


def test_cs_recovered(result: CsCtfResult, series: CtfSeries) -> None:
    # 4 x 512^2, rings to ~2.5 Å: we guarantee 2 % (measured: ~0.1-0.5 %)
    assert result.cs_mm == pytest.approx(2.7, rel=0.02)
    assert 0 < result.cs_fit_ci95_mm < 0.1
    # the budget: 0.2 % pixel interval -> 0.8 % in Cs
    assert result.cs_pixel_ci95_mm == pytest.approx(4 * 0.002 * result.cs_mm, rel=1e-9)
    assert result.cs_ci95_mm >= result.cs_fit_ci95_mm
    assert result.differs_from_nominal is True  # 2.2 mm is far outside
    for f, t in zip(result.micrographs, series.truths, strict=True):
        mean_t = 0.5 * (t.defocus_u_A + t.defocus_v_A)
        assert f.defocus_mean_A == pytest.approx(mean_t, rel=2e-3)
        assert f.astigmatism_A == pytest.approx(600.0, abs=30.0)
        d = (f.astig_angle_deg - t.astig_angle_deg) % 180.0
        assert min(d, 180.0 - d) < 2.0
        assert f.cs_mm == result.cs_mm
    keys = result.to_dict()
    for k in ("cs_mm", "cs_ci95_mm", "pixel_size_A", "voltage_kV", "micrographs"):
        assert k in keys
    # a pixel size 1 % too large / small shifts Cs by +4 / -4 % (p^4), within 0.5 %
    up = refit_cs_with_pixel_size(result, 1.01)
    down = refit_cs_with_pixel_size(result, 0.99)
    assert 100 * (up / result.cs_mm - 1) == pytest.approx(4.0, abs=0.5)
    assert 100 * (down / result.cs_mm - 1) == pytest.approx(-4.0, abs=0.5)


def test_voltage_sensitivity() -> None:
    # Cs lambda^3 is fixed: d ln Cs / d ln V = 3 * 0.5 (1 + V/E0) / (1 + V/2E0)
    e0 = 510.99895
    v = 300.0
    expected = 1.5 * (1 + v / e0) / (1 + v / (2 * e0))
    assert cs_voltage_sensitivity(300) == pytest.approx(expected, rel=1e-5)


def test_single_micrograph_refused(rng: np.random.Generator) -> None:
    with pytest.raises(InputError, match="single micrograph"):
        fit_cs_ctf([rng.normal(size=(256, 256))], pixel_size_A=1.0, voltage_kV=300)


def test_mixed_sizes_refused(rng: np.random.Generator) -> None:
    with pytest.raises(InputError, match="different sizes"):
        fit_cs_ctf(
            [rng.normal(size=(256, 256)), rng.normal(size=(128, 128))],
            pixel_size_A=1.0,
            voltage_kV=300,
        )


def test_low_resolution_rings_refused() -> None:
    s = simulate_ctf_series(
        n_micrographs=3,
        shape=(512, 512),
        pixel_size_A=1.0,
        voltage_kV=300,
        cs_mm=2.7,
        rng=np.random.default_rng(3),
        defocus_range_A=(8000.0, 20000.0),
        b_factor_A2=250.0,
        oversample=1,
    )
    with pytest.raises(CalibrationError, match="4 Å"):
        fit_cs_ctf(list(s.images), pixel_size_A=1.0, voltage_kV=300)


def test_pixel_from_gold_uses_each_micrographs_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-micrograph pixel sizes (here from a stand-in for the gold measurement)."""
    import sys
    import types

    s = simulate_ctf_series(
        n_micrographs=3,
        shape=(512, 512),
        pixel_size_A=1.0,
        voltage_kV=300,
        cs_mm=2.7,
        rng=np.random.default_rng(21),
        defocus_range_A=(4000.0, 12000.0),
        b_factor_A2=5.0,
        oversample=1,
        magnification_change_percent_per_um=2.0,
    )
    truth = {id(img): p for img, p in zip(s.images, s.pixel_sizes_A, strict=True)}

    def measure_gold_rings(image: np.ndarray, **kw: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(pixel_size_A=truth[id(image)], pixel_size_se_A=0.0005)

    fake = types.ModuleType("temcal.calibrate.pixel_size")
    fake.measure_gold_rings = measure_gold_rings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "temcal.calibrate.pixel_size", fake)
    r = fit_cs_ctf(list(s.images), pixel_from_gold=True, voltage_kV=300)
    assert r.pixel_sizes_A == pytest.approx(s.pixel_sizes_A)
    assert r.cs_mm == pytest.approx(2.7, rel=0.03)
    for f, t, p in zip(r.micrographs, s.truths, s.pixel_sizes_A, strict=True):
        assert f.pixel_size_A == p
        assert f.defocus_mean_A == pytest.approx(0.5 * (t.defocus_u_A + t.defocus_v_A), rel=2e-3)
    assert r.magnification_change_percent_per_um == pytest.approx(2.0, abs=0.05)
    assert r.cs_pixel_ci95_mm > 0
    with pytest.raises(InputError, match="exactly one"):
        fit_cs_ctf(list(s.images), pixel_size_A=1.0, pixel_from_gold=True, voltage_kV=300)
