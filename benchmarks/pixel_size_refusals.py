"""Images without a measurable gold pattern must be refused, not given a pixel size.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pixel_size_refusals.py`` (about
7 min on 2 cores, gold simulations cached in ``--cache``). Writes the
``pixel_size_refusals`` section of docs/benchmarks.md.

Two sets. **All-aliased gold**:
Above about 1.66 Å/px (``sqrt(1/2) d_111``) the 111 ring lies beyond the corner of the
spectrum and only overlapping aliases of the gold rings reach the image: no pixel size
can be measured, and the search must not take the aliases for the rings of a smaller,
measurable pixel size. Each image draws (seeded): 2048², pixel size 1.75-3.5 Å/px
(log-uniform), anisotropy 0 or 1 %, grain size 6-25 nm, defocus 0.3-2 µm; even images
are isolated particles, odd ones foils 4 nm thick. The first half are sparse (foil
coverage 0.2-0.6, 10-60 particles, 20-60 e/Å²), the second dense (coverage 0.6-1,
60-150 particles, 60-100 e/Å²). **No gold**: amorphous film only
(``simulate_ctf_micrograph``), 1024² or 2048², 0.4-3 Å/px, 0.3-4 µm defocus with up to
0.3 µm astigmatism, 200 or 300 kV, Cs 1.4 or 2.7 mm, B 0-60 Å², 20-80 e/Å², phase rms
0.05-0.3 rad: its Thon rings must not pass for gold.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks._report import machine_line, markdown_table, write_section

LATTICE_A = 4.0782
N_SPARSE = 12


def _params(i: int) -> dict:
    r = np.random.default_rng(900 + i)
    dense = i >= N_SPARSE
    kind = "particles" if i % 2 == 0 else "foil"
    kw: dict = dict(
        pixel_size_A=float(np.exp(r.uniform(np.log(1.75), np.log(3.5)))),
        anisotropy_percent=float(r.choice([0.0, 1.0])),
        major_angle_deg=float(r.uniform(0, 180)),
        grain_size_nm=float(np.exp(r.uniform(np.log(6), np.log(25)))),
        defocus_A=float(r.uniform(3000, 20000)),
        dose_e_per_A2=float(r.uniform(60, 100) if dense else r.uniform(20, 60)),
        kind=kind,
    )
    if kind == "foil":
        kw.update(
            coverage=float(r.uniform(0.6, 1.0) if dense else r.uniform(0.2, 0.6)),
            grain_thickness_nm=4.0,
        )
    else:
        kw.update(n_particles=int(r.integers(60, 150) if dense else r.integers(10, 60)))
    return kw


def _one(args: tuple[int, str]) -> dict:
    from temcal.calibrate.pixel_size import measure_gold_rings
    from temcal.errors import TemcalError
    from temcal.simulate.gold import simulate_gold_image

    i, cache = args
    kw = _params(i)
    f = Path(cache) / f"aliased_{i:02d}.npy"
    if f.exists():
        img = np.load(f)
    else:
        sim = simulate_gold_image(
            (2048, 2048), lattice_constant_A=LATTICE_A, rng=np.random.default_rng(i), **kw
        )
        img = sim.image.astype(np.float32)
        np.save(f, img)
    row = {"i": i, **kw}
    try:
        r = measure_gold_rings(img, lattice_constant_A=LATTICE_A)
        row["measured_A"] = r.pixel_size_A
    except TemcalError as exc:
        row["refused"] = str(exc)
    return row


def _no_gold(i: int) -> dict:
    from temcal.calibrate.pixel_size import measure_gold_rings
    from temcal.errors import TemcalError
    from temcal.physics.ctf import CTFParameters
    from temcal.simulate.ctf_series import simulate_ctf_micrograph

    r = np.random.default_rng(7000 + i)
    size = int(r.choice([1024, 2048]))
    p = float(np.exp(r.uniform(np.log(0.4), np.log(3.0))))
    dz, ast = float(r.uniform(3000, 40000)), float(r.uniform(0, 3000))
    par = CTFParameters(
        defocus_u_A=dz + ast / 2,
        defocus_v_A=dz - ast / 2,
        astig_angle_deg=float(r.uniform(0, 180)),
        cs_mm=float(r.choice([1.4, 2.7])),
        voltage_kV=float(r.choice([200.0, 300.0])),
        b_factor_A2=float(r.uniform(0, 60)),
    )
    img = simulate_ctf_micrograph(
        par,
        (size, size),
        pixel_size_A=p,
        rng=np.random.default_rng(i),
        dose_e_per_A2=float(r.uniform(20, 80)),
        rms_phase_rad=float(r.uniform(0.05, 0.3)),
    )
    row: dict = {"i": i, "size": size, "pixel_size_A": p, "defocus_A": dz}
    try:
        row["measured_A"] = measure_gold_rings(img, lattice_constant_A=LATTICE_A).pixel_size_A
    except TemcalError as exc:
        row["refused"] = str(exc)
    return row


def _reason(msg: str) -> str:
    if "beyond Nyquist" in msg:
        return "all aliased (said so)"
    if "ambiguous" in msg:
        return "ambiguous"
    if "stand" in msg or "scores" in msg:
        return "no clear pattern"
    return msg[:60]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="all-aliased gold images")
    ap.add_argument("--n-no-gold", type=int, default=260, help="amorphous-film images")
    ap.add_argument("--cache", default="/tmp/temcal-refusals-cache")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(_one, [(i, a.cache) for i in range(a.n)]))
        film = list(ex.map(_no_gold, range(a.n_no_gold)))
    measured = [r for r in rows if "measured_A" in r]
    film_measured = [r for r in film if "measured_A" in r]
    table = [
        [
            r["i"],
            f"{r['pixel_size_A']:.3f}",
            r["kind"],
            f"{r['grain_size_nm']:.0f}",
            "dense" if r["i"] >= N_SPARSE else "sparse",
            f"{r['measured_A']:.4f} (wrong)" if "measured_A" in r else _reason(r["refused"]),
        ]
        for r in rows
    ]
    md = "\n".join(
        [
            "## Images without a measurable gold pattern are refused "
            "(`benchmarks/pixel_size_refusals.py`)",
            "",
            machine_line(),
            "",
            f"Amorphous film only ({a.n_no_gold} simulated images, 1024²-2048², "
            "0.4-3 Å/px, 0.3-4 µm; see the script's docstring): refused "
            f"{a.n_no_gold - len(film_measured)} of {a.n_no_gold}"
            + (
                "; measured (wrong): "
                + ", ".join(f"#{r['i']} {r['measured_A']:.4f} Å/px" for r in film_measured)
                if film_measured
                else ""
            )
            + ".",
            "",
            f"All-aliased gold: {a.n} simulated 2048² images at 1.75-3.5 Å/px, where every "
            "gold ring lies beyond the spectrum's corner (see the script's docstring for "
            "the draws); default estimator, no guess. Any pixel size returned is wrong.",
            "",
            f"- refused {a.n - len(measured)} of {a.n}; measured (wrong): {len(measured)}",
            "",
            markdown_table(["#", "px (Å)", "specimen", "grain (nm)", "density", "result"], table),
        ]
    )
    write_section("pixel_size_refusals", md)
    print(md)


if __name__ == "__main__":
    main()
