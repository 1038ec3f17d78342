"""``temcal simulate ctf``, ``temcal ctf`` and ``temcal cs-ctf``: Thon-ring fits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the CTF commands."""
    simulate_app.command("ctf")(simulate_ctf)


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
