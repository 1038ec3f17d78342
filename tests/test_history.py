"""Calibration history per microscope."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from temcal.cli.app import app
from temcal.errors import InputError
from temcal.report.history import add_history_entry, detect_result_kind, read_history

runner = CliRunner()

PIXEL = {
    "pixel_size_A": 1.0412,
    "pixel_size_ci95_A": 0.0003,
    "anisotropy_percent": 0.4,
    "major_angle_deg": 33.0,
    "rings": [],
    "images": [],
}
CS = {"cs_mm": 2.71, "cs_ci95_mm": 0.02, "pixel_size_A": 1.04, "voltage_kV": 300, "micrographs": []}


def _write(tmp_path: Path, name: str, payload: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(payload))
    return p


def test_detect_kinds() -> None:
    assert detect_result_kind(PIXEL) == "pixel-size"
    assert detect_result_kind(CS) == "cs-ctf"
    assert detect_result_kind({"camera_length_mm": 1}) == "camera-length"
    assert detect_result_kind({"mrad_per_unit": 1}) == "tilt-calibrate"
    assert detect_result_kind({"tilt_frame_rotation_deg": 1, "cs_mm": 1}) == "cs-tilt"
    with pytest.raises(InputError, match="not a temcal result"):
        detect_result_kind({"foo": 1})


def test_add_and_read_in_time_order(tmp_path: Path) -> None:
    store = tmp_path / "store"
    p1 = _write(tmp_path, "p.json", PIXEL)
    p2 = _write(tmp_path, "c.json", CS)
    add_history_entry(
        p2, microscope="krios-1", store=store, recorded_utc=datetime(2026, 5, 2, tzinfo=UTC)
    )
    add_history_entry(
        p1,
        microscope="krios-1",
        store=store,
        magnification=105000,
        recorded_utc=datetime(2026, 5, 1, tzinfo=UTC),
    )
    entries = read_history("krios-1", store=store)
    assert [e.kind for e in entries] == ["pixel-size", "cs-ctf"]
    assert entries[0].values["pixel_size_A"] == 1.0412
    assert entries[0].values["pixel_size_ci95_A"] == 0.0003
    assert entries[0].magnification == 105000
    assert entries[0].result == PIXEL
    assert [e.kind for e in read_history("krios-1", store=store, kind="cs-ctf")] == ["cs-ctf"]


def test_mag_table_adds_one_entry_per_magnification(tmp_path: Path) -> None:
    table = {"magnifications": [dict(PIXEL, magnification=m) for m in (81000, 105000)]}
    entries = add_history_entry(
        _write(tmp_path, "t.json", table), microscope="m", store=tmp_path / "s"
    )
    assert [e.magnification for e in entries] == [81000.0, 105000.0]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        add_history_entry(tmp_path / "nope.json", microscope="m", store=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a JSON"):
        add_history_entry(bad, microscope="m", store=tmp_path)
    with pytest.raises(InputError, match="microscope name"):
        add_history_entry(_write(tmp_path, "p.json", PIXEL), microscope="../etc", store=tmp_path)
    with pytest.raises(InputError, match="no calibration history"):
        read_history("unknown", store=tmp_path)


def test_cli_add_show_csv_plot(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    p = _write(tmp_path, "p.json", PIXEL)
    r = runner.invoke(
        app, ["history", "add", str(p), "-m", "talos", "--store", store, "--magnification", "92000"]
    )
    assert r.exit_code == 0, r.output
    csv = tmp_path / "h.csv"
    png = tmp_path / "h.png"
    r = runner.invoke(
        app, ["history", "show", "talos", "--store", store, "--csv", str(csv), "--plot", str(png)]
    )
    assert r.exit_code == 0, r.output
    assert "1.0412" in r.output
    assert csv.read_text().splitlines()[0].startswith("recorded_utc,kind,magnification")
    assert png.stat().st_size > 1000
    r = runner.invoke(app, ["history", "show", "talos", "--store", store, "--csv", str(csv)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = runner.invoke(app, ["history", "show", "nobody", "--store", store])
    assert r.exit_code == 2 and "no calibration history" in r.output
