"""Plot of a microscope's calibration history."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

from temcal.report.history import HistoryEntry

__all__ = ["plot_history"]

_MAIN_VALUE = {
    "pixel-size": ("pixel_size_A", "pixel_size_ci95_A", "pixel size (Å)"),
    "cs-ctf": ("cs_mm", "cs_ci95_mm", "Cs (mm)"),
    "cs-tilt": ("cs_mm", "cs_ci95_mm", "Cs (mm)"),
    "camera-length": ("camera_length_mm", "camera_length_ci95_mm", "camera length (mm)"),
}


def plot_history(entries: list[HistoryEntry], path: str | Path) -> Path:
    """Plot each kind's headline value (with its 95 % interval) against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[datetime, float, float]]] = defaultdict(list)
    for e in entries:
        if e.kind not in _MAIN_VALUE:
            continue
        key, ci_key, _ = _MAIN_VALUE[e.kind]
        value = e.values.get(key)
        if value is None:
            continue
        label = e.kind if e.magnification is None else f"{e.kind} @ {e.magnification:g}x"
        ci = e.values.get(ci_key) or 0.0
        series[label].append((datetime.fromisoformat(e.recorded_utc), float(value), float(ci)))
    n = max(1, len(series))
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.4 * n), squeeze=False, sharex=True)
    for ax, (label, pts) in zip(axes[:, 0], sorted(series.items()), strict=False):
        t, v, c = zip(*pts, strict=True)
        ax.errorbar(t, v, yerr=c, fmt="o-", capsize=3)
        ax.set_ylabel(_MAIN_VALUE[label.split(" @")[0]][2])
        ax.set_title(label, fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
