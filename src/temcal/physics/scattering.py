"""Elastic electron scattering factors of neutral atoms.

References
----------
Peng, L.-M., Ren, G., Dudarev, S. L. & Whelan, M. J. (1996). Robust parameterization of
elastic and absorptive electron atomic scattering factors. Acta Cryst. A52, 257-276.
https://doi.org/10.1107/S0108767395014371
"""

from __future__ import annotations

import numpy as np

from temcal.errors import InputError

__all__ = ["electron_scattering_factor_A"]

#: Five-Gaussian elastic electron scattering factors ``f_e(s) = sum a_i exp(-b_i s^2)``
#: (``a`` in Å, ``b`` in Å², ``s = sin(theta) / lambda`` in Å⁻¹) of neutral atoms:
#: Peng et al. (1996), International Tables for Crystallography Vol. C (2011),
#: Table 4.3.2.2.
_PENG_1996: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "Au": (
        (0.9674, 1.8916, 3.3993, 3.0524, 1.2607),
        (0.2358, 1.4712, 5.6758, 18.7119, 61.5286),
    ),
    "C": (
        (0.0893, 0.2563, 0.7570, 1.0487, 0.3575),
        (0.2465, 1.7100, 6.4094, 18.6113, 50.2523),
    ),
}


def electron_scattering_factor_A(g_per_A: np.ndarray | float, element: str = "Au") -> np.ndarray:
    """Elastic electron scattering factor ``f_e`` (Å) at spatial frequency ``|g|`` (Å⁻¹).

    Parameters
    ----------
    g_per_A : array_like
        Spatial frequency ``|g| = 2 sin(theta) / lambda`` in Å⁻¹ (``s = |g| / 2``).
    element : {"Au", "C"}
        Element.

    Returns
    -------
    numpy.ndarray
        ``f_e`` in Å (Peng et al. 1996 five-Gaussian fit, valid for ``s <= 2`` Å⁻¹).
    """
    try:
        a, b = _PENG_1996[element]
    except KeyError:
        raise InputError(f"no scattering factor for element {element!r}") from None
    s2 = 0.25 * np.asarray(g_per_A, dtype=float) ** 2
    out = np.zeros_like(s2)
    for ai, bi in zip(a, b, strict=True):
        out += ai * np.exp(-bi * s2)
    return out
