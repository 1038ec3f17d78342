"""Images whose gold rings are made of a few crystals' spots: honest intervals, no
silently wrong pixel size.

The parameters are random draws of a robustness set (2048², grains 8-30 nm, foils of
partial coverage and isolated particles) on which the previous estimator reported
anisotropy intervals 3-16x too narrow and, on the first case below, a pixel size 40 %
off with a 0.2 % standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from temcal.calibrate.pixel_size import measure_gold_rings
from temcal.errors import CalibrationError
from temcal.simulate.gold import simulate_gold_image


def _simulate(seed: int, size: int = 2048, **kw: float | str) -> tuple[np.ndarray, float]:
    sim = simulate_gold_image(
        (size, size),
        lattice_constant_A=4.0782,
        rng=np.random.default_rng(seed),
        **kw,  # type: ignore[arg-type]
    )
    return sim.image, sim.pixel_size_A


def test_pattern_without_111_and_200_is_refused() -> None:
    # large grains, few spots: the search's best candidate is 0.58 x the truth, where
    # only one feature matches a weak ring (220) while 111 and 200 would be inside
    img, _ = _simulate(
        2009,
        pixel_size_A=0.3736604750919089,
        grain_size_nm=23.831497892245974,
        defocus_A=12179.549660582532,
        dose_e_per_A2=53.739427469910076,
        kind="foil",
        coverage=0.5983729735431242,
        grain_thickness_nm=4.0,
    )
    with pytest.raises(CalibrationError, match="111 and 200"):
        measure_gold_rings(img, lattice_constant_A=4.0782)


def test_single_crystal_is_refused_unless_rings_are_given() -> None:
    # 16 particles at 1.29 Å/px (every ring beyond Nyquist): one crystal's spots carry
    # the signal; the fit took the folded 111 for a ring inside and was 16 % off
    img, _ = _simulate(
        2021,
        size=1024,
        pixel_size_A=1.2855191212516133,
        anisotropy_percent=1.0,
        major_angle_deg=20.321472000941625,
        grain_size_nm=10.077339208695536,
        defocus_A=19055.872842082703,
        dose_e_per_A2=62.210905442050546,
        kind="particles",
        n_particles=16,
    )
    with pytest.raises(CalibrationError, match="single crystal"):
        measure_gold_rings(img, lattice_constant_A=4.0782)


def test_few_crystals_needing_a_large_anisotropy_are_refused() -> None:
    # 24 particles of 29 nm: only their 220 and 311 spots show; taken for 111 and 200
    # (ratios 1.155 and 1.173) they fit one ellipse with 6 % anisotropy, 66 % off
    img, _ = _simulate(
        2077,
        pixel_size_A=0.47417972619329807,
        anisotropy_percent=2.0,
        major_angle_deg=127.56274442265754,
        grain_size_nm=28.968920366781084,
        defocus_A=14934.220054192903,
        dose_e_per_A2=74.78963294251992,
        kind="particles",
        n_particles=24,
    )
    with pytest.raises(CalibrationError, match="anisotropy of"):
        measure_gold_rings(img, lattice_constant_A=4.0782)


@pytest.mark.parametrize(
    ("seed", "params"),
    [
        # one or two 17 nm crystals carry the 111 and 311 rings
        (
            2026,
            dict(
                pixel_size_A=0.4518026361671617,
                grain_size_nm=16.995771419865008,
                defocus_A=9825.34935208925,
                dose_e_per_A2=46.01936974420863,
                kind="foil",
                coverage=0.3381557829669197,
                grain_thickness_nm=10.0,
            ),
        ),
        # 28 isolated 18 nm particles near focus
        (
            2024,
            dict(
                pixel_size_A=0.5689834096561653,
                grain_size_nm=18.2444031558069,
                defocus_A=840.3841015930192,
                dose_e_per_A2=73.18395988691348,
                kind="particles",
                n_particles=28,
            ),
        ),
    ],
)
def test_few_crystals_intervals_cover_the_truth(seed: int, params: dict) -> None:
    # truth: isotropic. Before, these gave anisotropy 3.2 +- 0.20 and 0.63 +- 0.09 (1 se)
    img, p_true = _simulate(seed, **params)
    r = measure_gold_rings(img, lattice_constant_A=4.0782)
    se_p = math.hypot(r.pixel_size_se_A, r.ctf_bias_se_A)
    assert abs(r.pixel_size_A - p_true) < 2.6 * se_p
    assert r.anisotropy_percent < 2.45 * r.anisotropy_se_percent


# one 18 nm grain of a 4 nm foil band carries the rings (~1 direction of 18)
_LONE_CRYSTAL = dict(
    pixel_size_A=0.7978557222315489,
    anisotropy_percent=1.0,
    major_angle_deg=47.917431215473634,
    grain_size_nm=17.845508337922567,
    defocus_A=15250.059507557655,
    dose_e_per_A2=56.919795811959204,
    kind="foil",
    coverage=0.281298753975133,
    grain_thickness_nm=4.0,
)


def test_a_close_guess_assigns_a_lone_crystals_spots() -> None:
    # without a guess the spots' reflections cannot be told apart (refused); a guess
    # 1.5 % off leaves one assignment within 5 % of it, and the measured pixel size
    # carries an honest, wide interval (one crystal: Student-t, per-spot jitter)
    img, p_true = _simulate(2147, size=1024, **_LONE_CRYSTAL)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="single crystal"):
        measure_gold_rings(img, lattice_constant_A=4.0782)
    r = measure_gold_rings(img, lattice_constant_A=4.0782, guess_pixel_size_A=0.786)
    assert r.ring_directions is not None and r.ring_directions < 1.5
    se_p = math.hypot(r.pixel_size_se_A, r.ctf_bias_se_A)
    assert abs(r.pixel_size_A - p_true) < 1.96 * se_p
    assert abs(r.pixel_size_A / p_true - 1.0) < 0.02
    assert 1.96 * se_p / p_true > 0.005  # one crystal: no tight interval


def test_a_result_far_from_the_guess_is_refused() -> None:
    # the 24 particles of 29 nm whose 220 and 311 spots pass for 111 and 200: the search
    # lands on a labelling 62 % from a guess 2.5 % off (and, confined to x1.25 of the
    # guess, on one 15 % from it, which was once reported as a pixel size 17.6 % off):
    # refused either way
    img, _ = _simulate(
        2077,
        pixel_size_A=0.47417972619329807,
        anisotropy_percent=2.0,
        major_angle_deg=127.56274442265754,
        grain_size_nm=28.968920366781084,
        defocus_A=14934.220054192903,
        dose_e_per_A2=74.78963294251992,
        kind="particles",
        n_particles=24,
    )
    with pytest.raises(CalibrationError, match=r"% from the guess 0\.4858 Å/px"):
        measure_gold_rings(img, lattice_constant_A=4.0782, guess_pixel_size_A=0.4858)


def test_a_guess_never_loses_what_the_search_alone_measures() -> None:
    # 21 particles of 21 nm: measured without a guess (-0.39 %). With a correct guess
    # (1.2 % low) the relaxed search once picked a slightly different candidate, whose
    # fit kept no significant ring ("no fitted ring is significant"): refused. The search
    # without the guess now runs first, so the same image gives the same result.
    img, p_true = _simulate(
        2056,
        pixel_size_A=0.6405246523408319,
        anisotropy_percent=2.0,
        major_angle_deg=105.24443983650896,
        grain_size_nm=21.437830455611163,
        defocus_A=15782.198553023776,
        dose_e_per_A2=36.99395328990143,
        kind="particles",
        n_particles=21,
    )
    r0 = measure_gold_rings(img, lattice_constant_A=4.0782)
    r1 = measure_gold_rings(img, lattice_constant_A=4.0782, guess_pixel_size_A=0.6327)
    assert r1.pixel_size_A == pytest.approx(r0.pixel_size_A, rel=1e-9)
    assert abs(r1.pixel_size_A / p_true - 1.0) < 0.01


def test_sparse_particles_are_measured_on_their_tiles() -> None:
    # ten 10 nm particles in a 1024² field (2 % of the area): averaged over every tile,
    # the spectrum shows no gold pattern; masked to the tiles with spots it does
    # (measured: +0.16 %, 95 % interval ±4.7 %, few crystals)
    img, truth = _simulate(
        1,
        size=1024,
        pixel_size_A=0.6,
        kind="particles",
        grain_size_nm=10.0,
        n_particles=10,
        defocus_A=10000.0,
        dose_e_per_A2=30.0,
    )
    from temcal.calibrate.pixel_size import _measure_image
    from temcal.physics.gold import GOLD_REFLECTIONS

    with pytest.raises(CalibrationError):
        _measure_image(img, None, None, 4.0782, GOLD_REFLECTIONS, None, None)
    res = measure_gold_rings(img, lattice_constant_A=4.0782)
    assert res.crystal_tile_fraction is not None and res.crystal_tile_fraction < 0.4
    err = res.pixel_size_A / truth - 1.0
    assert abs(err) < 0.01
    assert {r.hkl for r in res.rings} >= {"111", "200"}


def test_sparse_fallback_needs_two_low_order_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    # the second try's result holds one ring (and a far alias): its label is a guess, so
    # the whole image's error stands
    import dataclasses

    import temcal.calibrate.pixel_size as ps

    rng = np.random.default_rng(8)
    img = rng.normal(size=(1024, 1024)).astype(np.float32)
    calls: list[bool] = []

    def fake(image: np.ndarray, *args: object, thon_image: np.ndarray | None = None):
        calls.append(thon_image is not None)
        if thon_image is None:
            raise CalibrationError("no gold on the whole image")
        ring = ps.RingFit("200", 2.0391, 0.29, 0.01, 1.0, 20.0, False)
        far = dataclasses.replace(ring, hkl="420", d_A=0.912)
        return ps.ImagePixelSize(
            None, ((0.6, 0.0), (0.0, 0.6)), 0.6, 0.001, 0.6, 0.6, 0.0, 0.0,
            (ring, far), 5.0, None, 512, 1, 100,
        )  # fmt: skip

    monkeypatch.setattr(ps, "_measure_image", fake)
    monkeypatch.setattr(ps, "_crystal_masked", lambda im: (im, 0.1))
    with pytest.raises(CalibrationError, match="whole image"):
        ps._measure(img, None, None, 4.0782, ps.GOLD_REFLECTIONS, None, None)
    assert calls == [False, True]
    # with the rings chosen by the user the labels are theirs: the result stands
    out = ps._measure(img, None, None, 4.0782, [(2, 0, 0), (4, 2, 0)], None, None)
    assert out.crystal_tile_fraction == 0.1
