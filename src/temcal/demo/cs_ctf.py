"""Demo step ``cs_ctf``: Cs and defocus from the Thon rings of a simulated defocus series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temcal.demo import DemoLine

TOPIC = "cs_ctf"


def run(outdir: Path, *, rng: np.random.Generator) -> list[DemoLine]:
    """Simulate four 512² micrographs (Cs 2.7 mm, 300 kV), fit Cs jointly, compare."""
    from temcal.calibrate.cs_ctf import fit_cs_ctf
    from temcal.io.images import write_mrc
    from temcal.io.output import write_json
    from temcal.report.ctf_plot import plot_cs_ctf
    from temcal.simulate.ctf_series import simulate_ctf_series

    cs_true, pixel = 2.7, 1.0
    series = simulate_ctf_series(
        n_micrographs=4,
        shape=(512, 512),
        pixel_size_A=pixel,
        voltage_kV=300.0,
        cs_mm=cs_true,
        rng=rng,
        defocus_range_A=(4000.0, 12000.0),
        astigmatism_A=500.0,
        b_factor_A2=5.0,
        dose_e_per_A2=100.0,
        oversample=1,
    )
    files = []
    for i, img in enumerate(series.images):
        p = outdir / f"ctf_series_{i:02d}.mrc"
        write_mrc(p, img, pixel_size_A=pixel, overwrite=True)
        files.append(str(p))
    result = fit_cs_ctf(
        list(series.images),
        pixel_size_A=pixel,
        voltage_kV=300.0,
        cs_nominal_mm=cs_true,
        files=files,
    )
    write_json(outdir / "cs_ctf.json", result.to_dict(), overwrite=True)
    plot_cs_ctf(result, outdir / "cs_ctf.png")
    lines = [
        DemoLine(TOPIC, "Cs", "mm", result.cs_mm, result.cs_ci95_mm, cs_true),
    ]
    for i in (0, len(series.truths) - 1):
        t, f = series.truths[i], result.micrographs[i]
        lines.append(
            DemoLine(
                TOPIC,
                f"mean defocus #{i}",
                "Å",
                f.defocus_mean_A,
                None,
                0.5 * (t.defocus_u_A + t.defocus_v_A),
            )
        )
        d = (f.astig_angle_deg - t.astig_angle_deg + 90.0) % 180.0 - 90.0
        lines.append(
            DemoLine(
                TOPIC,
                f"astigmatism angle #{i}",
                "deg",
                t.astig_angle_deg + d,
                None,
                t.astig_angle_deg,
            )
        )
    return lines
