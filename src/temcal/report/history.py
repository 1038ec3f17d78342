"""Calibration history per microscope: an append-only JSON-lines log.

Each microscope has one file ``<store>/<microscope>.jsonl``; every line is one
calibration result (the JSON that a temcal command wrote with ``--json``), stamped with
the time it was recorded and reduced to its headline values so that trends (pixel size
per magnification, Cs, camera length) can be tabulated and plotted. The original JSON is
kept whole under ``"result"`` so nothing is lost.

The default store is ``$TEMCAL_HISTORY_DIR`` or ``~/.local/share/temcal/history``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temcal.errors import InputError

__all__ = [
    "HistoryEntry",
    "add_history_entry",
    "default_history_dir",
    "detect_result_kind",
    "read_history",
]

#: Headline values kept for each kind of result: (JSON key, uncertainty key or None).
_HEADLINES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "pixel-size": (
        ("pixel_size_A", "pixel_size_ci95_A"),
        ("anisotropy_percent", None),
        ("major_angle_deg", None),
    ),
    "cs-ctf": (("cs_mm", "cs_ci95_mm"), ("pixel_size_A", None)),
    "cs-tilt": (("cs_mm", "cs_ci95_mm"), ("defocus_A", None), ("tilt_frame_rotation_deg", None)),
    "camera-length": (
        ("camera_length_mm", "camera_length_ci95_mm"),
        ("ellipticity_percent", None),
    ),
    "tilt-calibrate": (("scale_mrad_per_unit", None), ("rotation_deg", None)),
    "ctf": (),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_history_dir() -> Path:
    """The history store: ``$TEMCAL_HISTORY_DIR`` or ``~/.local/share/temcal/history``."""
    env = os.environ.get("TEMCAL_HISTORY_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "temcal" / "history"


def detect_result_kind(result: dict[str, Any]) -> str:
    """Which temcal command wrote a result JSON, from its keys.

    Raises
    ------
    InputError
        If the JSON is not a temcal result.
    """
    keys = set(result)
    if "mrad_per_unit" in keys:
        return "tilt-calibrate"
    if "camera_length_mm" in keys:
        return "camera-length"
    if "tilt_frame_rotation_deg" in keys:
        return "cs-tilt"
    if "cs_mm" in keys and "micrographs" in keys:
        return "cs-ctf"
    if "pixel_size_A" in keys and "rings" in keys:
        return "pixel-size"
    if "micrographs" in keys:
        return "ctf"
    if "magnifications" in keys:
        return "mag-table"
    raise InputError(
        "this JSON is not a temcal result (expected the output of --json of pixel-size, "
        "mag-table, cs-ctf, cs-tilt, camera-length or tilt-calibrate)"
    )


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded calibration.

    Attributes
    ----------
    recorded_utc : str
        ISO-8601 time the entry was recorded.
    kind : str
        ``pixel-size``, ``cs-ctf``, ``cs-tilt``, ``camera-length``, ``tilt-calibrate``, ``ctf``.
    magnification : float or None
        Nominal magnification the calibration belongs to, when known.
    values : dict
        Headline values (``{key: value}``) with their 95 % half-widths under ``key_ci95``.
    source : str
        Path of the JSON it came from.
    note : str
        Free text given by the user.
    result : dict
        The whole original JSON.
    """

    recorded_utc: str
    kind: str
    magnification: float | None
    values: dict[str, float | None]
    source: str
    note: str
    result: dict[str, Any]


def _check_name(microscope: str) -> str:
    if not _NAME.match(microscope):
        raise InputError(
            f"microscope name {microscope!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "(it names a file in the history store)"
        )
    return microscope


def _headlines(kind: str, result: dict[str, Any]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for key, ci in _HEADLINES.get(kind, ()):
        values[key] = result.get(key)
        if ci is not None:
            values[ci] = result.get(ci)
    return values


def add_history_entry(
    result_json: str | Path,
    *,
    microscope: str,
    store: str | Path | None = None,
    magnification: float | None = None,
    note: str = "",
    recorded_utc: datetime | None = None,
) -> list[HistoryEntry]:
    """Append a result JSON to a microscope's history.

    A ``mag-table`` JSON adds one ``pixel-size`` entry per magnification.

    Parameters
    ----------
    result_json : str or pathlib.Path
        A JSON file written by a temcal command's ``--json``.
    microscope : str
        Name of the microscope (letters, digits, ``.``, ``_``, ``-``).
    store : str or pathlib.Path, optional
        History folder (created if missing); default :func:`default_history_dir`.
    magnification : float, optional
        Nominal magnification of the calibration (for pixel sizes).
    note : str
        Free text stored with the entry.
    recorded_utc : datetime.datetime, optional
        Time stamp; default now.

    Returns
    -------
    list of HistoryEntry
        The entries appended.
    """
    path = Path(result_json)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(result, dict):
        raise InputError(f"{path}: not a temcal result (expected a JSON object)")
    kind = detect_result_kind(result)
    stamp = (recorded_utc or datetime.now(UTC)).isoformat(timespec="seconds")
    items: list[tuple[str, float | None, dict[str, Any]]]
    if kind == "mag-table":
        items = [
            ("pixel-size", _as_float(row.get("magnification")), row)
            for row in result["magnifications"]
        ]
    else:
        items = [(kind, magnification, result)]
    entries = [
        HistoryEntry(stamp, k, mag, _headlines(k, res), str(path.resolve()), note, res)
        for k, mag, res in items
    ]
    folder = Path(store) if store is not None else default_history_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{_check_name(microscope)}.jsonl"
    with log.open("a", encoding="utf-8") as fh:
        for e in entries:
            fh.write(json.dumps(e.__dict__) + "\n")
    return entries


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_history(
    microscope: str, *, store: str | Path | None = None, kind: str | None = None
) -> list[HistoryEntry]:
    """Read a microscope's history, oldest first, optionally of one kind only.

    Raises
    ------
    InputError
        If the microscope has no history in the store or a line is corrupt.
    """
    folder = Path(store) if store is not None else default_history_dir()
    log = folder / f"{_check_name(microscope)}.jsonl"
    if not log.exists():
        known = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.exists() else []
        hint = f"; known: {', '.join(known)}" if known else ""
        raise InputError(f"no calibration history for microscope {microscope!r} in {folder}{hint}")
    entries = []
    for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(HistoryEntry(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(f"{log}:{n}: corrupt history line ({exc})") from None
    if kind is not None:
        entries = [e for e in entries if e.kind == kind]
    return sorted(entries, key=lambda e: e.recorded_utc)
