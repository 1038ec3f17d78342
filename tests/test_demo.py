"""`temcal demo` runs every topic and prints measured vs truth."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from temcal.cli.app import app


def test_demo_runs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--outdir", str(out)])
    assert res.exit_code == 0, res.output
    assert "measured vs truth" in res.stdout
    assert (out / "pixel_size" / "pixel_size.json").exists()
    assert (out / "pixel_size" / "pixel_size.png").exists()
