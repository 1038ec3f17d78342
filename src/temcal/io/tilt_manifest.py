"""Beam-tilt series input: CSV manifests and SerialEM ``.mdoc`` files.

CSV manifest (``.csv``): a header line with the columns ``path,tilt_x_mrad,tilt_y_mrad``
(other columns are ignored), one row per image **in acquisition order**; ``path`` is
relative to the manifest's folder (or absolute); tilts are in mrad in the microscope's own
calibrated beam-tilt frame (temcal fits the rotation, and optionally a mirror, between that
frame and the image frame).

SerialEM ``.mdoc`` (``.mdoc``): standard SerialEM autodocs do not record the beam tilt, so
temcal reads a per-section key that a SerialEM script adds with ``AddToAutodoc``:
``BeamTilt = tx ty`` (mrad, the values ``ReportBeamTilt`` returns). The images are the
sections of the stack named by the header key ``ImageFile`` (next to the ``.mdoc``), in
``[ZValue = n]`` order; a section key ``SubFramePath`` or ``ImageFile`` naming a separate
single image is used instead when present. Sections are taken in acquisition order as
they appear (or by ``DateTime`` order, which SerialEM writes in the same order).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temcal.errors import InputError

__all__ = ["TiltManifest", "read_tilt_images", "read_tilt_manifest"]

_COLUMNS = ("path", "tilt_x_mrad", "tilt_y_mrad")


@dataclass(frozen=True)
class TiltManifest:
    """A beam-tilt series description.

    Attributes
    ----------
    paths : tuple of pathlib.Path
        Image files in acquisition order (absolute or relative to the working directory).
    tilts_mrad : numpy.ndarray
        ``(n, 2)`` beam tilts ``(x, y)`` in mrad, microscope frame.
    sections : tuple of int or None
        Section index in a stack file for each image (``None`` = single image file).
    source : pathlib.Path
        The manifest file.
    """

    paths: tuple[Path, ...]
    tilts_mrad: np.ndarray
    sections: tuple[int | None, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.paths)


def _number(text: str, what: str, where: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{where}: {what} {text!r} is not a finite number")
    return v


def _read_csv(p: Path) -> TiltManifest:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read manifest ({exc})") from None
    reader = csv.DictReader(line for line in text.splitlines() if line.strip())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"{p}: manifest lacks column(s) {', '.join(missing)}; the header must be "
            "path,tilt_x_mrad,tilt_y_mrad"
        )
    paths: list[Path] = []
    tilts: list[tuple[float, float]] = []
    for i, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        where = f"{p}:{i}"
        if not row["path"]:
            raise InputError(f"{where}: empty path")
        img = Path(row["path"])
        if not img.is_absolute():
            img = p.parent / img
        if not img.exists():
            raise InputError(f"{where}: image file {img} does not exist")
        paths.append(img)
        tilts.append(
            (
                _number(row["tilt_x_mrad"], "tilt_x_mrad", where),
                _number(row["tilt_y_mrad"], "tilt_y_mrad", where),
            )
        )
    if not paths:
        raise InputError(f"{p}: manifest lists no images")
    return TiltManifest(
        paths=tuple(paths),
        tilts_mrad=np.asarray(tilts, dtype=float).reshape(-1, 2),
        sections=(None,) * len(paths),
        source=p,
    )


def _read_mdoc(p: Path) -> TiltManifest:
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{p}: cannot read mdoc ({exc})") from None
    header: dict[str, str] = {}
    sections: list[tuple[int, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^\[\s*ZValue\s*=\s*(-?\d+)\s*\]$", line)
        if m:
            current = {}
            sections.append((int(m.group(1)), current))
            continue
        if line.startswith("["):
            continue
        if "=" in line:
            key, _, value = line.partition("=")
            (header if current is None else current)[key.strip()] = value.strip()
    if not sections:
        raise InputError(f"{p}: no [ZValue = n] sections found; is this a SerialEM .mdoc?")
    stack = header.get("ImageFile")
    paths: list[Path] = []
    secs: list[int | None] = []
    tilts: list[tuple[float, float]] = []
    for z, sec in sections:
        where = f"{p} [ZValue = {z}]"
        if "BeamTilt" not in sec:
            raise InputError(
                f"{where}: no BeamTilt key; record it per image with a SerialEM script "
                "(ReportBeamTilt, then AddToAutodoc BeamTilt tx ty) or use a CSV manifest"
            )
        parts = sec["BeamTilt"].split()
        if len(parts) != 2:
            raise InputError(
                f"{where}: BeamTilt must hold two numbers (mrad), got {sec['BeamTilt']!r}"
            )
        tilts.append(
            (_number(parts[0], "BeamTilt x", where), _number(parts[1], "BeamTilt y", where))
        )
        own = sec.get("ImageFile") or sec.get("SubFramePath")
        if own:
            img = p.parent / Path(own.replace("\\", "/")).name
            paths.append(img)
            secs.append(None)
        elif stack:
            paths.append(p.parent / Path(stack.replace("\\", "/")).name)
            secs.append(z)
        else:
            raise InputError(f"{where}: no image file named (header ImageFile is missing)")
        if not paths[-1].exists():
            raise InputError(f"{where}: image file {paths[-1]} does not exist")
    return TiltManifest(
        paths=tuple(paths),
        tilts_mrad=np.asarray(tilts, dtype=float).reshape(-1, 2),
        sections=tuple(secs),
        source=p,
    )


def read_tilt_manifest(path: str | Path) -> TiltManifest:
    """Read a beam-tilt series manifest (``.csv``) or SerialEM autodoc (``.mdoc``).

    Raises
    ------
    InputError
        Missing file or columns, non-numeric tilts, missing images, empty manifest.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such manifest file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory; give the manifest .csv or .mdoc file")
    if p.suffix.lower() == ".mdoc":
        return _read_mdoc(p)
    return _read_csv(p)


def read_tilt_images(manifest: TiltManifest) -> np.ndarray:
    """Read every image of a manifest into an ``(n, ny, nx)`` float64 array.

    Raises
    ------
    InputError
        Unreadable images, or images of different sizes.
    """
    from temcal.io.images import check_image, read_image

    cache: dict[Path, np.ndarray] = {}
    images: list[np.ndarray] = []
    for path, sec in zip(manifest.paths, manifest.sections, strict=True):
        if sec is None:
            images.append(read_image(path).data)
            continue
        if path not in cache:
            import mrcfile

            try:
                with mrcfile.open(path, permissive=True) as mrc:
                    cache[path] = np.asarray(mrc.data, dtype=np.float64)
            except Exception as exc:
                raise InputError(f"{path}: cannot read the image stack ({exc})") from None
        stack = cache[path]
        if stack.ndim == 2 and sec == 0:
            data = stack
        elif stack.ndim == 3 and 0 <= sec < stack.shape[0]:
            data = stack[sec]
        else:
            raise InputError(f"{path}: has no section {sec}")
        images.append(check_image(data, name=f"{path} section {sec}"))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        bad = next(i for i, im in enumerate(images) if im.shape != first)
        raise InputError(
            f"{manifest.source}: images have different sizes ({manifest.paths[0].name} is "
            f"{first[1]}x{first[0]}, {manifest.paths[bad].name} is "
            f"{images[bad].shape[1]}x{images[bad].shape[0]}); all tilt images must match"
        )
    return np.stack(images)
