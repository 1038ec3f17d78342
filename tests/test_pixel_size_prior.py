"""The anisotropy prior of the pixel-size fit (``ANISOTROPY_PRIOR_PERCENT``).

A poorly determined anisotropy (a few crystals' spots) is shrunk toward 0 by the
Gaussian posterior (about ``sp^2 / (sp^2 + se^2)``), and the scale follows it as in the
sectors' regression. Checked on the fast spectral ring model, with the prior's strength
set by ``anisotropy_prior_percent``, and on hand-made free fits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import temcal.calibrate.pixel_size as ps
from ring_synth import ring_image

_TRUE = dict(pixel_size_A=0.8, anisotropy_percent=2.0, major_angle_deg=30.0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return ring_image(512, rng=np.random.default_rng(5), **_TRUE)  # type: ignore[arg-type]


def test_well_determined_anisotropy_is_left_alone(image: np.ndarray) -> None:
    # full rings: the anisotropy's standard error is far below the prior's 2 %
    r = ps.measure_gold_rings(image)
    assert r.anisotropy_se_percent < 0.3 * ps.ANISOTROPY_PRIOR_PERCENT
    assert "anisotropy_prior" not in r.diagnostics
    assert r.anisotropy_percent == pytest.approx(2.0, abs=0.1)


def test_a_dominant_prior_on_an_isotropic_image() -> None:
    # truth isotropic, prior 1e-4 %: the anisotropy goes to ~0 and the pixel size stays
    # on the truth
    img = ring_image(512, rng=np.random.default_rng(6), pixel_size_A=0.8)
    free = ps.measure_gold_rings(img)
    r = ps.measure_gold_rings(img, anisotropy_prior_percent=1e-4)
    assert r.free_anisotropy_percent == pytest.approx(free.anisotropy_percent)
    assert r.free_pixel_size_A == pytest.approx(free.pixel_size_A)
    assert free.free_anisotropy_percent is None and free.free_pixel_size_A is None
    d = r.to_dict()
    assert d["free_anisotropy_percent"] == r.free_anisotropy_percent
    assert r.anisotropy_percent < 0.01
    assert r.anisotropy_se_percent < 1e-3
    assert r.pixel_size_A == pytest.approx(0.8, rel=4e-4)
    # the JSON contract still holds
    assert r.pixel_size_A == pytest.approx(math.sqrt(r.pixel_major_A * r.pixel_minor_A))


def test_prior_equal_to_the_standard_error_halves_the_variance(image: np.ndarray) -> None:
    free = ps.measure_gold_rings(image)
    se = free.anisotropy_se_percent
    r = ps.measure_gold_rings(image, anisotropy_prior_percent=se)
    # (the two components' variances differ: the factor is only about 1/2)
    assert r.anisotropy_se_percent == pytest.approx(se / math.sqrt(2.0), rel=0.1)
    assert 0.3 < r.anisotropy_percent / free.anisotropy_percent < 0.75
    assert r.major_angle_deg == pytest.approx(free.major_angle_deg, abs=5.0)


def _base(a: float, info: np.ndarray, cov: np.ndarray) -> ps.ImagePixelSize:
    # a free fit with W = w0 diag(1 + a, 1 - a) per binned pixel (binning 2)
    from temcal.physics.magnification import decompose_pixel_matrix

    w = np.diag([1.0 + a, 1.0 - a]) / 1.6
    m = np.linalg.inv(w) / 2
    g = decompose_pixel_matrix(m)
    return ps.ImagePixelSize(
        None, ((m[0, 0], 0.0), (0.0, m[1, 1])), g.pixel_size_A, 1e-3, g.pixel_major_A,
        g.pixel_minor_A, g.anisotropy_percent, g.major_angle_deg, (), 10.0, None, 512, 2,
        1000, anisotropy_se_percent=200 * math.sqrt(cov[0, 0]),
        diagnostics={"free_fit": {"W": w, "binning": 2, "pixel_size_A": g.pixel_size_A,
                                  "sector_prior_inputs": (info, cov)}},
    )  # fmt: skip


def test_the_scale_follows_the_anisotropy_through_the_sector_information() -> None:
    # free anisotropy 2 % (a = 0.01), its variance equal to the prior's: halved to 1 %.
    # The sectors' information couples the mean to the cos 2 phi term (F_01 / F_00 =
    # 0.3): holding the anisotropy at half its value moves W's scale by
    # -0.3 * (-0.005) = +0.0015, the pixel size by 1 / 1.0015
    a = 0.01
    var = (ps.ANISOTROPY_PRIOR_PERCENT / 200.0) ** 2
    info = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]])
    base = _base(a, info, var * np.eye(2))
    r = ps._with_anisotropy_prior(base, ps.ANISOTROPY_PRIOR_PERCENT)
    # (to first order in a: the second-order terms are ~1e-2 %)
    assert r.anisotropy_percent == pytest.approx(1.0, abs=0.01)
    assert r.major_angle_deg == pytest.approx(90.0, abs=1e-6)
    assert r.pixel_size_A / base.pixel_size_A == pytest.approx(1.0 / 1.0015, abs=1e-4)
    assert r.anisotropy_se_percent == pytest.approx(base.anisotropy_se_percent / math.sqrt(2))
    # without that coupling (sectors spread evenly) the scale stays (to second order)
    even = _base(a, np.eye(3), var * np.eye(2))
    r0 = ps._with_anisotropy_prior(even, ps.ANISOTROPY_PRIOR_PERCENT)
    assert r0.pixel_size_A / even.pixel_size_A == pytest.approx(1.0, abs=1e-4)
    # ring offsets' rescaling of the free fit (here +0.1 %) is kept
    from dataclasses import replace

    k = 1.001
    out = replace(base, pixel_size_A=base.pixel_size_A * k)
    r2 = ps._with_anisotropy_prior(out, ps.ANISOTROPY_PRIOR_PERCENT)
    assert r2.pixel_size_A == pytest.approx(r.pixel_size_A * k, rel=1e-12)
    # a well-determined anisotropy (variance 1 % of the prior's) is returned unchanged
    sharp = _base(a, info, 0.01 * var * np.eye(2))
    assert ps._with_anisotropy_prior(sharp, ps.ANISOTROPY_PRIOR_PERCENT) is sharp
    # and 0 turns the prior off
    assert ps._with_anisotropy_prior(base, 0.0) is base
