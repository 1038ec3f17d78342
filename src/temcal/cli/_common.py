"""Shared pieces of the command-line layer: error handling, consoles, progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console

from temcal.errors import TemcalError

__all__ = ["cli_errors", "err_console", "out_console", "progress_bar"]

#: Messages, progress and errors go to stderr; results to stdout.
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Turn a :class:`TemcalError` into one ``temcal: error: ...`` line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TemcalError as exc:
            err_console.print(f"temcal: error: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``advance(n)``. Silent when total <= 1."""
    if not total or total <= 1:

        def _noop(n: int = 1) -> None:
            return None

        yield _noop
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)

        def _advance(n: int = 1) -> None:
            prog.advance(task, n)

        yield _advance
