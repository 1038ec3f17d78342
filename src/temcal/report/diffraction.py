"""Plots of the diffraction calibrations (camera length, beam-tilt coils).

Matplotlib is imported inside the functions and switched to the Agg backend there, never at
import of the package. Figures are rendered to PNG bytes first, so that a caller can write
all its outputs only after everything succeeded.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from temcal.io.output import check_output_path

if TYPE_CHECKING:
    from temcal.calibrate.diffraction import CameraLengthResult, TiltCalibrationResult

__all__ = ["plot_camera_length", "plot_tilt_calibration", "write_png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def write_png(path: str | Path, png: bytes, *, overwrite: bool = False) -> Path:
    """Write PNG bytes atomically (temporary file then rename), refusing to clobber."""
    p = check_output_path(path, overwrite=overwrite)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(png)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _ellipse_xy(result: CameraLengthResult, radius: float, n: int = 361) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n)
    u = np.stack([np.cos(t), np.sin(t)]) * radius
    xy = result.distortion_matrix @ u
    return xy + np.array([[result.center_x_px], [result.center_y_px]])


def plot_camera_length(pattern: np.ndarray, result: CameraLengthResult) -> bytes:
    """The pattern (log scale) with the fitted ring ellipses and centre, as PNG bytes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.8))
    img = np.log1p(np.maximum(pattern - float(np.min(pattern)), 0.0))
    lo, hi = np.percentile(img, [1, 99.8])
    ax = axes[0]
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="upper")
    for ring in result.rings:
        xy = _ellipse_xy(result, ring.radius_px)
        ax.plot(xy[0], xy[1], lw=0.7, color="tab:orange", alpha=0.8)
    ax.plot(result.center_x_px, result.center_y_px, "+", color="tab:red", ms=12, mew=1.5)
    ax.set_xlim(-0.5, pattern.shape[1] - 0.5)
    ax.set_ylim(pattern.shape[0] - 0.5, -0.5)
    ax.set_title(
        f"L = {result.camera_length_mm:.2f} ± {result.camera_length_ci95_mm:.2g} mm, "
        f"ellipticity {result.ellipticity_percent:.2f} % at {result.major_angle_deg:.1f}°"
    )
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    # Radial profile in the isotropic-equivalent radius, with the ring positions.
    ax2 = axes[1]
    ny, nx = pattern.shape
    yy, xx = np.mgrid[:ny, :nx]
    dinv = np.linalg.inv(result.distortion_matrix)
    vx, vy = xx - result.center_x_px, yy - result.center_y_px
    rho = np.hypot(dinv[0, 0] * vx + dinv[0, 1] * vy, dinv[1, 0] * vx + dinv[1, 1] * vy)
    idx = rho.astype(np.int64).ravel()
    cnt = np.bincount(idx)
    good = cnt > 0
    prof = np.bincount(idx, weights=pattern.ravel())[good] / cnt[good]
    rad = np.bincount(idx, weights=rho.ravel())[good] / cnt[good]
    qs = rad * result.reciprocal_pixel_per_A
    ax2.semilogy(qs, np.maximum(prof, 1e-3), lw=0.8, color="k")
    for ring in result.rings:
        q = 1.0 / ring.d_A
        ax2.axvline(q, color="tab:orange", lw=0.6, alpha=0.7)
        ax2.text(
            q,
            1.0,
            ring.label,
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            transform=ax2.get_xaxis_transform(),
        )
    ax2.set_xlabel("q = 1/d (Å⁻¹), from the fitted reciprocal pixel size")
    ax2.set_ylabel("mean counts per pixel (elliptical average)")
    ax2.set_title(f"{len(result.rings)} gold rings, {result.reciprocal_pixel_per_A:.5g} Å⁻¹/px")
    fig.tight_layout()
    return _png(fig)


def plot_tilt_calibration(result: TiltCalibrationResult) -> bytes:
    """Measured tilts (pattern frame, mrad) against the fitted ``M @ coil``, as PNG bytes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.8))
    ax = axes[0]
    fitted = result.tilts_mrad - result.residuals_mrad
    ax.plot(result.tilts_mrad[:, 0], result.tilts_mrad[:, 1], "o", label="measured (ring centre)")
    ax.plot(fitted[:, 0], fitted[:, 1], "x", ms=10, label="fit M @ coil")
    m = result.mrad_per_unit
    span = float(np.max(np.abs(result.coil_settings))) or 1.0
    for col, name, colour in ((0, "coil x", "tab:red"), (1, "coil y", "tab:green")):
        vec = m[:, col] * span
        ax.annotate(
            "",
            xy=(vec[0], vec[1]),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.5},
        )
        ax.text(vec[0], vec[1], f" {name} × {span:g}", color=colour)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("tilt along pattern x (mrad)")
    ax.set_ylabel("tilt along pattern y (mrad)")
    ax.set_title(
        f"scale {result.scale_mrad_per_unit:.5g} mrad/unit, rotation {result.rotation_deg:.2f}°"
        + (" (mirrored)" if result.mirrored else "")
    )
    ax.legend(loc="best", fontsize=8)
    ax2 = axes[1]
    res_urad = result.residuals_mrad * 1e3
    ax2.plot(np.arange(result.n_patterns), res_urad[:, 0], "o-", label="x")
    ax2.plot(np.arange(result.n_patterns), res_urad[:, 1], "s-", label="y")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_xlabel("pattern (manifest order)")
    ax2.set_ylabel("residual tilt (µrad)")
    ax2.set_title("fit residuals")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
