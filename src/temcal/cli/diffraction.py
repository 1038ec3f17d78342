"""``temcal camera-length``, ``temcal tilt-calibrate`` and ``temcal simulate diffraction``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console, progress_bar

if TYPE_CHECKING:
    import numpy as np

__all__ = ["read_tilt_manifest", "register"]


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the diffraction commands."""
    app.command("camera-length")(camera_length)
    app.command("tilt-calibrate")(tilt_calibrate)
    simulate_app.command("diffraction")(simulate_diffraction)


_VOLTAGE = typer.Option("--voltage", help="Accelerating voltage in kV.")
_LATTICE = typer.Option(
    "--lattice-constant", help="Gold lattice constant in Å (default 4.0782, 293 K)."
)
_JSON = typer.Option("--json", help="Write the results as JSON to this file.")
_PLOT = typer.Option("--plot", help="Write a PNG plot to this file.")
_OVERWRITE = typer.Option("--overwrite", help="Replace existing output files.")


def _check_outputs(*paths: Path | None, overwrite: bool) -> None:
    from temcal.errors import InputError
    from temcal.io.output import check_output_path

    given = [p for p in paths if p is not None]
    if len({p.resolve() for p in given}) != len(given):
        raise InputError("--json and --plot must name different files")
    for p in given:
        check_output_path(p, overwrite=overwrite)


@cli_errors
def camera_length(
    pattern: Annotated[Path, typer.Argument(help="Diffraction pattern of gold (MRC, TIFF, DM).")],
    voltage: Annotated[float, _VOLTAGE],
    detector_pixel_um: Annotated[
        float, typer.Option("--detector-pixel-um", help="Physical detector pixel pitch in µm.")
    ],
    lattice_constant: Annotated[float | None, _LATTICE] = None,
    json_path: Annotated[Path | None, _JSON] = None,
    plot: Annotated[Path | None, _PLOT] = None,
    overwrite: Annotated[bool, _OVERWRITE] = False,
) -> None:
    """Camera length, pattern centre, reciprocal pixel size and ring ellipticity from gold rings."""
    from rich.table import Table

    from temcal.calibrate.diffraction import check_detector_pixel_um, estimate_camera_length
    from temcal.io.images import read_image
    from temcal.io.output import write_json
    from temcal.physics.gold import check_lattice_constant_A
    from temcal.physics.wavelength import check_voltage_kV

    check_voltage_kV(voltage)
    check_detector_pixel_um(detector_pixel_um)
    if lattice_constant is not None:
        check_lattice_constant_A(lattice_constant)
    _check_outputs(json_path, plot, overwrite=overwrite)
    img = read_image(pattern)
    err_console.print(f"fitting gold rings in {pattern} ({img.shape[1]}x{img.shape[0]}) ...")
    res = estimate_camera_length(
        img.data,
        voltage_kV=voltage,
        detector_pixel_um=detector_pixel_um,
        lattice_constant_A=lattice_constant,
    )
    png = None
    if plot is not None:
        from temcal.report.diffraction import plot_camera_length

        png = plot_camera_length(img.data, res)
    table = Table(title=f"temcal camera-length: {pattern.name}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("95 % CI (±)", justify="right")
    table.add_row(
        "camera length (mm)", f"{res.camera_length_mm:.3f}", f"{res.camera_length_ci95_mm:.3f}"
    )
    table.add_row(
        "reciprocal pixel (Å⁻¹/px)",
        f"{res.reciprocal_pixel_per_A:.6g}",
        f"{res.reciprocal_pixel_ci95_per_A:.2g}",
    )
    table.add_row("centre x (px)", f"{res.center_x_px:.3f}", f"{res.center_ci95_px[0]:.3f}")
    table.add_row("centre y (px)", f"{res.center_y_px:.3f}", f"{res.center_ci95_px[1]:.3f}")
    table.add_row(
        "ellipticity (%)", f"{res.ellipticity_percent:.3f}", f"{res.ellipticity_ci95_percent:.3f}"
    )
    table.add_row(
        "major axis angle (°)", f"{res.major_angle_deg:.2f}", f"{res.major_angle_ci95_deg:.2f}"
    )
    table.add_row("rings used", ", ".join(r.label for r in res.rings), "")
    out_console.print(table)
    if json_path is not None:
        payload = res.to_dict()
        payload["pattern"] = str(pattern)
        write_json(json_path, payload, overwrite=overwrite)
    if png is not None and plot is not None:
        from temcal.report.diffraction import write_png

        write_png(plot, png, overwrite=overwrite)


def read_tilt_manifest(manifest: Path) -> tuple[list[Path], np.ndarray]:
    """Read a ``path,coil_x,coil_y`` CSV manifest (paths relative to the manifest).

    Raises
    ------
    InputError
        Missing file or columns, empty manifest, non-numeric or non-finite coil values, or a
        listed pattern that does not exist.
    """
    import numpy as np

    from temcal.errors import InputError

    if not manifest.exists():
        raise InputError(f"{manifest}: no such file")
    if manifest.is_dir():
        raise InputError(f"{manifest}: is a directory, not a CSV manifest")
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest}: cannot read the manifest ({exc})") from None
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    if not rows:
        raise InputError(f"{manifest}: the manifest is empty; expected a header path,coil_x,coil_y")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("path", "coil_x", "coil_y") if c not in header]
    if missing:
        raise InputError(
            f"{manifest}: missing column(s) {', '.join(missing)}; the header must be "
            "path,coil_x,coil_y"
        )
    ip, ix, iy = (header.index(c) for c in ("path", "coil_x", "coil_y"))
    paths: list[Path] = []
    coils: list[tuple[float, float]] = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) <= max(ip, ix, iy):
            raise InputError(f"{manifest}, line {n}: expected path,coil_x,coil_y, got {row}")
        try:
            cx, cy = float(row[ix]), float(row[iy])
        except ValueError:
            raise InputError(
                f"{manifest}, line {n}: coil values {row[ix]!r}, {row[iy]!r} are not numbers"
            ) from None
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise InputError(f"{manifest}, line {n}: coil values must be finite")
        p = Path(row[ip].strip())
        p = p if p.is_absolute() else manifest.parent / p
        if not p.exists():
            raise InputError(f"{manifest}, line {n}: pattern {p} does not exist")
        paths.append(p)
        coils.append((cx, cy))
    if not paths:
        raise InputError(f"{manifest}: the manifest lists no patterns")
    return paths, np.array(coils, dtype=float)


@cli_errors
def tilt_calibrate(
    manifest: Annotated[
        Path, typer.Argument(help="CSV manifest path,coil_x,coil_y of gold diffraction patterns.")
    ],
    voltage: Annotated[float, _VOLTAGE],
    lattice_constant: Annotated[float | None, _LATTICE] = None,
    json_path: Annotated[Path | None, _JSON] = None,
    plot: Annotated[Path | None, _PLOT] = None,
    overwrite: Annotated[bool, _OVERWRITE] = False,
) -> None:
    """Beam-tilt coil calibration (mrad per coil unit, 2x2 with rotation) from gold patterns."""
    import dataclasses

    import numpy as np
    from rich.table import Table

    from temcal.calibrate.diffraction import estimate_tilt_calibration
    from temcal.errors import InputError
    from temcal.io.images import read_image
    from temcal.io.output import write_json
    from temcal.physics.gold import check_lattice_constant_A
    from temcal.physics.wavelength import check_voltage_kV

    check_voltage_kV(voltage)
    if lattice_constant is not None:
        check_lattice_constant_A(lattice_constant)
    _check_outputs(json_path, plot, overwrite=overwrite)
    paths, coils = read_tilt_manifest(manifest)
    if len(paths) < 3:
        raise InputError(
            f"{manifest}: {len(paths)} pattern(s) listed; the tilt calibration needs at least 3 "
            "coil settings that are not on one line (e.g. 0,0 and u,0 and 0,u)"
        )
    images = []
    with progress_bar("reading patterns", len(paths)) as advance:
        for p in paths:
            images.append(read_image(p).data)
            advance(1)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(
            f"{manifest}: the patterns have different sizes ("
            + ", ".join(f"{s[1]}x{s[0]}" for s in sorted(shapes))
            + "); record all patterns with the same detector binning"
        )
    err_console.print(f"fitting gold rings in {len(images)} patterns ...")
    res = estimate_tilt_calibration(
        images, coils, voltage_kV=voltage, lattice_constant_A=lattice_constant
    )
    res = dataclasses.replace(res, paths=tuple(str(p) for p in paths))
    png = None
    if plot is not None:
        from temcal.report.diffraction import plot_tilt_calibration

        png = plot_tilt_calibration(res)
    m, ci = res.mrad_per_unit, res.mrad_per_unit_ci95
    table = Table(title=f"temcal tilt-calibrate: {manifest.name}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("95 % CI (±)", justify="right")
    for (i, j), name in np.ndenumerate(np.array([["m_xx", "m_xy"], ["m_yx", "m_yy"]])):
        table.add_row(f"{name} (mrad/unit)", f"{m[i, j]:.6g}", f"{ci[i, j]:.2g}")
    table.add_row(
        "scale (mrad/unit)", f"{res.scale_mrad_per_unit:.6g}", f"{res.scale_ci95_mrad_per_unit:.2g}"
    )
    table.add_row("rotation (°)", f"{res.rotation_deg:.3f}", f"{res.rotation_ci95_deg:.3f}")
    table.add_row("mirrored", "yes" if res.mirrored else "no", "")
    table.add_row("anisotropy (%)", f"{res.anisotropy_percent:.3f}", "")
    table.add_row("mrad per pixel", f"{res.mrad_per_px:.6g}", "")
    out_console.print(table)
    if json_path is not None:
        payload = res.to_dict()
        payload["manifest"] = str(manifest)
        write_json(json_path, payload, overwrite=overwrite)
    if png is not None and plot is not None:
        from temcal.report.diffraction import write_png

        write_png(plot, png, overwrite=overwrite)


@cli_errors
def simulate_diffraction(
    out: Annotated[Path, typer.Argument(help="Output MRC file.")],
    voltage: Annotated[float, _VOLTAGE] = 300.0,
    camera_length_mm: Annotated[
        float, typer.Option("--camera-length-mm", help="Camera length in mm.")
    ] = 800.0,
    detector_pixel_um: Annotated[
        float, typer.Option("--detector-pixel-um", help="Detector pixel pitch in µm.")
    ] = 28.0,
    size: Annotated[int, typer.Option("--size", help="Detector size in pixels (square).")] = 1024,
    ellipticity_percent: Annotated[
        float, typer.Option("--ellipticity-percent", help="Ring ellipticity 100 (major/minor - 1).")
    ] = 0.0,
    major_angle_deg: Annotated[
        float, typer.Option("--major-angle-deg", help="Major axis angle from +x toward +y.")
    ] = 0.0,
    grain_size_nm: Annotated[
        float, typer.Option("--grain-size-nm", help="Gold grain size in nm (ring width).")
    ] = 10.0,
    tilt_x_mrad: Annotated[float, typer.Option("--tilt-x-mrad", help="Beam tilt along x.")] = 0.0,
    tilt_y_mrad: Annotated[float, typer.Option("--tilt-y-mrad", help="Beam tilt along y.")] = 0.0,
    counts: Annotated[
        float, typer.Option("--counts", help="Expected electrons in the pattern.")
    ] = 5e7,
    lattice_constant: Annotated[float | None, _LATTICE] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the noise.")] = 0,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="Also write the truth as JSON here.")
    ] = None,
    overwrite: Annotated[bool, _OVERWRITE] = False,
) -> None:
    """Simulate a diffraction pattern of polycrystalline gold with known camera length."""
    import numpy as np

    from temcal.errors import InputError
    from temcal.io.images import write_mrc
    from temcal.io.output import write_json
    from temcal.physics.gold import LATTICE_CONSTANT_293K_A
    from temcal.simulate.diffraction import simulate_gold_diffraction

    if not 64 <= size <= 8192:
        raise InputError(f"--size {size} is not plausible (64-8192 pixels)")
    _check_outputs(out, truth, overwrite=overwrite)
    sim = simulate_gold_diffraction(
        (size, size),
        voltage_kV=voltage,
        camera_length_mm=camera_length_mm,
        detector_pixel_um=detector_pixel_um,
        ellipticity_percent=ellipticity_percent,
        major_angle_deg=major_angle_deg,
        lattice_constant_A=LATTICE_CONSTANT_293K_A
        if lattice_constant is None
        else lattice_constant,
        grain_size_nm=grain_size_nm,
        beam_tilt_mrad=(tilt_x_mrad, tilt_y_mrad),
        total_counts=counts,
        rng=np.random.default_rng(seed),
    )
    write_mrc(out, sim.pattern, overwrite=overwrite)
    if truth is not None:
        payload = {k: v for k, v in sim.__dict__.items() if k != "pattern"}
        write_json(truth, payload, overwrite=overwrite)
    out_console.print(
        f"wrote {out}: {size}x{size} gold pattern, L = {sim.camera_length_mm:g} mm, "
        f"centre ({sim.pattern_center_xy_px[0]:.2f}, {sim.pattern_center_xy_px[1]:.2f}) px, "
        f"{sim.reciprocal_pixel_per_A:.6g} Å⁻¹/px"
    )
