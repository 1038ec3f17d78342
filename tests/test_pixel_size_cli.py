"""CLI of pixel-size and mag-table: JSON contract, tables, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ring_synth import ring_image
from temcal.cli.app import app
from temcal.io.images import write_mrc

runner = CliRunner()

CONTRACT = {
    "pixel_size_A",
    "pixel_size_ci95_A",
    "pixel_major_A",
    "pixel_minor_A",
    "anisotropy_percent",
    "major_angle_deg",
    "lattice_constant_A",
    "rings",
    "images",
}


@pytest.fixture(scope="module")
def gold_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("gold")
    rng = np.random.default_rng(7)
    return [
        write_mrc(
            d / f"g{k}.mrc",
            ring_image(512, pixel_size_A=0.8, anisotropy_percent=1.0, major_angle_deg=30, rng=rng),
        )
        for k in range(2)
    ]


def test_pixel_size_json_contract(gold_files: list[Path], tmp_path: Path) -> None:
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    res = runner.invoke(
        app, ["pixel-size", *map(str, gold_files), "--json", str(out), "--plot", str(plot)]
    )
    assert res.exit_code == 0, res.output
    assert "pixel size" in res.stdout
    d = json.loads(out.read_text())
    assert CONTRACT <= set(d)
    assert abs(d["pixel_size_A"] / 0.8 - 1) < 2e-3
    assert abs(d["pixel_size_A"] - (d["pixel_major_A"] * d["pixel_minor_A"]) ** 0.5) < 1e-12
    assert 0 <= d["major_angle_deg"] < 180
    assert d["rings"][0]["hkl"] == "111"
    assert [im["file"] for im in d["images"]] == [str(f) for f in gold_files]
    assert all("pixel_size_A" in im for im in d["images"])
    assert d["lattice_constant_A"] == pytest.approx(4.0782)
    assert d["temperature_K"] == 293.0
    assert plot.stat().st_size > 10_000
    # an existing output is refused without --overwrite, and nothing is rewritten
    before = out.read_text()
    res = runner.invoke(app, ["pixel-size", str(gold_files[0]), "--json", str(out)])
    assert res.exit_code != 0
    assert "already exists" in res.output
    assert out.read_text() == before
    res = runner.invoke(
        app,
        [
            "pixel-size",
            str(gold_files[0]),
            "--json",
            str(out),
            "--overwrite",
            "--temperature",
            "80",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["lattice_constant_A"] == pytest.approx(4.06565, abs=1e-4)


def test_anisotropy_prior_option_is_reported(gold_files: list[Path], tmp_path: Path) -> None:
    # a prior far below the image's own anisotropy error (~0.05 %) moves the 1 % fitted
    # anisotropy: the CLI says so, and the JSON keeps the free fit's values
    out = tmp_path / "r.json"
    args = ["pixel-size", str(gold_files[0]), "--json", str(out)]
    res = runner.invoke(app, [*args, "--anisotropy-prior", "0.02"])
    assert res.exit_code == 0, res.output
    assert "shrunk toward 0 by the prior" in " ".join(res.output.split())
    im = json.loads(out.read_text())["images"][0]
    assert im["free_anisotropy_percent"] == pytest.approx(1.0, abs=0.2)
    assert im["anisotropy_percent"] < 0.5 * im["free_anisotropy_percent"]
    # the default prior (2 %) leaves these full rings alone
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "shrunk toward 0" not in " ".join(res.output.split())
    im = json.loads(out.read_text())["images"][0]
    assert im["free_anisotropy_percent"] is None
    assert im["anisotropy_percent"] == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lattice-constant", "4.07", "--temperature", "80"], "not both"),
        (["--lattice-constant", "40"], "lattice constant"),
        (["--guess", "1e6"], "absurd"),
        (["--guess", "0.95"], "from the guess"),  # rings found 16 % below it: refused
        (["--rings", "110"], "forbidden"),
        (["--anisotropy-prior", "-1"], "anisotropy prior"),
        (["--anisotropy-prior", "nan"], "anisotropy prior"),
        (["--grain-thickness-nm", "0"], "grain thickness"),
        (["--grain-thickness-nm", "5000"], "grain thickness"),
    ],
)
def test_bad_options(gold_files: list[Path], tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["pixel-size", str(gold_files[0]), *args, "--json", str(out)])
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_bad_images(tmp_path: Path) -> None:
    text = tmp_path / "notes.mrc"
    text.write_text("not an image at all")
    with pytest.warns(RuntimeWarning):
        nan = write_mrc(tmp_path / "nan.mrc", np.full((128, 128), np.nan))
    flat = write_mrc(tmp_path / "flat.mrc", np.ones((128, 128)))
    noise = write_mrc(
        tmp_path / "noise.mrc", np.random.default_rng(1).poisson(30, (512, 512)).astype(float)
    )
    for f, message in [
        (text, "cannot read"),
        (nan, "NaN"),
        (flat, "blank"),
        (noise, "no gold lattice rings found"),
        (tmp_path / "missing.mrc", "no such file"),
    ]:
        out = tmp_path / "r.json"
        res = runner.invoke(app, ["pixel-size", str(f), "--json", str(out)])
        assert res.exit_code != 0, f
        assert message in res.output, res.output
        assert res.output.count("\n") <= 2
        assert not out.exists()


def test_mag_table_folders_and_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "mags"
    for mag, p in (("105000", 0.7), ("81kx", 0.9)):
        (root / mag).mkdir(parents=True)
        write_mrc(root / mag / "a.mrc", ring_image(512, pixel_size_A=p, rng=rng))
    csv_path, json_path = tmp_path / "t.csv", tmp_path / "t.json"
    res = runner.invoke(
        app,
        [
            "mag-table",
            str(root),
            "--csv",
            str(csv_path),
            "--json",
            str(json_path),
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("magnification,n_images,pixel_size_A,pixel_size_ci95_A")
    rows = json.loads(json_path.read_text())["magnifications"]
    assert [r["magnification"] for r in rows] == [81000.0, 105000.0]
    assert abs(rows[0]["pixel_size_A"] / 0.9 - 1) < 2e-3
    assert abs(rows[1]["pixel_size_A"] / 0.7 - 1) < 2e-3
    # a manifest
    man = tmp_path / "m.csv"
    man.write_text("path,magnification\nmags/105000/a.mrc,105000\n")
    out2 = tmp_path / "t2.csv"
    res = runner.invoke(
        app, ["mag-table", "--manifest", str(man), "--csv", str(out2), "--workers", "1"]
    )
    assert res.exit_code == 0, res.output
    assert len(out2.read_text().splitlines()) == 2
    # refuses to overwrite
    res = runner.invoke(app, ["mag-table", str(root), "--csv", str(csv_path)])
    assert res.exit_code != 0
    assert "already exists" in res.output
    # the crystals' thickness: every magnification's pixel size corrected upward a little
    thin = tmp_path / "thin.json"
    args = ["mag-table", str(root), "--csv", str(tmp_path / "thin.csv"), "--json", str(thin)]
    res = runner.invoke(app, [*args, "--workers", "1", "--grain-thickness-nm", "3"])
    assert res.exit_code == 0, res.output
    for r0, r1 in zip(rows, json.loads(thin.read_text())["magnifications"], strict=True):
        assert 1e-4 < r1["pixel_size_A"] / r0["pixel_size_A"] - 1 < 3e-3
    res = runner.invoke(app, [*args, "--overwrite", "--grain-thickness-nm", "-2"])
    assert res.exit_code != 0
    assert "grain thickness" in res.output and "Traceback" not in res.output


def test_mag_table_unknown_magnification(tmp_path: Path) -> None:
    f = write_mrc(
        tmp_path / "x.mrc", ring_image(256, pixel_size_A=0.8, rng=np.random.default_rng(0))
    )
    res = runner.invoke(app, ["mag-table", str(f), "--csv", str(tmp_path / "t.csv")])
    assert res.exit_code != 0
    assert "cannot tell its magnification" in res.output
    assert not (tmp_path / "t.csv").exists()


def test_skip_refused(gold_files: list[Path], tmp_path: Path) -> None:
    # an amorphous image among gold ones: an error by default, left out with --skip-refused
    rng = np.random.default_rng(3)
    blank = write_mrc(
        tmp_path / "amorphous.mrc",
        ring_image(512, pixel_size_A=0.8, ring_amplitude=0.0, defocus_A=10000.0, rng=rng),
    )
    out = tmp_path / "r.json"
    files = [*map(str, gold_files), str(blank)]
    res = runner.invoke(app, ["pixel-size", *files, "--json", str(out)])
    assert res.exit_code != 0
    assert "amorphous.mrc" in res.output and "no gold lattice rings found" in res.output
    assert not out.exists()
    res = runner.invoke(app, ["pixel-size", *files, "--skip-refused", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "left out" in res.output
    d = json.loads(out.read_text())
    assert [im["file"] for im in d["images"]] == [str(f) for f in gold_files]
    assert [r["file"] for r in d["refused_images"]] == [str(blank)]
    assert "no gold lattice rings found" in d["refused_images"][0]["reason"]
    assert abs(d["pixel_size_A"] / 0.8 - 1) < 2e-3
    # every image refused: still an error, and nothing written
    out2 = tmp_path / "r2.json"
    res = runner.invoke(app, ["pixel-size", str(blank), "--skip-refused", "--json", str(out2)])
    assert res.exit_code != 0
    assert "all 1 image(s) were refused" in res.output
    assert not out2.exists()


def test_mag_table_skip_refused(tmp_path: Path) -> None:
    # one magnification with a gold image and an amorphous one, one with amorphous only
    rng = np.random.default_rng(5)
    root = tmp_path / "mags"
    for mag in ("105000", "81000"):
        (root / mag).mkdir(parents=True)
    write_mrc(root / "105000" / "a.mrc", ring_image(512, pixel_size_A=0.7, rng=rng))
    for d in ("105000", "81000"):
        write_mrc(
            root / d / "blank.mrc",
            ring_image(512, pixel_size_A=0.7, ring_amplitude=0.0, defocus_A=10000.0, rng=rng),
        )
    csv_path, json_path = tmp_path / "t.csv", tmp_path / "t.json"
    args = ["mag-table", str(root), "--csv", str(csv_path), "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert "no gold lattice rings found" in res.output
    assert not csv_path.exists()
    res = runner.invoke(app, [*args, "--skip-refused", "--json", str(json_path)])
    assert res.exit_code == 0, res.output
    assert "magnification 81000 left out" in res.output
    rows = json.loads(json_path.read_text())["magnifications"]
    assert [r["magnification"] for r in rows] == [105000.0]
    assert rows[0]["n_images"] == 1
    assert rows[0]["files"] == [str(root / "105000" / "a.mrc")]
    assert rows[0]["refused_files"] == [str(root / "105000" / "blank.mrc")]
    assert abs(rows[0]["pixel_size_A"] / 0.7 - 1) < 2e-3


def test_ctf_note_recommends_defocus(tmp_path: Path) -> None:
    # 6 nm grains (broad rings) at 0.5 µm: the CTF shift matters, and the note says how
    # much underfocus removes it; the JSON gives the same per image
    from temcal.simulate.gold import simulate_gold_image

    sim = simulate_gold_image(
        (1024, 1024),
        pixel_size_A=0.75,
        grain_size_nm=6.0,
        grain_thickness_nm=4.0,
        coverage=1.0,
        defocus_A=5000.0,
        dose_e_per_A2=40.0,
        rng=np.random.default_rng(3),
    )
    f = write_mrc(tmp_path / "broad.mrc", sim.image.astype(np.float32), pixel_size_A=0.75)
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["pixel-size", str(f), "--json", str(out)])
    assert res.exit_code == 0, res.output
    dz = json.loads(out.read_text())["images"][0]["min_unshifted_defocus_A"]
    # grains ~6 nm: Delta = 2 lambda dz / d111 must exceed ~1.5 x the grain size
    assert 5000.0 < dz < 30000.0
    assert f"{dz / 1e4:.1f} µm underfocus or more" in " ".join(res.output.split())


def test_sparse_particles_note_and_json(tmp_path: Path) -> None:
    # ten particles in 1024²: measured on the crystal tiles alone, and the CLI says so
    from temcal.simulate.gold import simulate_gold_image

    sim = simulate_gold_image(
        (1024, 1024),
        pixel_size_A=0.6,
        kind="particles",
        grain_size_nm=10.0,
        n_particles=10,
        defocus_A=10000.0,
        dose_e_per_A2=30.0,
        lattice_constant_A=4.0782,
        rng=np.random.default_rng(1),
    )
    img = write_mrc(tmp_path / "sparse.mrc", sim.image)
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    args = ["pixel-size", str(img), "--lattice-constant", "4.0782", "--json", str(out)]
    res = runner.invoke(app, [*args, "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    assert "tiles that hold crystal spots" in res.stderr
    assert plot.stat().st_size > 10_000
    data = json.loads(out.read_text())
    frac = data["images"][0]["crystal_tile_fraction"]
    assert 0.0 < frac < 0.4
    assert abs(data["pixel_size_A"] / 0.6 - 1.0) < 0.01


def test_refusal_suggests_the_header_pixel_size(tmp_path: Path) -> None:
    img = ring_image(1024, pixel_size_A=0.9, ring_amplitude=0.11, rng=np.random.default_rng(3))
    f = write_mrc(tmp_path / "faint.mrc", img, pixel_size_A=0.93)
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["pixel-size", str(f), "--json", str(out)])
    assert res.exit_code != 0 and not out.exists()
    assert "try --guess 0.93" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["pixel-size", str(f), "--guess", "0.93", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert abs(json.loads(out.read_text())["pixel_size_A"] / 0.9 - 1.0) < 2e-3


def test_ring_offsets_in_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # where free ring offsets are fitted, the ring table gets their columns and every ring
    # in the JSON its offset_percent / offset_prior_percent (null without offsets)
    from temcal.calibrate import pixel_size as ps

    rng = np.random.default_rng(3)
    img = ring_image(
        512, pixel_size_A=0.6 * 1.006, reflections=((1, 1, 1),), ring_amplitude=80.0, rng=rng
    )
    img = img + ring_image(512, pixel_size_A=0.6, reflections=((2, 0, 0), (2, 2, 0)), rng=rng)
    f = write_mrc(tmp_path / "g.mrc", img)
    plain = tmp_path / "plain.json"
    res = runner.invoke(app, ["pixel-size", str(f), "--json", str(plain)])
    assert res.exit_code == 0, res.output
    assert "offset" not in res.stdout
    assert all(r["offset_percent"] is None for r in json.loads(plain.read_text())["rings"])
    r111 = 1.0 / 2.3545
    monkeypatch.setattr(
        ps,
        "_ring_shift_priors",
        lambda model, th, thon, optics: np.array(
            [0.01 if abs(r - r111) < 0.01 else 1e-4 for r in model.radii]
        ),
    )
    out = tmp_path / "off.json"
    res = runner.invoke(app, ["pixel-size", str(f), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "offset" in res.stdout and "predicted" in res.stdout
    rings = {r["hkl"]: r for r in json.loads(out.read_text())["rings"]}
    assert rings["111"]["offset_percent"] == pytest.approx(0.6, abs=0.1)
    assert rings["111"]["offset_prior_percent"] == pytest.approx(1.0)


def test_grain_thickness_option_corrects_and_reports(
    gold_files: list[Path], tmp_path: Path
) -> None:
    # a thin crystal's rings lie a little inside their lattice radius: given the
    # thickness, the pixel size is raised by the predicted relrod shift, and JSON and
    # table say by how much
    out = tmp_path / "r.json"
    plain = tmp_path / "plain.json"
    base = ["pixel-size", str(gold_files[0])]
    assert runner.invoke(app, [*base, "--json", str(plain)]).exit_code == 0
    res = runner.invoke(app, [*base, "--grain-thickness-nm", "3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "relrod" in res.output
    im = json.loads(out.read_text())["images"][0]
    im0 = json.loads(plain.read_text())["images"][0]
    assert im0["relrod_correction_percent"] is None
    assert 0.01 < im["relrod_correction_percent"] < 0.3
    ratio = im["pixel_size_A"] / im0["pixel_size_A"]
    assert 100 * (ratio - 1) == pytest.approx(im["relrod_correction_percent"], rel=1e-6)
