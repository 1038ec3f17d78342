"""Benchmark: where the pixel-size error of a benchmark case comes from.

Usage: ``python benchmarks/pixel_size_budget.py``.

For one specimen (the same grains and carbon throughout) the image is formed four ways
and each is measured with the true pixel size as the guess:

1. **projected phase**: the phase scaled down to 0.02 of itself and imaged with a flat
   lens phase of pi/2 (an ideal phase plate, no CTF modulation): a linear image of the
   specimen, no noise. Its error is the floor the grains set (finite number of
   crystals, tilted reflections of a thin foil at ``g cos(theta)``).
2. **weak phase + CTF**: the same weak phase through the real lens (defocus, Cs):
   the ``sin^2 chi`` modulation of the rings, no noise.
3. **full, no noise**: the real (strong) phase of gold through the real lens, as in
   the benchmark, without shot noise.
4. **full, with noise** at several doses (e/Å²), two noise realisations each: the
   change from (3) is what the noise does; the spread between realisations is the
   noise's scatter.

Cases A, C and E of ``benchmarks/pixel_size.py`` (4096², 300 kV, Cs 2.7 mm, B 10 Å²,
carbon 0.1 rad rms, 4 nm thick foil grains covering 30 % of the field), two specimens
each. About 5 minutes on 2 cores. Results go to the ``pixel_size_budget`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import math
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine_line, markdown_table, write_section  # noqa: E402

LATTICE_A = 4.0782
SIZE = 4096
DOSES = (640.0, 160.0, 40.0)
REALISATIONS = 2
WEAK_SCALE = 0.02
# name, pixel size (Å), anisotropy (%), angle (°), grain (nm), defocus (Å), benchmark dose
CASES = [
    ("A", 0.40, 0.0, 0.0, 10.0, 5000.0, 40.0),
    ("C", 0.85, 2.0, 120.0, 30.0, 2000.0, 60.0),
    ("E", 1.30, 0.0, 0.0, 10.0, 15000.0, 40.0),
]
SEEDS = (0, 1)


def _measure(img: np.ndarray, p: float, aniso: float) -> tuple[str, str, str]:
    from temcal.calibrate.pixel_size import estimate_pixel_size
    from temcal.errors import TemcalError

    try:
        r = estimate_pixel_size(img, guess_pixel_size_A=p)
    except TemcalError as exc:
        return "refused", "-", str(exc)[:60]
    err = 100.0 * (r.pixel_size_A / p - 1.0)
    return f"{err:+.3f}", f"{r.anisotropy_percent - aniso:+.3f}", ",".join(x.hkl for x in r.rings)


def _run(args: tuple[tuple, int]) -> dict:
    from temcal.physics.ctf import calculate_chi
    from temcal.physics.magnification import decompose_pixel_matrix, pixel_matrix_A
    from temcal.simulate.gold import place_gold_grains, render_gold_phase
    from temcal.simulate.imaging import amplitude_contrast_absorption, form_image

    case, seed = args
    name, p0, aniso, angle, grain, defocus, dose0 = case
    rng = np.random.default_rng(seed)
    m = pixel_matrix_A(p0, aniso, angle)
    geom = decompose_pixel_matrix(m)
    p, a_true = geom.pixel_size_A, geom.anisotropy_percent
    t0 = time.process_time()
    grains = place_gold_grains(
        (SIZE, SIZE),
        pixel_matrix_A=m,
        kind="foil",
        grain_size_nm=grain,
        grain_thickness_nm=4.0,
        coverage=0.3,
        rng=rng,
    )
    phase = render_gold_phase(
        (SIZE, SIZE),
        grains,
        pixel_matrix_A=m,
        oversample=2,
        lattice_constant_A=LATTICE_A,
        carbon_phase_rms=0.1,
        rng=rng,
    )

    def chi_lens(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return calculate_chi(gx, gy, defocus_u_A=defocus, cs_mm=2.7, voltage_kV=300.0)

    def chi_flat(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return np.full(np.broadcast(gx, gy).shape, 0.5 * math.pi)

    def envelope(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return np.exp(-2.5 * (gx * gx + gy * gy))  # B = 10 Å²

    def image(scale: float, chi: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        return form_image(
            phase * scale,
            pixel_matrix_A=m,
            oversample=2,
            chi=chi,
            absorption=amplitude_contrast_absorption(0.07),
            envelope=envelope,
            rng=rng,
            single_precision=True,
        )

    out: dict = {"case": name, "seed": seed, "dose0": dose0, "rows": []}
    out["rows"].append(("projected phase", *_measure(image(WEAK_SCALE, chi_flat), p, a_true)))
    out["rows"].append(("weak phase + CTF", *_measure(image(WEAK_SCALE, chi_lens), p, a_true)))
    full = image(1.0, chi_lens)
    out["rows"].append(("full, no noise", *_measure(full, p, a_true)))
    for dose in DOSES:
        for k in range(REALISATIONS):
            noise_rng = np.random.default_rng(1000 * seed + 10 * k + int(dose))
            noisy = noise_rng.poisson(full * dose * p * p).astype(np.float32)
            out["rows"].append((f"full, {dose:.0f} e/Å² #{k + 1}", *_measure(noisy, p, a_true)))
    out["cpu_s"] = time.process_time() - t0
    return out


def main() -> None:
    t_start = time.perf_counter()
    work = [(c, s) for c in CASES for s in SEEDS]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_run, work))
    header = ["case", "specimen", "image", "pixel-size error %", "anisotropy error (pp)", "rings"]
    rows = []
    for r in results:
        for label, err, aerr, rings in r["rows"]:
            rows.append([r["case"], str(r["seed"] + 1), label, err, aerr, rings])
    summary = []
    for r in results:
        vals = {lab: e for lab, e, _, _ in r["rows"]}
        cells = [r["case"], str(r["seed"] + 1)]
        for key in ("projected phase", "weak phase + CTF", "full, no noise"):
            cells.append(vals[key])
        for dose in DOSES:
            xs = [
                float(vals[f"full, {dose:.0f} e/Å² #{k + 1}"])
                for k in range(REALISATIONS)
                if vals[f"full, {dose:.0f} e/Å² #{k + 1}"] != "refused"
            ]
            cells.append(
                "refused"
                if not xs
                else f"{statistics.fmean(xs):+.3f} ({max(xs) - min(xs):.3f})"
                if len(xs) > 1
                else f"{xs[0]:+.3f}"
            )
        summary.append(cells)
    sum_header = [
        "case",
        "specimen",
        "projected phase",
        "weak phase + CTF",
        "full, no noise",
        *(f"full, {d:.0f} e/Å²: mean (range)" for d in DOSES),
    ]
    md = [
        "## Where the pixel-size error comes from (`benchmarks/pixel_size_budget.py`)",
        "",
        machine_line(),
        "",
        "One specimen (same grains and carbon) imaged four ways, each measured with the "
        "true pixel size as the guess: its projected phase as a linear image without CTF "
        "modulation (weak phase behind an ideal pi/2 phase plate, no noise), the weak phase "
        "through the real lens (no noise), the real strong phase of gold through the lens "
        f"(no noise), and that image with shot noise at {', '.join(f'{d:.0f}' for d in DOSES)} "
        f"e/Å² ({REALISATIONS} noise realisations each). Cases A, C and E of "
        "`benchmarks/pixel_size.py` (4096², 4 nm thick foil grains covering 30 % of the "
        "field), two specimens each. Signed errors in % (anisotropy in pp).",
        "",
        markdown_table(sum_header, summary),
        "",
        "<details><summary>every measurement (with anisotropy and rings)</summary>",
        "",
        markdown_table(header, rows),
        "",
        "</details>",
        "",
        f"Whole script: {(time.perf_counter() - t_start) / 60:.1f} min.",
    ]
    doc = write_section("pixel_size_budget", "\n".join(md))
    print(f"wrote {doc}", file=sys.stderr)
    print("\n".join(md))


if __name__ == "__main__":
    main()
