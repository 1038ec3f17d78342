"""The CTF commands of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

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
