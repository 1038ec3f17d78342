"""Physical models: electron wavelength, gold lattice, CTF and aberrations."""

from temcal.physics.aberrations import (
    AxialAberrations,
    calculate_aberration_function_A,
    calculate_tilt_image_shift_A,
    calculate_tilt_induced_c1_a1_A,
)
from temcal.physics.gold import (
    GOLD_REFLECTIONS,
    LATTICE_CONSTANT_293K_A,
    d_spacing_A,
    lattice_constant_A,
    parse_hkl,
)
from temcal.physics.wavelength import calculate_wavelength_A

__all__ = [
    "GOLD_REFLECTIONS",
    "LATTICE_CONSTANT_293K_A",
    "AxialAberrations",
    "calculate_aberration_function_A",
    "calculate_tilt_image_shift_A",
    "calculate_tilt_induced_c1_a1_A",
    "calculate_wavelength_A",
    "d_spacing_A",
    "lattice_constant_A",
    "parse_hkl",
]
