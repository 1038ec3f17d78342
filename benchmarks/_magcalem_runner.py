"""Drive magCalEM 1.3.6's measurement functions without its GUI (run in its own venv).

Executed by ``benchmarks/pixel_size.py`` with the python of a throwaway virtual environment
that has ``magCalEM==1.3.6`` installed (never imported by temcal). It reproduces the
GUI's fast "Run all" path per image: the unwhitened power spectrum
(``makeOneUnwhitenedPS.runScript``), optional mirroring for an aliased 111 ring
(``aliasPS.doAnImage``), then ``measurePxAvg.method2`` (savgol-smoothed radial profile,
argmax within the guess window, Voigt + linear refinement) with the GUI's defaults
(smoothing window 37, no supervision). With ``--aniso`` it also runs
``measurePxAllAngles.runScript`` (2-degree wedges, ellipse fit) and returns its
``aniso_params.csv`` (pixel size on the major and minor axis, angle in rad).

Usage: python _magcalem_runner.py JOBS.json OUT.json, where JOBS.json is a list of
{"file", "px_guess", "lattice_res", "aniso", "aniso_only", "deadline"} (deadline: epoch
seconds after which the remaining jobs are skipped).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore")


def _measure(job: dict) -> dict:
    import mrcfile
    import numpy as np
    from magCalibration.scripts import (
        aliasPS,
        makeOneUnwhitenedPS,
        measurePxAllAngles,
        measurePxAvg,
    )

    path = job["file"]
    guess = float(job["px_guess"])
    d111 = float(job["lattice_res"])
    out: dict = {"file": path}
    with tempfile.TemporaryDirectory() as tmp:
        ps_dir = os.path.join(tmp, "ps") + "/"
        write_dir = os.path.join(tmp, "w") + "/"
        os.makedirs(ps_dir)
        os.makedirs(write_dir + "pxSizes")
        t0 = time.perf_counter()
        directory, name = os.path.split(os.path.abspath(path))
        ps = makeOneUnwhitenedPS.runScript(directory + "/", name, ps_dir)
        n = ps.shape[0]
        # The 111 ring lies beyond Nyquist when its radius n * p / d exceeds n / 2.
        aliased = guess / d111 > 0.5
        if aliased:
            ps = aliasPS.doAnImage(ps, guess, d111)
            os.remove(os.path.join(ps_dir, name[:-4] + "_PS.mrc"))
            with mrcfile.new(os.path.join(ps_dir, name[:-4] + "_PS.mrc")) as mrc:
                mrc.set_data(np.float32(ps))
        if not job.get("aniso_only"):
            px, _ = measurePxAvg.method2(
                ps, d111, guess, 37, False, ps_dir, name, write_dir, False, aliased
            )
            out["pixel_size_A"] = float(px) if px > 0 else None
            out["seconds"] = time.perf_counter() - t0
        out["aliased"] = aliased
        out["fft_size"] = n
        if job.get("aniso"):
            t1 = time.perf_counter()
            try:
                measurePxAllAngles.runScript(
                    tmp + "/",
                    293.0,
                    guess,
                    1,
                    aliased,
                    "",
                    ps_dir,
                    write_dir,
                    "define_lattice_constant",
                    d111,
                )
                with open(write_dir + "aniso_params.csv") as fh:
                    a, b, ang = (float(v) for v in fh.read().strip().split(","))
                p_major, p_minor = max(a, b), min(a, b)
                angle = math.degrees(ang if a >= b else ang + math.pi / 2) % 180.0
                out["aniso"] = {
                    "pixel_major_A": p_major,
                    "pixel_minor_A": p_minor,
                    "anisotropy_percent": 100.0 * (p_major / p_minor - 1.0),
                    "major_angle_deg": angle,
                    "seconds": time.perf_counter() - t1,
                }
            except Exception as exc:  # report, do not crash the whole batch
                out["aniso"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def main() -> None:
    jobs = json.load(open(sys.argv[1]))
    results = []
    for job in jobs:
        if time.time() > job.get("deadline", math.inf):
            results.append({"file": job["file"], "skipped": "time budget", **job})
            continue
        try:
            # magCalEM prints progress; keep stdout clean for nothing but our JSON file.
            sys.stdout = open(os.devnull, "w")
            results.append({**_measure(job), "aniso_only": bool(job.get("aniso_only"))})
        except Exception as exc:
            results.append({"file": job["file"], "error": f"{type(exc).__name__}: {exc}"})
        finally:
            sys.stdout = sys.__stdout__
    with open(sys.argv[2], "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
