"""``temcal simulate gold`` writes MRC images with the truth in a JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from typer.testing import CliRunner

from temcal.cli.app import app

runner = CliRunner()

ARGS = ["--size", "128", "--grain-size", "3", "--seed", "3"]


def test_writes_image_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "gold.mrc"
    r = runner.invoke(
        app,
        [
            "simulate",
            "gold",
            str(out),
            "--pixel-size",
            "0.85",
            "--anisotropy",
            "1.5",
            "--angle",
            "120",
            "--dose",
            "25",
            *ARGS,
        ],
    )
    assert r.exit_code == 0, r.output
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == (128, 128)
        assert float(mrc.voxel_size.x) == pytest.approx(0.85, rel=1e-6)
        # Counts: mean close to dose x pixel area (a little gold absorbs).
        assert 0.7 * 25 * 0.85**2 < float(mrc.data.mean()) < 1.02 * 25 * 0.85**2
    truth = json.loads((tmp_path / "gold.json").read_text())
    assert truth["pixel_size_A"] == pytest.approx(0.85)
    assert truth["anisotropy_percent"] == pytest.approx(1.5)
    assert truth["major_angle_deg"] == pytest.approx(120.0)
    assert truth["pixel_major_A"] / truth["pixel_minor_A"] == pytest.approx(1.015)
    assert np.sqrt(truth["pixel_major_A"] * truth["pixel_minor_A"]) == pytest.approx(0.85)
    assert truth["kind"] == "foil"


def test_count_writes_numbered_files(tmp_path: Path) -> None:
    out = tmp_path / "g.mrc"
    r = runner.invoke(
        app,
        [
            "simulate",
            "gold",
            str(out),
            "--pixel-size",
            "1.0",
            "--count",
            "2",
            "--kind",
            "particles",
            *ARGS,
        ],
    )
    assert r.exit_code == 0, r.output
    for i in range(2):
        assert (tmp_path / f"g_{i:03d}.mrc").exists()
        assert json.loads((tmp_path / f"g_{i:03d}.json").read_text())["kind"] == "particles"
    a = mrcfile.read(tmp_path / "g_000.mrc")
    b = mrcfile.read(tmp_path / "g_001.mrc")
    assert not np.array_equal(a, b)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "gold.mrc"
    out.write_bytes(b"precious")
    r = runner.invoke(app, ["simulate", "gold", str(out), "--pixel-size", "1.0", *ARGS])
    assert r.exit_code != 0
    assert "already exists" in r.output
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "gold.json").exists()
    r = runner.invoke(
        app, ["simulate", "gold", str(out), "--pixel-size", "1.0", "--overwrite", *ARGS]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "gold.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pixel-size", "-1"], "pixel size"),
        (["--pixel-size", "1", "--dose", "0"], "dose"),
        (["--pixel-size", "1", "--count", "0"], "count"),
        (["--pixel-size", "1", "--anisotropy", "50"], "anisotropy"),
    ],
)
def test_bad_options_fail_cleanly(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "gold.mrc"
    r = runner.invoke(app, ["simulate", "gold", str(out), *extra, *ARGS])
    assert r.exit_code == 2
    assert "temcal: error:" in r.output and message in r.output
    assert "Traceback" not in r.output
    assert not out.exists() and not (tmp_path / "gold.json").exists()
