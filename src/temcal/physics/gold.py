"""Gold (FCC) lattice: lattice constant versus temperature and d-spacings.

References
----------
Maeland, A. & Flanagan, T. B. (1964). Lattice spacings of gold-palladium alloys.
Can. J. Phys. 42, 2364-2366. https://doi.org/10.1139/p64-213 (a = 4.0782 Å at 293 K,
the value of pyFAI's Au calibrant).

The cryo model ``a(T) = 4.06111 + 5.67075e-5 T`` Å for T >= 43 K (constant below) is
the linear model used by magCalEM (MRC-LMB), a fit to published thermal-expansion
data of gold; it gives 4.06565 Å at 80 K and 4.06678 Å at 100 K.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable

from temcal.errors import InputError

__all__ = [
    "CRYO_TEMPERATURE_K",
    "GOLD_REFLECTIONS",
    "LATTICE_CONSTANT_293K_A",
    "d_spacing_A",
    "lattice_constant_A",
    "parse_hkl",
    "parse_rings",
    "reflection_multiplicity",
]

#: Room-temperature lattice constant of gold in Å (Maeland & Flanagan 1964).
LATTICE_CONSTANT_293K_A = 4.0782

#: Default specimen temperature (K) for cryo work: liquid-nitrogen-cooled stage.
CRYO_TEMPERATURE_K = 80.0

_CRYO_A0 = 4.06111
_CRYO_SLOPE = 5.67075e-5
_CRYO_FLOOR_K = 43.0

#: Allowed FCC reflections (h, k, l all even or all odd), in order of increasing |g|.
GOLD_REFLECTIONS: tuple[tuple[int, int, int], ...] = (
    (1, 1, 1),
    (2, 0, 0),
    (2, 2, 0),
    (3, 1, 1),
    (2, 2, 2),
    (4, 0, 0),
    (3, 3, 1),
    (4, 2, 0),
)


def lattice_constant_A(temperature_K: float | None = None) -> float:
    """Lattice constant of gold in Å.

    Parameters
    ----------
    temperature_K : float, optional
        Specimen temperature in K. ``None`` or 293 gives the room-temperature value
        4.0782 Å (Maeland & Flanagan 1964). Below room temperature the linear cryo
        model ``4.06111 + 5.67075e-5 T`` (constant below 43 K) is used; it meets the
        room-temperature value within 0.012 % at 293 K.

    Returns
    -------
    float
        Lattice constant in Å.
    """
    if temperature_K is None:
        return LATTICE_CONSTANT_293K_A
    t = float(temperature_K)
    if not math.isfinite(t) or not 0.0 <= t <= 1300.0:
        raise InputError(
            f"temperature {temperature_K!r} K is not plausible for a gold specimen; "
            "give the specimen temperature in kelvin (e.g. 80 for cryo, 293 for room temperature)"
        )
    if t >= 293.0:
        # Room temperature and above: the measured value (thermal expansion of gold is
        # 14.2e-6 /K near room temperature).
        return LATTICE_CONSTANT_293K_A * (1.0 + 14.2e-6 * (t - 293.0))
    return _CRYO_A0 + _CRYO_SLOPE * max(t, _CRYO_FLOOR_K)


def check_lattice_constant_A(lattice_constant: float) -> float:
    """Validate a user-given gold lattice constant (Å)."""
    a = float(lattice_constant)
    if not math.isfinite(a) or not 3.9 <= a <= 4.2:
        raise InputError(
            f"lattice constant {lattice_constant!r} Å is not plausible for gold "
            "(4.0782 Å at 293 K, about 4.066 Å at 80 K); give it in Å"
        )
    return a


def d_spacing_A(hkl: tuple[int, int, int] | str, lattice_constant: float) -> float:
    """Interplanar spacing ``a / sqrt(h^2 + k^2 + l^2)`` of an FCC reflection in Å."""
    h, k, l = parse_hkl(hkl) if isinstance(hkl, str) else hkl
    return float(lattice_constant) / math.sqrt(h * h + k * k + l * l)


def reflection_multiplicity(hkl: tuple[int, int, int]) -> int:
    """Number of distinct reflections ``{hkl}`` of a cubic crystal (8 for 111, 6 for 200).

    Counts the distinct vectors made by permuting ``h, k, l`` and changing their signs
    (the powder multiplicity of the ring).
    """
    vecs = {
        tuple(sg * v for sg, v in zip(signs, perm, strict=True))
        for perm in itertools.permutations(hkl)
        for signs in itertools.product((1, -1), repeat=3)
    }
    return len(vecs)


def parse_hkl(text: str) -> tuple[int, int, int]:
    """Parse a reflection written as ``"111"``, ``"1,1,1"`` or ``"1 1 1"``.

    Raises
    ------
    InputError
        If it is not three integers or not an allowed FCC reflection of gold.
    """
    s = text.strip()
    parts = re.split(r"[\s,;]+", s) if re.search(r"[\s,;]", s) else list(s)
    try:
        h, k, l = (int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"reflection {text!r} is not three Miller indices; write it like '111' or '2,0,0'"
        ) from None
    parities = {h % 2, k % 2, l % 2}
    if len(parities) != 1 or (h, k, l) == (0, 0, 0):
        raise InputError(
            f"reflection {text!r} is forbidden for FCC gold (h, k, l must be all even or "
            "all odd); allowed: " + ", ".join("".join(map(str, r)) for r in GOLD_REFLECTIONS)
        )
    return (h, k, l)


def parse_rings(spec: str | Iterable[str] | None) -> tuple[tuple[int, int, int], ...]:
    """Parse a ring list such as ``"111,200,220"``; ``None`` means all of GOLD_REFLECTIONS."""
    if spec is None:
        return GOLD_REFLECTIONS
    items = (
        [s for s in re.split(r"[\s,;]+", spec.strip()) if s]
        if isinstance(spec, str)
        else list(spec)
    )
    if not items:
        raise InputError("the ring list is empty; give reflections like '111,200,220'")
    rings = tuple(parse_hkl(item) for item in items)
    return tuple(sorted(set(rings), key=lambda r: r[0] ** 2 + r[1] ** 2 + r[2] ** 2))
