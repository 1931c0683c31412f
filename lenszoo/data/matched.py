"""Datasets C-euclid and C-hst: the three classes with every nuisance drawn alike for every class.

On A and B the main lens and the source never change and both substructure classes add mass
inside the Einstein ring, so the ring's radius alone tells the classes apart. Here the
main lens (power law: Einstein radius, slope, ellipticity, shear, centre) and the source (Sersic
shape, brightness, position, star-forming clumps) vary from image to image, drawn from streams that
do not depend on the class; the main lens is then scaled so that the *effective* Einstein radius
(main halo plus the substructure inside it) is the drawn one. What is left to tell the classes
apart is the substructure's morphology. ``docs/datasets.md`` gives every range and why.

This module is the ``matched_datasets`` plugin; its generators keep A/B's guarantees: image
``index`` of ``split`` is a pure function of (dataset, split, index, seed, class, noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import LenszooError, UnknownNameError
from ..hookspecs import hookimpl
from ..tasks import CLASS_NAMES
from . import physics
from .physics import power_law_mass_mean
from .lensing import LensingSimulator, _stream, check_model_numbers
from .lensing_config import merge_config
from .matched_config import (  # noqa: F401 - default_config and the keys: the generator's own
    CONFIG_KEYS,
    CONFIG_RULES,
    DESCRIPTIONS,
    check_matched_config,
    default_config,
)

GENERATOR_NAME = "lenszoo.matched"
GENERATOR_VERSION = 1
# Streams of one image's randomness: class-independent nuisances first, so an image's lens, source
# and noise stay the same when only its class changes.
_SOURCE_STREAM, _SUBSTRUCTURE_STREAM, _NOISE_STREAM, _LENS_STREAM, _FRACTION_STREAM = 0, 1, 2, 3, 4

def main_lens_einstein_radius(theta_eff: float, slope: float, enclosed_theta2: float) -> float:
    """theta_E of the power law whose mass inside theta_eff, plus point masses of summed
    theta_E^2 ``enclosed_theta2`` inside it, makes the mean convergence inside theta_eff one.

    A power law of Einstein radius t and slope g holds (in theta^2 units) t^(g-1) R^(3-g) inside R.
    """
    remaining = theta_eff**2 - enclosed_theta2
    if remaining <= 0.25 * theta_eff**2:
        raise LenszooError("substructure holds most of the lens mass inside its Einstein radius; "
                           "lower substructure.mass_fraction_range")
    return (remaining / theta_eff ** (3 - slope)) ** (1 / (slope - 1))


@dataclass
class MatchedRealization:
    """Every random draw behind one image of C (angles in radians, lengths in arcsec)."""

    class_name: str
    image_seed: int
    theta_eff: float
    slope: float
    lens_e1: float
    lens_e2: float
    shear_gamma1: float
    shear_gamma2: float
    lens_x: float
    lens_y: float
    theta_main: float  # the main power law's own Einstein radius after matching
    source: dict  # magnitude, R_sersic, n_sersic, e1, e2, center_x, center_y
    clumps: list  # dicts of magnitude, R_sersic, center_x, center_y
    mass_fraction: float  # f drawn for this image (used by cdm and axion)
    substructure_mass_msun: float = 0.0  # all of it, rendered or not
    n_subhalos_total: int = 0
    masses_msun: np.ndarray = field(default_factory=lambda: np.zeros(0))  # rendered point masses
    positions_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    axion_mass_ev: float = math.nan
    log10_axion_mass: float = math.nan
    vortex_angle: float = math.nan
    vortex_half_length_arcsec: float = math.nan
    vortex_x: float = math.nan
    vortex_y: float = math.nan

    def metadata(self) -> dict:
        return {
            "class_name": self.class_name,
            "label": CLASS_NAMES.index(self.class_name),
            "axion_mass_ev": float(self.axion_mass_ev),
            "log10_axion_mass": float(self.log10_axion_mass),
            "source_x": float(self.source["center_x"]),
            "source_y": float(self.source["center_y"]),
            "n_subhalos": int(self.masses_msun.size),
            "subhalo_mass_total_msun": float(self.masses_msun.sum()),
            "vortex_angle": float(self.vortex_angle),
            "vortex_half_length_arcsec": float(self.vortex_half_length_arcsec),
            "seed": int(self.image_seed),
            "theta_eff": self.theta_eff, "slope": self.slope, "theta_main": self.theta_main,
            "lens_e1": self.lens_e1, "lens_e2": self.lens_e2,
            "shear_gamma1": self.shear_gamma1, "shear_gamma2": self.shear_gamma2,
            "source_magnitude": self.source["magnitude"], "n_clumps": len(self.clumps),
            "mass_fraction": self.mass_fraction, "substructure_mass_msun": self.substructure_mass_msun,
            "n_subhalos_total": self.n_subhalos_total, "vortex_x": self.vortex_x, "vortex_y": self.vortex_y,
        }


class _Model:
    """lenstronomy objects built once per generator and process."""

    def __init__(self, config: dict):
        from lenstronomy.SimulationAPI.sim_api import SimAPI

        from .deflection import PointMassEnsemble

        self.n_sources = 1 + config["source"]["max_clumps"]
        self._numerics = dict(config["numerics"])
        self._kwargs_model = {
            "lens_model_list": ["EPL_NUMBA", "SHEAR", "TABULATED_DEFLECTIONS"],
            "lens_profile_kwargs_list": [{}, {}, {"custom_class": PointMassEnsemble()}],
            "source_light_model_list": ["SERSIC_ELLIPSE"] * self.n_sources,
        }
        self.sim = SimAPI(config["num_pix"], dict(config["instrument"]["band"]), self._kwargs_model)
        self.background_noise = float(self.sim.background_noise)
        self.shape = (config["num_pix"], config["num_pix"])
        check_model_numbers(None, None, self.background_noise)
        self._band = dict(config["instrument"]["band"])
        self._image_models = {}

    def image_model_for(self, kwargs_source: list) -> object:
        """An ``ImageModel`` with exactly as many Sersic components as the image has: an absent
        clump would cost a full supersampled evaluation to add zeros (~7 % of an image each)."""
        from lenstronomy.SimulationAPI.sim_api import SimAPI

        count = len(kwargs_source)
        if count not in self._image_models:
            kwargs_model = {**self._kwargs_model, "source_light_model_list": ["SERSIC_ELLIPSE"] * count}
            sim = SimAPI(self.shape[0], dict(self._band), kwargs_model)
            self._image_models[count] = sim.image_model_class(dict(self._numerics))
        return self._image_models[count]


_LENS_NUISANCES = ("theta_main", "slope", "lens_e1", "lens_e2", "shear_gamma1", "shear_gamma2", "lens_x", "lens_y")
_CLUMP_NUISANCES = ("magnitude", "R_sersic", "center_x", "center_y")


class MatchedLensingSimulator(LensingSimulator):
    """Generator of C-euclid or C-hst: ``simulate(split, index, seed)`` -> (image, metadata).

    Seeds, splits, classes, noise and ``simulate`` are A/B's (``LensingSimulator``); the draws,
    the lens and source kwargs and the lenstronomy model are C's."""

    version = GENERATOR_VERSION
    generator_name = GENERATOR_NAME
    check_config = staticmethod(check_matched_config)
    model_class = _Model

    def __init__(self, name: str, config: dict, description: str = ""):
        super().__init__(name, config, description)
        # theta_E^2 of one solar mass: masses and Einstein radii squared are interchangeable
        self._theta2_per_msun = float(physics.einstein_radius_arcsec(1.0, config["cosmology"])) ** 2

    def nominal_einstein_radius(self) -> float:
        return float(math.sqrt(self.config["main_lens"]["effective_mass_msun"] * self._theta2_per_msun))

    def derived(self) -> dict:
        pixel = self.config["instrument"]["band"]["pixel_scale"]
        low, high = self.config["main_lens"]["einstein_radius_factor"]
        theta = self.nominal_einstein_radius()
        sub = self.config["substructure"]
        return {
            "einstein_radius_arcsec": theta,
            "einstein_radius_range_arcsec": [theta * low, theta * high],
            "einstein_radius_pixels": theta / pixel,
            "field_of_view_arcsec": self.config["num_pix"] * pixel,
            "mean_subhalo_mass_msun": power_law_mass_mean(sub["mass_min_msun"], sub["mass_max_msun"],
                                                          sub["mass_function_slope"]),
        }

    def _draw_lens(self, rng) -> dict:
        main = self.config["main_lens"]
        low, high = main["einstein_radius_factor"]
        e_max, width = main["ellipticity_max"], main["center_half_width"]
        return {
            "theta_eff": self.nominal_einstein_radius() * rng.uniform(low, high),
            "slope": float(np.clip(rng.normal(main["slope_mean"], main["slope_sd"]), *main["slope_range"])),
            "lens_e1": float(np.clip(rng.normal(0, main["ellipticity_sd"]), -e_max, e_max)),
            "lens_e2": float(np.clip(rng.normal(0, main["ellipticity_sd"]), -e_max, e_max)),
            "shear_gamma1": float(rng.normal(0, main["shear_sd"])),
            "shear_gamma2": float(rng.normal(0, main["shear_sd"])),
            "lens_x": float(rng.uniform(-width, width)),
            "lens_y": float(rng.uniform(-width, width)),
        }

    def _draw_source(self, rng) -> tuple[dict, list]:
        src = self.config["source"]
        e, w = src["ellipticity_half_width"], src["center_half_width"]
        source = {
            "magnitude": float(rng.uniform(*src["magnitude_range"])),
            "R_sersic": float(rng.uniform(*src["R_sersic_range"])),
            "n_sersic": float(rng.uniform(*src["n_sersic_range"])),
            "e1": float(rng.uniform(-e, e)), "e2": float(rng.uniform(-e, e)),
            "center_x": float(rng.uniform(-w, w)), "center_y": float(rng.uniform(-w, w)),
        }
        clumps = []
        for _ in range(int(rng.integers(0, src["max_clumps"] + 1))):
            radius = src["clump_offset_max"] * math.sqrt(rng.uniform())  # uniform over the disc
            angle = rng.uniform(0, 2 * math.pi)
            clumps.append({
                "magnitude": source["magnitude"] + float(rng.uniform(*src["clump_magnitude_offset_range"])),
                "R_sersic": float(rng.uniform(*src["clump_R_range"])),
                "center_x": source["center_x"] + radius * math.cos(angle),
                "center_y": source["center_y"] + radius * math.sin(angle),
            })
        return source, clumps

    def region_mass_msun(self, theta_eff: float, slope: float) -> float:
        """Projected mass inside the substructure region of the power law with effective radius theta_eff."""
        radius = self.config["substructure"]["region_radius_arcsec"]
        return theta_eff ** (slope - 1) * radius ** (3 - slope) / self._theta2_per_msun

    def draw_from_seed(self, image_seed: int, class_name: str) -> MatchedRealization:
        if class_name not in self.class_names:
            raise UnknownNameError("class", class_name, self.class_names)
        lens = self._draw_lens(_stream(image_seed, _LENS_STREAM))
        source, clumps = self._draw_source(_stream(image_seed, _SOURCE_STREAM))
        sub = self.config["substructure"]
        fraction = float(_stream(image_seed, _FRACTION_STREAM).uniform(*sub["mass_fraction_range"]))
        realization = MatchedRealization(class_name, int(image_seed), theta_main=lens["theta_eff"], source=source,
                                         clumps=clumps, mass_fraction=fraction, **lens)
        rng = _stream(image_seed, _SUBSTRUCTURE_STREAM)
        budget = fraction * self.region_mass_msun(lens["theta_eff"], lens["slope"])
        region = sub["region_radius_arcsec"]
        if class_name == "cdm":
            mean = power_law_mass_mean(sub["mass_min_msun"], sub["mass_max_msun"], sub["mass_function_slope"])
            count = int(rng.poisson(budget / mean))
            masses = physics.draw_power_law_masses(rng, count, sub["mass_min_msun"], sub["mass_max_msun"],
                                                   sub["mass_function_slope"])
            radius = region * np.sqrt(rng.uniform(0, 1, count))
            angle = rng.uniform(0, 2 * math.pi, count)
            shown = masses >= sub["render_mass_min_msun"]
            realization.n_subhalos_total = count
            realization.substructure_mass_msun = float(masses.sum())
            realization.masses_msun = masses[shown]
            realization.positions_x = lens["lens_x"] + (radius * np.cos(angle))[shown]
            realization.positions_y = lens["lens_y"] + (radius * np.sin(angle))[shown]
        elif class_name == "axion":
            axion = self.config["axion"]
            log10_mass = rng.uniform(axion["log10_mass_min_ev"], axion["log10_mass_max_ev"])
            angle = rng.uniform(0.0, 2 * math.pi)
            centre_radius, centre_angle = region * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            half_length = float(physics.vortex_half_length_arcsec(10.0**log10_mass, axion["half_length_coefficient"]))
            count = axion["n_elements"]
            along_x, along_y = physics.vortex_positions(half_length, angle, count)
            realization.vortex_x = lens["lens_x"] + centre_radius * math.cos(centre_angle)
            realization.vortex_y = lens["lens_y"] + centre_radius * math.sin(centre_angle)
            realization.masses_msun = np.full(count, budget / count)
            realization.positions_x = realization.vortex_x + along_x
            realization.positions_y = realization.vortex_y + along_y
            realization.substructure_mass_msun = float(budget)
            realization.n_subhalos_total = count
            realization.axion_mass_ev = 10.0**log10_mass
            realization.log10_axion_mass = float(log10_mass)
            realization.vortex_angle = float(angle)
            realization.vortex_half_length_arcsec = half_length
        # match: the power law gives up the mass that rendered substructure puts inside theta_eff
        inside = np.hypot(realization.positions_x - lens["lens_x"], realization.positions_y - lens["lens_y"]) \
            < lens["theta_eff"]
        enclosed = float(realization.masses_msun[inside].sum()) * self._theta2_per_msun
        realization.theta_main = main_lens_einstein_radius(lens["theta_eff"], lens["slope"], enclosed)
        return realization

    def nuisances(self, r: MatchedRealization) -> dict[str, float]:
        """Every lens and source draw of ``r`` by name (``source.KEY``, ``clumpI.KEY`` for the source's
        parts); the lens's Einstein radius is that of its power law (``theta_main``)."""
        values = {name: float(getattr(r, name)) for name in _LENS_NUISANCES}
        values.update({f"source.{key}": float(value) for key, value in r.source.items()})
        for i, clump in enumerate(r.clumps):
            values.update({f"clump{i}.{key}": float(clump[key]) for key in _CLUMP_NUISANCES})
        return values

    def with_nuisances(self, r: MatchedRealization, values: dict) -> MatchedRealization:
        lens = {name: value for name, value in values.items() if "." not in name}
        source, clumps = dict(r.source), [dict(clump) for clump in r.clumps]
        for name, value in values.items():
            if "." in name:
                part, key = name.split(".")
                (source if part == "source" else clumps[int(part[len("clump"):])])[key] = value
        return replace(r, source=source, clumps=clumps, **lens)

    # -- rendering -------------------------------------------------------------
    def kwargs_lens(self, r: MatchedRealization) -> list[dict]:
        return [
            {"theta_E": r.theta_main, "gamma": r.slope, "e1": r.lens_e1, "e2": r.lens_e2,
             "center_x": r.lens_x, "center_y": r.lens_y},
            {"gamma1": r.shear_gamma1, "gamma2": r.shear_gamma2, "ra_0": r.lens_x, "dec_0": r.lens_y},
            {"einstein_radii": physics.einstein_radius_arcsec(r.masses_msun, self.config["cosmology"]),
             "positions_x": r.positions_x, "positions_y": r.positions_y},
        ]

    def kwargs_source(self, r: MatchedRealization) -> list[dict]:
        model, src = self.model, self.config["source"]
        lights = [r.source] + [{**clump, "n_sersic": src["clump_n_sersic"], "e1": 0.0, "e2": 0.0} for clump in r.clumps]
        _, kwargs, _ = model.sim.magnitude2amplitude(kwargs_source_mag=lights)
        return list(kwargs)  # the source, then its clumps; render picks the model of that length

    def effective_einstein_radius(self, realization: MatchedRealization, *, points: int = 720) -> float:
        """The radius about the lens centre inside which the mean convergence of the whole lens
        (power law, shear and point masses) is one, measured from its deflections (Gauss's law:
        the mean convergence inside R is the outward deflection averaged over the circle, over R)."""
        from lenstronomy.LensModel.lens_model import LensModel

        from .deflection import PointMassEnsemble

        lens_model = LensModel(["EPL_NUMBA", "SHEAR", "TABULATED_DEFLECTIONS"],
                               profile_kwargs_list=[{}, {}, {"custom_class": PointMassEnsemble()}])
        kwargs = self.kwargs_lens(realization)
        angles = (np.arange(points) + 0.5) * (2 * math.pi / points)

        def mean_convergence(radius):
            x = realization.lens_x + radius * np.cos(angles)
            y = realization.lens_y + radius * np.sin(angles)
            alpha_x, alpha_y = lens_model.alpha(x, y, kwargs)
            return float(np.mean(alpha_x * np.cos(angles) + alpha_y * np.sin(angles))) / radius

        low, high = 0.3 * realization.theta_eff, 3.0 * realization.theta_eff
        for _ in range(40):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if mean_convergence(middle) > 1 else (low, middle)
        return 0.5 * (low + high)


def make_factory(name: str):
    def factory(**overrides):
        return MatchedLensingSimulator(name, merge_config(default_config(name), overrides), DESCRIPTIONS[name])

    factory.__name__ = f"dataset_{name.replace('-', '_')}"
    factory.__doc__ = f"Generator of dataset {name}: {DESCRIPTIONS[name]}. Keyword overrides merge into its config."
    return factory


@hookimpl
def register_datasets(register):
    for name in DESCRIPTIONS:
        register(name, make_factory(name), description=DESCRIPTIONS[name])
