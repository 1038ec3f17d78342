"""``temcal simulate gold``: synthetic gold-lattice images with a known pixel matrix."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console, progress_bar


class GoldKind(StrEnum):
    """Specimen kinds."""

    foil = "foil"
    particles = "particles"


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add ``simulate gold``."""
    simulate_app.command("gold")(simulate_gold)


def _output_paths(out: Path, count: int) -> list[tuple[Path, Path]]:
    """(image, sidecar) paths: ``OUT.mrc`` + ``OUT.json``, or ``OUT_000.mrc`` ... for K > 1."""
    suffix = out.suffix if out.suffix.lower() in (".mrc", ".mrcs") else ".mrc"
    stem = out.name[: -len(out.suffix)] if out.suffix.lower() in (".mrc", ".mrcs") else out.name
    if count == 1:
        names = [stem]
    else:
        names = [f"{stem}_{i:03d}" for i in range(count)]
    return [(out.with_name(n + suffix), out.with_name(n + ".json")) for n in names]


@cli_errors
def simulate_gold(
    out: Annotated[Path, typer.Argument(help="Output MRC file (OUT_000.mrc ... with --count).")],
    pixel_size: Annotated[
        float, typer.Option("--pixel-size", help="True pixel size sqrt(p_major p_minor), Å.")
    ],
    anisotropy: Annotated[
        float, typer.Option("--anisotropy", help="Magnification anisotropy, %.")
    ] = 0.0,
    angle: Annotated[
        float, typer.Option("--angle", help="Direction of the major pixel axis from +x, deg.")
    ] = 0.0,
    kind: Annotated[
        GoldKind, typer.Option("--kind", help="Polycrystalline foil or isolated particles.")
    ] = GoldKind.foil,
    grain_size: Annotated[
        float, typer.Option("--grain-size", help="Median grain diameter, nm.")
    ] = 10.0,
    thickness: Annotated[
        float | None,
        typer.Option("--thickness", help="Foil (grain) thickness, nm; default: spherical grains."),
    ] = None,
    coverage: Annotated[
        float, typer.Option("--coverage", help="Fraction of the field covered by the foil.")
    ] = 0.3,
    particles: Annotated[
        int, typer.Option("--particles", help="Number of particles (--kind particles).")
    ] = 12,
    defocus: Annotated[
        float, typer.Option("--defocus", help="Defocus, Å (underfocus positive).")
    ] = 5000.0,
    cs: Annotated[float, typer.Option("--cs", help="Spherical aberration, mm.")] = 2.7,
    voltage: Annotated[float, typer.Option("--voltage", help="Accelerating voltage, kV.")] = 300.0,
    dose: Annotated[float, typer.Option("--dose", help="Electron dose, e/Å².")] = 40.0,
    lattice_constant: Annotated[
        float, typer.Option("--lattice-constant", help="Gold lattice constant, Å.")
    ] = 4.0782,
    size: Annotated[int, typer.Option("--size", help="Image side length, pixels.")] = 2048,
    count: Annotated[int, typer.Option("--count", help="Number of images.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
) -> None:
    """Simulate gold-lattice images with a known pixel matrix (MRC + JSON truth sidecar)."""
    import numpy as np

    from temcal.errors import InputError
    from temcal.io.images import write_mrc
    from temcal.io.output import check_output_path, write_json
    from temcal.simulate.gold import simulate_gold_image

    if not 1 <= count <= 1000:
        raise InputError(f"--count {count} must lie between 1 and 1000")
    if not 64 <= size <= 16384:
        raise InputError(f"--size {size} must lie between 64 and 16384 pixels")
    paths = _output_paths(out, count)
    for img_path, json_path in paths:
        check_output_path(img_path, overwrite=overwrite)
        check_output_path(json_path, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    results = []
    with progress_bar("simulating gold images", count) as advance:
        for _ in range(count):
            results.append(
                simulate_gold_image(
                    (size, size),
                    pixel_size_A=pixel_size,
                    anisotropy_percent=anisotropy,
                    major_angle_deg=angle,
                    kind=kind.value,
                    grain_size_nm=grain_size,
                    grain_thickness_nm=thickness,
                    coverage=coverage,
                    n_particles=particles,
                    defocus_A=defocus,
                    cs_mm=cs,
                    voltage_kV=voltage,
                    dose_e_per_A2=dose,
                    lattice_constant_A=lattice_constant,
                    rng=rng,
                )
            )
            advance(1)
    # Everything simulated without error: now write (no partial output on bad input).
    for (img_path, json_path), sim in zip(paths, results, strict=True):
        write_mrc(img_path, sim.image, pixel_size_A=sim.pixel_size_A, overwrite=overwrite)
        truth = sim.truth()
        truth.update(
            {
                "file": img_path.name,
                "seed": seed,
                "grain_size_nm": grain_size,
                "grain_thickness_nm": thickness,
                "coverage": coverage,
            }
        )
        write_json(json_path, truth, overwrite=overwrite)
        out_console.print(f"{img_path}  pixel {sim.pixel_size_A:.5g} Å  truth -> {json_path}")
    err_console.print(f"temcal: wrote {len(results)} simulated gold image(s)")
