"""The real-space pixel matrix: pixel size and anisotropic magnification.

Convention (``../shared/physics.md``): the pixel matrix ``M`` (Å per pixel, symmetric
2x2, rows/columns ordered ``(x, y)``) maps a detector step ``(dx, dy)`` in pixels to the
specimen displacement ``M @ (dx, dy)`` in Å. The pixel size along a unit image direction
``u`` is ``|M u|``. A lattice plane of spacing ``d`` (reciprocal vector ``g``,
``|g| = 1/d`` Å⁻¹) puts spectrum peaks at pixel frequencies ``M^T g`` (cycles/pixel), so
every gold ring is an ellipse ``{M^T g : |g| = 1/d}`` in the power spectrum; the
Fourier-space counterpart of ``M`` is ``(M^{-1})^T``.

The isotropic equivalent pixel size is ``sqrt(p_major * p_minor)`` and the anisotropy
``100 (p_major / p_minor - 1)`` %; ``major_angle_deg`` is the direction of ``p_major``
from +x toward +y, in [0, 180).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PixelGeometry", "decompose_pixel_matrix", "pixel_matrix_A"]


@dataclass(frozen=True)
class PixelGeometry:
    """A pixel matrix decomposed into its principal pixel sizes.

    Attributes
    ----------
    pixel_size_A : float
        Isotropic equivalent ``sqrt(pixel_major_A * pixel_minor_A)`` in Å.
    pixel_major_A, pixel_minor_A : float
        Largest and smallest pixel size in Å (eigenvalues of ``M``).
    anisotropy_percent : float
        ``100 (pixel_major_A / pixel_minor_A - 1)``.
    major_angle_deg : float
        Direction of ``pixel_major_A`` from +x toward +y, in [0, 180).
    """

    pixel_size_A: float
    pixel_major_A: float
    pixel_minor_A: float
    anisotropy_percent: float
    major_angle_deg: float

    @property
    def matrix(self) -> np.ndarray:
        """The pixel matrix ``M`` (Å/pixel, 2x2, ``(x, y)`` order)."""
        return pixel_matrix_A(self.pixel_size_A, self.anisotropy_percent, self.major_angle_deg)


def pixel_matrix_A(
    pixel_size_A: float, anisotropy_percent: float = 0.0, major_angle_deg: float = 0.0
) -> np.ndarray:
    """Build the pixel matrix ``M`` (Å/pixel) from its isotropic size and anisotropy.

    Parameters
    ----------
    pixel_size_A : float
        Isotropic equivalent ``sqrt(p_major p_minor)`` in Å.
    anisotropy_percent : float
        ``100 (p_major / p_minor - 1)``, >= 0.
    major_angle_deg : float
        Direction of the major pixel size from +x toward +y, degrees.

    Returns
    -------
    numpy.ndarray
        Symmetric 2x2 matrix in ``(x, y)`` order.
    """
    ratio = 1.0 + anisotropy_percent / 100.0
    p_major = pixel_size_A * math.sqrt(ratio)
    p_minor = pixel_size_A / math.sqrt(ratio)
    t = math.radians(major_angle_deg)
    u = np.array([math.cos(t), math.sin(t)])
    v = np.array([-math.sin(t), math.cos(t)])
    return p_major * np.outer(u, u) + p_minor * np.outer(v, v)


def decompose_pixel_matrix(matrix: np.ndarray) -> PixelGeometry:
    """Principal pixel sizes and major-axis direction of a pixel matrix.

    The symmetric part of ``matrix`` is used (an antisymmetric part is a pure rotation
    of the image, which changes no pixel size to first order).
    """
    m = np.asarray(matrix, dtype=float)
    sym = 0.5 * (m + m.T)
    w, v = np.linalg.eigh(sym)
    p_minor, p_major = float(w[0]), float(w[1])
    angle = math.degrees(math.atan2(v[1, 1], v[0, 1])) % 180.0
    if math.isclose(angle, 180.0):
        angle = 0.0
    return PixelGeometry(
        pixel_size_A=math.sqrt(p_major * p_minor),
        pixel_major_A=p_major,
        pixel_minor_A=p_minor,
        anisotropy_percent=100.0 * (p_major / p_minor - 1.0),
        major_angle_deg=angle,
    )
