"""Datasets A (Euclid VIS-like) and B (HST WFC3/F160W-like): lenstronomy simulations
of a galaxy-galaxy strong lens with no substructure, CDM subhalos, or an axion vortex.

This module is the ``lensing_datasets`` plugin. It registers two generators;
each turns ``(dataset, split, index, seed)`` into one 64x64 image and its
metadata, always the same bits for the same four values. Every number that
shapes the images is in the generator's ``config`` (and so in every dataset
manifest), instruments included, so a dataset means the same thing whatever
lenstronomy release is installed. ``docs/datasets.md`` lists each choice and
each difference from the seed's code.
"""

# Parameter draws and rendering stay in one module: they change together, or stored datasets and
# streams would silently disagree. The config's defaults and keys are in lensing_config.py.
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import LenszooError, UnknownNameError
from ..hookspecs import hookimpl
from ..tasks import CLASS_NAMES
from . import physics
from .lensing_config import (  # noqa: F401 - default_config and the keys: the generator's own
    CONFIG_KEYS,
    CONFIG_RULES,
    DESCRIPTIONS,
    check_lensing_config,
    default_config,
    merge_config,
)

GENERATOR_NAME = "lenszoo.lensing"
# Bump when the same config and seed would give different images.
GENERATOR_VERSION = 1
# Each split is its own seed space (its index here is part of every image seed), so appending
# a split never changes an earlier one's images. `holdout` is read only to report (docs/training.md).
SPLITS = ("train", "val", "test", "holdout")

# Independent random streams per image, so that changing the class of an image
# (same seed) keeps its source position and its background noise.
_SOURCE_STREAM, _SUBSTRUCTURE_STREAM, _NOISE_STREAM = 0, 1, 2

def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    return split


def _check_index(index, what="index") -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise LenszooError(f"{what} must be an integer >= 0; got {index!r}")
    return int(index)


def _stream(image_seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(image_seed, spawn_key=(stream,))))


@dataclass
class Realization:
    """Every random draw behind one image: rendering it involves no more randomness
    except the noise, which comes from ``image_seed`` too."""

    class_name: str
    image_seed: int
    source_x: float
    source_y: float
    # Point masses (CDM subhalos or vortex elements), arcsec and solar masses.
    masses_msun: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    axion_mass_ev: float = math.nan
    log10_axion_mass: float = math.nan
    vortex_angle: float = math.nan
    vortex_half_length_arcsec: float = math.nan

    def metadata(self) -> dict:
        return {
            "class_name": self.class_name,
            "label": CLASS_NAMES.index(self.class_name),
            "axion_mass_ev": float(self.axion_mass_ev),
            "log10_axion_mass": float(self.log10_axion_mass),
            "source_x": float(self.source_x),
            "source_y": float(self.source_y),
            "n_subhalos": int(self.masses_msun.size),
            "subhalo_mass_total_msun": float(self.masses_msun.sum()),
            "vortex_angle": float(self.vortex_angle),
            "vortex_half_length_arcsec": float(self.vortex_half_length_arcsec),
            "seed": int(self.image_seed),
        }


def check_model_numbers(theta_e: float | None, source_amplitude: float | None, background_noise: float):
    """Numbers every image depends on, checked once when the lenstronomy objects are built: a NaN
    or zero here would make every image NaN or noise alone (the config's ranges should prevent it)."""
    for value, what in ((theta_e, "the main lens's Einstein radius (cosmology.*, main_lens.*)"),
                        (source_amplitude, "the source's brightness (source.magnitude*, "
                                           "instrument.band.magnitude_zero_point)"),
                        (background_noise, "the background noise (instrument.band.exposure_time, num_exposures, "
                                           "sky_brightness, read_noise, ccd_gain)")):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise LenszooError(f"invalid dataset config: {what} comes out as {value!r}; change those keys")


class _Model:
    """lenstronomy objects built once per generator and process; images differ only in kwargs."""

    def __init__(self, config: dict):
        from lenstronomy.SimulationAPI.sim_api import SimAPI

        from .deflection import PointMassEnsemble

        main, source = config["main_lens"], config["source"]
        kwargs_model = {
            "lens_model_list": [main["profile"], "SHEAR", "TABULATED_DEFLECTIONS"],
            "lens_profile_kwargs_list": [{}, {}, {"custom_class": PointMassEnsemble()}],
            "source_light_model_list": [source["profile"]],
        }
        self.sim = SimAPI(config["num_pix"], dict(config["instrument"]["band"]), kwargs_model)
        self.image_model = self.sim.image_model_class(dict(config["numerics"]))
        self.background_noise = float(self.sim.background_noise)
        self.kwargs_main = {
            "theta_E": float(physics.einstein_radius_arcsec(main["mass_msun"], config["cosmology"])),
            "e1": main["e1"], "e2": main["e2"], "center_x": main["center_x"], "center_y": main["center_y"],
        }
        self.kwargs_shear = {"gamma1": main["shear_gamma1"], "gamma2": main["shear_gamma2"], "ra_0": 0.0, "dec_0": 0.0}
        # The amplitude for the magnitude depends on the profile's shape only, not its centre: compute it once.
        source_mag = {k: source[k] for k in ("magnitude", "R_sersic", "n_sersic", "e1", "e2")}
        _, (kwargs_source,), _ = self.sim.magnitude2amplitude(
            kwargs_source_mag=[{**source_mag, "center_x": 0.0, "center_y": 0.0}]
        )
        self.kwargs_source = kwargs_source
        self.shape = (config["num_pix"], config["num_pix"])
        check_model_numbers(self.kwargs_main["theta_E"], kwargs_source["amp"], self.background_noise)

    def image_model_for(self, kwargs_source: list) -> object:
        """The lenstronomy ``ImageModel`` that renders this source kwargs list."""
        return self.image_model


class LensingSimulator:
    """Generator of one dataset: ``simulate(split, index, seed)`` -> (image, metadata).

    Image ``index`` of ``split`` under base ``seed`` has class
    ``class_names[index % 3]`` unless ``class_name`` says otherwise, and is a
    pure function of (dataset name, split, index, seed, class, noise).
    """

    version = GENERATOR_VERSION
    generator_name = GENERATOR_NAME
    class_names = CLASS_NAMES
    splits = SPLITS

    # what a subclass with another lens model changes (lenszoo.data.matched)
    check_config = staticmethod(check_lensing_config)
    model_class = _Model

    def __init__(self, name: str, config: dict, description: str = ""):
        self.check_config(config)
        self.name = name
        self.config = copy.deepcopy(config)
        self.description = description
        self._name_key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        self._model: _Model | None = None

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}: {self.config['instrument']['description']})"

    # Built lenstronomy objects stay in their process; a pickled generator rebuilds them.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.config["num_pix"], self.config["num_pix"])

    @property
    def model(self) -> _Model:
        if self._model is None:
            self._model = self.model_class(self.config)
        return self._model

    @property
    def background_noise(self) -> float:
        """Sigma of the background noise (sky and read noise) in image units: the unit in which
        nuisances (a sky residual, extra noise) are drawn and input contracts are stated."""
        return self.model.background_noise

    def warm_up(self):
        """Import lenstronomy, build its objects and compile the deflection kernel (seconds, once
        per process), so that timings and forked workers start warm."""
        self.render(self.draw_from_seed(0, "cdm"), noise=True)

    def pixel_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in arcsec of every pixel centre, arrays shaped like an image (lens at 0, 0)."""
        x, y = self.model.sim.data_class.pixel_coordinates
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def derived(self) -> dict:
        """Numbers that follow from the config, for manifests and docs."""
        cosmology = self.config["cosmology"]
        axion = self.config["axion"]
        pixel = self.config["instrument"]["band"]["pixel_scale"]
        theta_main = float(physics.einstein_radius_arcsec(self.config["main_lens"]["mass_msun"], cosmology))
        return {
            "einstein_radius_arcsec": theta_main,
            "einstein_radius_pixels": theta_main / pixel,
            "field_of_view_arcsec": self.config["num_pix"] * pixel,
            "vortex_element_einstein_radius_arcsec": float(physics.einstein_radius_arcsec(
                axion["vortex_mass_msun"] / axion["n_elements"], cosmology)),
            "max_subhalo_einstein_radius_arcsec": float(physics.einstein_radius_arcsec(
                self.config["cdm"]["mass_max_msun"], cosmology)),
        }

    # -- randomness ------------------------------------------------------------
    def image_seed(self, split: str, index: int, seed: int = 0) -> int:
        """The 64-bit seed of image ``index`` of ``split``: all of that image's randomness."""
        check_split(split)
        index = _check_index(index)
        seed = _check_index(seed, "seed")
        sequence = np.random.SeedSequence(seed, spawn_key=(self._name_key, SPLITS.index(split), index))
        return int(sequence.generate_state(1, np.uint64)[0])

    def class_of(self, index: int) -> str:
        return self.class_names[_check_index(index) % len(self.class_names)]

    def draw(self, split: str, index: int, seed: int = 0, *, class_name: str | None = None) -> Realization:
        """The random parameters of image ``index`` (without rendering it)."""
        image_seed = self.image_seed(split, index, seed)
        return self.draw_from_seed(image_seed, class_name or self.class_of(index))

    def draw_from_seed(self, image_seed: int, class_name: str) -> Realization:
        if class_name not in self.class_names:
            raise UnknownNameError("class", class_name, self.class_names)
        source = self.config["source"]
        half_width = source["center_half_width"]
        source_x, source_y = _stream(image_seed, _SOURCE_STREAM).uniform(-half_width, half_width, 2)
        realization = Realization(class_name, int(image_seed), float(source_x), float(source_y))
        if class_name == "cdm":
            cdm = self.config["cdm"]
            rng = _stream(image_seed, _SUBSTRUCTURE_STREAM)
            count = cdm["n_subhalos"]
            masses = physics.draw_power_law_masses(
                rng, count, cdm["mass_min_msun"], cdm["mass_max_msun"], cdm["mass_function_slope"])
            radius = rng.uniform(cdm["radius_min"], cdm["radius_max"], count)
            angle = rng.uniform(0.0, 2 * math.pi, count)
            realization.masses_msun = masses
            realization.positions_x = radius * np.cos(angle)
            realization.positions_y = radius * np.sin(angle)
        elif class_name == "axion":
            axion = self.config["axion"]
            rng = _stream(image_seed, _SUBSTRUCTURE_STREAM)
            log10_mass = rng.uniform(axion["log10_mass_min_ev"], axion["log10_mass_max_ev"])
            angle = rng.uniform(0.0, 2 * math.pi)
            axion_mass = 10.0**log10_mass
            half_length = float(physics.vortex_half_length_arcsec(axion_mass, axion["half_length_coefficient"]))
            count = axion["n_elements"]
            realization.masses_msun = np.full(count, axion["vortex_mass_msun"] / count)
            realization.positions_x, realization.positions_y = physics.vortex_positions(half_length, angle, count)
            realization.axion_mass_ev = axion_mass
            realization.log10_axion_mass = float(log10_mass)
            realization.vortex_angle = angle
            realization.vortex_half_length_arcsec = half_length
        return realization

    def nuisances(self, realization: Realization) -> dict[str, float]:
        """The draws of ``realization`` that vary from image to image whatever its class, by name:
        what may absorb the substructure's imprint (``lenszoo.data.signal``). On A and B only the
        source moves; the lens and the source's shape are fixed."""
        return {"source_x": realization.source_x, "source_y": realization.source_y}

    def with_nuisances(self, realization: Realization, values: dict) -> Realization:
        """A copy of ``realization`` with some of its ``nuisances`` changed."""
        return replace(realization, **values)

    # -- rendering -------------------------------------------------------------
    def kwargs_lens(self, realization: Realization) -> list[dict]:
        """lenstronomy lens kwargs of ``realization`` (main SIE, shear, point masses)."""
        model = self.model
        return [
            model.kwargs_main,
            model.kwargs_shear,
            {
                "einstein_radii": physics.einstein_radius_arcsec(realization.masses_msun, self.config["cosmology"]),
                "positions_x": realization.positions_x,
                "positions_y": realization.positions_y,
            },
        ]

    def kwargs_source(self, realization: Realization) -> list[dict]:
        """lenstronomy source kwargs of ``realization`` (the fixed Sersic, moved to its centre)."""
        return [{**self.model.kwargs_source, "center_x": realization.source_x, "center_y": realization.source_y}]

    def render(self, realization: Realization, *, noise: bool = True) -> np.ndarray:
        """The float32 image (counts per second per pixel) of ``realization``."""
        model = self.model
        # No lens light and no point sources: skip their (empty) convolutions.
        kwargs_source, kwargs_lens = self.kwargs_source(realization), self.kwargs_lens(realization)
        problem = self.parameter_problem(kwargs_lens, kwargs_source)
        if problem:
            raise LenszooError(f"the image of seed {realization.image_seed} cannot be made: {problem}")
        image = model.image_model_for(kwargs_source).image(kwargs_lens, kwargs_source,
                                                           lens_light_add=False, point_source_add=False)
        if noise:
            # lenstronomy's noise model (SingleBand.noise_for_model: background = sky + read
            # noise, then Poisson in its Gaussian limit), drawn from this image's own stream.
            rng = _stream(realization.image_seed, _NOISE_STREAM)
            background = rng.standard_normal(model.shape) * model.background_noise
            poisson = rng.standard_normal(model.shape) * model.sim.flux_noise(image)
            image = image + background + poisson
        return image.astype(np.float32)

    def simulate(self, split: str, index: int, seed: int = 0, *, class_name: str | None = None,
                 noise: bool = True) -> tuple[np.ndarray, dict]:
        """Image ``index`` of ``split`` as a float32 (num_pix, num_pix) array, and its metadata."""
        realization = self.draw(split, index, seed, class_name=class_name)
        meta = realization.metadata()
        meta.update(split=split, index=int(index))
        return self.render(realization, noise=noise), meta

    def parameter_problem(self, kwargs_lens: list[dict], kwargs_source: list[dict]) -> str | None:
        """What in an image's lens and source parameters is NaN or infinite, and the config keys
        behind it; None when all are finite. (lenstronomy would render NaN deflections as a finite
        image without the lens, or NaN pixels.)"""
        def finite(*kwargs_list):
            return all(np.isfinite(np.asarray(value, dtype=float)).all() for kwargs in kwargs_list
                       for value in kwargs.values() if not isinstance(value, str))

        main, shear, points = kwargs_lens
        if not finite(main):
            return "the main lens is not finite: check cosmology.* and main_lens.*"
        if not finite(shear):
            return "the shear is not finite: check main_lens.shear_*"
        if not finite({"einstein_radii": points["einstein_radii"]}):
            return ("the substructure's Einstein radii are not finite: check cosmology.* and the cdm, axion or "
                    "substructure masses")
        if not finite(points):
            return ("the substructure's positions are not finite: check cdm.radius_*, axion.half_length_coefficient "
                    "and axion.log10_mass_*, or substructure.region_radius_arcsec")
        if not finite(*kwargs_source):
            return ("the source is not finite: check source.* and instrument.band.magnitude_zero_point")
        return None

    def explain_nonfinite(self, split: str, index: int, seed: int = 0, *, noise: bool = True) -> str:
        """Which part of the config most likely gave image ``index`` NaN or infinite pixels (its
        parameters were finite, or ``render`` would have said so): the error that refuses to store
        the image names it."""
        realization = self.draw(split, index, seed)
        if not np.isfinite(self.render(realization, noise=False)).all():
            return ("the noise-free image is not finite: check instrument.band.pixel_scale, seeing, psf_type and "
                    "numerics.supersampling_factor")
        if noise and not np.isfinite(self.model.background_noise):
            return ("the background noise is not finite: check instrument.band.exposure_time, num_exposures, "
                    "sky_brightness, read_noise and ccd_gain")
        return "the noise is not finite: check instrument.band.exposure_time, num_exposures and ccd_gain"

    def simulate_from_seed(self, image_seed: int, class_name: str, *, noise: bool = True):
        """Re-create an image from the ``seed`` and ``class_name`` in its metadata."""
        realization = self.draw_from_seed(_check_index(image_seed, "image seed"), class_name)
        return self.render(realization, noise=noise), realization.metadata()


def variant(base: str, name: str, *, description: str = "", **overrides):
    """A factory for a named variant of dataset ``base`` (``"A"`` or ``"B"``), to register from a plugin:

        @lenszoo.hookimpl
        def register_datasets(register):
            register("A-heavy", lenszoo.data.variant("A", "A-heavy", cdm={"n_subhalos": 50}),
                     description="A with 50 subhalos")

    ``overrides`` merge into ``base``'s config (``lenszoo info A`` and the manifests show its
    keys). The variant's images depend on its name (as A's differ from B's), so two variants never
    share noise or sources; the factory's own keyword overrides merge on top.
    """
    from ..names import check_name

    if base not in DESCRIPTIONS:
        raise LenszooError(f"unknown base dataset {base!r} for a variant; use one of: {', '.join(DESCRIPTIONS)}")
    check_name("dataset", name)
    config = merge_config(default_config(base), overrides)
    check_lensing_config(config)
    text = description or f"variant of {base}: {DESCRIPTIONS[base]}"

    def factory(**more):
        return LensingSimulator(name, merge_config(config, more), text)

    factory.__name__ = f"dataset_{name.replace('-', '_')}"
    factory.__doc__ = f"Generator of dataset {name} ({text}). Keyword overrides merge into its config."
    return factory


def make_factory(name: str):
    def factory(**overrides):
        return LensingSimulator(name, merge_config(default_config(name), overrides), DESCRIPTIONS[name])

    factory.__name__ = f"dataset_{name}"
    factory.__doc__ = f"Generator of dataset {name}: {DESCRIPTIONS[name]}. Keyword overrides merge into its config."
    return factory


@hookimpl
def register_datasets(register):
    for name in ("A", "B"):
        register(name, make_factory(name), description=DESCRIPTIONS[name])
