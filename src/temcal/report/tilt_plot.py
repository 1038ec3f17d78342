"""Plot of a beam-tilt fit: measured vs modelled shifts and induced defocus vs tilt azimuth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from temcal.calibrate.cs_tilt import TiltFit
from temcal.physics.aberrations import (
    calculate_tilt_image_shift_A,
    calculate_tilt_induced_c1_a1_A,
    defocus_astigmatism_from_c1_a1,
)

__all__ = ["plot_tilt_fits"]


def plot_tilt_fits(fits: dict[str, TiltFit], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a PNG with one panel per method.

    Shift method: x and y image shift (drift removed) against the image-frame tilt azimuth,
    one colour per tilt magnitude, points measured, lines modelled. Tableau: the two
    principal defoci of each image against azimuth, points measured, lines modelled.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from temcal.io.output import check_output_path

    p = check_output_path(path, overwrite=overwrite)
    panels = [("shift", "x"), ("shift", "y"), ("shift", "resid")] if "shift" in fits else []
    if "tableau" in fits:
        panels.append(("tableau", "defocus"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (method, what) in zip(axes[0], panels, strict=True):
        f = fits[method]
        mags = np.abs(f.tau_rad) * 1e3
        levels = sorted({round(float(m), 3) for m in mags if m > 1e-6})
        phi_line = np.linspace(0, 2 * math.pi, 361)
        for ci, lev in enumerate(levels):
            col = colors[ci % len(colors)]
            tau_line = lev * 1e-3 * np.exp(1j * phi_line)
            if method == "shift" and what == "resid":
                resid = f.observed - f.modelled
                pairs = np.asarray(f.extra.get("pairs"), dtype=int).reshape(-1, 2)
                sel = np.flatnonzero(np.abs(mags[pairs[:, 1]] - lev) < 1e-3)
                az = np.degrees(np.angle(f.tau_rad[pairs[sel, 1]])) % 360
                ax.plot(az, resid[sel, 0], "o", color=col, ms=4, label=f"{lev:g} mrad x")
                ax.plot(
                    az, resid[sel, 1], "s", color=col, ms=4, mfc="none", label=f"{lev:g} mrad y"
                )
                ax.axhline(0.0, color="k", lw=0.8)
                ax.set_ylabel("measured - modelled shift (Å)")
                ax.set_title(f"shift residuals (rms {f.residual_rms:.3f} Å)")
            elif method == "shift":
                ref = int(str(f.extra.get("reference_index", 0)))
                pairs = np.asarray(f.extra.get("pairs"), dtype=int).reshape(-1, 2)
                sel = np.asarray(
                    [
                        k
                        for k, (a, b) in enumerate(pairs)
                        if a == ref and abs(round(float(mags[b]), 3) - lev) < 1e-6
                    ],
                    dtype=int,
                )
                b_idx = pairs[sel, 1]
                comp = 0 if what == "x" else 1
                meas = f.observed[sel, comp] - (f.drift_A[b_idx, comp] - f.drift_A[ref, comp])
                az = np.degrees(np.angle(f.tau_rad[b_idx])) % 360
                ax.plot(az, meas, "o", color=col, ms=4, label=f"{lev:g} mrad measured")
                d0 = calculate_tilt_image_shift_A(f.tau_rad[ref], f.aberrations)
                line = calculate_tilt_image_shift_A(tau_line, f.aberrations) - d0
                ax.plot(
                    np.degrees(phi_line),
                    line.real if comp == 0 else line.imag,
                    "-",
                    color=col,
                    lw=1,
                    label=f"{lev:g} mrad model",
                )
                ax.set_ylabel(f"image shift {what} (Å)")
                ax.set_title(f"image shifts ({what}); Cs = {f.cs_mm:.4g} mm")
            else:
                sel = np.flatnonzero(np.abs(mags - lev) < 1e-3)
                az = np.degrees(np.angle(f.tau_rad[sel])) % 360
                du, dv = [], []
                for k in sel:
                    u, v, _ = defocus_astigmatism_from_c1_a1(
                        f.observed[k, 0], complex(f.observed[k, 1], f.observed[k, 2])
                    )
                    du.append(u)
                    dv.append(v)
                ax.plot(az, du, "o", color=col, ms=4, label=f"{lev:g} mrad defocus u, v")
                ax.plot(az, dv, "s", color=col, ms=3, mfc="none")
                c1, a1 = calculate_tilt_induced_c1_a1_A(tau_line, f.aberrations)
                ax.plot(np.degrees(phi_line), -c1 + np.abs(a1), "-", color=col, lw=1)
                ax.plot(np.degrees(phi_line), -c1 - np.abs(a1), "--", color=col, lw=1)
                ax.set_ylabel("defocus (Å, underfocus +)")
                ax.set_title(f"tableau: induced defocus; Cs = {f.cs_mm:.4g} mm")
        ax.set_xlabel("tilt azimuth in image frame (deg)")
        ax.set_xlim(0, 360)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
