"""Power spectra of images and their radial / elliptical profiles."""

from temcal.spectra.power import PowerSpectrum, calculate_power_spectrum, frequency_grid

__all__ = ["PowerSpectrum", "calculate_power_spectrum", "frequency_grid"]
