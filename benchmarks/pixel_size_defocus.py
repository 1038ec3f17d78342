"""Benchmark: pixel-size error and interval coverage against defocus (the CTF shift).

Usage: ``python benchmarks/pixel_size_defocus.py [--cache DIR]``.

A broad gold ring (small grains) is shifted by the CTF modulation across it; the shift
depends on the defocus (see :mod:`temcal.calibrate.ring_bias`). This script holds the
specimen fixed (the same grains for every defocus of a seed: the random generator draws
the grains first) and sweeps the defocus, so the change of the error with defocus is the
imaging's, not the specimen's. For each seed it also measures the specimen's projected
phase itself (no lens, no noise): the floor that the grains alone set.

Specimens: (1) 10 nm grains of a 4 nm thick foil covering 60 % of the field, 2048²
images at 0.40 and 0.75 Å/px, 6 seeds, 9 defoci from 0 to 3 µm (about 3 min uncached);
(2) a full foil of 10 nm grains 10 nm thick (each a strong phase object, ~2 rad), 4096²
at 0.75 Å/px, 6 seeds, 1, 1.5, 2 and 3 µm (about 8 min more uncached). 300 kV, Cs 2.7 mm,
B 10 Å², carbon 0.1 rad rms, 40 e/Å², no anisotropy. Each image is measured alone with
no pixel-size guess; the table gives the mean and spread of the signed error
over the seeds, the median reported 95 % half-width, and how many intervals cover the
truth.

Results go to the ``pixel_size_defocus`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine_line, markdown_table, write_section  # noqa: E402

LATTICE_A = 4.0782
GRAIN_NM, THICK_NM, COVERAGE, DOSE = 10.0, 4.0, 0.6, 40.0
DEFOCI_A = [0.0, 2500.0, 5000.0, 7500.0, 10000.0, 12500.0, 15000.0, 20000.0, 30000.0]
PIXEL_SIZES_A = [0.40, 0.75]
SIM_VERSION = "defocus-v1"
POTENTIAL = -1.0  # pseudo-defocus key of the projected phase (no imaging)


@dataclass(frozen=True)
class Specimen:
    """One specimen family of the sweep (grains, foil, image size, the defoci imaged)."""

    label: str
    size: int
    grain_nm: float
    thick_nm: float
    coverage: float
    pixel_sizes_A: tuple[float, ...]
    seeds: int
    defoci_A: tuple[float, ...]


THIN = Specimen(
    "thin foil", 2048, GRAIN_NM, THICK_NM, COVERAGE, tuple(PIXEL_SIZES_A), 6, tuple(DEFOCI_A)
)
# a full foil of thicker grains (phase ~2 rad each): many more grains per image, and
# strongly scattering
THICK = Specimen(
    "thick full foil", 4096, 10.0, 10.0, 1.0, (0.75,), 6, (10000.0, 15000.0, 20000.0, 30000.0)
)


def _key(p: float, defocus: float, seed: int, spec: Specimen) -> str:
    parts: list = [p, defocus, seed, spec.size, SIM_VERSION]
    if (spec.grain_nm, spec.thick_nm, spec.coverage) != (GRAIN_NM, THICK_NM, COVERAGE):
        parts.append([spec.grain_nm, spec.thick_nm, spec.coverage])
    h = hashlib.sha1(json.dumps(parts).encode()).hexdigest()
    return f"defocus_{h[:12]}.npy"


def _simulate(args: tuple[float, float, int, Specimen, str]) -> str:
    from temcal.physics.magnification import pixel_matrix_A
    from temcal.simulate.gold import place_gold_grains, render_gold_phase, simulate_gold_image

    p, defocus, seed, spec, cache = args
    size = spec.size
    path = Path(cache) / _key(p, defocus, seed, spec)
    if path.exists():
        return str(path)
    rng = np.random.default_rng(seed)
    if defocus == POTENTIAL:
        m = pixel_matrix_A(p, 0.0, 0.0)
        grains = place_gold_grains(
            (size, size),
            pixel_matrix_A=m,
            kind="foil",
            grain_size_nm=spec.grain_nm,
            coverage=spec.coverage,
            grain_thickness_nm=spec.thick_nm,
            rng=rng,
        )
        phase = render_gold_phase(
            (size, size),
            grains,
            pixel_matrix_A=m,
            oversample=2,
            lattice_constant_A=LATTICE_A,
            carbon_phase_rms=0.0,
        )
        img = phase.reshape(size, 2, size, 2).mean(axis=(1, 3))
    else:
        img = simulate_gold_image(
            (size, size),
            pixel_size_A=p,
            grain_size_nm=spec.grain_nm,
            grain_thickness_nm=spec.thick_nm,
            coverage=spec.coverage,
            defocus_A=defocus,
            dose_e_per_A2=DOSE,
            lattice_constant_A=LATTICE_A,
            rng=rng,
        ).image
    np.save(path, np.asarray(img, dtype=np.float32))
    return str(path)


def _measure(args: tuple[str, float, float]) -> dict:
    from temcal.calibrate.pixel_size import measure_gold_rings
    from temcal.errors import TemcalError

    path, p, defocus = args
    img = np.load(path)
    try:
        r = measure_gold_rings(img, lattice_constant_A=LATTICE_A)
    except TemcalError as exc:
        return {"p": p, "defocus": defocus, "refused": str(exc)[:80]}
    se = math.hypot(r.pixel_size_se_A, r.ctf_bias_se_A)
    return {
        "p": p,
        "defocus": defocus,
        "err": 100.0 * (r.pixel_size_A / p - 1.0),
        "ci95": 100.0 * 1.959964 * se / p,
        "ctf_u": 100.0 * r.ctf_bias_se_A / p,
        "thon": r.thon_defocus_A,
        "aniso": r.anisotropy_percent,
    }


def _rows(spec: Specimen, res: list[dict]) -> list[list[str]]:
    rows = []
    for p in spec.pixel_sizes_A:
        for d in (POTENTIAL, *spec.defoci_A):
            sel = [r for r in res if r["p"] == p and r["defocus"] == d]
            ok = [r for r in sel if "err" in r]
            err = np.array([r["err"] for r in ok])
            label = "projected phase" if d == POTENTIAL else f"{d / 1e4:.2f}"
            if not ok:
                rows.append([f"{p:.2f}", label, f"0/{len(sel)}", "-", "-", "-", "-", "-", "-"])
                continue
            cover = sum(abs(r["err"]) <= r["ci95"] for r in ok)
            rows.append(
                [
                    f"{p:.2f}",
                    label,
                    f"{len(ok)}/{len(sel)}",
                    f"{err.mean():+.3f}",
                    f"{err.std(ddof=1) if err.size > 1 else 0.0:.3f}",
                    f"{np.median(np.abs(err)):.3f}",
                    "-" if d == POTENTIAL else f"{np.median([r['ci95'] for r in ok]):.3f}",
                    "-" if d == POTENTIAL else f"{np.median([r['ctf_u'] for r in ok]):.3f}",
                    "-" if d == POTENTIAL else f"{cover}/{len(ok)}",
                ]
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/temcal-defocus-cache")
    args = ap.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    specimens = [THIN, THICK]
    work = [
        (p, d, 7000 + s, spec, args.cache)
        for spec in specimens
        for p in spec.pixel_sizes_A
        for s in range(spec.seeds)
        for d in (POTENTIAL, *spec.defoci_A)
    ]
    with ProcessPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(_simulate, work))
    t_sim = time.perf_counter() - t_start
    with ProcessPoolExecutor(max_workers=2) as pool:
        res = list(pool.map(_measure, [(f, w[0], w[1]) for f, w in zip(paths, work, strict=True)]))
    header = [
        "px (Å)",
        "defocus (µm)",
        "measured",
        "mean error %",
        "sd %",
        "median |error| %",
        "median CI95 %",
        "median CTF u %",
        "CI covers",
    ]
    md = [
        "## Pixel-size error against defocus (`benchmarks/pixel_size_defocus.py`)",
        "",
        machine_line(),
        "",
        "Each specimen is imaged at several defoci with the same grains (the random "
        "generator draws the grains first), so the change of the error down a column is "
        "the imaging's. 'Projected phase': the specimen's phase itself, no lens and no noise "
        "(the floor the grains set). 300 kV, Cs 2.7 mm, B 10 Å², carbon 0.1 rad rms, "
        f"{DOSE:.0f} e/Å², no anisotropy, no pixel-size guess. Errors are signed, in %; the "
        "95 % interval includes the CTF-modulation uncertainty ('CTF u', the standard "
        "uncertainty from the Thon-ring defocus).",
    ]
    for spec in specimens:
        mine = [r for r, w in zip(res, work, strict=True) if w[3] is spec]
        n_img = sum(1 for w in work if w[3] is spec and w[1] != POTENTIAL)
        md += [
            "",
            f"**{spec.label}**: {spec.seeds} specimens per pixel size, {n_img} simulated "
            f"{spec.size}² images; {spec.grain_nm:.0f} nm grains of a {spec.thick_nm:.0f} nm "
            f"thick foil covering {100 * spec.coverage:.0f} % of the field.",
            "",
            markdown_table(header, _rows(spec, mine)),
        ]
    md += [
        "",
        f"Whole script: {(time.perf_counter() - t_start) / 60:.1f} min "
        f"(simulation {t_sim / 60:.1f} min, cached in {args.cache}).",
    ]
    doc = write_section("pixel_size_defocus", "\n".join(md))
    print(f"wrote {doc}", file=sys.stderr)
    print("\n".join(md))


if __name__ == "__main__":
    main()
