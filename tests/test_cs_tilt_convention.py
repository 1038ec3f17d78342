"""Frame-rotation convention checked against shifts computed by hand (not by temcal).

A manifest tilt along +x that the microscope actually applies along +y of the image is a
frame rotation of +90° (from +x toward +y). For a round lens the image shift is
delta = C1 tau + C3 |tau|^2 tau (physics.md), with C1 = -defocus (underfocus positive).
"""

from __future__ import annotations

import numpy as np
import pytest

from temcal.calibrate.cs_tilt import ShiftMeasurement, fit_tilt_shifts


@pytest.mark.parametrize("theta_deg", [90.0, 250.0])
def test_frame_rotation_from_hand_computed_shifts(theta_deg: float) -> None:
    defocus_A, cs_A = 8000.0, 2.7e7
    az = np.radians(np.arange(12) * 30.0)
    tilts = [(0.0, 0.0)] + [(m * np.cos(a), m * np.sin(a)) for m in (5.0, 10.0) for a in az]
    tilts_mrad = np.array(tilts)
    t = 1e-3 * (tilts_mrad[:, 0] + 1j * tilts_mrad[:, 1])
    tau = np.exp(1j * np.radians(theta_deg)) * t  # image-frame tilt, x + i y
    delta = -defocus_A * tau + cs_A * np.abs(tau) ** 2 * tau  # Å, x + i y
    pairs = np.array([(0, k) for k in range(1, len(t))])
    shifts = np.column_stack([delta[1:].real, delta[1:].imag]) - [delta[0].real, delta[0].imag]
    meas = ShiftMeasurement(pairs=pairs, shift_A=shifts, sigma_A=np.full(len(pairs), 0.05))
    fit = fit_tilt_shifts(meas, tilts_mrad, drift_step_A=0.01, mirror=False)
    assert fit.frame_rotation_deg == pytest.approx(theta_deg, abs=0.1)
    assert fit.cs_mm == pytest.approx(2.7, rel=0.005)
    assert fit.defocus_A == pytest.approx(defocus_A, rel=0.001)
