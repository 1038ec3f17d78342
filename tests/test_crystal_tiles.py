"""Crystal tiles: which tiles of an image hold lattice spots (temcal.spectra.crystal_tiles)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temcal.errors import InputError
from temcal.spectra.crystal_tiles import find_crystal_tiles


def _noise_with_crystals(
    rng: np.random.Generator, tiles: list[tuple[int, int]], *, n: int = 1024, amp: float = 0.6
) -> np.ndarray:
    """Gaussian noise with a small lattice patch (two crossed fringes) centred in tiles."""
    img = rng.normal(size=(n, n))
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    for i, j in tiles:
        cy, cx = 128 * i + 64, 128 * j + 64
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 20.0**2))
        fringes = np.cos(2 * np.pi * 0.31 * (xx * 0.8 + yy * 0.6)) + np.cos(
            2 * np.pi * 0.27 * (xx * 0.6 - yy * 0.8)
        )
        img += amp * blob * fringes
    return img


def test_noise_selects_almost_nothing() -> None:
    # 1e-3 false alarms per tile: 256 tiles of pure noise select ~0.26 of them
    rng = np.random.default_rng(3)
    found = find_crystal_tiles(rng.normal(size=(2048, 2048)))
    assert found.selected.shape == (16, 16)
    assert found.n_selected <= 2
    # the threshold is the Gumbel quantile of the largest of ~5700 exponential ratios
    assert 20.0 < found.threshold < 25.0


def test_crystal_tiles_are_found() -> None:
    rng = np.random.default_rng(4)
    where = [(1, 2), (5, 6), (6, 1)]
    found = find_crystal_tiles(_noise_with_crystals(rng, where))
    sel = {tuple(map(int, ij)) for ij in np.argwhere(found.selected)}
    assert set(where) <= sel
    assert len(sel) <= len(where) + 1
    assert found.fraction == pytest.approx(len(sel) / 64)
    # the crystals' spots stand far above the threshold, the empty tiles do not
    assert min(found.peak_ratio[i, j] for i, j in where) > 5 * found.threshold


def test_mask_covers_the_crystals_and_tapers() -> None:
    rng = np.random.default_rng(5)
    found = find_crystal_tiles(_noise_with_crystals(rng, [(2, 3)]))
    mask = found.mask()
    assert mask.shape == (1024, 1024)
    assert mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert np.all(mask[256:384, 384:512] > 0.99)  # the tile itself
    assert mask[320, 384 - 16] > 0.5  # within the quarter-tile margin
    assert mask[320, 384 - 80] < 0.01  # far outside
    assert mask[900, 100] == 0.0
    # a smooth edge: no jump from 1 to 0 between neighbouring pixels
    assert np.max(np.abs(np.diff(mask, axis=1))) < 0.2


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(1e-3, 1e4), offset=st.floats(-1e3, 1e3))
def test_selection_ignores_intensity_scale_and_offset(scale: float, offset: float) -> None:
    rng = np.random.default_rng(6)
    img = _noise_with_crystals(rng, [(1, 1), (4, 5)], n=512)
    base = find_crystal_tiles(img)
    other = find_crystal_tiles(scale * img + offset)
    assert np.array_equal(base.selected, other.selected)
    np.testing.assert_allclose(other.peak_ratio, base.peak_ratio, rtol=1e-3)


@pytest.mark.parametrize(
    ("shape", "tile", "msg"),
    [((256, 256), 30, "even and at least 32"), ((100, 100), 64, "too small"), ((8,), 64, "2-D")],
)
def test_bad_input(shape: tuple[int, ...], tile: int, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        find_crystal_tiles(np.zeros(shape), tile_size=tile)
