"""Deflection by many point masses at once, for lenstronomy's ``TABULATED_DEFLECTIONS``.

lenstronomy evaluates a list of ``POINT_MASS`` profiles one Python call at a
time (~40 us each on a 64x64 grid); 25 CDM subhalos then cost more than the
rest of the image together, and a 100-element vortex four times that. This
compiled loop computes the same formula as lenstronomy's ``PointMass``
(alpha = theta_E^2 (x - x0) / r^2, r floored at 1e-25) for all masses in one
pass, ~20x faster. No fast-math: results do not depend on the CPU's vector
width, so every worker produces the same bits.
"""

from __future__ import annotations

import numba
import numpy as np

R_MIN = 1e-25  # lenstronomy PointMass.r_min


@numba.njit(cache=True)
def _point_mass_deflection(x, y, einstein_radii, positions_x, positions_y, alpha_x, alpha_y):
    r2_min = R_MIN * R_MIN
    for j in range(einstein_radii.shape[0]):
        theta2 = einstein_radii[j] * einstein_radii[j]
        x0 = positions_x[j]
        y0 = positions_y[j]
        for i in range(x.shape[0]):
            dx = x[i] - x0
            dy = y[i] - y0
            r2 = dx * dx + dy * dy
            if r2 < r2_min:
                r2 = r2_min
            weight = theta2 / r2
            alpha_x[i] += weight * dx
            alpha_y[i] += weight * dy


def point_mass_deflection(x, y, einstein_radii, positions_x, positions_y):
    """Summed deflection (alpha_x, alpha_y) in arcsec of point masses at the given positions."""
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    flat_x = np.ascontiguousarray(x.reshape(-1))
    flat_y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).reshape(-1))
    alpha_x = np.zeros_like(flat_x)
    alpha_y = np.zeros_like(flat_y)
    _point_mass_deflection(
        flat_x, flat_y,
        np.ascontiguousarray(einstein_radii, dtype=np.float64),
        np.ascontiguousarray(positions_x, dtype=np.float64),
        np.ascontiguousarray(positions_y, dtype=np.float64),
        alpha_x, alpha_y,
    )
    return alpha_x.reshape(shape), alpha_y.reshape(shape)


class PointMassEnsemble:
    """Custom deflection class for ``LensModel(["TABULATED_DEFLECTIONS"], profile_kwargs_list=
    [{"custom_class": PointMassEnsemble()}])``; per-image kwargs are
    ``{"einstein_radii": ..., "positions_x": ..., "positions_y": ...}`` (arrays, arcsec)."""

    def __call__(self, x, y, einstein_radii, positions_x, positions_y):
        return point_mass_deflection(x, y, einstein_radii, positions_x, positions_y)
