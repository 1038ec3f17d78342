"""Demo topic: camera length and beam-tilt coil calibration from simulated gold diffraction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from temcal.demo import DemoLine

__all__ = ["run"]

_TOPIC = "diffraction"


def run(outdir: Path, *, rng: np.random.Generator) -> list[DemoLine]:
    """Simulate gold patterns, calibrate camera length and tilt coils, compare with truth."""
    from temcal.calibrate.diffraction import estimate_camera_length, estimate_tilt_calibration
    from temcal.io.images import write_mrc
    from temcal.io.output import write_json
    from temcal.simulate.diffraction import simulate_gold_diffraction

    lines: list[DemoLine] = []
    sim = simulate_gold_diffraction(
        (1024, 1024),
        voltage_kV=300.0,
        camera_length_mm=800.0,
        detector_pixel_um=28.0,
        center_xy_px=(517.3, 504.8),
        ellipticity_percent=1.0,
        major_angle_deg=35.0,
        grain_size_nm=8.0,
        total_counts=5e7,
        rng=rng,
    )
    write_mrc(outdir / "gold_diffraction.mrc", sim.pattern, overwrite=True)
    res = estimate_camera_length(sim.pattern, voltage_kV=300.0, detector_pixel_um=28.0)
    write_json(outdir / "camera_length.json", res.to_dict(), overwrite=True)
    cx, cy = sim.pattern_center_xy_px
    lines += [
        DemoLine(
            _TOPIC,
            "camera length",
            "mm",
            res.camera_length_mm,
            res.camera_length_ci95_mm,
            sim.camera_length_mm,
        ),
        DemoLine(_TOPIC, "centre x", "px", res.center_x_px, res.center_ci95_px[0], cx),
        DemoLine(_TOPIC, "centre y", "px", res.center_y_px, res.center_ci95_px[1], cy),
        DemoLine(
            _TOPIC,
            "ellipticity",
            "%",
            res.ellipticity_percent,
            res.ellipticity_ci95_percent,
            sim.ellipticity_percent,
        ),
        DemoLine(
            _TOPIC,
            "major axis angle",
            "deg",
            res.major_angle_deg,
            res.major_angle_ci95_deg,
            sim.major_angle_deg,
        ),
    ]

    # Beam-tilt coils: rotated by 28 deg and mirrored relative to the pattern, 0.015 mrad/unit.
    theta = math.radians(28.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    true_m = 0.015 * rot @ np.diag([1.0, -1.0])
    coils = np.array([[0, 0], [100, 0], [0, 100], [-100, 0], [0, -100]], dtype=float)
    patterns = []
    rows = ["path,coil_x,coil_y"]
    for i, coil in enumerate(coils):
        tilt = true_m @ coil
        s = simulate_gold_diffraction(
            (512, 512),
            voltage_kV=200.0,
            camera_length_mm=500.0,
            detector_pixel_um=28.0,
            ellipticity_percent=0.5,
            major_angle_deg=100.0,
            grain_size_nm=10.0,
            beam_tilt_mrad=(float(tilt[0]), float(tilt[1])),
            total_counts=1e7,
            rng=rng,
        )
        name = f"tilt_{i}.mrc"
        write_mrc(outdir / name, s.pattern, overwrite=True)
        rows.append(f"{name},{coil[0]:g},{coil[1]:g}")
        patterns.append(s.pattern)
    (outdir / "tilt_manifest.csv").write_text("\n".join(rows) + "\n")
    tres = estimate_tilt_calibration(patterns, coils, voltage_kV=200.0)
    write_json(outdir / "tilt_calibration.json", tres.to_dict(), overwrite=True)
    lines += [
        DemoLine(
            _TOPIC,
            "tilt scale",
            "mrad/unit",
            tres.scale_mrad_per_unit,
            tres.scale_ci95_mrad_per_unit,
            0.015,
        ),
        DemoLine(
            _TOPIC,
            "tilt rotation (mirrored)",
            "deg",
            tres.rotation_deg,
            tres.rotation_ci95_deg,
            28.0,
        ),
        DemoLine(
            _TOPIC,
            "tilt m_xx",
            "mrad/unit",
            float(tres.mrad_per_unit[0, 0]),
            float(tres.mrad_per_unit_ci95[0, 0]),
            float(true_m[0, 0]),
        ),
        DemoLine(
            _TOPIC,
            "tilt m_xy",
            "mrad/unit",
            float(tres.mrad_per_unit[0, 1]),
            float(tres.mrad_per_unit_ci95[0, 1]),
            float(true_m[0, 1]),
        ),
    ]
    return lines
