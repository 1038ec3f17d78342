"""Axial aberrations: Krivanek polar and CEOS complex notation, W(omega), tilt-induced terms.

Conventions (``../shared/physics.md``). The complex aperture angle is
``omega = alpha exp(i phi)`` (rad), ``phi`` from +x toward +y. The CEOS/Haider aberration
function, in Å,

``W = Re{ 1/2 C1 w wbar + 1/2 A1 wbar^2 + B2 w wbar^2 + 1/3 A2 wbar^3 + 1/4 C3 (w wbar)^2
+ S3 w wbar^3 + 1/4 A3 wbar^4 }``

equals the Krivanek form ``1/2 a^2 (C10 + C12 cos 2(phi - phi12)) + 1/3 a^3 (C21 cos(phi -
phi21) + C23 cos 3(phi - phi23)) + 1/4 a^4 (C30 + C32 cos 2(phi - phi32) + C34 cos 4(phi -
phi34))`` with

``C1 = C10, A1 = C12 e^{2 i phi12}, B2 = C21/3 e^{i phi21}, A2 = C23 e^{3 i phi23},
C3 = C30, S3 = C32/4 e^{2 i phi32}, A3 = C34 e^{4 i phi34}``.

The canonical polar form has magnitudes >= 0 and ``phi_nm`` in ``[0, 360/m)`` degrees.
``C10`` is minus the (underfocus-positive) defocus. temcal's phase aberration ``chi`` of
:mod:`temcal.physics.ctf` is ``chi = -2 pi W / lambda``.

A beam tilt ``tau`` (complex, rad) shifts the image by ``delta(tau) = 2 dW/dwbar |_{w=tau}``
(Å, specimen plane; equal to ``dW/dalpha_x + i dW/dalpha_y``) and changes the defocus and
two-fold astigmatism seen by a CTF fit to ``C1(tau)``, ``A1(tau)`` (the quadratic part of
``W(tau + epsilon)`` in ``epsilon``).

References
----------
Krivanek, Dellby & Lupini, Ultramicroscopy 78 (1999) 1. doi:10.1016/S0304-3991(99)00013-3
Haider, Uhlemann & Zach, Ultramicroscopy 81 (2000) 163. doi:10.1016/S0304-3991(99)00194-1
Koster & de Jong, Ultramicroscopy 38 (1991) 235. doi:10.1016/0304-3991(91)90158-Q
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "AxialAberrations",
    "c1_a1_from_defocus_astigmatism",
    "calculate_aberration_function_A",
    "calculate_aberration_gradient_A",
    "calculate_tilt_image_shift_A",
    "calculate_tilt_induced_c1_a1_A",
    "defocus_astigmatism_from_c1_a1",
]

#: (Krivanek magnitude name, angle name, CEOS field, rotational symmetry m, magnitude factor)
_POLAR = (
    ("C12_A", "phi12_deg", "A1_A", 2, 1.0),
    ("C21_A", "phi21_deg", "B2_A", 1, 3.0),
    ("C23_A", "phi23_deg", "A2_A", 3, 1.0),
    ("C32_A", "phi32_deg", "S3_A", 2, 4.0),
    ("C34_A", "phi34_deg", "A3_A", 4, 1.0),
)


@dataclass(frozen=True)
class AxialAberrations:
    """Axial aberrations up to third order in CEOS complex notation (all in Å).

    Attributes
    ----------
    C1_A : float
        Defocus ``C1 = C10`` (negative for underfocus).
    A1_A, B2_A, A2_A, S3_A, A3_A : complex
        Two-fold astigmatism, axial coma, three-fold astigmatism, third-order star
        aberration and four-fold astigmatism (complex, see module docstring).
    C3_A : float
        Spherical aberration ``C3 = C30 = Cs`` in Å (1 mm = 1e7 Å).
    """

    C1_A: float = 0.0
    A1_A: complex = 0j
    B2_A: complex = 0j
    A2_A: complex = 0j
    C3_A: float = 0.0
    S3_A: complex = 0j
    A3_A: complex = 0j

    @classmethod
    def from_krivanek(
        cls,
        *,
        C10_A: float = 0.0,
        C12_A: float = 0.0,
        phi12_deg: float = 0.0,
        C21_A: float = 0.0,
        phi21_deg: float = 0.0,
        C23_A: float = 0.0,
        phi23_deg: float = 0.0,
        C30_A: float = 0.0,
        C32_A: float = 0.0,
        phi32_deg: float = 0.0,
        C34_A: float = 0.0,
        phi34_deg: float = 0.0,
    ) -> AxialAberrations:
        """Build from Krivanek polar coefficients (Å, degrees)."""
        polar = {
            "C12_A": (C12_A, phi12_deg),
            "C21_A": (C21_A, phi21_deg),
            "C23_A": (C23_A, phi23_deg),
            "C32_A": (C32_A, phi32_deg),
            "C34_A": (C34_A, phi34_deg),
        }
        values: dict[str, complex | float] = {"C1_A": float(C10_A), "C3_A": float(C30_A)}
        for mag_name, _angle_name, field, m, factor in _POLAR:
            mag, ang = polar[mag_name]
            values[field] = complex(mag / factor * np.exp(1j * m * math.radians(ang)))
        return cls(**values)  # type: ignore[arg-type]

    def to_krivanek(self) -> dict[str, float]:
        """Canonical Krivanek polar form: magnitudes >= 0, ``phi_nm`` in [0, 360/m) degrees."""
        out: dict[str, float] = {"C10_A": float(self.C1_A)}
        for mag_name, angle_name, field, m, factor in _POLAR:
            z = complex(getattr(self, field))
            mag = abs(z) * factor
            ang = math.degrees(math.atan2(z.imag, z.real)) / m if mag > 0 else 0.0
            period = 360.0 / m
            ang = ang % period
            if ang >= period:  # float rounding of % at the period edge
                ang = 0.0
            out[mag_name] = float(mag)
            out[angle_name] = float(ang)
        out["C30_A"] = float(self.C3_A)
        return out

    def to_vector(self) -> np.ndarray:
        """Real parameter vector (Å).

        Order: ``[C1, Re A1, Im A1, Re B2, Im B2, Re A2, Im A2, C3, Re S3, Im S3, Re A3,
        Im A3]``.
        """
        v: list[float] = []
        for f in fields(self):
            z = getattr(self, f.name)
            if f.name in ("C1_A", "C3_A"):
                v.append(float(z))
            else:
                v.extend([complex(z).real, complex(z).imag])
        return np.asarray(v)

    @classmethod
    def from_vector(cls, v: np.ndarray) -> AxialAberrations:
        """Inverse of :meth:`to_vector`."""
        v = np.asarray(v, dtype=float)
        return cls(
            C1_A=float(v[0]),
            A1_A=complex(v[1], v[2]),
            B2_A=complex(v[3], v[4]),
            A2_A=complex(v[5], v[6]),
            C3_A=float(v[7]),
            S3_A=complex(v[8], v[9]),
            A3_A=complex(v[10], v[11]),
        )

    def rotated(self, angle_deg: float) -> AxialAberrations:
        """The same lens described in a frame rotated by ``-angle``.

        The coefficients turn by ``+angle``: ``W'(e^{i a} w) = W(w)``.
        """
        r = np.exp(1j * math.radians(angle_deg))
        return AxialAberrations(
            C1_A=self.C1_A,
            A1_A=complex(self.A1_A * r**2),
            B2_A=complex(self.B2_A * r),
            A2_A=complex(self.A2_A * r**3),
            C3_A=self.C3_A,
            S3_A=complex(self.S3_A * r**2),
            A3_A=complex(self.A3_A * r**4),
        )


def calculate_aberration_function_A(
    omega: np.ndarray | complex, ab: AxialAberrations
) -> np.ndarray:
    """Aberration function ``W(omega)`` in Å.

    Parameters
    ----------
    omega : complex or numpy.ndarray of complex
        Complex angle ``alpha_x + i alpha_y`` in rad.
    ab : AxialAberrations
        Coefficients in Å.

    Returns
    -------
    numpy.ndarray
        ``W`` (Å), same shape as ``omega``.
    """
    w = np.asarray(omega, dtype=complex)
    wb = np.conj(w)
    ww = (w * wb).real
    out = (0.5 * ab.C1_A + 0.25 * ab.C3_A * ww) * ww
    wb2 = wb * wb
    if ab.A1_A or ab.B2_A or ab.A2_A or ab.S3_A or ab.A3_A:
        # complex terms, skipped when all zero (speed of the simulators)
        f = (0.5 * ab.A1_A + ab.B2_A * w + ab.A2_A * wb / 3.0) * wb2
        if ab.S3_A or ab.A3_A:
            f = f + (ab.S3_A * w + 0.25 * ab.A3_A * wb) * wb2 * wb
        out = out + f.real
    return np.asarray(out)


def calculate_aberration_gradient_A(
    omega: np.ndarray | complex, ab: AxialAberrations
) -> np.ndarray:
    """Gradient ``2 dW/dwbar = dW/dalpha_x + i dW/dalpha_y`` (Å per rad), complex.

    This is the image shift ``delta(tau)`` of :func:`calculate_tilt_image_shift_A`.
    """
    w = np.asarray(omega, dtype=complex)
    wb = np.conj(w)
    ww = (w * wb).real
    return (
        ab.C1_A * w
        + ab.A1_A * wb
        + 2.0 * ab.B2_A * ww
        + np.conj(ab.B2_A) * w**2
        + ab.A2_A * wb**2
        + ab.C3_A * ww * w
        + 3.0 * ab.S3_A * ww * wb
        + np.conj(ab.S3_A) * w**3
        + ab.A3_A * wb**3
    )


def calculate_tilt_image_shift_A(tau_rad: np.ndarray | complex, ab: AxialAberrations) -> np.ndarray:
    """Image shift (Å, specimen plane, complex ``dx + i dy``) caused by a beam tilt.

    ``delta(tau) = C1 tau + A1 taubar + 2 B2 |tau|^2 + B2bar tau^2 + A2 taubar^2
    + C3 |tau|^2 tau + 3 S3 |tau|^2 taubar + S3bar tau^3 + A3 taubar^3``.

    A positive component means the image content moves toward +x (+y). With this sign a
    specimen ``f(r)`` imaged at tilt ``tau`` appears as ``f(r - delta)`` (low-frequency limit).

    Parameters
    ----------
    tau_rad : complex or numpy.ndarray of complex
        Beam tilt ``tau_x + i tau_y`` in rad, in the image frame.
    ab : AxialAberrations
        Coefficients in Å.
    """
    return calculate_aberration_gradient_A(tau_rad, ab)


def calculate_tilt_induced_c1_a1_A(
    tau_rad: np.ndarray | complex, ab: AxialAberrations
) -> tuple[np.ndarray, np.ndarray]:
    """Defocus ``C1(tau)`` (real, Å) and two-fold astigmatism ``A1(tau)`` (complex, Å).

    ``C1(tau) = C1 + 4 Re(B2 taubar) + 2 C3 |tau|^2 + 6 Re(S3 taubar^2)``,
    ``A1(tau) = A1 + 2 B2 tau + 2 A2 taubar + C3 tau^2 + 6 S3 |tau|^2 + 3 A3 taubar^2``.
    """
    t = np.asarray(tau_rad, dtype=complex)
    tb = np.conj(t)
    tt = (t * tb).real
    c1 = ab.C1_A + 4.0 * np.real(ab.B2_A * tb) + 2.0 * ab.C3_A * tt + 6.0 * np.real(ab.S3_A * tb**2)
    a1 = (
        ab.A1_A
        + 2.0 * ab.B2_A * t
        + 2.0 * ab.A2_A * tb
        + ab.C3_A * t**2
        + 6.0 * ab.S3_A * tt
        + 3.0 * ab.A3_A * tb**2
    )
    return np.asarray(c1, dtype=float), np.asarray(a1, dtype=complex)


def defocus_astigmatism_from_c1_a1(c1_A: float, a1_A: complex) -> tuple[float, float, float]:
    """Convert ``(C1, A1)`` to CTF parameters ``(defocus_u_A, defocus_v_A, astig_angle_deg)``.

    Underfocus positive, ``defocus_u_A >= defocus_v_A``, angle of ``defocus_u`` in [0, 180).
    The defocus along direction ``phi`` is ``-(C1 + |A1| cos(2 phi - arg A1))``.
    """
    a = complex(a1_A)
    mean = -float(c1_A)
    half = abs(a)
    angle = (math.degrees(math.atan2(a.imag, a.real)) / 2.0 + 90.0) % 180.0
    return mean + half, mean - half, angle


def c1_a1_from_defocus_astigmatism(
    defocus_u_A: float, defocus_v_A: float, astig_angle_deg: float
) -> tuple[float, complex]:
    """Inverse of :func:`defocus_astigmatism_from_c1_a1`: ``(C1, A1)`` in Å from CTF parameters.

    ``C1 = -(dz_u + dz_v) / 2``, ``A1 = -(dz_u - dz_v) / 2 * exp(2 i phi_u)``.
    """
    c1 = -0.5 * (float(defocus_u_A) + float(defocus_v_A))
    a1 = (
        -0.5
        * (float(defocus_u_A) - float(defocus_v_A))
        * np.exp(2j * math.radians(astig_angle_deg))
    )
    return c1, complex(a1)
