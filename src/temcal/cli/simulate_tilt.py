"""``temcal simulate tilt-series``: a beam-tilt series with known aberrations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add ``simulate tilt-series``."""
    simulate_app.command("tilt-series")(simulate_tilt_series_cmd)


@cli_errors
def simulate_tilt_series_cmd(
    outdir: Annotated[
        Path, typer.Argument(help="Output folder (MRC images, tilts.csv, truth.json).")
    ],
    size: Annotated[int, typer.Option("--size", help="Image size in pixels (square).")] = 512,
    pixel_size: Annotated[float, typer.Option("--pixel-size", help="Pixel size in Å.")] = 1.0,
    voltage: Annotated[float, typer.Option("--voltage", help="Voltage in kV.")] = 300.0,
    cs: Annotated[float, typer.Option("--cs", help="Cs in mm.")] = 2.7,
    defocus: Annotated[
        float, typer.Option("--defocus", help="Defocus in Å (underfocus +).")
    ] = 8000.0,
    astigmatism: Annotated[float, typer.Option("--astigmatism", help="C12 in Å.")] = 30.0,
    coma: Annotated[float, typer.Option("--coma", help="C21 in Å.")] = 1000.0,
    threefold: Annotated[float, typer.Option("--threefold", help="C23 in Å.")] = 500.0,
    tilts: Annotated[
        str, typer.Option("--tilts", help="Tilt magnitudes in mrad, comma-separated.")
    ] = "5,10",
    azimuths: Annotated[int, typer.Option("--azimuths", help="Azimuths per magnitude.")] = 12,
    rotation: Annotated[
        float, typer.Option("--rotation", help="Tilt-frame rotation in degrees.")
    ] = 25.0,
    mirror: Annotated[bool, typer.Option("--mirror", help="Mirror the tilt frame.")] = False,
    drift: Annotated[
        float, typer.Option("--drift", help="Random-walk drift per image in Å.")
    ] = 0.3,
    dose: Annotated[
        float, typer.Option("--dose", help="Dose per image in e/Å² (0 = no noise).")
    ] = 50.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Simulate an amorphous specimen imaged at a circle of beam tilts (drift, shot noise)."""
    import numpy as np

    from temcal.errors import InputError
    from temcal.physics.aberrations import AxialAberrations
    from temcal.physics.wavelength import check_voltage_kV
    from temcal.simulate.tilt_series import (
        design_tilts_mrad,
        simulate_tilt_series,
        write_tilt_series,
    )

    check_voltage_kV(voltage)
    if not 64 <= size <= 8192:
        raise InputError(f"--size {size} must lie in 64-8192")
    if pixel_size <= 0 or dose < 0 or drift < 0 or azimuths < 1:
        raise InputError("--pixel-size must be > 0, --dose and --drift >= 0, --azimuths >= 1")
    try:
        mags = tuple(float(v) for v in tilts.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--tilts {tilts!r}: give comma-separated numbers in mrad") from None
    if not mags or any(m <= 0 or m > 100 for m in mags):
        raise InputError(f"--tilts {tilts!r}: magnitudes must lie in (0, 100] mrad")
    rng = np.random.default_rng(seed)
    ab = AxialAberrations.from_krivanek(
        C10_A=-defocus,
        C12_A=astigmatism,
        phi12_deg=rng.uniform(0, 180),
        C21_A=coma,
        phi21_deg=rng.uniform(0, 360),
        C23_A=threefold,
        phi23_deg=rng.uniform(0, 120),
        C30_A=cs * 1e7,
    )
    series = simulate_tilt_series(
        design_tilts_mrad(mags, azimuths),
        aberrations=ab,
        pixel_size_A=pixel_size,
        voltage_kV=voltage,
        shape=(size, size),
        rng=rng,
        frame_rotation_deg=rotation,
        mirror=mirror,
        drift_step_A=drift,
        dose_e_per_A2=dose if dose > 0 else None,
    )
    path = write_tilt_series(series, outdir, overwrite=overwrite)
    err_console.print(f"wrote {len(series.images)} images and {path}")
