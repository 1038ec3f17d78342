"""CTF-modulation uncertainty of broad gold rings: formula and behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temcal.calibrate.pixel_size import measure_gold_rings
from temcal.calibrate.pixel_size_results import _defocus_group_labels
from temcal.calibrate.ring_bias import (
    calculate_ring_ctf_bias,
    calculate_worst_ring_ctf_bias,
    combine_ring_biases,
)
from temcal.physics.ctf import calculate_chi
from temcal.simulate.gold import simulate_gold_image


def _centroid_shift(x: np.ndarray, u: np.ndarray, m: np.ndarray) -> float:
    return float(np.sum(x * u * m) / np.sum(u * m))


@pytest.mark.parametrize("defocus_A", [0.0, 3000.0, 6000.0, 12000.0])
@pytest.mark.parametrize("w", [0.002, 0.005])
def test_bias_amplitude_bounds_the_weak_modulation_shift(defocus_A: float, w: float) -> None:
    # a Gaussian ring times a weak modulation 1 - g cos(2 chi(s) + c): over all phases c
    # the centroid shift reaches g * 2|chi'| w^2 D (first order in g); b never falls
    # below it, and equals it where the smooth branch D dominates
    r0 = math.sqrt(3.0) / 4.0782
    x = np.linspace(-12 * w, 12 * w, 20001)
    u = np.exp(-0.5 * (x / w) ** 2)
    chi = calculate_chi(r0 + x, 0 * x, defocus_u_A=defocus_A, cs_mm=2.7, voltage_kV=300.0)
    g = 1e-3
    shifts = [
        _centroid_shift(x, u, 1.0 - g * np.cos(2.0 * chi + c))
        for c in np.linspace(0, 2 * np.pi, 73)
    ]
    numeric = max(np.abs(shifts)) / g
    b = calculate_ring_ctf_bias(r0, w, eta=0.0, defocus_A=defocus_A, voltage_kV=300.0, cs_mm=2.7)
    assert b >= 0.9 * numeric
    lam = 0.019687
    dchi = abs(2 * math.pi * lam * defocus_A * r0 - 2 * math.pi * 2.7e7 * lam**3 * r0**3)
    smooth = 2 * dchi * w * w * math.exp(-2 * dchi * dchi * w * w)
    # chi is not exactly linear across the ring: 10 % agreement with the smooth branch
    assert numeric == pytest.approx(smooth, rel=0.1, abs=1e-3 * w)


def test_overlap_branch_vanishes_beyond_the_grain() -> None:
    # delocalisation |chi'| / pi beyond 1.5 * 0.44 / w: the displaced images do not
    # overlap, and the smooth branch is negligible there
    w = 0.004
    r0 = 0.4247
    far = calculate_ring_ctf_bias(r0, w, eta=0.0, defocus_A=15000.0, voltage_kV=300.0, cs_mm=2.7)
    assert far < 1e-5 * w
    # in focus (chi' from Cs only, delocalisation 32 Å << 165 Å) the overlap is ~0.75
    near = calculate_ring_ctf_bias(r0, w, eta=0.0, defocus_A=0.0, voltage_kV=300.0, cs_mm=2.7)
    dchi = 2 * math.pi * 2.7e7 * 0.019687**3 * r0**3
    assert near == pytest.approx(2 * dchi * w * w * 0.75, rel=0.1)


def test_worst_case_is_the_maximum_over_defocus() -> None:
    w = 0.004
    r0 = 0.4247
    vals = [
        calculate_ring_ctf_bias(r0, w, eta=0.0, defocus_A=dz, voltage_kV=300.0, cs_mm=2.7)
        for dz in np.linspace(-20000, 40000, 6001)
    ]
    assert max(vals) == pytest.approx(calculate_worst_ring_ctf_bias(w), rel=2e-3)
    assert calculate_worst_ring_ctf_bias(w) == pytest.approx(0.838 * w, rel=2e-3)


def test_combine_is_weighted_mean() -> None:
    assert combine_ring_biases([0.01, 0.03], [1.0, 3.0]) == pytest.approx(0.025)
    assert combine_ring_biases([0.01, 0.03], [0.0, 0.0]) == pytest.approx(0.02)


def test_defocus_groups() -> None:
    labels = _defocus_group_labels([10000.0, 10100.0, 15000.0, 9990.0, 20000.0])
    assert labels[0] == labels[1] == labels[3]
    assert len(set(labels.tolist())) == 3
    assert set(_defocus_group_labels([1000.0, None]).tolist()) == {0}


@pytest.mark.parametrize(
    ("defocus_A", "grain_nm", "big"), [(0.0, 8.0, True), (20000.0, 5.0, False)]
)
def test_uncertainty_large_near_focus_small_far_from_it(
    defocus_A: float, grain_nm: float, big: bool
) -> None:
    sim = simulate_gold_image(
        (1024, 1024),
        pixel_size_A=0.7,
        grain_size_nm=grain_nm,
        grain_thickness_nm=4.0,
        coverage=0.6,
        defocus_A=defocus_A,
        dose_e_per_A2=60.0,
        rng=np.random.default_rng(3),
    )
    r = measure_gold_rings(sim.image, lattice_constant_A=sim.lattice_constant_A)
    rel = r.ctf_bias_se_A / r.pixel_size_A
    if big:
        assert rel > 1e-3  # near focus: broad rings may be shifted by 0.1-1 %
    else:
        assert r.thon_defocus_A == pytest.approx(defocus_A, rel=0.02)
        assert rel < 1e-4


@pytest.mark.parametrize("width", [0.002, 0.004, 0.008])
@pytest.mark.parametrize("radius", [1.0 / 2.3546, 1.0 / 2.0391])
def test_min_unshifted_defocus(width: float, radius: float) -> None:
    from temcal.calibrate.ring_bias import calculate_min_unshifted_defocus_A

    dz = calculate_min_unshifted_defocus_A(radius, width, voltage_kV=300.0, cs_mm=2.7)
    kw = {"eta": 0.0, "voltage_kV": 300.0, "cs_mm": 2.7}
    worst = calculate_worst_ring_ctf_bias(width)
    # beyond it the shift is gone (the smooth tail is below exp(-8) of the worst case) ...
    for f in (1.001, 1.2, 2.0):
        assert calculate_ring_ctf_bias(radius, width, defocus_A=f * dz, **kw) < 1e-3 * worst
    # ... just before it the overlap term still shifts the ring
    assert calculate_ring_ctf_bias(radius, width, defocus_A=0.9 * dz, **kw) > 1e-3 * worst
    # Delta = 2 lambda dz R - 2 Cs lambda^3 R^3 equals the grain diameter 0.66 / w there
    lam = 0.019687
    delta = 2 * lam * dz * radius - 2 * 2.7e7 * lam**3 * radius**3
    assert delta == pytest.approx(0.66 / width, rel=1e-3)
