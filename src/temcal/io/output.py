"""Writing results without clobbering a user's files, and without partial output."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from temcal.errors import InputError, OutputExistsError

__all__ = ["check_output_path", "to_jsonable", "write_json", "write_text"]


def check_output_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path after checking that it may be written.

    Raises
    ------
    OutputExistsError
        If the file exists and ``overwrite`` is false.
    InputError
        If the parent directory does not exist or the path is a directory.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory; give a file name for the output")
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"{p} already exists; use a different name, delete it first, or pass --overwrite"
        )
    if not p.parent.exists():
        raise InputError(f"{p}: directory {p.parent} does not exist; create it first")
    return p


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, Paths and tuples to JSON-ready values (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_text(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write text atomically (temporary file then rename), refusing to clobber."""
    p = check_output_path(path, overwrite=overwrite)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_json(path: str | Path, payload: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write a JSON document atomically; numpy values are converted, NaN becomes null."""
    return write_text(path, json.dumps(to_jsonable(payload), indent=2) + "\n", overwrite=overwrite)
