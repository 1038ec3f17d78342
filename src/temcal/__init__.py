"""temcal: calibrate transmission electron microscopes from images of gold.

The public API is re-exported here; see the submodules for details:
:mod:`temcal.physics` (wavelength, gold, CTF, aberrations), :mod:`temcal.io`,
:mod:`temcal.spectra`, :mod:`temcal.calibrate`, :mod:`temcal.simulate`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("temcal")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from temcal.errors import CalibrationError, InputError, OutputExistsError, TemcalError
from temcal.io import ImageData, read_image
from temcal.physics import calculate_wavelength_A, d_spacing_A, lattice_constant_A
from temcal.spectra import PowerSpectrum, calculate_power_spectrum

__all__ = [
    "CalibrationError",
    "ImageData",
    "InputError",
    "OutputExistsError",
    "PowerSpectrum",
    "TemcalError",
    "__version__",
    "calculate_power_spectrum",
    "calculate_wavelength_A",
    "d_spacing_A",
    "lattice_constant_A",
    "read_image",
]
