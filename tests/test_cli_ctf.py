"""The CTF commands of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from temcal.cli.app import app

runner = CliRunner()


def test_simulate_ctf_writes_series(tmp_path: Path) -> None:
    out = tmp_path / "series"
    res = runner.invoke(app, ["simulate", "ctf", "-o", str(out), "--n", "2", "--size", "128"])
    assert res.exit_code == 0, res.output
    truth = json.loads((out / "truth.json").read_text())
    assert len(truth["micrographs"]) == 2
    assert (out / "micrograph_01.mrc").exists()
    # refuses to overwrite without --overwrite
    res = runner.invoke(app, ["simulate", "ctf", "-o", str(out), "--n", "2", "--size", "128"])
    assert res.exit_code != 0
    assert "already exists" in res.output


def test_simulate_ctf_absurd_voltage(tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(
        app, ["simulate", "ctf", "-o", str(out), "--size", "128", "--voltage", "-3"]
    )
    assert res.exit_code != 0
    assert "voltage" in res.output
    assert not (out / "truth.json").exists()


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from temcal.io.images import write_mrc
    from temcal.simulate.ctf_series import simulate_ctf_series

    d = tmp_path_factory.mktemp("series")
    s = simulate_ctf_series(
        n_micrographs=3,
        shape=(512, 512),
        pixel_size_A=1.0,
        voltage_kV=300,
        cs_mm=2.7,
        rng=np.random.default_rng(11),
        defocus_range_A=(4000.0, 12000.0),
        b_factor_A2=5.0,
        oversample=1,
    )
    for i, img in enumerate(s.images):
        write_mrc(d / f"m{i}.mrc", img, pixel_size_A=1.0)
    (d / "truth.json").write_text(json.dumps([t.defocus_u_A for t in s.truths]))
    return d


def test_ctf_and_cs_ctf_json(series_dir: Path, tmp_path: Path) -> None:
    files = [str(series_dir / f"m{i}.mrc") for i in range(3)]
    out = tmp_path / "ctf.json"
    res = runner.invoke(
        app,
        [
            "ctf",
            *files,
            "--pixel-size",
            "1",
            "--voltage",
            "300",
            "--cs",
            "2.7",
            "-j",
            "1",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    mics = json.loads(out.read_text())["micrographs"]
    truth = json.loads((series_dir / "truth.json").read_text())
    assert [m["defocus_u_A"] for m in mics] == pytest.approx(truth, rel=5e-3)
    for key in (
        "file",
        "defocus_u_A",
        "defocus_v_A",
        "astig_angle_deg",
        "phase_shift_deg",
        "fit_resolution_A",
    ):
        assert key in mics[0]
    cs_json, cs_png = tmp_path / "cs.json", tmp_path / "cs.png"
    res = runner.invoke(
        app,
        [
            "cs-ctf",
            *files,
            "--pixel-size",
            "1",
            "--voltage",
            "300",
            "--cs-nominal",
            "2.7",
            "--json",
            str(cs_json),
            "--plot",
            str(cs_png),
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(cs_json.read_text())
    assert set(d) >= {"cs_mm", "cs_ci95_mm", "pixel_size_A", "voltage_kV", "micrographs"}
    assert set(d["micrographs"][0]) >= {
        "file",
        "defocus_u_A",
        "defocus_v_A",
        "astig_angle_deg",
        "phase_shift_deg",
        "fit_resolution_A",
    }
    assert d["cs_mm"] == pytest.approx(2.7, rel=0.05)
    assert d["micrographs"][0]["defocus_u_A"] >= d["micrographs"][0]["defocus_v_A"]
    assert cs_png.stat().st_size > 10000
    assert "agrees with" in res.output


def _bad(args: list[str], out: Path, needle: str) -> None:
    res = runner.invoke(app, [*args, "--json", str(out)])
    assert res.exit_code != 0
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_cs_ctf_bad_inputs(series_dir: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    from temcal.io.images import write_mrc

    f0, f1 = str(series_dir / "m0.mrc"), str(series_dir / "m1.mrc")
    out = tmp_path / "o.json"
    _bad(["cs-ctf", f0, "--pixel-size", "1", "--voltage", "300"], out, "single micrograph")
    _bad(["cs-ctf", f0, f1, "--pixel-size", "1", "--voltage", "3e6"], out, "voltage")
    _bad(["cs-ctf", f0, f1, "--voltage", "300"], out, "--pixel-size")
    small = tmp_path / "small.mrc"
    write_mrc(small, rng.normal(size=(256, 256)), pixel_size_A=1.0)
    _bad(["cs-ctf", f0, str(small), "--pixel-size", "1", "--voltage", "300"], out, "sizes")
    other = tmp_path / "other.mrc"
    write_mrc(other, rng.normal(size=(512, 512)) + 5, pixel_size_A=1.3)
    _bad(["cs-ctf", f0, str(other), "--pixel-size", "1", "--voltage", "300"], out, "pixel sizes")
    noise = [tmp_path / f"n{i}.mrc" for i in range(2)]
    for p in noise:
        write_mrc(p, rng.poisson(50.0, size=(512, 512)).astype(float), pixel_size_A=1.0)
    _bad(["cs-ctf", *map(str, noise), "--pixel-size", "1", "--voltage", "300"], out, "Thon rings")
    _bad(
        ["ctf", str(noise[0]), "--pixel-size", "1", "--voltage", "300", "--cs", "2.7"],
        out,
        "Thon rings",
    )


def test_cs_ctf_pixel_options(series_dir: Path, tmp_path: Path) -> None:
    files = [str(series_dir / f"m{i}.mrc") for i in range(2)]
    out = tmp_path / "g.json"
    _bad(
        ["cs-ctf", *files, "--pixel-from-gold", "--pixel-size", "1", "--voltage", "300"],
        out,
        "exactly one",
    )
