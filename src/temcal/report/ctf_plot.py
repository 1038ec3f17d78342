"""Diagnostic plots of CTF fits and of the joint Cs fit (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from temcal.calibrate.ctf_fit import CTFFit

__all__ = ["plot_cs_ctf", "plot_ctf_fits"]


def _profile_panel(ax: Any, fit: CTFFit, name: str) -> None:
    if fit.profile is None:
        ax.text(0.5, 0.5, "no profile", ha="center", transform=ax.transAxes)
        return
    k, d, m = fit.profile
    ax.plot(k, d, lw=0.7, color="0.3", label="spectrum − background")
    ax.plot(k, m, lw=0.9, color="C3", label="fitted CTF²·envelope")
    ax.axvline(1.0 / fit.fit_resolution_A, color="C0", ls=":", lw=0.8, label="fit resolution")
    ax.set_xlabel("astigmatism-corrected spatial frequency (1/Å)")
    ax.set_title(
        f"{name}: {fit.defocus_u_A:.0f}/{fit.defocus_v_A:.0f} Å, {fit.astig_angle_deg:.1f}°, "
        f"rings to {fit.fit_resolution_A:.2f} Å",
        fontsize=8,
    )
    ax.tick_params(labelsize=7)


def plot_ctf_fits(fits: Sequence[CTFFit], names: Sequence[str], path: str | Path) -> Path:
    """One panel per micrograph: radial spectrum against the fitted CTF; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fits)
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, f, name in zip(axes.ravel(), fits, names, strict=False):
        _profile_panel(ax, f, name)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_cs_ctf(result: Any, path: str | Path) -> Path:
    """Cs profile and residuals, jackknife values and each micrograph's fitted spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = result.micrographs
    n = len(fits)
    rows = 1 + math.ceil(n / 2)
    fig = plt.figure(figsize=(13, 2.8 * rows))
    gs = fig.add_gridspec(rows, 2)
    ax = fig.add_subplot(gs[0, 0])
    cs = np.asarray(result.cs_scan_mm)
    rss = np.asarray(result.cs_scan_rss)
    ax.plot(cs, rss - rss.min(), "o-", ms=4)
    ax.axvline(result.cs_mm, color="C3", label=f"Cs = {result.cs_mm:.3f} ± {result.cs_ci95_mm:.3f}")
    ax.axvspan(
        result.cs_mm - result.cs_ci95_mm, result.cs_mm + result.cs_ci95_mm, color="C3", alpha=0.15
    )
    if result.cs_nominal_mm is not None:
        ax.axvline(result.cs_nominal_mm, color="k", ls="--", label="nominal")
    ax.set_xlabel("Cs (mm)")
    ax.set_ylabel("Δ residual (defocus refitted)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(gs[0, 1])
    x = np.arange(n)
    if result.jackknife_cs_mm:
        ax.plot(x, result.jackknife_cs_mm, "s", color="C1", label="Cs without this micrograph")
    ax.axhline(result.cs_mm, color="C3")
    ax.axhspan(
        result.cs_mm - result.cs_fit_ci95_mm,
        result.cs_mm + result.cs_fit_ci95_mm,
        color="C3",
        alpha=0.15,
        label="fit 95 %",
    )
    ax.set_xticks(x, [Path(f).name for f in result.files], fontsize=6, rotation=20)
    ax.set_ylabel("Cs (mm)")
    ax.legend(fontsize=7)
    for i, (f, name) in enumerate(zip(fits, result.files, strict=True)):
        a = fig.add_subplot(gs[1 + i // 2, i % 2])
        _profile_panel(a, f, Path(name).name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
