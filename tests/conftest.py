"""Shared fixtures."""

from __future__ import annotations

import os

# one BLAS thread per test worker: pytest -n 2 on 2 cores must not oversubscribe
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
