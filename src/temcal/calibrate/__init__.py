"""Calibrations: pixel size, Cs from Thon rings, Cs from beam tilt, diffraction."""
