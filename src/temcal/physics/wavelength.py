"""Relativistic electron wavelength."""

from __future__ import annotations

import math

from scipy import constants

from temcal.errors import InputError

__all__ = ["calculate_wavelength_A", "check_voltage_kV"]

_H = constants.h
_M0 = constants.m_e
_E = constants.e
_C = constants.c


def check_voltage_kV(voltage_kV: float) -> float:
    """Validate an accelerating voltage in kV and return it as a float.

    Raises
    ------
    InputError
        If the voltage is not finite or outside 1-3000 kV.
    """
    v = float(voltage_kV)
    if not math.isfinite(v) or not 1.0 <= v <= 3000.0:
        raise InputError(
            f"voltage {voltage_kV!r} kV is not plausible; give the accelerating voltage in kV "
            "(e.g. 200 or 300)"
        )
    return v


def calculate_wavelength_A(voltage_kV: float) -> float:
    """Relativistic de Broglie wavelength of an electron.

    ``lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))`` with CODATA constants
    (from :mod:`scipy.constants`).

    Parameters
    ----------
    voltage_kV : float
        Accelerating voltage in kV.

    Returns
    -------
    float
        Wavelength in Å (0.025079 Å at 200 kV, 0.019687 Å at 300 kV).
    """
    volts = check_voltage_kV(voltage_kV) * 1e3
    energy = _E * volts
    momentum = math.sqrt(2.0 * _M0 * energy * (1.0 + energy / (2.0 * _M0 * _C**2)))
    return _H / momentum * 1e10
