"""``temcal simulate ctf``, ``temcal ctf`` and ``temcal cs-ctf``: Thon-ring fits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from temcal.cli._common import cli_errors, err_console, out_console


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the CTF commands."""
    simulate_app.command("ctf")(simulate_ctf)
    app.command("ctf")(ctf)
    app.command("cs-ctf")(cs_ctf)


def _fit_one(path: str, kwargs: dict[str, Any]) -> tuple[str, Any]:
    """Worker: read a micrograph and fit its CTF (returns the fit or the error message)."""
    from temcal.calibrate.ctf_fit import fit_ctf
    from temcal.errors import TemcalError
    from temcal.io.images import read_image

    try:
        img = read_image(path)
        return path, fit_ctf(img.data, **kwargs)
    except TemcalError as exc:
        return path, f"{path}: {exc}" if str(path) not in str(exc) else str(exc)


def _check_outputs(json_path: Path | None, plot: Path | None, overwrite: bool) -> None:
    from temcal.io.output import check_output_path

    for p in (json_path, plot):
        if p is not None:
            check_output_path(p, overwrite=overwrite)


@cli_errors
def ctf(
    micrographs: Annotated[list[Path], typer.Argument(help="Micrographs (MRC, TIFF, ...).")],
    pixel_size: Annotated[float, typer.Option("--pixel-size", help="Pixel size (Å).")],
    voltage: Annotated[float, typer.Option("--voltage", help="Accelerating voltage (kV).")],
    cs: Annotated[float, typer.Option("--cs", help="Spherical aberration (mm), held fixed.")],
    amplitude_contrast: Annotated[
        float, typer.Option("--amplitude-contrast", help="Amplitude-contrast fraction.")
    ] = 0.07,
    phase_shift: Annotated[
        bool, typer.Option("--phase-shift", help="Also fit a phase shift (phase plate).")
    ] = False,
    focus_crossing: Annotated[
        bool,
        typer.Option("--focus-crossing", help="Allow overfocus (negative defocus) in the search."),
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Parallel processes (0 = all cores).")
    ] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a diagnostic plot (PNG).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace output files.")] = False,
) -> None:
    """Fit defocus and astigmatism of each micrograph with Cs fixed (as CTFFIND)."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from rich.table import Table

    from temcal.calibrate.ctf_fit import _check_common
    from temcal.cli._common import progress_bar
    from temcal.errors import CalibrationError
    from temcal.io.output import write_json

    _check_common(pixel_size, voltage, cs, amplitude_contrast)
    _check_outputs(json_path, plot, overwrite)
    for m in micrographs:
        if not m.exists():
            from temcal.errors import InputError

            raise InputError(f"{m}: no such file")
    kwargs = dict(
        pixel_size_A=pixel_size,
        voltage_kV=voltage,
        cs_mm=cs,
        amplitude_contrast=amplitude_contrast,
        fit_phase_shift=phase_shift,
        allow_focus_crossing=focus_crossing,
    )
    n_jobs = min(len(micrographs), jobs if jobs > 0 else (os.cpu_count() or 1))
    results: dict[str, Any] = {}
    with progress_bar("fitting CTF", len(micrographs)) as advance:
        if n_jobs <= 1:
            for m in micrographs:
                results[str(m)] = _fit_one(str(m), kwargs)[1]
                advance(1)
        else:
            with ProcessPoolExecutor(max_workers=n_jobs) as pool:
                futs = [pool.submit(_fit_one, str(m), kwargs) for m in micrographs]
                for fut in futs:
                    path, res = fut.result()
                    results[path] = res
                    advance(1)
    for m in micrographs:
        if isinstance(results[str(m)], str):
            raise CalibrationError(results[str(m)])
    fits = [results[str(m)] for m in micrographs]
    table = Table(title=f"CTF fits (Cs {cs} mm, {voltage} kV, {pixel_size} Å/px)")
    for col in (
        "file",
        "defocus u (Å)",
        "defocus v (Å)",
        "angle (°)",
        "phase (°)",
        "rings to (Å)",
        "score",
    ):
        table.add_column(col, justify="left" if col == "file" else "right")
    for m, f in zip(micrographs, fits, strict=True):
        table.add_row(
            m.name,
            f"{f.defocus_u_A:.1f}",
            f"{f.defocus_v_A:.1f}",
            f"{f.astig_angle_deg:.2f}",
            f"{f.phase_shift_deg:.1f}",
            f"{f.fit_resolution_A:.2f}",
            f"{f.score:.3f}",
        )
    if plot is not None:
        from temcal.report.ctf_plot import plot_ctf_fits

        plot_ctf_fits(fits, [m.name for m in micrographs], plot)
    if json_path is not None:
        write_json(
            json_path,
            {
                "micrographs": [
                    {"file": str(m), **f.to_dict()} for m, f in zip(micrographs, fits, strict=True)
                ],
                "pixel_size_A": pixel_size,
                "voltage_kV": voltage,
                "cs_mm": cs,
            },
            overwrite=overwrite,
        )
    out_console.print(table)


@cli_errors
def cs_ctf(
    micrographs: Annotated[
        list[Path], typer.Argument(help="A defocus series of micrographs (same size).")
    ],
    voltage: Annotated[float, typer.Option("--voltage", help="Accelerating voltage (kV).")],
    pixel_size: Annotated[
        float | None, typer.Option("--pixel-size", help="Pixel size (Å), shared by the series.")
    ] = None,
    pixel_from_gold: Annotated[
        bool,
        typer.Option(
            "--pixel-from-gold", help="Measure each micrograph's pixel size from its gold rings."
        ),
    ] = False,
    gold_temperature: Annotated[
        float | None,
        typer.Option("--gold-temperature", help="Gold temperature (K) for its lattice constant."),
    ] = None,
    pixel_size_ci95: Annotated[
        float | None,
        typer.Option(
            "--pixel-size-ci95", help="95 % half-width of --pixel-size (Å), for the budget."
        ),
    ] = None,
    amplitude_contrast: Annotated[
        float, typer.Option("--amplitude-contrast", help="Amplitude-contrast fraction.")
    ] = 0.07,
    cs_nominal: Annotated[
        float | None, typer.Option("--cs-nominal", help="Nominal Cs (mm) to compare with.")
    ] = None,
    voltage_ci95: Annotated[
        float,
        typer.Option("--voltage-ci95-percent", help="Assumed 95 % voltage uncertainty (%)."),
    ] = 0.1,
    phase_shift: Annotated[
        bool, typer.Option("--phase-shift", help="Also fit a phase shift per micrograph.")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a diagnostic plot (PNG).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace output files.")] = False,
) -> None:
    """Measure Cs from the Thon rings of a defocus series (one Cs, per-micrograph defocus)."""
    from temcal.calibrate.cs_ctf import fit_cs_ctf
    from temcal.cli._common import progress_bar
    from temcal.errors import InputError
    from temcal.io.images import read_image
    from temcal.io.output import write_json
    from temcal.physics.wavelength import check_voltage_kV

    check_voltage_kV(voltage)
    if (pixel_size is None) == (not pixel_from_gold):
        raise InputError("give exactly one of --pixel-size A or --pixel-from-gold")
    if len(micrographs) < 2:
        raise InputError(
            "a single micrograph cannot separate Cs from defocus; give a defocus series of at "
            "least two (better 4-6) micrographs"
        )
    _check_outputs(json_path, plot, overwrite)
    images = [read_image(m) for m in micrographs]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise InputError(f"micrographs have different sizes {sorted(shapes)}; give one size")
    headers = [im.pixel_size_A for im in images if im.pixel_size_A is not None]
    if not pixel_from_gold and len(headers) == len(images) and max(headers) / min(headers) > 1.005:
        raise InputError(
            f"the micrographs' headers give different pixel sizes ({min(headers):.4g}-"
            f"{max(headers):.4g} Å): mixed magnifications cannot share a Cs fit"
        )
    pix: float | list[float] | None = None
    pix_ci: float | list[float] | None = None
    if not pixel_from_gold:
        assert pixel_size is not None
        pix, pix_ci = pixel_size, pixel_size_ci95
    with progress_bar("fitting CTF", len(images)) as advance:
        result = fit_cs_ctf(
            [im.data for im in images],
            pixel_size_A=pix,
            pixel_from_gold=pixel_from_gold,
            gold_temperature_K=gold_temperature,
            pixel_size_ci95_A=pix_ci,
            voltage_kV=voltage,
            amplitude_contrast=amplitude_contrast,
            cs_nominal_mm=cs_nominal,
            voltage_ci95_percent=voltage_ci95,
            fit_phase_shift=phase_shift,
            files=[str(m) for m in micrographs],
            progress=advance,
        )
    if plot is not None:
        from temcal.report.ctf_plot import plot_cs_ctf

        plot_cs_ctf(result, plot)
    if json_path is not None:
        write_json(json_path, result.to_dict(), overwrite=overwrite)
    _print_cs(result)


def _print_cs(result: Any) -> None:
    from rich.table import Table

    table = Table(title="Cs from Thon rings (joint fit over the defocus series)")
    for col in (
        "file",
        "defocus u (Å)",
        "defocus v (Å)",
        "angle (°)",
        "phase (°)",
        "rings to (Å)",
        "pixel (Å)",
    ):
        table.add_column(col, justify="left" if col == "file" else "right")
    for name, f in zip(result.files, result.micrographs, strict=True):
        table.add_row(
            Path(name).name,
            f"{f.defocus_u_A:.1f}",
            f"{f.defocus_v_A:.1f}",
            f"{f.astig_angle_deg:.2f}",
            f"{f.phase_shift_deg:.1f}",
            f"{f.fit_resolution_A:.2f}",
            f"{f.pixel_size_A:.4f}",
        )
    out_console.print(table)
    out_console.print(
        f"Cs = {result.cs_mm:.4f} mm ± {result.cs_ci95_mm:.4f} (95 %): fit ± "
        f"{result.cs_fit_ci95_mm:.4f}, pixel size ± {result.cs_pixel_ci95_mm:.4f} (x4), voltage ± "
        f"{result.cs_voltage_ci95_mm:.4f} (assumed ± {result.voltage_ci95_percent:g} %)"
    )
    if result.pixel_size_ci95_A == 0:
        out_console.print(
            "note: no pixel-size uncertainty given (--pixel-size-ci95); a 1 % pixel error is a "
            "4 % Cs error"
        )
    if result.cs_nominal_mm is not None:
        verdict = "differs significantly from" if result.differs_from_nominal else "agrees with"
        out_console.print(f"measured Cs {verdict} the nominal {result.cs_nominal_mm:g} mm")
    if result.magnification_change_percent_per_um is not None:
        out_console.print(
            f"magnification change: {result.magnification_change_percent_per_um:+.3f} ± "
            f"{result.magnification_change_se_percent_per_um:.3f} % per µm of defocus"
        )


@cli_errors
def simulate_ctf(
    outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Output folder.")] = Path(
        "ctf-series"
    ),
    n_micrographs: Annotated[int, typer.Option("--n", help="Number of micrographs.")] = 6,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 1024,
    pixel_size: Annotated[float, typer.Option("--pixel-size", help="Pixel size (Å).")] = 1.0,
    voltage: Annotated[float, typer.Option("--voltage", help="Voltage (kV).")] = 300.0,
    cs: Annotated[float, typer.Option("--cs", help="Spherical aberration (mm).")] = 2.7,
    defocus_min: Annotated[
        float, typer.Option("--defocus-min", help="Smallest mean defocus (Å, underfocus +).")
    ] = 5000.0,
    defocus_max: Annotated[
        float, typer.Option("--defocus-max", help="Largest mean defocus (Å).")
    ] = 25000.0,
    astigmatism: Annotated[
        float, typer.Option("--astigmatism", help="defocus_u - defocus_v (Å).")
    ] = 500.0,
    amplitude_contrast: Annotated[
        float, typer.Option("--amplitude-contrast", help="Amplitude-contrast fraction.")
    ] = 0.07,
    phase_shift: Annotated[float, typer.Option("--phase-shift", help="Phase shift (deg).")] = 0.0,
    b_factor: Annotated[float, typer.Option("--b-factor", help="B-factor envelope (Å²).")] = 10.0,
    focal_spread: Annotated[
        float, typer.Option("--focal-spread", help="Focal spread, 1 sigma (Å).")
    ] = 0.0,
    semiangle: Annotated[
        float, typer.Option("--illumination-semiangle", help="Illumination semi-angle (mrad).")
    ] = 0.0,
    dose: Annotated[float, typer.Option("--dose", help="Dose per micrograph (e/Å²).")] = 100.0,
    mag_change: Annotated[
        float,
        typer.Option("--mag-change", help="Magnification change (% per µm of defocus)."),
    ] = 0.0,
    gold_edge: Annotated[
        bool, typer.Option("--gold-edge", help="Add a gold-foil edge to every micrograph.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files.")] = False,
) -> None:
    """Simulate a defocus series of an amorphous film with known Cs, defocus and astigmatism."""
    import numpy as np

    from temcal.errors import InputError
    from temcal.io.images import write_mrc
    from temcal.io.output import check_output_path, write_json
    from temcal.simulate.ctf_series import simulate_ctf_series

    if n_micrographs < 1 or n_micrographs > 100:
        raise InputError(f"--n {n_micrographs}: give 1-100 micrographs")
    if size < 128 or size > 8192:
        raise InputError(f"--size {size}: give 128-8192 pixels")
    outdir.mkdir(parents=True, exist_ok=True)
    names = [outdir / f"micrograph_{i:02d}.mrc" for i in range(n_micrographs)]
    for p in [*names, outdir / "truth.json"]:
        check_output_path(p, overwrite=overwrite)
    series = simulate_ctf_series(
        n_micrographs=n_micrographs,
        shape=(size, size),
        pixel_size_A=pixel_size,
        voltage_kV=voltage,
        cs_mm=cs,
        rng=np.random.default_rng(seed),
        defocus_range_A=(defocus_min, defocus_max),
        astigmatism_A=astigmatism,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_shift,
        b_factor_A2=b_factor,
        focal_spread_A=focal_spread,
        illumination_semiangle_mrad=semiangle,
        dose_e_per_A2=dose,
        oversample=2 if size <= 2048 else 1,
        magnification_change_percent_per_um=mag_change,
        gold_edge=gold_edge,
    )
    truth = {
        "cs_mm": cs,
        "pixel_size_A": pixel_size,
        "voltage_kV": voltage,
        "amplitude_contrast": amplitude_contrast,
        "dose_e_per_A2": dose,
        "micrographs": [],
    }
    for name, img, t, pix in zip(
        names, series.images, series.truths, series.pixel_sizes_A, strict=True
    ):
        write_mrc(name, img, pixel_size_A=pix, overwrite=overwrite)
        truth["micrographs"].append(  # type: ignore[attr-defined]
            {
                "file": name.name,
                "defocus_u_A": t.defocus_u_A,
                "defocus_v_A": t.defocus_v_A,
                "astig_angle_deg": t.astig_angle_deg,
                "phase_shift_deg": t.phase_shift_deg,
                "pixel_size_A": pix,
            }
        )
    write_json(outdir / "truth.json", truth, overwrite=overwrite)
    err_console.print(f"wrote {n_micrographs} micrographs and truth.json to {outdir}/")
    out_console.print(str(outdir))
