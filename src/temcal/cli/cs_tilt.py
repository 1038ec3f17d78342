"""``temcal cs-tilt``: Cs and axial aberrations from a beam-tilt series."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console, progress_bar


class TiltMethod(StrEnum):
    """Which route(s) to run."""

    shift = "shift"
    tableau = "tableau"
    both = "both"


class MirrorChoice(StrEnum):
    """Whether the beam-tilt frame is mirrored relative to the image frame."""

    auto = "auto"
    yes = "yes"
    no = "no"


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the ``cs-tilt`` command."""
    app.command("cs-tilt")(cs_tilt)


@cli_errors
def cs_tilt(
    manifest: Annotated[
        Path, typer.Argument(help="CSV manifest path,tilt_x_mrad,tilt_y_mrad or SerialEM .mdoc.")
    ],
    pixel_size: Annotated[float, typer.Option("--pixel-size", help="Pixel size in Å.")],
    voltage: Annotated[float, typer.Option("--voltage", help="Accelerating voltage in kV.")],
    method: Annotated[
        TiltMethod, typer.Option("--method", help="Image shifts, CTF tableau, or both.")
    ] = TiltMethod.both,
    cs_nominal: Annotated[
        float | None,
        typer.Option(
            "--cs-nominal",
            help="Nominal Cs in mm (start of the tableau CTF fits; "
            "the result is compared with it).",
        ),
    ] = None,
    pixel_size_uncertainty: Annotated[
        float, typer.Option("--pixel-size-uncertainty", help="Pixel-size uncertainty, % (1 sigma).")
    ] = 0.0,
    tilt_uncertainty: Annotated[
        float, typer.Option("--tilt-uncertainty", help="Tilt-calibration uncertainty, % (1 sigma).")
    ] = 0.0,
    drift_step: Annotated[
        float, typer.Option("--drift-step", help="Expected random drift per image in Å.")
    ] = 0.5,
    mirror: Annotated[
        MirrorChoice, typer.Option("--mirror", help="Tilt frame mirrored vs the image frame.")
    ] = MirrorChoice.auto,
    amplitude_contrast: Annotated[
        float, typer.Option("--amplitude-contrast", help="Amplitude contrast for the CTF fits.")
    ] = 0.07,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of measured vs modelled values.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace output files.")] = False,
) -> None:
    """Measure Cs, defocus and axial aberrations from images recorded at known beam tilts."""
    from temcal.calibrate.cs_tilt import analyse_tilt_series
    from temcal.errors import InputError
    from temcal.io.output import check_output_path, write_json
    from temcal.io.tilt_manifest import read_tilt_images, read_tilt_manifest
    from temcal.physics.wavelength import check_voltage_kV

    check_voltage_kV(voltage)
    if not 0.01 <= pixel_size <= 100:
        raise InputError(f"--pixel-size {pixel_size} Å is outside 0.01-100 Å")
    if cs_nominal is not None and not 0 < cs_nominal < 20:
        raise InputError(f"--cs-nominal {cs_nominal} mm is outside (0, 20) mm")
    for name, val in (
        ("--pixel-size-uncertainty", pixel_size_uncertainty),
        ("--tilt-uncertainty", tilt_uncertainty),
    ):
        if not 0 <= val < 50:
            raise InputError(f"{name} {val} % must lie in [0, 50)")
    if not 0 <= drift_step < 100:
        raise InputError(f"--drift-step {drift_step} Å must lie in [0, 100)")
    if not 0 <= amplitude_contrast < 1:
        raise InputError(f"--amplitude-contrast {amplitude_contrast} must lie in [0, 1)")
    for out in (json_path, plot_path):
        if out is not None:
            check_output_path(out, overwrite=overwrite)
    man = read_tilt_manifest(manifest)
    images = read_tilt_images(man)
    methods = ("shift", "tableau") if method is TiltMethod.both else (method.value,)
    n_steps = len(images) * (2 if "shift" in methods else 0) + (
        3 * len(images) if "tableau" in methods else 0
    )
    with progress_bar("cs-tilt", n_steps) as advance:
        fits, result = analyse_tilt_series(
            images,
            man.tilts_mrad,
            pixel_size_A=pixel_size,
            voltage_kV=voltage,
            methods=methods,
            cs_nominal_mm=cs_nominal,
            pixel_size_rel_sigma=pixel_size_uncertainty / 100.0,
            tilt_rel_sigma=tilt_uncertainty / 100.0,
            drift_step_A=drift_step,
            mirror=None if mirror is MirrorChoice.auto else mirror is MirrorChoice.yes,
            amplitude_contrast=amplitude_contrast,
            taper=0.1,
            progress=advance,
        )
    result["manifest"] = str(manifest)
    result["pixel_size_A"] = pixel_size
    result["voltage_kV"] = voltage
    _print_table(result)
    if json_path is not None:
        write_json(json_path, result, overwrite=overwrite)
        err_console.print(f"wrote {json_path}")
    if plot_path is not None:
        from temcal.report.tilt_plot import plot_tilt_fits

        plot_tilt_fits(fits, plot_path, overwrite=overwrite)
        err_console.print(f"wrote {plot_path}")


def _print_table(result: dict[str, object]) -> None:
    from rich.table import Table

    table = Table(title="temcal cs-tilt")
    for col in ("method", "Cs (mm)", "95 % CI (mm)", "defocus (Å)", "frame rotation (deg)"):
        table.add_column(col, justify="right" if col != "method" else "left")
    methods = result["methods"]
    assert isinstance(methods, dict)
    for name, m in methods.items():
        rot = f"{m['tilt_frame_rotation_deg']:.2f}" + (
            " (mod 180)" if m["rotation_modulo_180"] else ""
        )
        table.add_row(
            name, f"{m['cs_mm']:.4f}", f"± {m['cs_ci95_mm']:.4f}", f"{m['defocus_A']:.1f}", rot
        )
    table.add_row(
        "combined",
        f"{result['cs_mm']:.4f}",
        f"± {result['cs_ci95_mm']:.4f}",
        f"{result['defocus_A']:.1f}",
        f"{result['tilt_frame_rotation_deg']:.2f}",
    )
    out_console.print(table)
