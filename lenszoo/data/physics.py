"""Lensing physics shared by every lenszoo simulation: Einstein radii, the
subhalo mass function and the axion vortex geometry.

Every mass (main halo, subhalo, vortex element) becomes an Einstein radius
through ``einstein_radius_arcsec``, one formula with proper angular-diameter
distances (the seed used luminosity distances and D_ls = D_s - D_l).
"""

from __future__ import annotations

import functools
import math

import numpy as np

ARCSEC_PER_RADIAN = 180.0 * 3600.0 / math.pi


@functools.lru_cache(maxsize=32)
def _einstein_radius_of_one_solar_mass(z_lens, z_source, H0, Om0, Ob0) -> float:
    from astropy import constants, units
    from astropy.cosmology import FlatLambdaCDM

    if not 0 < z_lens < z_source:
        raise ValueError(f"need 0 < z_lens < z_source; got z_lens={z_lens}, z_source={z_source}")
    cosmology = FlatLambdaCDM(H0=H0, Om0=Om0, Ob0=Ob0)
    d_l = cosmology.angular_diameter_distance(z_lens)
    d_s = cosmology.angular_diameter_distance(z_source)
    d_ls = cosmology.angular_diameter_distance_z1z2(z_lens, z_source)
    theta_squared = 4 * constants.G * constants.M_sun / constants.c**2 * d_ls / (d_l * d_s)
    return float(np.sqrt(theta_squared.to(units.dimensionless_unscaled).value)) * ARCSEC_PER_RADIAN


def einstein_radius_arcsec(mass_msun, cosmology: dict):
    """Einstein radius in arcsec of a point mass (M in solar masses).

    theta_E = sqrt(4 G M / c^2 * D_ls / (D_l D_s)) with angular-diameter
    distances of ``FlatLambdaCDM(H0, Om0, Ob0)``; ``cosmology`` holds those
    three and ``z_lens``, ``z_source``. Works on scalars and arrays.
    """
    unit = _einstein_radius_of_one_solar_mass(
        float(cosmology["z_lens"]), float(cosmology["z_source"]),
        float(cosmology["H0"]), float(cosmology["Om0"]), float(cosmology["Ob0"]),
    )
    return unit * np.sqrt(mass_msun)


def draw_power_law_masses(rng: np.random.Generator, count: int, mass_min: float, mass_max: float,
                          slope: float) -> np.ndarray:
    """``count`` masses with dN/dm proportional to m**slope on [mass_min, mass_max] (inverse CDF)."""
    if slope == -1.0:
        return mass_min * (mass_max / mass_min) ** rng.uniform(0.0, 1.0, count)
    exponent = slope + 1.0
    low, high = mass_min**exponent, mass_max**exponent
    return (low + (high - low) * rng.uniform(0.0, 1.0, count)) ** (1.0 / exponent)


def power_law_mass_mean(mass_min: float, mass_max: float, slope: float) -> float:
    """Mean mass of dN/dm proportional to m**slope on [mass_min, mass_max]."""
    def integral(power):  # integral of m**power over the range
        return math.log(mass_max / mass_min) if power == -1 else (mass_max ** (power + 1) - mass_min ** (power + 1)) / (power + 1)

    return integral(slope + 1) / integral(slope)


def vortex_half_length_arcsec(axion_mass_ev, half_length_coefficient: float):
    """Half-length L of the axion vortex: L[arcsec] = coefficient[eV arcsec] / m_a[eV].

    With the seed's coefficient 3e-24 this is 3.0" at 1e-24 eV and 0.03" at 1e-22 eV
    (the seed states it for a halo at z = 0.5).
    """
    return half_length_coefficient / np.asarray(axion_mass_ev, dtype=float)


def vortex_positions(half_length: float, angle: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points evenly spaced from -L to +L on a line through (0, 0) at ``angle``."""
    along = np.linspace(-half_length, half_length, count)
    return along * math.cos(angle), along * math.sin(angle)
