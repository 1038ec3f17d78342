"""``temcal history``: a calibration log per microscope."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from temcal.cli._common import cli_errors, err_console, out_console

history_app = typer.Typer(
    help="Record calibration results per microscope and show how they change over time.",
    no_args_is_help=True,
)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="History folder (default: $TEMCAL_HISTORY_DIR or ~/.local/share/temcal/history).",
    ),
]


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the ``history`` command group."""
    app.add_typer(history_app, name="history")


@history_app.command("add")
@cli_errors
def add(
    result_json: Annotated[Path, typer.Argument(help="A JSON written by a temcal --json.")],
    microscope: Annotated[str, typer.Option("--microscope", "-m", help="Microscope name.")],
    magnification: Annotated[
        float | None, typer.Option(help="Nominal magnification of this calibration.")
    ] = None,
    note: Annotated[str, typer.Option(help="Free text stored with the entry.")] = "",
    store: StoreOption = None,
) -> None:
    """Append a calibration result to a microscope's history."""
    from temcal.report.history import add_history_entry

    entries = add_history_entry(
        result_json, microscope=microscope, store=store, magnification=magnification, note=note
    )
    err_console.print(
        f"recorded {len(entries)} {entries[0].kind} entr"
        f"{'y' if len(entries) == 1 else 'ies'} for {microscope}"
    )


@history_app.command("show")
@cli_errors
def show(
    microscope: Annotated[str, typer.Argument(help="Microscope name.")],
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: pixel-size, cs-ctf, cs-tilt, camera-length, ..."),
    ] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Plot the values over time.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = (
        False
    ),
    store: StoreOption = None,
) -> None:
    """Show a microscope's calibration history as a table (and CSV / plot)."""
    import csv as csvmod
    import io

    from rich.table import Table

    from temcal.io.output import check_output_path, write_text
    from temcal.report.history import read_history

    for out in (csv, plot):
        if out is not None:
            check_output_path(out, overwrite=overwrite)
    entries = read_history(microscope, store=store, kind=kind)
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e.values if k not in keys]
    table = Table(title=f"calibration history: {microscope}")
    for col in ("recorded (UTC)", "kind", "magnification", *keys, "note"):
        table.add_column(col)
    rows = []
    for e in entries:
        vals = [e.values.get(k) for k in keys]
        rows.append([e.recorded_utc, e.kind, e.magnification, *vals, e.note])
        table.add_row(
            *(
                "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
                for v in rows[-1]
            )
        )
    out_console.print(table)
    if csv is not None:
        buf = io.StringIO()
        writer = csvmod.writer(buf)
        writer.writerow(["recorded_utc", "kind", "magnification", *keys, "note"])
        writer.writerows(rows)
        write_text(csv, buf.getvalue(), overwrite=overwrite)
    if plot is not None:
        from temcal.report.history_plot import plot_history

        plot_history(entries, plot)
