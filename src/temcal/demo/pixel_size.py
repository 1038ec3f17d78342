"""Demo topic: pixel size and anisotropic magnification from simulated gold images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temcal.demo import DemoLine

#: Truth of the demo's simulated images.
PIXEL_SIZE_A = 0.8
ANISOTROPY_PERCENT = 1.0
MAJOR_ANGLE_DEG = 30.0


def run(outdir: Path, *, rng: np.random.Generator) -> list[DemoLine]:
    """Simulate two 1024² gold-foil images, measure them jointly, write JSON and a plot.

    Parameters
    ----------
    outdir : Path
        Folder for ``gold_*.mrc``, ``pixel_size.json`` and ``pixel_size.png``.
    rng : numpy.random.Generator
        Random generator of the simulations.

    Returns
    -------
    list of DemoLine
        Pixel size, anisotropy and major-axis angle: measured, 95 % CI, truth.
    """
    from temcal.calibrate.pixel_size import estimate_pixel_size
    from temcal.io.images import write_mrc
    from temcal.io.output import write_json
    from temcal.report.pixel_size_plot import plot_pixel_size
    from temcal.simulate.gold import simulate_gold_image

    paths = []
    for k, defocus_A in enumerate((2000.0, 3000.0)):
        sim = simulate_gold_image(
            (1024, 1024),
            pixel_size_A=PIXEL_SIZE_A,
            anisotropy_percent=ANISOTROPY_PERCENT,
            major_angle_deg=MAJOR_ANGLE_DEG,
            grain_size_nm=10.0,
            coverage=1.0,
            defocus_A=defocus_A,
            rng=rng,
        )
        paths.append(
            write_mrc(outdir / f"gold_{k}.mrc", sim.image, pixel_size_A=None, overwrite=True)
        )
    result = estimate_pixel_size(paths)
    write_json(outdir / "pixel_size.json", result.to_dict(), overwrite=True)
    plot_pixel_size(result, outdir / "pixel_size.png", overwrite=True)
    return [
        DemoLine(
            "pixel_size",
            "pixel size",
            "Å/px",
            result.pixel_size_A,
            result.pixel_size_ci95_A,
            PIXEL_SIZE_A,
        ),
        DemoLine(
            "pixel_size",
            "anisotropy",
            "%",
            result.anisotropy_percent,
            result.anisotropy_ci95_percent,
            ANISOTROPY_PERCENT,
        ),
        DemoLine(
            "pixel_size",
            "major-axis angle",
            "deg",
            result.major_angle_deg,
            None,
            MAJOR_ANGLE_DEG,
        ),
    ]
