"""The CLI skeleton: help, version, error handling."""

from __future__ import annotations

from typer.testing import CliRunner

from temcal.cli.app import app

runner = CliRunner()


def test_help_and_version() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    assert "gold" in r.output
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("temcal ")
