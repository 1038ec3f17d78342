"""Benchmark: Cs and defocus from Thon rings over simulated defocus series.

Run: ``PYTHONPATH=src python benchmarks/cs_ctf.py [--quick]``; writes the "cs_ctf" section
of docs/benchmarks.md. One core (BLAS/FFT threads pinned to 1).
"""

# ruff: noqa: E402
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import math
import sys
import time
import tracemalloc

import numpy as np

from benchmarks._report import machine_line, markdown_table, write_section
from temcal.calibrate.cs_ctf import fit_cs_ctf, refit_cs_with_pixel_size
from temcal.calibrate.ctf_fit import fit_ctf
from temcal.errors import CalibrationError
from temcal.simulate.ctf_series import simulate_ctf_series


def b_for_rings(d_A: float) -> float:
    """B-factor whose power envelope exp(-B k^2 / 2) is 0.1 at resolution d."""
    return 2.0 * math.log(10.0) * d_A**2


def b_sweep(d_A: float) -> float:
    """Sweep B-factor: power envelope 0.1 at sqrt(2) d (rings then fade near d at 100 e/Å²)."""
    return math.log(10.0) * d_A**2


def angle_err(a: float, b: float) -> float:
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


def run_series(
    *,
    cs: float,
    kv: float,
    n: int,
    rings_A: float,
    size: int,
    seed: int,
    dz=(5000.0, 25000.0),
    dose: float = 40.0,
    astig: float = 600.0,
    b_factor: float | None = None,
):
    s = simulate_ctf_series(
        n_micrographs=n,
        shape=(size, size),
        pixel_size_A=1.0,
        voltage_kV=kv,
        cs_mm=cs,
        rng=np.random.default_rng(seed),
        defocus_range_A=dz,
        astigmatism_A=astig,
        b_factor_A2=b_for_rings(rings_A) if b_factor is None else b_factor,
        dose_e_per_A2=dose,
        oversample=1 if size > 2048 else 2,
    )
    t0 = time.process_time()
    try:
        r = fit_cs_ctf(list(s.images), pixel_size_A=1.0, voltage_kV=kv)
    except CalibrationError as exc:
        return s, None, time.process_time() - t0, str(exc)
    return s, r, time.process_time() - t0, ""


def defocus_errors(s, r):
    dz_err, ang = [], []
    for f, t in zip(r.micrographs, s.truths, strict=True):
        mt = 0.5 * (t.defocus_u_A + t.defocus_v_A)
        dz_err.append(100.0 * (f.defocus_mean_A / mt - 1.0))
        ang.append(angle_err(f.astig_angle_deg, t.astig_angle_deg))
    return dz_err, ang


def main(quick: bool = False) -> None:
    out: list[str] = ["## Cs from Thon rings (`benchmarks/cs_ctf.py`)", "", machine_line(), ""]
    load = os.getloadavg()[0]
    out.append(
        f"Load average when started: {load:.1f} on {os.cpu_count()} cores (other jobs were "
        "running; timings are upper bounds). All simulations: amorphous film with a 1/f-like "
        "spectrum, amplitude contrast 0.07, pixel 1.0 Å, Poisson noise, B-factor chosen so "
        "that the power envelope is 0.1 at the stated ring resolution."
    )
    out.append("")

    # ---- the main case
    size = 2048 if quick else 4096
    t0 = time.perf_counter()
    s, r, t_fit, err = run_series(
        cs=2.7, kv=300, n=6, rings_A=3.0, size=size, seed=2026, dz=(5000.0, 25000.0)
    )
    t_sim = time.perf_counter() - t0
    out.append(
        f"### Main case: six {size}² micrographs, 0.5–2.5 µm, rings to ~3 Å, Cs 2.7 mm, 300 kV"
    )
    out.append("")
    if r is None:
        out.append(f"Refused: {err}")
    else:
        dz_err, ang = defocus_errors(s, r)
        cs_err = 100 * (r.cs_mm / 2.7 - 1)
        out.append(
            f"Cs = {r.cs_mm:.4f} mm ± {r.cs_ci95_mm:.4f} (95 %, fit part ± {r.cs_fit_ci95_mm:.4f}; "
            f"voltage ± {r.cs_voltage_ci95_mm:.4f} assuming ± 0.1 %; no pixel-size interval "
            f"given) — error **{cs_err:+.3f} %** (target 1 %)."
        )
        out.append("")
        rows = []
        for i, (f, t) in enumerate(zip(r.micrographs, s.truths, strict=True)):
            rows.append(
                [
                    i,
                    f"{0.5 * (t.defocus_u_A + t.defocus_v_A):.0f}",
                    f"{f.defocus_mean_A:.1f}",
                    f"{dz_err[i]:+.4f}",
                    f"{t.defocus_u_A - t.defocus_v_A:.0f} / {f.astigmatism_A:.1f}",
                    f"{ang[i]:.2f}",
                    f"{f.fit_resolution_A:.2f}",
                ]
            )
        out.append(
            markdown_table(
                [
                    "#",
                    "true mean defocus (Å)",
                    "fitted (Å)",
                    "error (%)",
                    "astig. true / fit (Å)",
                    "angle error (°)",
                    "rings fit to (Å)",
                ],
                rows,
            )
        )
        out.append("")
        out.append(
            f"Max |mean-defocus error| {max(abs(x) for x in dz_err):.4f} % (target 0.1 %), "
            f"max angle error {max(ang):.2f}° (target 2°). Joint fit of the six spectra "
            f"(including the six per-micrograph fits and the jackknife) took {t_fit:.1f} s CPU; "
            f"simulation and fit {t_sim:.0f} s wall."
        )
        out.append("")
        # p^4 law
        up = refit_cs_with_pixel_size(r, 1.01)
        down = refit_cs_with_pixel_size(r, 0.99)
        out.append(
            f"Deliberate pixel-size error: +1 % → Cs {100 * (up / r.cs_mm - 1):+.3f} %, "
            f"−1 % → Cs {100 * (down / r.cs_mm - 1):+.3f} % (p⁴ law: +4.06 % / −3.94 %)."
        )
        out.append("")
        # time and memory per micrograph, one core
        times, walls = [], []
        for img in s.images:
            t1, c1 = time.perf_counter(), time.process_time()
            fit_ctf(img, pixel_size_A=1.0, voltage_kV=300, cs_mm=2.7)
            times.append(time.process_time() - c1)
            walls.append(time.perf_counter() - t1)
        tracemalloc.start()
        fit_ctf(s.images[0], pixel_size_A=1.0, voltage_kV=300, cs_mm=2.7)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append(
            f"Per-micrograph fit (`fit_ctf`, {size}², Cs fixed, one thread), CPU time "
            f"(`time.process_time`, unaffected by the other jobs on the machine): "
            f"{', '.join(f'{t:.2f}' for t in times)} s (median {np.median(times):.2f} s, max "
            f"{max(times):.2f} s; target < 1.5 s); wall-clock on the loaded machine median "
            f"{np.median(walls):.2f} s (load average {os.getloadavg()[0]:.1f}); peak memory "
            f"allocated by the fit {peak / 2**20:.0f} MiB (tracemalloc, "
            f"the {size}² float64 image itself, {size * size * 8 / 2**20:.0f} MiB, excluded)."
        )
        out.append("")
    print("\n".join(out), flush=True)
    del s, r

    # ---- sweep
    out.append(
        "### Sweep (1024² micrographs, 0.5–2.5 µm, astigmatism 600 Å, dose 100 e/Å², "
        "B = ln(10) d² for nominal ring resolution d)"
    )
    out.append("")
    base = dict(cs=2.7, kv=300.0, n=5, rings_A=3.0)
    cases = [dict(base)]
    for cs in (0.5, 1.4, 4.0):
        cases.append({**base, "cs": cs})
    for kv in (200.0,):
        for cs in (1.4, 2.7, 4.0):
            cases.append({**base, "kv": kv, "cs": cs})
    for n in (3, 10):
        cases.append({**base, "n": n})
    for rings in (2.5, 3.5, 5.0):
        cases.append({**base, "rings_A": rings})
    if quick:
        cases = cases[:4]
    rows = []
    covered = n_fitted = 0
    for i, c in enumerate(cases):
        for rep in range(1 if quick else 2):
            s, r, t_fit, err = run_series(
                cs=c["cs"],
                kv=c["kv"],
                n=int(c["n"]),
                rings_A=c["rings_A"],
                size=1024,
                seed=100 * i + rep,
                dose=100.0,
                b_factor=b_sweep(c["rings_A"]),
            )
            if r is None:
                rows.append(
                    [
                        c["cs"],
                        int(c["kv"]),
                        c["n"],
                        c["rings_A"],
                        "refused",
                        "-",
                        "-",
                        "-",
                        "-",
                        err[:60] + "...",
                    ]
                )
                continue
            dz_err, ang = defocus_errors(s, r)
            n_fitted += 1
            covered += abs(r.cs_mm - c["cs"]) <= r.cs_ci95_mm
            rows.append(
                [
                    c["cs"],
                    int(c["kv"]),
                    c["n"],
                    c["rings_A"],
                    f"{r.cs_mm:.3f} ± {r.cs_ci95_mm:.3f}",
                    f"{100 * (r.cs_mm / c['cs'] - 1):+.2f}",
                    f"{max(abs(x) for x in dz_err):.3f}",
                    f"{max(ang):.2f}",
                    f"{np.median([f.fit_resolution_A for f in r.micrographs]):.2f}",
                    f"{t_fit:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    out.append(
        markdown_table(
            [
                "Cs (mm)",
                "kV",
                "n",
                "rings (Å)",
                "fitted Cs (mm, 95 %)",
                "Cs error (%)",
                "max |defocus err| (%)",
                "max angle err (°)",
                "median fit res. (Å)",
                "fit CPU time (s)",
            ],
            rows,
        )
    )
    out.append("")
    out.append(
        "Two series (different random specimens, noise and astigmatism azimuths) per case; "
        '"rings (Å)" is the nominal envelope resolution, the measured ring reach is the '
        '"median fit res." column (the 2.5 Å case is capped by the default 0.8-Nyquist limit '
        f"at 1 Å/px). {covered} of {n_fitted} fitted Cs values lie within their 95 % interval "
        f"of the truth; {len(rows) - n_fitted} series were refused (rings stop above 4 Å in "
        "all but one micrograph, or the Cs interval exceeds half of Cs). Weaknesses seen: "
        "the relative Cs error grows for small Cs (0.5 mm: the Cs phase at 3 Å is only "
        "0.7 rad) and when the rings stop near 4 Å."
    )
    write_section("cs_ctf", "\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
