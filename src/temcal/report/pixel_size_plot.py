"""Diagnostic plot of a pixel-size measurement: spectrum with ellipses, profile with fit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from temcal.calibrate.pixel_size import PixelSizeResult

__all__ = ["plot_pixel_size"]


def plot_pixel_size(
    result: PixelSizeResult, path: str | Path, *, overwrite: bool = False, image_index: int = 0
) -> Path:
    """Write a two-panel figure for one image of ``result``.

    Left: the power spectrum (log scale, centred, frequencies in cycles/pixel) with the
    fitted ring ellipses ``{q : |W q| = 1/d}``. Right: the elliptically corrected radial
    profile of the fitted samples (``s = |W q|`` in Å⁻¹) with the fitted model and its
    background.

    Parameters
    ----------
    result : PixelSizeResult
        A result from :func:`temcal.calibrate.pixel_size.estimate_pixel_size`.
    path : str or Path
        Output file (PNG, PDF, SVG by suffix).
    overwrite : bool
        Replace an existing file.
    image_index : int
        Which image's fit to draw.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import os
    import tempfile

    import matplotlib.pyplot as plt

    from temcal.io.output import check_output_path
    from temcal.spectra.profiles import calculate_radial_profile

    out = check_output_path(path, overwrite=overwrite)
    im = result.images[image_index]
    dg = im.diagnostics
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 5.4))
    spec = dg.get("spectrum")
    W = np.asarray(dg["W"])
    if spec is not None:
        n = spec.shape[0]
        ext = (-0.5, 0.5 - 1.0 / n, 0.5 - 1.0 / n, -0.5)
        v = np.log(np.maximum(spec, np.percentile(spec, 1)))
        lo, hi = np.percentile(v, [5, 99.8])
        ax0.imshow(v, cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="nearest")
    t = np.linspace(0, 2 * np.pi, 721)
    u = np.stack([np.cos(t), np.sin(t)])
    Winv = np.linalg.inv(W)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (r, hkl) in enumerate(zip(dg["radii_per_A"], dg["hkl"], strict=True)):
        q = Winv @ (u * r)
        c = colors[j % len(colors)]
        ax0.plot(q[0], q[1], lw=0.8, color=c, alpha=0.9, label=hkl)
        ax1.axvline(r, color=c, lw=0.8, ls=":")
    ax0.set_xlim(-0.5, 0.5)
    ax0.set_ylim(0.5, -0.5)
    ax0.set_xlabel("kx (cycles/pixel)")
    ax0.set_ylabel("ky (cycles/pixel)")
    tiles = (
        ""
        if im.crystal_tile_fraction is None
        else f", crystal tiles {100 * im.crystal_tile_fraction:.0f} %"
    )
    ax0.set_title(f"power spectrum (binning {dg['binning']}, tile {dg['tile_size']}{tiles})")
    ax0.legend(loc="upper right", fontsize=8)
    s = np.asarray(dg["s_per_A"])
    bw = float(np.median(np.diff(np.unique(np.round(s, 6))))) * 4 if s.size > 10 else 0.001
    bw = max(bw, 1e-5)
    x, yd, _ = calculate_radial_profile(s, np.asarray(dg["data"]), bin_width=bw)
    _, ym, _ = calculate_radial_profile(s, np.asarray(dg["model"]), bin_width=bw)
    _, yb, _ = calculate_radial_profile(s, np.asarray(dg["background"]), bin_width=bw)
    ax1.plot(x, yd, ".", ms=2.5, color="0.4", label="spectrum (elliptically corrected)")
    ax1.plot(x, ym, "-", lw=1.2, color="C3", label="fitted model")
    ax1.plot(x, yb, "--", lw=1.0, color="C0", label="background")
    ax1.set_xlabel("|g| = |W q| (1/Å)")
    ax1.set_ylabel("power (a.u.)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    title = (
        f"p = {im.pixel_size_A:.5f} Å/px, anisotropy {im.anisotropy_percent:.3f} % "
        f"at {im.major_angle_deg:.1f}°"
    )
    if im.free_anisotropy_percent is not None:
        # the anisotropy prior moved the result: the curves are the free fit's
        title += (
            f"\n(anisotropy prior applied; ellipses and model of the free fit: "
            f"{im.free_pixel_size_A:.5f} Å/px, {im.free_anisotropy_percent:.3f} %)"
        )
    ax1.set_title(title, fontsize=9 if im.free_anisotropy_percent is not None else None)
    fig.suptitle(
        f"temcal pixel-size: {result.pixel_size_A:.5f} ± {result.pixel_size_ci95_A:.5f} Å/px "
        f"({result.n_images} image(s); {im.file or 'array'})",
        fontsize=10,
    )
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=out.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out
