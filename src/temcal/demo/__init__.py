"""The ``temcal demo``: every calibration run on simulated data with a known answer.

Each topic is a module in this package with a function
``run(outdir: Path, *, rng: numpy.random.Generator) -> list[DemoLine]`` that simulates
its data into ``outdir``, measures it with the public API and returns what it measured
next to the truth. :data:`DEMO_MODULES` lists them in the order the demo runs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEMO_MODULES", "DemoLine", "run_demo"]

#: Topic modules, run in this order.
DEMO_MODULES: tuple[str, ...] = ("pixel_size",)


@dataclass(frozen=True)
class DemoLine:
    """One measured quantity of the demo, next to the value it was simulated with."""

    topic: str
    quantity: str
    unit: str
    measured: float
    ci95: float | None
    truth: float

    @property
    def error_percent(self) -> float:
        """Relative error of the measurement in percent (absolute error if truth is 0)."""
        if self.truth == 0:
            return abs(self.measured - self.truth)
        return 100.0 * (self.measured - self.truth) / self.truth


def run_demo(
    outdir: Path,
    *,
    seed: int = 2026,
    on_topic: Callable[[str], None] | None = None,
) -> list[DemoLine]:
    """Run every demo topic, writing data and results under ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines: list[DemoLine] = []
    for name in DEMO_MODULES:
        module = importlib.import_module(f"temcal.demo.{name}")
        if on_topic is not None:
            on_topic(name)
        topic_dir = outdir / name
        topic_dir.mkdir(exist_ok=True)
        lines.extend(module.run(topic_dir, rng=rng))
    return lines
