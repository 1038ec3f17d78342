"""Calibrate many magnifications in one call: a pixel-size table per magnification.

Images are grouped by magnification from (first match wins) a manifest CSV
``path,magnification``, the name of their parent folder (``105000``, ``105k``,
``105kx``, ``mag_105000``), or the magnification recorded in their header. Each group is
measured with :func:`temcal.calibrate.pixel_size.estimate_pixel_size`; images are
processed in parallel worker processes (the estimator is single-threaded numpy work).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from temcal.errors import CalibrationError, InputError
from temcal.io.images import SUPPORTED_SUFFIXES

__all__ = [
    "MagnificationRow",
    "calibrate_magnifications",
    "group_inputs",
    "mag_table_csv",
    "parse_magnification",
]


@dataclass(frozen=True)
class MagnificationRow:
    """One line of the calibration table.

    Attributes
    ----------
    magnification : float
        Nominal magnification of the group.
    n_images : int
        Images measured.
    pixel_size_A, pixel_size_ci95_A : float
        Joint pixel size (Å/px) and the half-width of its 95 % interval.
    pixel_major_A, pixel_minor_A : float
        Principal pixel sizes (Å/px).
    anisotropy_percent : float
        ``100 (major / minor - 1)``.
    major_angle_deg : float
        Direction of the major pixel size from +x toward +y, in [0, 180).
    ci_method : str
        How the interval was computed.
    files : tuple of str
        The images of the group that were measured.
    refused_files : tuple of str
        Images of the group left out with ``skip_refused`` (no pixel size measurable).
    """

    magnification: float
    n_images: int
    pixel_size_A: float
    pixel_size_ci95_A: float
    pixel_major_A: float
    pixel_minor_A: float
    anisotropy_percent: float
    major_angle_deg: float
    ci_method: str
    files: tuple[str, ...]
    refused_files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        d = asdict(self)
        d["files"] = list(self.files)
        d["refused_files"] = list(self.refused_files)
        return d


_CSV_COLUMNS = (
    "magnification",
    "n_images",
    "pixel_size_A",
    "pixel_size_ci95_A",
    "pixel_major_A",
    "pixel_minor_A",
    "anisotropy_percent",
    "major_angle_deg",
    "ci_method",
)


def parse_magnification(text: str) -> float | None:
    """Magnification from a folder name: ``105000``, ``105k``, ``105kx``, ``mag_105000``."""
    m = re.fullmatch(r"(?:mag[_-]?)?(\d+(?:\.\d+)?)\s*([kKmM]?)[xX]?", text.strip())
    if not m:
        return None
    v = float(m.group(1)) * {"": 1.0, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    return v if v > 0 else None


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES


def _read_manifest(path: Path) -> dict[float, list[Path]]:
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    groups: dict[float, list[Path]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0] and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    for k, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise InputError(f"{path}: line {k} needs 'path,magnification'")
        p = Path(row[0].strip())
        if not p.is_absolute():
            p = path.parent / p
        try:
            mag = float(row[1])
        except ValueError:
            raise InputError(
                f"{path}: line {k}: magnification {row[1]!r} is not a number"
            ) from None
        if not math.isfinite(mag) or mag <= 0:
            raise InputError(f"{path}: line {k}: magnification {mag} must be positive")
        groups.setdefault(mag, []).append(p)
    if not groups:
        raise InputError(f"{path}: the manifest lists no images")
    return groups


def group_inputs(
    inputs: Sequence[Path], *, manifest: Path | None = None
) -> dict[float, list[Path]]:
    """Group image files by magnification.

    Parameters
    ----------
    inputs : sequence of Path
        Folders (each subfolder named by its magnification, or the folder itself so
        named) and/or image files (magnification from the parent folder name or header).
    manifest : Path, optional
        CSV ``path,magnification``.

    Returns
    -------
    dict
        ``{magnification: [image paths]}``, sorted by magnification.

    Raises
    ------
    InputError
        If an input does not exist or an image's magnification cannot be found.
    """
    groups: dict[float, list[Path]] = {}
    if manifest is not None:
        for m_value, m_files in _read_manifest(manifest).items():
            groups.setdefault(m_value, []).extend(m_files)
    for inp in inputs:
        if not inp.exists():
            raise InputError(f"{inp}: no such file or folder")
        files = sorted(f for f in inp.rglob("*") if _is_image(f)) if inp.is_dir() else [inp]
        if inp.is_dir() and not files:
            raise InputError(f"{inp}: no image files found in this folder")
        for f in files:
            mag: float | None = parse_magnification(f.parent.name)
            if mag is None:
                mag = _header_magnification(f)
            if mag is None:
                raise InputError(
                    f"{f}: cannot tell its magnification (put it in a folder named by the "
                    "magnification, e.g. 105000/, or list it in a --manifest CSV)"
                )
            groups.setdefault(mag, []).append(f)
    if not groups:
        raise InputError("no images given; pass folders, images or --manifest CSV")
    return dict(sorted(groups.items()))


def _header_magnification(f: Path) -> float | None:
    from temcal.io.images import read_image

    return read_image(f).magnification


def _measure_one(args: tuple[str, float | None, float | None, bool, float | None]) -> Any:
    """One image's result, or (with ``skip``) the reason it was refused, as a string."""
    from temcal.calibrate.pixel_size import estimate_pixel_size
    from temcal.errors import CalibrationError

    path, a, t, skip, thickness = args
    try:
        return estimate_pixel_size(
            [path], lattice_constant_A=a, temperature_K=t, grain_thickness_nm=thickness
        ).images[0]
    except CalibrationError as exc:
        if not skip:
            raise
        return str(exc)


def calibrate_magnifications(
    groups: dict[float, list[Path]],
    *,
    lattice_constant_A: float | None = None,
    temperature_K: float | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    skip_refused: bool = False,
    grain_thickness_nm: float | None = None,
) -> list[MagnificationRow]:
    """Measure every group and return one calibration row per magnification.

    Parameters
    ----------
    groups : dict
        ``{magnification: [image paths]}`` (see :func:`group_inputs`).
    lattice_constant_A, temperature_K : float, optional
        Gold lattice constant (Å) or specimen temperature (K); see
        :func:`temcal.calibrate.pixel_size.estimate_pixel_size`.
    workers : int, optional
        Worker processes (default: the number of CPUs; 1 runs in this process).
    progress : callable, optional
        Called with ``1`` after each image.
    skip_refused : bool
        Leave out images in which no pixel size is measurable (listed in each row's
        ``refused_files``), and magnifications none of whose images is; by default one
        such image is an error.
    grain_thickness_nm : float, optional
        Thickness (nm) of a gold foil whose crystals span it: corrects the inward shift
        of thin crystals' rings (see :func:`temcal.calibrate.pixel_size.measure_gold_rings`).

    Returns
    -------
    list of MagnificationRow
        Sorted by magnification.

    Raises
    ------
    CalibrationError
        If an image is refused (with ``skip_refused``: if every image is).
    """
    from temcal.calibrate.pixel_size import (
        check_grain_thickness,
        combine_image_results,
        resolve_lattice_constant,
    )

    a_A, t_K = resolve_lattice_constant(lattice_constant_A, temperature_K)
    check_grain_thickness(grain_thickness_nm)
    jobs = [
        (str(p), a_A, None, skip_refused, grain_thickness_nm)
        for files in groups.values()
        for p in files
    ]
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(jobs)))
    results: list[Any] = []
    if n_workers == 1:
        for job in jobs:
            results.append(_measure_one(job))
            if progress is not None:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for res in pool.map(_measure_one, jobs):
                results.append(res)
                if progress is not None:
                    progress(1)
    rows = []
    k = 0
    for mag, files in groups.items():
        got = results[k : k + len(files)]
        k += len(files)
        per = [r for r in got if not isinstance(r, str)]
        refused = tuple(str(f) for f, r in zip(files, got, strict=True) if isinstance(r, str))
        if not per:
            continue
        joint = combine_image_results(per, lattice_constant_A=a_A, temperature_K=t_K)
        rows.append(
            MagnificationRow(
                magnification=mag,
                n_images=len(per),
                pixel_size_A=joint.pixel_size_A,
                pixel_size_ci95_A=joint.pixel_size_ci95_A,
                pixel_major_A=joint.pixel_major_A,
                pixel_minor_A=joint.pixel_minor_A,
                anisotropy_percent=joint.anisotropy_percent,
                major_angle_deg=joint.major_angle_deg,
                ci_method=joint.ci_method,
                files=tuple(
                    str(f) for f, r in zip(files, got, strict=True) if not isinstance(r, str)
                ),
                refused_files=refused,
            )
        )
    if not rows:
        first = next(r for r in results if isinstance(r, str))
        raise CalibrationError(f"no magnification calibrated: every image was refused ({first})")
    return rows


def mag_table_csv(rows: Sequence[MagnificationRow]) -> str:
    """The calibration table as CSV text (one row per magnification)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_COLUMNS)
    for r in rows:
        d = r.to_dict()
        w.writerow([d[c] for c in _CSV_COLUMNS])
    return buf.getvalue()
