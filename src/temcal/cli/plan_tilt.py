"""``temcal plan-tilt``: predicted precision of a beam-tilt design."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the ``plan-tilt`` command."""
    app.command("plan-tilt")(plan_tilt)


@cli_errors
def plan_tilt(
    tilts: Annotated[
        str, typer.Option("--tilts", help="Tilt magnitudes in mrad, comma-separated.")
    ] = "5,10",
    azimuths: Annotated[int, typer.Option("--azimuths", help="Azimuths per magnitude.")] = 12,
    dose: Annotated[float, typer.Option("--dose", help="Dose per image in e/Å².")] = 50.0,
    pixel_size: Annotated[float, typer.Option("--pixel-size", help="Pixel size in Å.")] = 1.0,
    size: Annotated[int, typer.Option("--size", help="Image size in pixels.")] = 1024,
    drift: Annotated[float, typer.Option("--drift", help="Random drift per image in Å.")] = 0.3,
    voltage: Annotated[float, typer.Option("--voltage", help="Voltage in kV.")] = 300.0,
    cs: Annotated[float, typer.Option("--cs", help="Nominal Cs in mm.")] = 2.7,
    defocus: Annotated[
        float, typer.Option("--defocus", help="Defocus in Å (underfocus +).")
    ] = 8000.0,
    pixel_size_uncertainty: Annotated[
        float, typer.Option("--pixel-size-uncertainty", help="Pixel-size uncertainty, % (1 sigma).")
    ] = 0.0,
    tilt_uncertainty: Annotated[
        float, typer.Option("--tilt-uncertainty", help="Tilt-calibration uncertainty, % (1 sigma).")
    ] = 0.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the plan as JSON.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace output files.")] = False,
) -> None:
    """Predict the 95 % intervals of Cs, defocus, rotation and coefficients for a tilt design."""
    from dataclasses import asdict

    from rich.table import Table

    from temcal.calibrate.plan_tilt import calculate_tilt_plan
    from temcal.errors import InputError
    from temcal.io.output import check_output_path, write_json
    from temcal.physics.wavelength import check_voltage_kV

    check_voltage_kV(voltage)
    try:
        mags = tuple(float(v) for v in tilts.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--tilts {tilts!r}: give comma-separated numbers in mrad") from None
    if not mags or any(not 0 < m <= 100 for m in mags):
        raise InputError(f"--tilts {tilts!r}: magnitudes must lie in (0, 100] mrad")
    if not 0 < cs < 20 or not 0 < pixel_size <= 100 or azimuths < 1:
        raise InputError("--cs must lie in (0, 20) mm, --pixel-size in (0, 100] Å, --azimuths >= 1")
    if json_path is not None:
        check_output_path(json_path, overwrite=overwrite)
    plans = calculate_tilt_plan(
        magnitudes_mrad=mags, n_azimuths=azimuths, dose_e_per_A2=dose, pixel_size_A=pixel_size,
        size_px=size, voltage_kV=voltage, cs_mm=cs, defocus_A=defocus, drift_step_A=drift,
        pixel_size_rel_sigma=pixel_size_uncertainty / 100, tilt_rel_sigma=tilt_uncertainty / 100,
    )  # fmt: skip
    table = Table(title=f"temcal plan-tilt: {', '.join(f'{m:g}' for m in mags)} mrad x {azimuths}")
    table.caption = "95 % half-widths; C12 / C21 / C23 in Å"
    for col in ("method", "Cs (mm)", "Cs (%)", "defocus (Å)", "rotation (deg)", "C12/C21/C23"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, p in plans.items():
        c = p.coefficient_ci95_A
        table.add_row(name, f"± {p.cs_ci95_mm:.4f}", f"± {100 * p.cs_ci95_mm / cs:.3f}",
                      f"± {p.defocus_ci95_A:.1f}", f"± {p.rotation_ci95_deg:.3f}",
                      f"{c['C12']:.1f} / {c['C21']:.0f} / {c['C23']:.0f}")  # fmt: skip
    out_console.print(table)
    if json_path is not None:
        write_json(json_path, {k: asdict(v) for k, v in plans.items()}, overwrite=overwrite)
        err_console.print(f"wrote {json_path}")
