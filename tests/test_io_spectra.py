"""Image input and the power-spectrum estimator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from temcal.errors import InputError, OutputExistsError
from temcal.io import read_image, write_json, write_mrc
from temcal.spectra import calculate_power_spectrum, frequency_grid


def test_mrc_round_trip_and_movie_sum(tmp_path: Path, rng: np.random.Generator) -> None:
    movie = rng.normal(size=(3, 128, 96)).astype(np.float32)
    p = write_mrc(tmp_path / "movie.mrcs", movie, pixel_size_A=0.83)
    img = read_image(p)
    assert img.shape == (128, 96)
    assert img.n_frames == 3
    assert img.pixel_size_A == pytest.approx(0.83, rel=1e-6)
    np.testing.assert_allclose(img.data, movie.sum(axis=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_mrc(p, movie)


def test_tiff_read(tmp_path: Path, rng: np.random.Generator) -> None:
    import tifffile

    data = rng.integers(0, 100, size=(100, 120)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data)
    img = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(img.data, data)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.mrc", b"not an mrc file at all" * 10, "cannot read"),
        ("a.tif", b"garbage", "cannot read"),
        ("a.xyz", b"whatever", "unsupported file type"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        read_image(p)


def test_missing_blank_nan(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.mrc")
    write_mrc(tmp_path / "blank.mrc", np.ones((128, 128)))
    with pytest.raises(InputError, match="blank"):
        read_image(tmp_path / "blank.mrc")
    nan = np.zeros((128, 128))
    nan[3, 3] = np.nan
    with pytest.warns(RuntimeWarning):
        write_mrc(tmp_path / "nan.mrc", nan)
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.mrc")


def test_truncated_mrc(tmp_path: Path, rng: np.random.Generator) -> None:
    p = write_mrc(tmp_path / "t.mrc", rng.normal(size=(256, 256)))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"cannot read.*shorter than its header"):
        read_image(p)


def test_write_json_refuses_overwrite(tmp_path: Path) -> None:
    p = write_json(tmp_path / "r.json", {"x": np.float64(1.5), "y": float("nan")})
    assert p.read_text().count("null") == 1
    with pytest.raises(OutputExistsError):
        write_json(p, {})
    write_json(p, {"z": 1}, overwrite=True)
    assert '"z"' in p.read_text()


def test_power_spectrum_peak_position(rng: np.random.Generator) -> None:
    # A plane wave at (fx, fy) cycles/pixel puts its power at [ky, kx] = (fy, fx) and (-fy, -fx).
    n = 256
    y, x = np.mgrid[0:n, 0:n]
    fx, fy = 40 / n, -25 / n
    img = np.cos(2 * np.pi * (fx * x + fy * y)) + 0.01 * rng.normal(size=(n, n))
    ps = calculate_power_spectrum(img, tile_size=128, overlap=0.5)
    assert ps.n_tiles == 9
    ky, kx = ps.frequencies()
    iy, ix = np.unravel_index(np.argmax(ps.data), ps.data.shape)
    assert {(round(ky[iy, ix] * 128), round(kx[iy, ix] * 128))} <= {(-12, 20), (12, -20)}
    np.testing.assert_allclose(
        ps.data, ps.data[::-1, ::-1][np.r_[-1, 0:127]][:, np.r_[-1, 0:127]], rtol=1e-9
    )


def test_power_spectrum_white_noise_level(rng: np.random.Generator) -> None:
    # Parseval: white noise of variance s^2 has a flat spectrum of level s^2 per pixel.
    img = rng.normal(scale=2.0, size=(512, 512))
    ps = calculate_power_spectrum(img, tile_size=64, overlap=0.0)
    assert ps.n_tiles == 64
    assert np.mean(ps.data) == pytest.approx(4.0, rel=0.02)
    # averaging 64 tiles shrinks the periodogram's exponential scatter ~8-fold
    assert np.std(ps.data) / np.mean(ps.data) == pytest.approx(1 / 8, rel=0.25)


def test_frequency_grid_centre() -> None:
    ky, kx = frequency_grid(8)
    assert ky[4, 4] == 0 and kx[4, 4] == 0
    assert kx[0, 0] == -0.5 and kx[0, 5] == 1 / 8


def test_power_spectrum_rejects_bad_tiles(rng: np.random.Generator) -> None:
    with pytest.raises(InputError):
        calculate_power_spectrum(rng.normal(size=(64, 64)), tile_size=128)


def test_power_spectrum_single_precision_agrees(rng: np.random.Generator) -> None:
    img = rng.normal(size=(600, 520)).astype(np.float32)
    a = calculate_power_spectrum(img, tile_size=128, overlap=0.5)
    b = calculate_power_spectrum(img, tile_size=128, overlap=0.5, dtype=np.float32)
    assert a.n_tiles == b.n_tiles
    assert b.data.dtype == np.float64
    assert np.allclose(a.data, b.data, rtol=1e-4, atol=1e-6 * float(a.data.max()))


def test_read_image_precision(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(70, 80)).astype(np.float32)
    write_mrc(tmp_path / "a.mrc", data, pixel_size_A=1.0)
    assert read_image(tmp_path / "a.mrc").data.dtype == np.float64
    im = read_image(tmp_path / "a.mrc", dtype=np.float32)
    assert im.data.dtype == np.float32
    assert np.array_equal(im.data, data)


def _unfold_reference(data, max_f, min_f, min_base):  # type: ignore[no-untyped-def]
    # every pixel at every alias, filtered afterwards: slow but obviously right
    n = data.shape[0]
    f = (np.arange(n) - n // 2) / n
    ky, kx = np.meshgrid(f, f, indexing="ij")
    out = set()
    for ny in range(-4, 5):
        for nx in range(-4, 5):
            r = np.hypot(kx + nx, ky + ny)
            m = (r >= min_f) & (r < max_f)
            if nx or ny:
                m &= np.hypot(kx, ky) >= min_base
            for p in np.flatnonzero(m.ravel()):
                out.add((int(p), nx, ny))
    return out


@pytest.mark.parametrize(("max_f", "min_f", "min_base"), [(0.45, 0.02, 0.0), (1.3, 0.4, 0.06)])
def test_unfold_spectrum_matches_reference(
    max_f: float, min_f: float, min_base: float, rng: np.random.Generator
) -> None:
    from temcal.spectra.profiles import unfold_spectrum

    data = rng.random((32, 32))
    u = unfold_spectrum(
        data, max_frequency=max_f, min_frequency=min_f, min_alias_base_frequency=min_base
    )
    got = {(int(p), int(a[0]), int(a[1])) for p, a in zip(u.pixel, u.alias, strict=True)}
    assert got == _unfold_reference(data, max_f, min_f, min_base)
    n = 32
    iy, ix = np.divmod(u.pixel, n)
    assert np.allclose(u.qx, (ix - n // 2) / n + u.alias[:, 0])
    assert np.allclose(u.qy, (iy - n // 2) / n + u.alias[:, 1])
    assert np.array_equal(u.values, data.ravel()[u.pixel])
