"""Defocus from the Thon rings of the support, for the CTF-modulation uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from temcal.calibrate.gold_search import _spectrum
from temcal.calibrate.pixel_size import _thon_defocus
from temcal.physics.ctf import CTFParameters
from temcal.simulate.ctf_series import simulate_ctf_micrograph


def _carbon(defocus_A: float) -> np.ndarray:
    par = CTFParameters(
        defocus_u_A=defocus_A,
        defocus_v_A=defocus_A,
        astig_angle_deg=0.0,
        cs_mm=2.7,
        voltage_kV=300.0,
        b_factor_A2=10.0,
    )
    img = simulate_ctf_micrograph(
        par, (2048, 2048), pixel_size_A=0.4, rng=np.random.default_rng(1), dose_e_per_A2=40.0
    )
    return img.astype(np.float32)


def test_dense_thon_rings_found_in_finer_spectrum() -> None:
    # 3 µm at 0.40 Å/px: the rings' 512² spectrum cannot resolve the Thon rings (the
    # CTF uncertainty then fell back to the worst case, ~1 % on 10 nm grains); a 1024²
    # spectrum of the same image can
    img = _carbon(30000.0)
    spec = _spectrum(img, 512)
    assert _thon_defocus(spec, 0.4, (300.0, 2.7), 4.0782) is None
    dz = _thon_defocus(spec, 0.4, (300.0, 2.7), 4.0782, image=img)
    assert dz == pytest.approx(30000.0, rel=0.02)


def test_no_thon_rings_in_focus_stays_unknown() -> None:
    # in focus there are no Thon rings to find: the finer spectrum must not invent some
    img = _carbon(0.0)
    assert _thon_defocus(_spectrum(img, 512), 0.4, (300.0, 2.7), 4.0782, image=img) is None
