"""Benchmark: camera length, centre, ellipticity and beam-tilt calibration from gold diffraction.

Simulated patterns (temcal.simulate.diffraction) with known truth, measured with
temcal.calibrate.diffraction. Writes the "diffraction" section of docs/benchmarks.md.

Run:  PYTHONPATH=src python benchmarks/diffraction.py
"""

from __future__ import annotations

import math
import time

import numpy as np

from benchmarks._report import machine_line, markdown_table, write_section
from temcal.calibrate.diffraction import estimate_camera_length, estimate_tilt_calibration
from temcal.simulate.diffraction import simulate_gold_diffraction

SIZE = 1024
PITCH_UM = 28.0

# kV, camera length (mm), ellipticity (%), major angle, grain (nm), total counts
CAMERA_CASES = [
    (300, 800, 0.0, 0.0, 8.0, 5e7),
    (300, 800, 1.0, 30.0, 8.0, 5e7),
    (300, 800, 2.0, 150.0, 8.0, 5e7),
    (300, 600, 1.0, 75.0, 3.0, 5e7),
    (300, 1100, 0.5, 10.0, 20.0, 5e7),
    (300, 800, 1.0, 30.0, 8.0, 2e6),
    (200, 600, 0.0, 0.0, 8.0, 5e7),
    (200, 600, 1.5, 110.0, 5.0, 5e7),
    (200, 450, 2.0, 45.0, 10.0, 1e7),
    (200, 800, 1.0, 160.0, 20.0, 5e6),
    (200, 600, 0.8, 95.0, 3.0, 2e6),
    (300, 700, 0.3, 60.0, 5.0, 1e7),
]

# Model-mismatch cases (300 kV, 800 mm, 1 % at 30 deg, 8 nm, 5e7 counts unless given).
ROBUST_CASES = [
    ("pseudo-Voigt rings (eta 0.5)", {"ring_profile_eta": 0.5}),
    ("amorphous carbon halo (20 % of counts)", {"amorphous_fraction": 0.2}),
    ("detector PSF 1.5 px", {"detector_blur_px": 1.5}),
    ("saturated central beam", {"saturation_counts": 3000.0}),
    (
        "3 nm grains + halo + eta 0.5 + PSF 1 px",
        {
            "grain_size_nm": 3.0,
            "amorphous_fraction": 0.2,
            "ring_profile_eta": 0.5,
            "detector_blur_px": 1.0,
        },
    ),
]

# kV, rotation (deg), mirrored, scale (mrad per coil unit), anisotropy factor
TILT_CASES = [
    (300, 25.0, False, 0.012, 1.0),
    (300, 200.0, True, 0.020, 1.0),
    (200, 95.0, False, 0.008, 1.03),
    (200, 310.0, True, 0.015, 0.98),
]


def _camera_row(label: str, sim_kwargs: dict, rng: np.random.Generator, size: int = SIZE) -> list:
    sim = simulate_gold_diffraction((size, size), rng=rng, **sim_kwargs)
    t0 = time.perf_counter()
    res = estimate_camera_length(
        sim.pattern, voltage_kV=sim.voltage_kV, detector_pixel_um=sim.detector_pixel_um
    )
    dt = time.perf_counter() - t0
    err = 100 * (res.camera_length_mm / sim.camera_length_mm - 1)
    ci = 100 * res.camera_length_ci95_mm / sim.camera_length_mm
    dc = math.hypot(
        res.center_x_px - sim.pattern_center_xy_px[0],
        res.center_y_px - sim.pattern_center_xy_px[1],
    )
    d_ell = res.ellipticity_percent - sim.ellipticity_percent
    if sim.ellipticity_percent > 0:
        d_ang = ((res.major_angle_deg - sim.major_angle_deg + 90) % 180) - 90
        ang = f"{d_ang:+.2f}"
    else:
        ang = "-"
    naive = 100 * (_naive_camera_length(sim.pattern, res) / sim.camera_length_mm - 1)
    return (
        [
            label,
            f"{err:+.4f}",
            f"{ci:.4f}",
            f"{dc:.4f}",
            f"{d_ell:+.4f}",
            ang,
            len(res.rings),
            f"{naive:+.3f}",
            f"{dt:.1f}",
        ],
        abs(err),
        dc,
    )


def _naive_camera_length(pattern: np.ndarray, res) -> float:
    """Baseline: argmax of a 1-px radial histogram, bins labelled by their lower edge.

    Uses temcal's fitted centre (the naive method gets the centre for free) and circular
    bins; each ring's argmax within +-3 % of its fitted radius gives L, averaged over rings.
    """
    ny, nx = pattern.shape
    y, x = np.mgrid[:ny, :nx]
    r = np.hypot(x - res.center_x_px, y - res.center_y_px)
    idx = r.astype(np.int64).ravel()
    prof = np.bincount(idx, weights=pattern.ravel()) / np.maximum(np.bincount(idx), 1)
    ls = []
    for ring in res.rings:
        lo, hi = int(ring.radius_px * 0.97), int(ring.radius_px * 1.03) + 1
        k = lo + int(np.argmax(prof[lo:hi]))
        ls.append(k * ring.d_A * res.detector_pixel_um * 1e-3 / res.wavelength_A)
    return float(np.mean(ls))


def main() -> None:
    rng = np.random.default_rng(20261123)
    header = [
        "case",
        "L error (%)",
        "L CI95 (±%)",
        "centre error (px)",
        "ellipticity error (abs %)",
        "angle error (°)",
        "rings",
        "naive L error (%)",
        "fit time (s)",
    ]
    rows = []
    worst_l, worst_c = 0.0, 0.0
    for kv, length, ell, ang, grain, counts in CAMERA_CASES:
        label = f"{kv} kV, {length} mm, ell {ell} % @ {ang}°, {grain} nm, {counts:.0e} e"
        centre = ((SIZE - 1) / 2 + rng.uniform(-15, 15), (SIZE - 1) / 2 + rng.uniform(-15, 15))
        row, e_l, e_c = _camera_row(
            label,
            {
                "voltage_kV": kv,
                "camera_length_mm": length,
                "detector_pixel_um": PITCH_UM,
                "center_xy_px": centre,
                "ellipticity_percent": ell,
                "major_angle_deg": ang,
                "grain_size_nm": grain,
                "total_counts": counts,
            },
            rng,
        )
        rows.append(row)
        worst_l, worst_c = max(worst_l, e_l), max(worst_c, e_c)
        print(row, flush=True)
    robust_rows = []
    worst_rl = 0.0
    for label, extra in ROBUST_CASES:
        kwargs = {
            "voltage_kV": 300,
            "camera_length_mm": 800,
            "detector_pixel_um": PITCH_UM,
            "center_xy_px": (517.3, 503.9),
            "ellipticity_percent": 1.0,
            "major_angle_deg": 30.0,
            "grain_size_nm": 8.0,
            "total_counts": 5e7,
            "central_beam_fraction": 0.25,
            "background_fraction": 0.35,
        }
        kwargs.update(extra)
        row, e_l, _ = _camera_row(label, kwargs, rng)
        robust_rows.append(row)
        worst_rl = max(worst_rl, e_l)
        print(row, flush=True)

    # Timing on large detectors (camera length scaled so that the same rings fill the field).
    timing_rows = []
    for size in (2048, 4096):
        scale = size / 1024
        kwargs = {
            "voltage_kV": 300,
            "camera_length_mm": 800 * scale,
            "detector_pixel_um": PITCH_UM,
            "ellipticity_percent": 1.0,
            "major_angle_deg": 30.0,
            "grain_size_nm": 8.0,
            "total_counts": 5e7 * scale**2,
        }
        row, _, _ = _camera_row(f"{size}² ({800 * scale:.0f} mm)", kwargs, rng, size=size)
        timing_rows.append(row)
        print(row, flush=True)

    tilt_header = [
        "case",
        "scale error (%)",
        "scale CI95 (±%)",
        "rotation error (°)",
        "rotation CI95 (±°)",
        "mirror found",
        "max abs ΔM / scale (%)",
        "time per pattern (s)",
    ]
    tilt_rows = []
    worst_t = 0.0
    coils = np.array([[0, 0], [150, 0], [0, 150], [-150, 0], [0, -150]], dtype=float)
    for kv, rot, mirror, scale, aniso in TILT_CASES:
        t = math.radians(rot)
        r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        true_m = scale * r @ np.diag([1.0, -1.0 if mirror else 1.0]) @ np.diag([aniso, 1 / aniso])
        patterns = []
        for c in coils:
            tilt = true_m @ c
            patterns.append(
                simulate_gold_diffraction(
                    (512, 512),
                    voltage_kV=kv,
                    camera_length_mm=500,
                    detector_pixel_um=PITCH_UM,
                    ellipticity_percent=0.7,
                    major_angle_deg=40.0,
                    grain_size_nm=8.0,
                    beam_tilt_mrad=(float(tilt[0]), float(tilt[1])),
                    total_counts=1e7,
                    rng=rng,
                ).pattern
            )
        t0 = time.perf_counter()
        res = estimate_tilt_calibration(patterns, coils, voltage_kV=kv)
        dt = (time.perf_counter() - t0) / len(patterns)
        true_scale = math.sqrt(abs(np.linalg.det(true_m)))
        s_err = 100 * (res.scale_mrad_per_unit / true_scale - 1)
        r_err = ((res.rotation_deg - rot + 180) % 360) - 180
        m_err = 100 * float(np.max(np.abs(res.mrad_per_unit - true_m))) / true_scale
        worst_t = max(worst_t, abs(s_err), m_err)
        label = f"{kv} kV, {rot}°{' mirrored' if mirror else ''}, {scale} mrad/unit" + (
            f", anisotropy {100 * (aniso**2 - 1):+.0f} %" if aniso != 1 else ""
        )
        row = [
            label,
            f"{s_err:+.4f}",
            f"{100 * res.scale_ci95_mrad_per_unit / true_scale:.4f}",
            f"{r_err:+.4f}",
            f"{res.rotation_ci95_deg:.4f}",
            "yes" if res.mirrored == mirror else "NO",
            f"{m_err:.4f}",
            f"{dt:.1f}",
        ]
        tilt_rows.append(row)
        print(row, flush=True)

    title = "## Diffraction: camera length, centre, ellipticity, tilt coils"
    md = f"""{title} (`benchmarks/diffraction.py`)

{machine_line()}

Simulated powder patterns of gold (`temcal simulate diffraction`: FCC rings with Scherrer
widths, screened-Coulomb scattering factor and Debye-Waller damping, central beam, diffuse
background, projector ellipticity, Poisson noise), fitted with `temcal camera-length`'s joint
ellipse model. Detector pixel {PITCH_UM} µm, {SIZE}² pixels, centre offset randomly by up to
±15 px. Issue target: camera length and tilt calibration within 0.2 %.

**Camera length** — worst |error| {worst_l:.4f} % over {len(CAMERA_CASES)} cases (target 0.2 %),
worst centre error {worst_c:.4f} px.

{markdown_table(header, rows)}

"naive L error" is the baseline the issue warns about: argmax of a 1-px radial histogram
labelled by the lower bin edge (given temcal's centre, circular bins, mean over rings).

**Robustness to model mismatch** (the fit assumes Gaussian ring profiles, a quadratic
background under each ring group and no PSF) — worst |error| {worst_rl:.4f} %.

{markdown_table(header, robust_rows)}

**Large detectors** (one pattern each; fit time includes ring search, initial ellipse and the
joint fit, which bins the pattern while rings stay at least ~1.8 binned px wide and then uses
a regular subset of at most 1.5e5 pixels near the rings).

{markdown_table(header, timing_rows)}

**Beam-tilt coils** — 5 patterns (0,0 and ±150 units on each coil), 512², 500 mm; the
pattern-centre displacement is converted to mrad through the gold ring radius and
`tilt = M @ coil + offset` is fitted. Worst scale / matrix error {worst_t:.4f} % (target 0.2 %).

{markdown_table(tilt_header, tilt_rows)}

Caveats: the simulator and the fit share the ring-intensity model (Gaussian profile times
`f(q)^2 exp(-Bq^2/2)/q`), so the first table measures precision and the absence of
geometric/bin bias rather than robustness to real specimens; the second table perturbs the
profile, background and detector. Real patterns add projector distortions beyond a linear
ellipse (e.g. spiral/pincushion), texture (uneven intensity around a ring) and lattice-constant
uncertainty (a 0.3 % cryo shrink of gold maps 1:1 onto the camera length; pass
`--lattice-constant`).
"""
    write_section("diffraction", md)
    print(md)


if __name__ == "__main__":
    main()
