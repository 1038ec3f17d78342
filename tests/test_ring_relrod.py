"""The inward shift of thin crystals' rings (relrods) and its correction."""

from __future__ import annotations

import numpy as np
import pytest

from ring_synth import ring_image
from temcal.calibrate.pixel_size import measure_gold_rings
from temcal.calibrate.ring_bias import calculate_relrod_shift
from temcal.errors import InputError

R111 = 1.0 / 2.35455


def test_relrod_shift_is_inward_and_falls_as_one_over_thickness() -> None:
    shifts = [
        calculate_relrod_shift(R111, 0.004, eta=0.3, thickness_A=t) / R111 for t in (30, 60, 120)
    ]
    assert all(s < 0 for s in shifts)
    # the fitted window cuts the relrod tail: the shift goes about as 1/t, not 1/t^2
    assert 1.6 < shifts[0] / shifts[1] < 2.4
    assert 1.6 < shifts[1] / shifts[2] < 2.4
    # 3 nm, 10 nm grains: -0.06 % (measured on the simulator: -0.05 %)
    assert -1.0e-3 < shifts[0] < -3.0e-4
    # thick crystals: nothing left
    assert abs(calculate_relrod_shift(R111, 0.004, eta=0.3, thickness_A=1e4)) / R111 < 2e-5


def test_relrod_shift_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        calculate_relrod_shift(R111, 0.004, eta=0.3, thickness_A=0.0)
    with pytest.raises(ValueError, match="eta"):
        calculate_relrod_shift(R111, 0.004, eta=1.5, thickness_A=30.0)


def test_thickness_correction_recovers_the_pixel_size_of_thin_crystals() -> None:
    # the same random field with rings of 2 nm-thick crystals (tails built by summing
    # tilted reflections) and without: the tails pull the plain fit ~0.09 % low; given
    # the thickness, the result agrees with the tail-free image's
    def image(t_A: float | None) -> np.ndarray:
        return ring_image(
            512,
            pixel_size_A=0.8,
            sigma_per_A=0.004,
            reflections=((1, 1, 1), (2, 0, 0)),
            relrod_thickness_A=t_A,
            rng=np.random.default_rng(0),
        )

    thick = measure_gold_rings(image(None), guess_pixel_size_A=0.8)
    thin_img = image(20.0)
    thin = measure_gold_rings(thin_img, guess_pixel_size_A=0.8)
    fixed = measure_gold_rings(thin_img, guess_pixel_size_A=0.8, grain_thickness_nm=2.0)
    assert thin.relrod_correction_percent is None
    assert 100 * (thin.pixel_size_A / thick.pixel_size_A - 1) < -0.06
    assert abs(fixed.pixel_size_A / thick.pixel_size_A - 1) < 2e-4
    assert fixed.relrod_correction_percent is not None and fixed.relrod_correction_percent > 0.06
    # the anisotropy is untouched by an isotropic correction
    assert fixed.anisotropy_percent == pytest.approx(thin.anisotropy_percent, abs=1e-9)


def test_absurd_grain_thickness_is_refused() -> None:
    img = ring_image(256, pixel_size_A=0.8, rng=np.random.default_rng(1))
    for bad in (0.0, -3.0, float("nan"), 1e5):
        with pytest.raises(InputError, match="grain thickness"):
            measure_gold_rings(img, grain_thickness_nm=bad)
