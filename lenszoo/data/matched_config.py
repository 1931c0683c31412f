"""The config of datasets C-euclid and C-hst: the ranges every nuisance is drawn from (main lens,
source and its clumps, substructure, axion vortex), the instruments of A and B with their PSF
widths, and every key's type, range and meaning, checked before anything renders (docs/datasets.md's
table of keys is made from ``CONFIG_KEYS``). Limits on subhalo counts keep an image's memory and time
bounded.

A changed default changes the images: bump ``lenszoo.data.matched.GENERATOR_VERSION`` with it.
"""

from __future__ import annotations

import copy
import math

from ..errors import UnknownNameError
from . import physics
from .physics import power_law_mass_mean
from .config_keys import Key, Rule, check_config
from .lensing_config import INSTRUMENTS, SHARED_KEYS, SHARED_RULES

COMMON_CONFIG = {
    "num_pix": 64,
    "cosmology": {"H0": 70.0, "Om0": 0.3, "Ob0": 0.05, "z_lens": 0.5, "z_source": 1.0},
    "main_lens": {
        "profile": "EPL_NUMBA",
        # effective Einstein radius: that of a 1e12 Msun point mass (1.66"), times U(low, high)
        "effective_mass_msun": 1e12, "einstein_radius_factor": [0.8, 1.2],
        "slope_mean": 2.08, "slope_sd": 0.1, "slope_range": [1.8, 2.3],
        "ellipticity_sd": 0.1, "ellipticity_max": 0.3,  # e1, e2 ~ N(0, sd) clipped to +-max
        "shear_sd": 0.04,  # gamma1, gamma2 ~ N(0, sd)
        "center_half_width": 0.05,  # arcsec, centre x, y ~ U(-w, w)
    },
    "source": {
        "profile": "SERSIC_ELLIPSE",
        "magnitude_range": [20.0, 24.0], "R_sersic_range": [0.1, 0.5], "n_sersic_range": [0.7, 3.0],
        "ellipticity_half_width": 0.3, "center_half_width": 0.5,
        # 0..max_clumps compact round Sersic knots within clump_offset_max of the source centre
        "max_clumps": 4, "clump_R_range": [0.02, 0.08], "clump_n_sersic": 1.0,
        "clump_magnitude_offset_range": [1.5, 3.5], "clump_offset_max": 0.3,
    },
    "substructure": {
        # projected mass fraction f ~ U(range) of the matched power law's mass inside region_radius;
        # drawn for cdm and axion alike (the vortex's mass is the same nuisance)
        "region_radius_arcsec": 2.5, "mass_fraction_range": [0.002, 0.02],
        "mass_min_msun": 1e6, "mass_max_msun": 1e10, "mass_function_slope": -1.9,
        # subhalos lighter than this lens by less than a thousandth of a pixel: counted, not rendered
        "render_mass_min_msun": 1e7,
    },
    "axion": {
        "n_elements": 100, "log10_mass_min_ev": -24.0, "log10_mass_max_ev": -22.0,
        "half_length_coefficient": 3e-24,  # eV arcsec: half-length L = coefficient / m_a
    },
    "numerics": {"supersampling_factor": 4},
}

# The A/B instruments with an HST-like PSF: F160W's core is ~0.15" wide, not one pixel.
_PSF_FWHM = {"C-euclid": ("A", 0.16), "C-hst": ("B", 0.15)}
DESCRIPTIONS = {
    "C-euclid": "Euclid VIS-like lenses with class-matched lens, source and substructure-mass nuisances "
                "(shortcut-free benchmark), 64x64, lenstronomy",
    "C-hst": "HST WFC3/F160W-like lenses (PSF FWHM 0.15\") with class-matched nuisances "
             "(shortcut-free benchmark), 64x64, lenstronomy",
}


def default_config(name: str) -> dict:
    if name not in _PSF_FWHM:
        raise UnknownNameError("dataset", name, _PSF_FWHM)
    base, fwhm = _PSF_FWHM[name]
    config = copy.deepcopy(COMMON_CONFIG)
    instrument = copy.deepcopy(INSTRUMENTS[base])
    instrument["band"]["seeing"] = fwhm
    instrument["description"] = instrument["description"] + f"; Gaussian PSF FWHM {fwhm}\""
    config["instrument"] = instrument
    return config


MAX_SUBHALOS = 1_000_000  # drawn per cdm image on average (memory and time per image)
MAX_RENDERED_SUBHALOS = 20_000  # ray-traced per cdm image on average (time per image)


def expected_subhalos(config: dict) -> tuple[float, float]:
    """The largest mean number of subhalos a ``cdm`` image of ``config`` draws, and of those it
    ray-traces (the heaviest effective Einstein radius, the slope that puts most mass in the
    region, the largest mass fraction)."""
    main, sub = config["main_lens"], config["substructure"]
    theta2_per_msun = float(physics.einstein_radius_arcsec(1.0, config["cosmology"])) ** 2
    theta_eff = math.sqrt(main["effective_mass_msun"] * theta2_per_msun) * main["einstein_radius_factor"][1]
    radius = sub["region_radius_arcsec"]
    region = max(theta_eff ** (g - 1) * radius ** (3 - g) for g in main["slope_range"]) / theta2_per_msun
    low, high, slope = sub["mass_min_msun"], sub["mass_max_msun"], sub["mass_function_slope"]
    count = sub["mass_fraction_range"][1] * region / power_law_mass_mean(low, high, slope)
    cutoff = min(max(sub["render_mass_min_msun"], low), high)

    def cumulative(mass):  # integral of m**slope from low to mass
        return math.log(mass / low) if slope == -1 else (mass ** (slope + 1) - low ** (slope + 1)) / (slope + 1)

    return count, count * (1 - cumulative(cutoff) / cumulative(high))


def _pair(name, low, high, unit="", meaning=""):
    return Key(name, "pair", low, high, unit, meaning)


_MASS = (1e3, 1e12)  # solar masses of a subhalo: far below a pixel's Einstein radius up to a galaxy's halo
CONFIG_KEYS = (
    *SHARED_KEYS[:6],
    Key("main_lens.profile", "choice", meaning="main lens profile (power law)", choices=("EPL_NUMBA",)),
    Key("main_lens.effective_mass_msun", "number", 1e9, 1e14, "M☉", "point mass whose θ_E is the nominal effective one"),
    _pair("main_lens.einstein_radius_factor", 0.2, 3.0, "", "θ_eff = nominal × U(low, high)"),
    Key("main_lens.slope_mean", "number", 1.2, 2.8, "", "power-law slope γ ~ N(mean, sd)"),
    Key("main_lens.slope_sd", "number", 0.0, 0.5, "", "power-law slope γ ~ N(mean, sd)"),
    _pair("main_lens.slope_range", 1.2, 2.8, "", "γ clipped to [low, high]"),
    Key("main_lens.ellipticity_sd", "number", 0.0, 0.5, "", "e1, e2 ~ N(0, sd)"),
    Key("main_lens.ellipticity_max", "number", 0.0, 0.5, "", "e1, e2 clipped to ±max"),
    Key("main_lens.shear_sd", "number", 0.0, 0.2, "", "γ1, γ2 ~ N(0, sd)"),
    Key("main_lens.center_half_width", "number", 0.0, 2.0, "arcsec", "lens centre x, y ~ U(−w, w)"),
    Key("source.profile", "choice", meaning="source light profile", choices=("SERSIC_ELLIPSE",)),
    _pair("source.magnitude_range", 10.0, 30.0, "mag", "source magnitude ~ U(low, high)"),
    _pair("source.R_sersic_range", 0.01, 5.0, "arcsec", "half-light radius ~ U(low, high)"),
    _pair("source.n_sersic_range", 0.3, 8.0, "", "Sersic index ~ U(low, high)"),
    Key("source.ellipticity_half_width", "number", 0.0, 0.5, "", "e1, e2 ~ U(−w, w)"),
    Key("source.center_half_width", "number", 0.0, 3.0, "arcsec", "source centre x, y ~ U(−w, w)"),
    Key("source.max_clumps", "int", 0, 20, "", "clumps ~ U{0, …, max}"),
    _pair("source.clump_R_range", 0.005, 1.0, "arcsec", "clump radius ~ U(low, high)"),
    Key("source.clump_n_sersic", "number", 0.3, 8.0, "", "clump Sersic index"),
    _pair("source.clump_magnitude_offset_range", -5.0, 10.0, "mag", "clump magnitude − source magnitude"),
    Key("source.clump_offset_max", "number", 0.0, 3.0, "arcsec", "clumps within this of the source centre"),
    Key("substructure.region_radius_arcsec", "number", 0.1, 10.0, "arcsec", "substructure lies in this disc"),
    _pair("substructure.mass_fraction_range", 0.0, 0.5, "", "f ~ U(low, high) of the region's mass"),
    Key("substructure.mass_min_msun", "number", *_MASS, "M☉", "lightest subhalo"),
    Key("substructure.mass_max_msun", "number", *_MASS, "M☉", "heaviest subhalo"),
    Key("substructure.mass_function_slope", "number", -3.0, 0.0, "", "dN/dm ∝ m^slope"),
    Key("substructure.render_mass_min_msun", "number", *_MASS, "M☉", "lighter subhalos are counted, not ray-traced"),
    Key("axion.n_elements", "int", 2, 10_000, "", "point masses of a vortex"),
    Key("axion.log10_mass_min_ev", "number", -26.0, -18.0, "log10 eV", "axion mass m_a = 10^U(min, max)"),
    Key("axion.log10_mass_max_ev", "number", -26.0, -18.0, "log10 eV", "axion mass m_a = 10^U(min, max)"),
    Key("axion.half_length_coefficient", "number", 1e-26, 1e-21, "eV·arcsec", "vortex half-length L = coefficient / m_a"),
    *SHARED_KEYS[6:],
)
CONFIG_RULES = (
    *SHARED_RULES,
    Rule("substructure.mass_min_msun < substructure.mass_max_msun",
         lambda c: c["substructure"]["mass_min_msun"] < c["substructure"]["mass_max_msun"]),
    Rule("axion.log10_mass_min_ev <= axion.log10_mass_max_ev",
         lambda c: c["axion"]["log10_mass_min_ev"] <= c["axion"]["log10_mass_max_ev"]),
    Rule(f"at most {MAX_SUBHALOS:,} subhalos drawn and {MAX_RENDERED_SUBHALOS:,} ray-traced per `cdm` image on average "
         "(raise substructure.mass_min_msun or render_mass_min_msun, or lower mass_fraction_range)",
         lambda c: all(n <= limit for n, limit in zip(expected_subhalos(c), (MAX_SUBHALOS, MAX_RENDERED_SUBHALOS)))),
)


def check_matched_config(config: dict):
    """Refuse a config of C-euclid or C-hst with a key out of range or a rule broken, in one line."""
    check_config(config, CONFIG_KEYS, CONFIG_RULES)
