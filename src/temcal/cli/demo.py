"""``temcal demo``: run every calibration on simulated data and compare with the truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console

DEFAULT_DEMO_DIR = Path("temcal-demo")
_ABSOLUTE_UNITS = {"%", "deg", "px", "°"}


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the ``demo`` command."""
    app.command("demo")(demo)


@cli_errors
def demo(
    outdir: Annotated[
        Path, typer.Option("--outdir", "-o", help="Folder for the demo's data and results.")
    ] = DEFAULT_DEMO_DIR,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Reuse an existing, non-empty output folder.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the simulations.")] = 2026,
) -> None:
    """Simulate gold images (and CTF / tilt series), calibrate them, print measured vs truth."""
    from rich.table import Table

    from temcal.demo import run_demo
    from temcal.errors import OutputExistsError

    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{outdir} already exists and is not empty; choose another --outdir or pass --overwrite"
        )
    err_console.print(f"temcal demo: writing simulated data and results to {outdir}/")
    lines = run_demo(outdir, seed=seed, on_topic=lambda t: err_console.print(f"  running {t} ..."))
    table = Table(title="temcal demo: measured vs truth")
    for col in ("topic", "quantity", "measured", "95 % CI", "truth", "error"):
        table.add_column(col, justify="right" if col not in ("topic", "quantity") else "left")
    for ln in lines:
        ci = f"± {ln.ci95:.4g}" if ln.ci95 is not None else "-"
        if ln.unit in _ABSOLUTE_UNITS or ln.truth == 0:
            # angles, percentages and pixel positions: the difference, in their own unit
            err = f"{ln.measured - ln.truth:+.3g} {ln.unit}"
        else:
            err = f"{ln.error_percent:+.3f} %"
        table.add_row(
            ln.topic, f"{ln.quantity} ({ln.unit})", f"{ln.measured:.5g}", ci, f"{ln.truth:.5g}", err
        )
    out_console.print(table)
    out_console.print(f"Outputs are in {outdir.resolve()}")
