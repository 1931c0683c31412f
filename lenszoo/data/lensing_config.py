"""The config of datasets A and B: the defaults every image is drawn with (cosmology, main lens,
source, substructure, the instruments written out in full) and every key's type, range and
meaning, checked before anything renders. docs/datasets.md's table of keys is made from
``CONFIG_KEYS`` (``lenszoo.data.config_keys``); datasets C reuse the shared keys and instruments.

A changed default changes the images: bump ``lenszoo.data.lensing.GENERATOR_VERSION`` with it.
"""

from __future__ import annotations

import copy

from ..errors import LenszooError, UnknownNameError
from .config_keys import Key, Rule, check_config

COMMON_CONFIG = {
    "num_pix": 64,
    "cosmology": {"H0": 70.0, "Om0": 0.3, "Ob0": 0.05, "z_lens": 0.5, "z_source": 1.0},
    "main_lens": {
        "profile": "SIE", "mass_msun": 1e12, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0,
        "shear_gamma1": 0.05, "shear_gamma2": 0.0,
    },
    "source": {
        "profile": "SERSIC_ELLIPSE", "magnitude": 20.0, "R_sersic": 0.25, "n_sersic": 1.0,
        "e1": -0.1, "e2": 0.1, "center_half_width": 0.35,  # centre x, y ~ U(-w, w) arcsec
    },
    "cdm": {
        "n_subhalos": 25, "mass_min_msun": 1e6, "mass_max_msun": 1e10, "mass_function_slope": -0.9,
        "radius_min": 0.25, "radius_max": 2.0,  # arcsec, r ~ U(min, max), angle ~ U(0, 2 pi)
    },
    "axion": {
        "vortex_mass_msun": 3e10, "n_elements": 100,
        "log10_mass_min_ev": -24.0, "log10_mass_max_ev": -22.0,
        "half_length_coefficient": 3e-24,  # eV arcsec: half-length L = coefficient / m_a
    },
    "numerics": {"supersampling_factor": 1},
}

# lenstronomy SingleBand keyword arguments, written out in full (presets move between releases).
INSTRUMENTS = {
    "A": {
        "description": "Euclid VIS, lenstronomy 1.9.2 preset Euclid(band='VIS', psf_type='GAUSSIAN', coadd_years=6)",
        "band": {
            "pixel_scale": 0.101, "read_noise": 4.2, "ccd_gain": 3.1,
            "exposure_time": 565.0, "num_exposures": 4, "sky_brightness": 22.35,
            "magnitude_zero_point": 24.0, "seeing": 0.16, "psf_type": "GAUSSIAN", "truncation": 5,
            "data_count_unit": "e-",
        },
    },
    "B": {
        "description": "HST WFC3/F160W, lenstronomy HST(band='WFC3_F160W', psf_type='GAUSSIAN')",
        "band": {
            "pixel_scale": 0.08, "read_noise": 4.0, "ccd_gain": 2.5,
            "exposure_time": 5400.0, "num_exposures": 1, "sky_brightness": 22.3,
            "magnitude_zero_point": 25.96, "seeing": 0.08, "psf_type": "GAUSSIAN", "truncation": 5,
            "data_count_unit": "e-",
        },
    },
}

DESCRIPTIONS = {
    "A": "Euclid VIS-like lenses (paper's Model A, DeepLenseSim Model II), 64x64, lenstronomy",
    "B": "HST WFC3/F160W-like lenses (paper's Model B, DeepLenseSim Model III), 64x64, lenstronomy",
}


def default_config(name: str) -> dict:
    """The full config of built-in dataset ``name`` ("A" or "B")."""
    if name not in INSTRUMENTS:
        raise UnknownNameError("dataset", name, INSTRUMENTS)
    config = copy.deepcopy(COMMON_CONFIG)
    config["instrument"] = copy.deepcopy(INSTRUMENTS[name])
    return config


def merge_config(base: dict, overrides: dict, path: str = "") -> dict:
    """``base`` with ``overrides`` (nested dicts) merged in; an unknown key is refused, naming the known ones."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        where = f"{path}{key}"
        if key not in merged:
            raise LenszooError(
                f"unknown dataset config key {where!r}; known keys here: {', '.join(sorted(merged))}"
            )
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise LenszooError(f"dataset config key {where!r} is a section; pass a dict of its keys")
            merged[key] = merge_config(merged[key], value, where + ".")
        else:
            merged[key] = value
    return merged


# Every key's type, range and meaning: checked before anything renders, and docs/datasets.md's table
# of keys is made from these lists (lenszoo.data.config_keys).
def _band_key(name, kind, low=None, high=None, unit="", meaning="", choices=()):
    return Key(f"instrument.band.{name}", kind, low, high, unit, meaning, choices)


SHARED_KEYS = (
    Key("num_pix", "int", 16, 256, "pixels", "image side (lenszoo's models take 64)"),
    Key("cosmology.H0", "number", 20.0, 150.0, "km/s/Mpc", "Hubble constant (flat ΛCDM)"),
    Key("cosmology.Om0", "number", 0.05, 1.0, "", "matter density today"),
    Key("cosmology.Ob0", "number", 0.0, 0.2, "", "baryon density today"),
    Key("cosmology.z_lens", "number", 0.01, 5.0, "", "lens redshift"),
    Key("cosmology.z_source", "number", 0.02, 10.0, "", "source redshift"),
    Key("numerics.supersampling_factor", "int", 1, 10, "", "rays per pixel side"),
    Key("instrument.description", "text", meaning="what the instrument numbers are, for the record"),
    _band_key("pixel_scale", "number", 0.01, 1.0, "arcsec", "pixel size"),
    _band_key("read_noise", "number", 0.0, 100.0, "e⁻", "read noise per exposure"),
    _band_key("ccd_gain", "number", 0.1, 100.0, "e⁻/ADU", "detector gain"),
    _band_key("exposure_time", "number", 1.0, 1e6, "s", "time of one exposure"),
    _band_key("num_exposures", "int", 1, 1000, "", "exposures co-added"),
    _band_key("sky_brightness", "number", 15.0, 30.0, "mag/arcsec²", "sky background"),
    _band_key("magnitude_zero_point", "number", 15.0, 35.0, "mag", "magnitude of 1 e⁻/s"),
    _band_key("seeing", "number", 0.01, 5.0, "arcsec", "PSF FWHM"),
    _band_key("psf_type", "choice", meaning="PSF model (`NONE`: no blurring)", choices=("GAUSSIAN", "NONE")),
    _band_key("truncation", "number", 1.0, 20.0, "σ", "PSF truncation radius"),
    _band_key("data_count_unit", "choice", meaning="unit of the pixel values", choices=("e-", "ADU")),
)
SHARED_RULES = (
    Rule("cosmology.z_lens < cosmology.z_source", lambda c: c["cosmology"]["z_lens"] < c["cosmology"]["z_source"]),
    Rule("cosmology.Ob0 <= cosmology.Om0", lambda c: c["cosmology"]["Ob0"] <= c["cosmology"]["Om0"]),
    Rule("num_pix × numerics.supersampling_factor <= 1,024 rays per image side (memory and time per image)",
         lambda c: c["num_pix"] * c["numerics"]["supersampling_factor"] <= 1024),
)
_MASS = (1e3, 1e12)  # solar masses of a subhalo: far below a pixel's Einstein radius up to a galaxy's halo
CONFIG_KEYS = (
    SHARED_KEYS[0],
    *SHARED_KEYS[1:6],
    Key("main_lens.profile", "choice", meaning="main halo profile", choices=("SIE",)),
    Key("main_lens.mass_msun", "number", 1e9, 1e14, "M☉", "main halo mass (θ_E 0.05″–17″ for A's cosmology)"),
    Key("main_lens.e1", "number", -0.5, 0.5, "", "ellipticity component"),
    Key("main_lens.e2", "number", -0.5, 0.5, "", "ellipticity component"),
    Key("main_lens.center_x", "number", -5.0, 5.0, "arcsec", "lens centre"),
    Key("main_lens.center_y", "number", -5.0, 5.0, "arcsec", "lens centre"),
    Key("main_lens.shear_gamma1", "number", -0.3, 0.3, "", "external shear"),
    Key("main_lens.shear_gamma2", "number", -0.3, 0.3, "", "external shear"),
    Key("source.profile", "choice", meaning="source light profile", choices=("SERSIC_ELLIPSE",)),
    Key("source.magnitude", "number", 10.0, 30.0, "mag", "source brightness"),
    Key("source.R_sersic", "number", 0.01, 5.0, "arcsec", "half-light radius"),
    Key("source.n_sersic", "number", 0.3, 8.0, "", "Sersic index"),
    Key("source.e1", "number", -0.5, 0.5, "", "ellipticity component"),
    Key("source.e2", "number", -0.5, 0.5, "", "ellipticity component"),
    Key("source.center_half_width", "number", 0.0, 3.0, "arcsec", "source centre x, y ~ U(−w, w)"),
    Key("cdm.n_subhalos", "int", 0, 10_000, "", "point-mass subhalos of a `cdm` image"),
    Key("cdm.mass_min_msun", "number", *_MASS, "M☉", "lightest subhalo"),
    Key("cdm.mass_max_msun", "number", *_MASS, "M☉", "heaviest subhalo"),
    Key("cdm.mass_function_slope", "number", -3.0, 0.0, "", "dN/dm ∝ m^slope"),
    Key("cdm.radius_min", "number", 0.0, 10.0, "arcsec", "subhalo radius r ~ U(min, max)"),
    Key("cdm.radius_max", "number", 0.0, 10.0, "arcsec", "subhalo radius r ~ U(min, max)"),
    Key("axion.vortex_mass_msun", "number", 1e6, 1e13, "M☉", "total vortex mass"),
    Key("axion.n_elements", "int", 2, 10_000, "", "point masses of a vortex"),
    Key("axion.log10_mass_min_ev", "number", -26.0, -18.0, "log10 eV", "axion mass m_a = 10^U(min, max)"),
    Key("axion.log10_mass_max_ev", "number", -26.0, -18.0, "log10 eV", "axion mass m_a = 10^U(min, max)"),
    Key("axion.half_length_coefficient", "number", 1e-26, 1e-21, "eV·arcsec", "vortex half-length L = coefficient / m_a"),
    *SHARED_KEYS[6:],
)
CONFIG_RULES = (
    *SHARED_RULES,
    Rule("cdm.mass_min_msun < cdm.mass_max_msun", lambda c: c["cdm"]["mass_min_msun"] < c["cdm"]["mass_max_msun"]),
    Rule("cdm.radius_min <= cdm.radius_max", lambda c: c["cdm"]["radius_min"] <= c["cdm"]["radius_max"]),
    Rule("axion.log10_mass_min_ev <= axion.log10_mass_max_ev",
         lambda c: c["axion"]["log10_mass_min_ev"] <= c["axion"]["log10_mass_max_ev"]),
)


def check_lensing_config(config: dict):
    """Refuse a config of A or B (or a variant) with a key out of range or a rule broken, in one line."""
    check_config(config, CONFIG_KEYS, CONFIG_RULES)
