import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from typer.testing import CliRunner

from temcal.cli.app import app
from temcal.errors import InputError
from temcal.io.tilt_manifest import read_tilt_images, read_tilt_manifest
from temcal.physics.aberrations import AxialAberrations
from temcal.simulate.tilt_series import (
    design_tilts_mrad,
    simulate_tilt_series,
    write_tilt_series,
)

runner = CliRunner()
AB = AxialAberrations.from_krivanek(C10_A=-6000, C30_A=2.7e7, C12_A=20, C21_A=500)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tilt")
    rng = np.random.default_rng(7)
    s = simulate_tilt_series(
        design_tilts_mrad((5.0, 10.0), 8), aberrations=AB, pixel_size_A=1.0, voltage_kV=300,
        shape=(192, 192), rng=rng, frame_rotation_deg=30.0, dose_e_per_A2=200.0,
    )  # fmt: skip
    write_tilt_series(s, out)
    return out


def test_cs_tilt_cli_json_contract(series_dir, tmp_path):
    js = tmp_path / "r.json"
    plot = tmp_path / "r.png"
    r = runner.invoke(app, [
        "cs-tilt", str(series_dir / "tilts.csv"), "--pixel-size", "1", "--voltage", "300",
        "--method", "shift", "--cs-nominal", "2.7", "--json", str(js), "--plot", str(plot),
        "--pixel-size-uncertainty", "0.5", "--tilt-uncertainty", "1",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(js.read_text())
    for key in ("cs_mm", "cs_ci95_mm", "defocus_A", "tilt_frame_rotation_deg", "aberrations",
                "methods"):  # fmt: skip
        assert key in d
    assert set(d["aberrations"]) >= {"C10_A", "C12_A", "phi12_deg", "C21_A", "phi21_deg",
                                     "C23_A", "phi23_deg", "C30_mm"}  # fmt: skip
    assert set(d["methods"]["shift"]) >= {"cs_mm", "cs_ci95_mm", "defocus_A"}
    assert d["cs_mm"] == pytest.approx(2.7, rel=0.03)
    assert d["defocus_A"] == pytest.approx(6000, rel=0.01)
    assert 0 <= d["tilt_frame_rotation_deg"] < 360
    assert d["tilt_frame_rotation_deg"] == pytest.approx(30.0, abs=1.0)
    # budget: 3 x 1 % tilt and 0.5 % pixel size dominate the interval
    budget = d["methods"]["shift"]["error_budget_mm"]
    assert budget["tilt_calibration_sigma"] == pytest.approx(0.03 * d["cs_mm"], rel=1e-6)
    assert budget["pixel_size_sigma"] == pytest.approx(0.005 * d["cs_mm"], rel=1e-6)
    assert d["cs_ci95_mm"] >= 1.96 * 0.03 * d["cs_mm"]
    assert plot.stat().st_size > 10000
    # existing output without --overwrite: refused, nothing rewritten
    before = js.read_text()
    r = runner.invoke(
        app,
        [
            "cs-tilt",
            str(series_dir / "tilts.csv"),
            "--pixel-size",
            "1",
            "--voltage",
            "300",
            "--method",
            "shift",
            "--json",
            str(js),
        ],
    )
    assert r.exit_code != 0 and "already exists" in r.output
    assert js.read_text() == before


def _run(manifest: Path, tmp_path: Path, *extra: str):
    js = tmp_path / "out.json"
    r = runner.invoke(
        app,
        [
            "cs-tilt",
            str(manifest),
            "--pixel-size",
            "1",
            "--voltage",
            "300",
            "--method",
            "shift",
            "--json",
            str(js),
            *extra,
        ],
    )
    assert r.exit_code != 0
    assert not js.exists()
    assert "Traceback" not in r.output
    return r.output


def test_bad_manifests(series_dir, tmp_path):
    lines = (series_dir / "tilts.csv").read_text().splitlines()
    rows = [ln.split(",") for ln in lines[1:]]
    m = tmp_path / "m.csv"

    def write(text: str) -> Path:
        m.write_text(text)
        return m

    absolute = [[str(series_dir / r[0]), r[1], r[2]] for r in rows]
    body = "\n".join(",".join(r) for r in absolute)
    out = _run(write("path,tilt_x_mrad\n" + body), tmp_path)
    assert "lacks column" in out and "tilt_y_mrad" in out
    out = _run(write("path,tilt_x_mrad,tilt_y_mrad\n" + body.replace("tilt_003", "nope")),
               tmp_path)  # fmt: skip
    assert "does not exist" in out
    bad = absolute[:]
    bad[2] = [bad[2][0], "abc", bad[2][2]]
    out = _run(write("path,tilt_x_mrad,tilt_y_mrad\n" + "\n".join(",".join(r) for r in bad)),
               tmp_path)  # fmt: skip
    assert "not a number" in out
    # one tilt magnitude only: too few for the unknowns of the shift method
    one = [r for r in absolute if float(r[1]) ** 2 + float(r[2]) ** 2 < 30]
    out = _run(write("path,tilt_x_mrad,tilt_y_mrad\n" + "\n".join(",".join(r) for r in one)),
               tmp_path)  # fmt: skip
    assert "cannot determine" in out
    # images of different sizes
    small = tmp_path / "small.mrc"
    with mrcfile.new(small) as f:
        f.set_data(np.random.default_rng(0).random((128, 128)).astype(np.float32))
    diff = absolute[:]
    diff[3] = [str(small), diff[3][1], diff[3][2]]
    out = _run(write("path,tilt_x_mrad,tilt_y_mrad\n" + "\n".join(",".join(r) for r in diff)),
               tmp_path)  # fmt: skip
    assert "different sizes" in out
    out = _run(series_dir / "tilts.csv", tmp_path, "--pixel-size", "-1")
    assert "pixel-size" in out
    out = _run(tmp_path / "missing.csv", tmp_path)
    assert "no such manifest" in out


def test_mdoc_with_beam_tilt(series_dir, tmp_path):
    man = read_tilt_manifest(series_dir / "tilts.csv")
    images = read_tilt_images(man)
    with mrcfile.new(tmp_path / "stack.mrc") as f:
        f.set_data(images.astype(np.float32))
    text = ["PixelSpacing = 1.0", "ImageFile = stack.mrc", ""]
    for z, (tx, ty) in enumerate(man.tilts_mrad):
        text += [f"[ZValue = {z}]", "TiltAngle = 0.0", f"BeamTilt = {tx:.6f} {ty:.6f}", ""]
    (tmp_path / "stack.mrc.mdoc").write_text("\n".join(text))
    mdoc = read_tilt_manifest(tmp_path / "stack.mrc.mdoc")
    np.testing.assert_allclose(mdoc.tilts_mrad, man.tilts_mrad, atol=1e-6)
    np.testing.assert_allclose(read_tilt_images(mdoc), images, rtol=1e-6)
    (tmp_path / "bad.mdoc").write_text("ImageFile = stack.mrc\n[ZValue = 0]\nTiltAngle = 0\n")
    with pytest.raises(InputError, match="BeamTilt"):
        read_tilt_manifest(tmp_path / "bad.mdoc")


def test_simulate_cli(tmp_path):
    out = tmp_path / "sim"
    r = runner.invoke(app, ["simulate", "tilt-series", str(out), "--size", "64", "--tilts",
                            "5", "--azimuths", "4", "--dose", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    man = read_tilt_manifest(out / "tilts.csv")
    assert len(man) == 5
    truth = json.loads((out / "truth.json").read_text())
    assert truth["cs_mm"] == pytest.approx(2.7)
    r = runner.invoke(app, ["simulate", "tilt-series", str(out), "--size", "64"])
    assert r.exit_code != 0 and "already exists" in r.output
    r = runner.invoke(app, ["simulate", "tilt-series", str(tmp_path / "x"), "--tilts", "a,b"])
    assert r.exit_code != 0 and "--tilts" in r.output


def test_plan_tilt_scaling_and_cli(tmp_path):
    from temcal.calibrate.plan_tilt import calculate_tilt_plan

    base = dict(magnitudes_mrad=(5.0, 10.0), n_azimuths=12, pixel_size_A=1.0, size_px=512)
    lo = calculate_tilt_plan(dose_e_per_A2=20.0, drift_step_A=0.0, **base)
    hi = calculate_tilt_plan(dose_e_per_A2=200.0, drift_step_A=0.0, **base)
    drift = calculate_tilt_plan(dose_e_per_A2=200.0, drift_step_A=1.0, **base)
    for m in ("shift", "tableau"):
        assert hi[m].cs_ci95_mm < lo[m].cs_ci95_mm
    assert drift["shift"].cs_ci95_mm > 2 * hi["shift"].cs_ci95_mm  # drift hurts shifts only
    assert drift["tableau"].cs_ci95_mm == pytest.approx(hi["tableau"].cs_ci95_mm)
    # larger tilts: the shift method gains ~tau^3 in the Cs term
    big = calculate_tilt_plan(
        dose_e_per_A2=200.0, drift_step_A=0.0, magnitudes_mrad=(10.0, 20.0), n_azimuths=12,
        pixel_size_A=1.0, size_px=512,
    )  # fmt: skip
    assert big["shift"].cs_ci95_mm < 0.3 * hi["shift"].cs_ci95_mm
    # calibration budget: 1 % tilt error is 3 % of Cs (shift) and 2 % (tableau)
    cal = calculate_tilt_plan(dose_e_per_A2=200.0, drift_step_A=0.0, tilt_rel_sigma=0.01, **base)
    assert cal["shift"].cs_ci95_mm == pytest.approx(
        1.96 * np.hypot(hi["shift"].cs_ci95_mm / 1.96, 0.03 * 2.7), rel=1e-3
    )
    js = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan-tilt", "--size", "512", "--json", str(js)])
    assert r.exit_code == 0, r.output
    d = json.loads(js.read_text())
    assert d["shift"]["cs_ci95_mm"] > 0 and d["tableau"]["cs_ci95_mm"] > 0
    r = runner.invoke(app, ["plan-tilt", "--tilts", "10", "--json", str(tmp_path / "p2.json")])
    assert r.exit_code != 0 and "cannot determine" in r.output
    assert not (tmp_path / "p2.json").exists()
