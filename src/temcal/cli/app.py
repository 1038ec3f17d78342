"""Entry point of the ``temcal`` command.

Each command lives in its own module under :mod:`temcal.cli` and exposes
``register(app, simulate_app)``; heavy imports happen inside the commands so that
``temcal --help`` is instant.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from temcal import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="temcal",
    help="Calibrate a transmission electron microscope from images of gold: pixel size, "
    "magnification anisotropy, Cs and axial aberrations.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
simulate_app = typer.Typer(
    help="Simulate test data with known answers (gold lattice images, CTF series, tilt series, "
    "diffraction patterns).",
    no_args_is_help=True,
)
app.add_typer(simulate_app, name="simulate")

#: Command modules, each with ``register(app, simulate_app)``.
_COMMAND_MODULES = (
    "temcal.cli.demo",
    "temcal.cli.simulate_gold",
    "temcal.cli.pixel_size",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"temcal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Calibrate a TEM from images of gold."""


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app, simulate_app)


def main() -> None:
    """Run the CLI; an unexpected error prints one line (set TEMCAL_DEBUG=1 for a traceback)."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("temcal: interrupted\n")
        sys.exit(130)
    except Exception as exc:  # pragma: no cover - last-resort guard
        if os.environ.get("TEMCAL_DEBUG"):
            raise
        sys.stderr.write(
            f"temcal: internal error: {type(exc).__name__}: {exc} "
            "(please report it; set TEMCAL_DEBUG=1 for a traceback)\n"
        )
        sys.exit(3)
