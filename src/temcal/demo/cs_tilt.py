"""Demo: Cs, defocus and tilt-frame rotation from a simulated beam-tilt series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temcal.demo import DemoLine

TOPIC = "cs_tilt"


def run(outdir: Path, *, rng: np.random.Generator) -> list[DemoLine]:
    """Simulate, write and measure a 13-image beam-tilt series.

    Untilted plus 5 and 10 mrad at 6 azimuths, 512² images at 1 Å/px, drift 0.3 Å/image,
    measured by image shifts and by the CTF tableau (a CTF fit needs >= 512² for 0.3 %).
    """
    from temcal.calibrate.cs_tilt import analyse_tilt_series
    from temcal.io.output import write_json
    from temcal.io.tilt_manifest import read_tilt_images, read_tilt_manifest
    from temcal.physics.aberrations import AxialAberrations
    from temcal.simulate.tilt_series import (
        design_tilts_mrad,
        simulate_tilt_series,
        write_tilt_series,
    )

    cs_mm, defocus_A, rotation_deg = 2.7, 8000.0, 35.0
    ab = AxialAberrations.from_krivanek(
        C10_A=-defocus_A, C30_A=cs_mm * 1e7, C12_A=25.0, phi12_deg=40.0, C21_A=800.0,
        phi21_deg=120.0, C23_A=400.0, phi23_deg=15.0,
    )  # fmt: skip
    series = simulate_tilt_series(
        design_tilts_mrad((5.0, 10.0), 6), aberrations=ab, pixel_size_A=1.0, voltage_kV=300.0,
        shape=(512, 512), rng=rng, frame_rotation_deg=rotation_deg, drift_step_A=0.3,
        dose_e_per_A2=100.0,
    )  # fmt: skip
    manifest_path = write_tilt_series(series, outdir, overwrite=True)
    manifest = read_tilt_manifest(manifest_path)
    fits, result = analyse_tilt_series(
        read_tilt_images(manifest), manifest.tilts_mrad, pixel_size_A=1.0, voltage_kV=300.0,
        drift_step_A=0.3, max_cs_iterations=2, taper=0.0,
    )  # fmt: skip
    write_json(outdir / "cs_tilt.json", result, overwrite=True)
    lines = []
    for name, fit in fits.items():
        m = result["methods"][name]  # type: ignore[index]
        lines.append(DemoLine(TOPIC, f"Cs ({name})", "mm", fit.cs_mm, m["cs_ci95_mm"], cs_mm))
        lines.append(
            DemoLine(TOPIC, f"defocus ({name})", "Å", fit.defocus_A, m["defocus_ci95_A"], defocus_A)
        )
    lines.append(
        DemoLine(
            TOPIC, "tilt-frame rotation", "deg", float(result["tilt_frame_rotation_deg"]),  # type: ignore[arg-type]
            float(result["tilt_frame_rotation_ci95_deg"]), rotation_deg,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    return lines
