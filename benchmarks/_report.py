"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone.

Each benchmark script calls ``write_section("topic", markdown)``; the text replaces
whatever stood between ``<!-- BEGIN topic -->`` and ``<!-- END topic -->`` (the section
is appended when it is new).
"""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

HEADER = """# temcal benchmarks

Every figure below was measured by the script named in its section (`benchmarks/*.py`), on
simulated data with a known answer. Re-run a script to refresh its section.
"""


def machine_line() -> str:
    """One line describing where and when the benchmark ran."""
    import os

    import temcal

    version = temcal.__version__
    if version.endswith("unknown"):  # run from a source tree without installing
        import tomllib

        meta = tomllib.loads((DOC.parents[1] / "pyproject.toml").read_text())
        version = f"{meta['project']['version']} (source tree)"
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()} "
        f"({os.cpu_count()} cores), Python {platform.python_version()}, numpy {np.__version__}, "
        f"temcal {version}."
    )


def write_section(topic: str, markdown: str) -> Path:
    """Replace (or append) the section ``topic`` of docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    begin, end = f"<!-- BEGIN {topic} -->", f"<!-- END {topic} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + block + "\n")
    )
    DOC.write_text(text)
    return DOC


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
