"""Exceptions raised by temcal.

The library never prints; it raises one of these with a message that says what
was wrong and how to fix it. The command-line interface catches
:class:`TemcalError` once, prints its message on one line and exits non-zero.
"""

from __future__ import annotations

__all__ = ["CalibrationError", "InputError", "OutputExistsError", "TemcalError"]


class TemcalError(Exception):
    """Base class of every error temcal raises on purpose."""


class InputError(TemcalError, ValueError):
    """An input (file, array, option) is unusable: unreadable, NaN, blank, absurd."""


class CalibrationError(TemcalError, RuntimeError):
    """A measurement could not be made from valid input (no gold found, fit failed)."""


class OutputExistsError(TemcalError, FileExistsError):
    """An output file exists and ``overwrite`` was not requested."""
