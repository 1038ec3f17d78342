"""``temcal pixel-size`` and ``temcal mag-table``: pixel size from gold lattice rings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console, progress_bar

if TYPE_CHECKING:
    from temcal.calibrate.pixel_size import PixelSizeResult

_TEMPERATURE_HELP = (
    "Specimen temperature in K, for the gold lattice constant (default 293 K, room "
    "temperature: 4.0782 Å; cryo users pass --temperature 80: 4.0657 Å)."
)


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the ``pixel-size`` and ``mag-table`` commands."""
    app.command("pixel-size")(pixel_size)
    app.command("mag-table")(mag_table)


@cli_errors
def pixel_size(
    images: Annotated[
        list[Path], typer.Argument(help="Gold images (MRC, TIFF, DM3/DM4, SER/EMD).")
    ],
    lattice_constant: Annotated[
        float | None,
        typer.Option(
            "--lattice-constant",
            help="Gold lattice constant in Å (overrides --temperature; 4.0782 Å at 293 K).",
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help=_TEMPERATURE_HELP)
    ] = None,
    guess: Annotated[
        float | None,
        typer.Option(
            "--guess",
            help=(
                "Rough pixel size in Å/px: used when the search alone finds no clear "
                "gold pattern (it then stays within ×1.25); a result more than 10 % from "
                "it is refused, and within 5 % it assigns the reflections of a single "
                "crystal's spots. Without it, a refusal names the file header's pixel "
                "size (when recorded) as a guess to try."
            ),
        ),
    ] = None,
    rings: Annotated[
        str | None,
        typer.Option(
            "--rings",
            help=(
                "Reflections to fit, e.g. 111,200,220 (default: all measurable). The "
                "search for the rings still uses every gold reflection."
            ),
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON here.")
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Write a diagnostic plot (PNG/PDF) here.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
    anisotropy_prior: Annotated[
        float,
        typer.Option(
            "--anisotropy-prior",
            help=(
                "Prior standard deviation in % of each anisotropy component, centred on "
                "0: an anisotropy the image determines poorly (a few crystals' spots) is "
                "shrunk toward 0, and the pixel size with it; full rings are left as "
                "they are. 0 turns it off."
            ),
        ),
    ] = 2.0,
    grain_thickness: Annotated[
        float | None,
        typer.Option(
            "--grain-thickness-nm",
            help=(
                "Thickness in nm of a gold foil whose crystals span it: corrects the "
                "inward shift of thin crystals' rings (0.05 % at 3 nm, 0.01 % at 20 nm). "
                "Not for particles. Default: not corrected."
            ),
        ),
    ] = None,
    skip_refused: Annotated[
        bool,
        typer.Option(
            "--skip-refused",
            help=(
                "Leave out images in which no gold pattern is measurable and combine the "
                "others (they are listed, and under refused_images in the JSON); by "
                "default one such image stops the run."
            ),
        ),
    ] = False,
) -> None:
    """Measure the pixel size and magnification anisotropy from gold lattice rings."""
    from temcal.calibrate.pixel_size import (
        check_anisotropy_prior,
        check_grain_thickness,
        estimate_pixel_size,
        resolve_lattice_constant,
    )
    from temcal.io.output import check_output_path, write_json
    from temcal.physics.gold import parse_rings

    # validate every option and output before any work
    resolve_lattice_constant(lattice_constant, temperature)
    check_anisotropy_prior(anisotropy_prior)
    check_grain_thickness(grain_thickness)
    parse_rings(rings)
    for p in (json_path, plot_path):
        if p is not None:
            check_output_path(p, overwrite=overwrite)
    if json_path is not None and plot_path is not None and json_path == plot_path:
        from temcal.errors import InputError

        raise InputError("--json and --plot must be different files")
    with progress_bar("measuring gold rings", len(images)) as advance:
        result = estimate_pixel_size(
            list(images),
            lattice_constant_A=lattice_constant,
            temperature_K=temperature,
            guess_pixel_size_A=guess,
            rings=rings,
            progress=advance,
            skip_refused=skip_refused,
            anisotropy_prior_percent=anisotropy_prior,
            grain_thickness_nm=grain_thickness,
        )
    for name, why in result.refused:
        err_console.print(f"note: left out {name}: {why}")
    _print_result(result)
    if plot_path is not None:
        from temcal.report.pixel_size_plot import plot_pixel_size

        plot_pixel_size(result, plot_path, overwrite=overwrite)
    if json_path is not None:
        write_json(json_path, result.to_dict(), overwrite=overwrite)
    for p in (json_path, plot_path):
        if p is not None:
            err_console.print(f"wrote {p}")


def _print_result(result: PixelSizeResult) -> None:
    from rich.table import Table

    t = Table(title="Pixel size from gold lattice rings")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("pixel size", f"{result.pixel_size_A:.5f} ± {result.pixel_size_ci95_A:.5f} Å/px")
    t.add_row("major / minor", f"{result.pixel_major_A:.5f} / {result.pixel_minor_A:.5f} Å/px")
    t.add_row(
        "anisotropy",
        f"{result.anisotropy_percent:.3f} ± {result.anisotropy_ci95_percent:.3f} %",
    )
    t.add_row("major-axis angle", f"{result.major_angle_deg:.1f}° (from +x toward +y)")
    t.add_row("lattice constant", f"{result.lattice_constant_A:.5f} Å")
    relrod = [
        float(im.relrod_correction_percent)
        for im in result.images
        if im.relrod_correction_percent is not None
    ]
    if relrod:
        t.add_row(
            "thin-crystal (relrod) correction",
            f"{min(relrod):+.4f} to {max(relrod):+.4f} %"
            if len(relrod) > 1
            else f"{relrod[0]:+.4f} %",
        )
    t.add_row(
        "95 % interval: statistical",
        f"± {result.pixel_size_ci95_statistical_A:.5f} Å/px ({result.ci_method})",
    )
    ctf_pct = 100.0 * 1.96 * result.pixel_size_ctf_bias_se_A / result.pixel_size_A
    t.add_row(
        "95 % interval: CTF modulation",
        f"± {1.96 * result.pixel_size_ctf_bias_se_A:.5f} Å/px "
        f"({result.n_defocus_groups} defocus group(s))",
    )
    out_console.print(t)
    if ctf_pct > 0.05:
        dz = [d for im in result.images if (d := im.min_unshifted_defocus_A) is not None]
        where = f" (for these rings: {max(dz) / 1e4:.1f} µm underfocus or more)" if dz else ""
        err_console.print(
            f"note: the CTF modulation across the broad rings may shift them by up to "
            f"~{ctf_pct:.2f} %; images at larger defocus{where} or at several defoci "
            "(independent shifts) reduce it"
        )
    from temcal.calibrate.pixel_size import MIN_RING_DIRECTIONS

    dirs = [im.ring_directions for im in result.images if im.ring_directions is not None]
    if dirs and min(dirs) < MIN_RING_DIRECTIONS:
        err_console.print(
            f"note: the rings are the spots of few crystals (~{min(dirs):.1f} independent "
            "directions of 18): the anisotropy is poorly determined and the intervals "
            "are widened; a larger field or more images give more crystals"
        )
    moved = [im for im in result.images if im.free_anisotropy_percent is not None]
    if moved:
        most = max(moved, key=lambda m: abs(m.pixel_size_A / (m.free_pixel_size_A or 1.0) - 1))
        err_console.print(
            f"note: the anisotropy of {len(moved)} image(s) is poorly determined and was "
            "shrunk toward 0 by the prior (--anisotropy-prior, 0 turns it off); e.g. "
            f"{most.free_anisotropy_percent:.2f} -> {most.anisotropy_percent:.2f} %, pixel "
            f"size {most.free_pixel_size_A:.5f} -> {most.pixel_size_A:.5f} Å/px"
        )
    sparse = [im.crystal_tile_fraction for im in result.images]
    if any(f is not None for f in sparse):
        used = [f for f in sparse if f is not None]
        share = f"{100 * min(used):.0f} %" + (" or more" if len(used) > 1 else "")
        err_console.print(
            f"note: {len(used)} image(s) measured on the tiles that hold crystal spots alone "
            f"({share} of the image): the whole image showed no clear gold pattern"
        )
    r = Table(title="Rings")
    offsets = any(ring.offset_percent is not None for ring in result.rings)
    cols = ["hkl", "d (Å)", "radius (cycles/px)", "width (1/Å)", "SNR", "aliased"]
    if offsets:  # free ring offsets were fitted (the defocus shifts the rings unequally)
        cols += ["offset (%)", "predicted (± %)"]
    for c in cols:
        r.add_column(c, justify="right")
    for ring in result.rings:
        row = [
            ring.hkl,
            f"{ring.d_A:.5f}",
            f"{ring.radius_cycles_per_px:.5f}",
            f"{ring.width_per_A:.4f}",
            f"{ring.snr:.1f}",
            "yes" if ring.aliased else "no",
        ]
        if offsets:
            row += [
                "-" if ring.offset_percent is None else f"{ring.offset_percent:+.3f}",
                "-" if ring.offset_prior_percent is None else f"{ring.offset_prior_percent:.3f}",
            ]
        r.add_row(*row)
    out_console.print(r)
    if result.n_images > 1:
        im = Table(title="Images")
        for c in (
            "file",
            "pixel size (Å/px)",
            "anisotropy (%)",
            "angle (°)",
            "Thon defocus (Å)",
            "CTF u (%)",
        ):
            im.add_column(c, justify="right" if c != "file" else "left")
        for x in result.images:
            im.add_row(
                str(x.file),
                f"{x.pixel_size_A:.5f}",
                f"{x.anisotropy_percent:.3f}",
                f"{x.major_angle_deg:.1f}",
                "-" if x.thon_defocus_A is None else f"{x.thon_defocus_A:.0f}",
                f"{100.0 * x.ctf_bias_se_A / x.pixel_size_A:.3f}",
            )
        out_console.print(im)


@cli_errors
def mag_table(
    csv_path: Annotated[Path, typer.Option("--csv", help="Write the calibration table here.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="A folder with one subfolder per magnification (named by it, e.g. 105000 "
            "or 105kx), or images whose headers give the magnification."
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="CSV with columns path,magnification (relative paths are relative to the CSV).",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the table as JSON here.")
    ] = None,
    lattice_constant: Annotated[
        float | None, typer.Option("--lattice-constant", help="Gold lattice constant in Å.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help=_TEMPERATURE_HELP)
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Parallel processes (default: one per core).")
    ] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
    skip_refused: Annotated[
        bool,
        typer.Option(
            "--skip-refused",
            help=(
                "Leave out images (and magnifications) in which no gold pattern is "
                "measurable; they are listed, and as refused_files in the JSON."
            ),
        ),
    ] = False,
    grain_thickness: Annotated[
        float | None,
        typer.Option(
            "--grain-thickness-nm",
            help=(
                "Thickness in nm of a gold foil whose crystals span it: corrects the "
                "inward shift of thin crystals' rings (see pixel-size). Not for particles. "
                "Default: not corrected."
            ),
        ),
    ] = None,
) -> None:
    """Calibrate many magnifications at once: one pixel size per magnification group."""
    from rich.table import Table

    from temcal.calibrate.mag_table import (
        calibrate_magnifications,
        group_inputs,
        mag_table_csv,
    )
    from temcal.calibrate.pixel_size import check_grain_thickness, resolve_lattice_constant
    from temcal.io.output import check_output_path, write_json, write_text

    resolve_lattice_constant(lattice_constant, temperature)
    check_grain_thickness(grain_thickness)
    check_output_path(csv_path, overwrite=overwrite)
    if json_path is not None:
        check_output_path(json_path, overwrite=overwrite)
    groups = group_inputs(list(inputs or []), manifest=manifest)
    n_images = sum(len(v) for v in groups.values())
    err_console.print(f"{len(groups)} magnification(s), {n_images} image(s)")
    with progress_bar("measuring", n_images) as advance:
        rows = calibrate_magnifications(
            groups,
            lattice_constant_A=lattice_constant,
            temperature_K=temperature,
            workers=workers or None,
            progress=advance,
            skip_refused=skip_refused,
            grain_thickness_nm=grain_thickness,
        )
    for row in rows:
        for f in row.refused_files:
            err_console.print(f"note: left out {f} (magnification {row.magnification:g})")
    done = {row.magnification for row in rows}
    for mag in groups:
        if mag not in done:
            err_console.print(f"note: magnification {mag:g} left out: every image was refused")
    t = Table(title="Magnification calibration")
    for c in ("magnification", "n", "pixel size (Å/px)", "95 % CI", "anisotropy (%)", "angle"):
        t.add_column(c, justify="right")
    for row in rows:
        t.add_row(
            f"{row.magnification:g}",
            str(row.n_images),
            f"{row.pixel_size_A:.5f}",
            f"± {row.pixel_size_ci95_A:.5f}",
            f"{row.anisotropy_percent:.3f}",
            f"{row.major_angle_deg:.1f}°",
        )
    out_console.print(t)
    write_text(csv_path, mag_table_csv(rows), overwrite=overwrite)
    if json_path is not None:
        write_json(json_path, {"magnifications": [r.to_dict() for r in rows]}, overwrite=overwrite)
    err_console.print(f"wrote {csv_path}" + (f" and {json_path}" if json_path else ""))
