"""CLI of the diffraction calibrations: JSON contract and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from temcal.cli.app import app
from temcal.io.images import write_mrc
from temcal.simulate.diffraction import simulate_gold_diffraction

runner = CliRunner()

CAMERA_KEYS = {
    "camera_length_mm",
    "camera_length_ci95_mm",
    "reciprocal_pixel_per_A",
    "center_x_px",
    "center_y_px",
    "ellipticity_percent",
    "major_angle_deg",
}
TILT_KEYS = {"mrad_per_unit", "scale_mrad_per_unit", "rotation_deg"}


def _pattern(tilt: tuple[float, float] = (0.0, 0.0), size: int = 320, seed: int = 0) -> np.ndarray:
    return simulate_gold_diffraction(
        (size, size),
        voltage_kV=200,
        camera_length_mm=400,
        detector_pixel_um=40,
        ellipticity_percent=0.5,
        major_angle_deg=20,
        beam_tilt_mrad=tilt,
        total_counts=5e6,
        rng=np.random.default_rng(seed),
    ).pattern


@pytest.fixture(scope="module")
def tilt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tilt")
    m = 0.01 * np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees
    rows = ["path,coil_x,coil_y"]
    for i, coil in enumerate([(0, 0), (100, 0), (0, 100), (-100, -100)]):
        t = m @ np.array(coil, dtype=float)
        write_mrc(d / f"p{i}.mrc", _pattern((float(t[0]), float(t[1])), seed=i))
        rows.append(f"p{i}.mrc,{coil[0]},{coil[1]}")
    (d / "manifest.csv").write_text("\n".join(rows) + "\n")
    return d


def test_camera_length_cli_json_and_plot(tmp_path: Path) -> None:
    pat = tmp_path / "gold.mrc"
    write_mrc(pat, _pattern())
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    args = ["camera-length", str(pat), "--voltage", "200", "--detector-pixel-um", "40"]
    r = runner.invoke(app, [*args, "--json", str(out), "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert set(data) >= CAMERA_KEYS
    assert data["camera_length_mm"] == pytest.approx(400, rel=1e-3)
    assert 0 <= data["major_angle_deg"] < 180
    assert plot.stat().st_size > 10_000
    assert "camera length" in r.stdout
    # Existing output without --overwrite: refused, file untouched.
    before = out.read_text()
    r = runner.invoke(app, [*args, "--json", str(out)])
    assert r.exit_code != 0 and "already exists" in r.output
    assert out.read_text() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--voltage", "0.01", "--detector-pixel-um", "40"], "voltage"),
        (["--voltage", "200", "--detector-pixel-um", "1e7"], "pixel pitch"),
        (["--voltage", "200", "--detector-pixel-um", "40", "--lattice-constant", "7"], "lattice"),
    ],
)
def test_camera_length_cli_absurd_options(tmp_path: Path, extra: list[str], message: str) -> None:
    pat = tmp_path / "gold.mrc"
    write_mrc(pat, _pattern(size=128))
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["camera-length", str(pat), *extra, "--json", str(out)])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_camera_length_cli_missing_file_and_no_rings(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    base = ["--voltage", "200", "--detector-pixel-um", "40", "--json", str(out)]
    r = runner.invoke(app, ["camera-length", str(tmp_path / "nope.mrc"), *base])
    assert r.exit_code != 0 and "no such file" in r.output
    noise = tmp_path / "noise.mrc"
    write_mrc(noise, np.random.default_rng(1).poisson(50.0, (256, 256)).astype(float))
    r = runner.invoke(app, ["camera-length", str(noise), *base])
    assert r.exit_code != 0 and "no gold rings" in r.output
    assert r.output.count("temcal: error:") == 1
    assert not out.exists()


def test_tilt_calibrate_cli(tilt_dir: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "t.json", tmp_path / "t.png"
    r = runner.invoke(
        app,
        [
            "tilt-calibrate",
            str(tilt_dir / "manifest.csv"),
            "--voltage",
            "200",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert set(data) >= TILT_KEYS
    np.testing.assert_allclose(data["mrad_per_unit"], [[0.0, -0.01], [0.01, 0.0]], atol=3e-5)
    assert data["rotation_deg"] == pytest.approx(90.0, abs=0.2)
    assert data["scale_mrad_per_unit"] == pytest.approx(0.01, rel=2e-3)
    assert plot.exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("path,coil_x\np0.mrc,0\n", "missing column"),
        ("path,coil_x,coil_y\np0.mrc,zero,0\np1.mrc,100,0\np2.mrc,0,100\n", "not numbers"),
        ("path,coil_x,coil_y\np0.mrc,0,0\nmissing.mrc,100,0\np2.mrc,0,100\n", "does not exist"),
        ("path,coil_x,coil_y\np0.mrc,0,0\np1.mrc,100,0\n", "at least 3"),
        ("path,coil_x,coil_y\np0.mrc,0,0\np1.mrc,100,0\np2.mrc,200,0\n", "one line"),
        ("path,coil_x,coil_y\np0.mrc,0,0\np1.mrc,100,0\nsmall.mrc,0,100\n", "different sizes"),
        ("", "empty"),
    ],
)
def test_tilt_calibrate_cli_bad_manifests(
    tilt_dir: Path, tmp_path: Path, manifest: str, message: str
) -> None:
    small = tilt_dir / "small.mrc"
    if not small.exists():
        write_mrc(small, _pattern(size=256))
    m = tilt_dir / f"bad_{abs(hash(manifest))}.csv"
    m.write_text(manifest)
    out = tmp_path / "t.json"
    r = runner.invoke(app, ["tilt-calibrate", str(m), "--voltage", "200", "--json", str(out)])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_tilt_calibrate_cli_missing_manifest(tmp_path: Path) -> None:
    r = runner.invoke(app, ["tilt-calibrate", str(tmp_path / "m.csv"), "--voltage", "200"])
    assert r.exit_code != 0 and "no such file" in r.output


def test_simulate_diffraction_cli(tmp_path: Path) -> None:
    out, truth = tmp_path / "sim.mrc", tmp_path / "truth.json"
    r = runner.invoke(
        app,
        [
            "simulate",
            "diffraction",
            str(out),
            "--size",
            "128",
            "--camera-length-mm",
            "300",
            "--truth",
            str(truth),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(truth.read_text())["camera_length_mm"] == 300
    r = runner.invoke(app, ["simulate", "diffraction", str(out), "--size", "128"])
    assert r.exit_code != 0 and "already exists" in r.output


def test_tilt_calibrate_cli_refuses_existing_output(tilt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    out.write_text("keep")
    m = str(tilt_dir / "manifest.csv")
    r = runner.invoke(app, ["tilt-calibrate", m, "--voltage", "200", "--json", str(out)])
    assert r.exit_code != 0 and "already exists" in r.output
    assert out.read_text() == "keep"
    r = runner.invoke(
        app, ["tilt-calibrate", m, "--voltage", "200", "--json", str(out), "--plot", str(out)]
    )
    assert r.exit_code != 0 and "different files" in r.output
