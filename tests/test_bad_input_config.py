"""Inputs that must be refused, not simulated (issue 27, item 9): every dataset config key has a
type, a range and an upper bound; no image with a NaN or infinite pixel is ever stored; an
architecture's arguments are bounded by the memory they imply."""

import math
from pathlib import Path

import numpy as np
import pytest

import lenszoo
from lenszoo.data import lensing, matched

from .probes import ProbePlugin, registered
from .test_bad_input import cli, one_line_error

REPO = Path(__file__).resolve().parents[1]

# (dataset, --set settings, the key the one-line error names)
BAD_SETTINGS = [
    # the cases of issue 27
    ("A", ["instrument.band.exposure_time=0"], "instrument.band.exposure_time"),
    ("A", ["cosmology.H0=-70"], "cosmology.H0"),
    ("A", ["main_lens.mass_msun=-1"], "main_lens.mass_msun"),
    ("A", ["source.magnitude=1e308"], "source.magnitude"),
    ("A", ['cosmology.H0="abc"'], "cosmology.H0"),
    ("A", ["instrument.band.pixel_scale=0"], "instrument.band.pixel_scale"),
    ("A", ['instrument.band.psf_type="PIXEL"'], "instrument.band.psf_type"),
    ("A", ["numerics.supersampling_factor=100000"], "numerics.supersampling_factor"),
    ("A", ["axion.n_elements=1000000000"], "axion.n_elements"),
    ("A", ["cdm.n_subhalos=1000000000"], "cdm.n_subhalos"),
    # one or more per section, and the other kinds of wrong value
    ("A", ["num_pix=100000"], "num_pix"),
    ("B", ["cosmology.Ob0=NaN"], "cosmology.Ob0"),
    ("B", ["cosmology.Om0=Infinity"], "cosmology.Om0"),
    ("B", ["cosmology.Ob0=0.2", "cosmology.Om0=0.1"], "cosmology.Ob0 <= cosmology.Om0"),
    ("A", ["main_lens.e1=5"], "main_lens.e1"),
    ("A", ["source.R_sersic=-1"], "source.R_sersic"),
    ("A", ["cdm.mass_max_msun=1e30"], "cdm.mass_max_msun"),
    ("A", ["cdm.radius_max=[1,2]"], "cdm.radius_max"),
    ("A", ["axion.log10_mass_max_ev=-10"], "axion.log10_mass_max_ev"),
    ("B", ["instrument.band.num_exposures=2.5"], "instrument.band.num_exposures"),
    ("B", ["instrument.band.read_noise=true"], "instrument.band.read_noise"),
    ("B", ["instrument.description=5"], "instrument.description"),
    ("A", ["num_pix=256", "numerics.supersampling_factor=10"], "num_pix × numerics.supersampling_factor"),
    ("C-hst", ["main_lens.einstein_radius_factor=[0,100]"], "main_lens.einstein_radius_factor"),
    ("C-hst", ["source.max_clumps=1000000"], "source.max_clumps"),
    ("C-hst", ["substructure.mass_min_msun=1"], "substructure.mass_min_msun"),
    ("C-hst", ["substructure.mass_min_msun=1000", "substructure.mass_fraction_range=[0.2,0.4]"], "subhalos"),
    ("C-euclid", ["axion.half_length_coefficient=-1"], "axion.half_length_coefficient"),
    ("C-euclid", ["instrument.band.exposure_time=-5"], "instrument.band.exposure_time"),
]


@pytest.mark.parametrize("dataset, settings, key", BAD_SETTINGS,
                         ids=[f"{d}:{'+'.join(s)}" for d, s, _ in BAD_SETTINGS])
def test_a_bad_set_is_one_line_naming_its_key_and_writes_no_dataset(tmp_path, dataset, settings, key):
    out = tmp_path / "data"
    sets = [arg for setting in settings for arg in ("--set", setting)]
    one_line_error(cli("simulate", "-d", dataset, "-s", "test", "-n", 1, "-o", out, "-q", *sets), key)
    assert not out.exists()


@pytest.mark.parametrize("overrides", [
    {"instrument": {"band": {"exposure_time": 0}}},
    {"cosmology": {"H0": -70}},
    {"source": {"magnitude": math.inf}},
])
def test_the_python_api_and_variants_refuse_the_same_configs(overrides):
    with pytest.raises(lenszoo.LenszooError, match="invalid dataset config"):
        lenszoo.get_dataset("A", **overrides)
    with pytest.raises(lenszoo.LenszooError, match="invalid dataset config"):
        lenszoo.data.variant("A", "A-bad", **overrides)


def test_every_config_key_is_declared_and_the_docs_table_is_made_from_the_declarations():
    from lenszoo.data import config_keys

    for module, names in ((lensing, ("A", "B")), (matched, ("C-euclid", "C-hst"))):
        declared = [key.name for key in module.CONFIG_KEYS]
        assert len(declared) == len(set(declared))
        for name in names:
            config = module.default_config(name)
            assert sorted(config_keys.leaves(config)) == sorted(declared)
            config_keys.check_config(config, module.CONFIG_KEYS, module.CONFIG_RULES)  # the defaults pass
        for key in module.CONFIG_KEYS:  # every numeric key is bounded above, and finitely
            if key.kind in ("int", "number", "pair"):
                assert math.isfinite(key.low) and math.isfinite(key.high)
    docs = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")
    from lenszoo.data import config_docs

    assert config_docs.docs_blocks(docs) == config_docs.docs_tables(), (
        "docs/datasets.md's tables of config keys differ from the code: run "
        "lenszoo.data.config_docs.rewrite_docs('docs/datasets.md')")


def test_an_image_with_non_finite_parameters_is_never_stored_and_the_error_names_its_index_and_key(
        tmp_path, monkeypatch):
    # the ranges would refuse these configs: without them, the checks of each image stop them
    monkeypatch.setattr(lensing.LensingSimulator, "check_config", staticmethod(lambda config: None))
    out = tmp_path / "data"
    one_line_error(cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", out, "-q",
                       "--set", "axion.vortex_mass_msun=-3e10"),
                   "image 2 of A/test", "Einstein radii are not finite", "axion")
    assert not list(out.glob("images-*.npy")) and not list(out.glob("shard-*.json"))
    # a config that makes every image NaN is refused before the folder is made
    one_line_error(cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", tmp_path / "zero", "-q",
                       "--set", "instrument.band.exposure_time=0"), "exposure_time")
    assert not (tmp_path / "zero").exists()


class NaNGenerator:
    """A plugin's generator whose image 2 has a NaN pixel."""

    name, class_names, config = "nan-maker", ("no_sub", "cdm", "axion"), {}

    def simulate(self, split, index, seed=0, *, class_name=None, noise=True):
        image = np.ones((64, 64), dtype=np.float32)
        if index == 2:
            image[3, 4] = np.nan
        return image, {"class_name": self.class_names[index % 3]}


def test_a_plugin_generator_that_makes_a_nan_image_gets_no_shard(tmp_path):
    from lenszoo.data import simulate_dataset

    with pytest.raises(lenszoo.LenszooError, match=r"image 2 of nan-maker/test .* 1 non-finite pixels") as info:
        simulate_dataset(NaNGenerator(), "test", 2, tmp_path / "data", progress=False)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "data").glob("images-*.npy"))


@pytest.mark.parametrize("arch, model_args, words", [
    ("radial_profile", {"hidden": 100_000_000}, "hidden"),      # the case of issue 27 (24 GB, OOM-killed)
    ("radial_profile", {"hidden": [8192] * 5}, "parameters"),   # each layer allowed, the whole too large
    ("radial_profile", {"profile_bins": 10**6}, "profile_bins"),
    ("radial_profile", {"azimuthal_orders": 10**5}, "azimuthal_orders"),
    ("hnet", {"widths": [1000, 1000, 1000, 1000]}, "parameters"),   # sized on the meta device
    ("hnet", {"kernel_size": 10**4}, "kernel_size"),
    ("etn", {"n_angles": 10**7}, "n_angles"),
    ("etn", {"base_widths": [16, 32, 64, 10**6]}, "base_widths"),
    ("c8_steerable", {"widths": [4, 8, 16, 100_000]}, "widths"),
    ("c8_steerable", {"head_width": 10**9}, "head_width"),
])
def test_architecture_arguments_are_bounded_by_the_memory_they_imply(arch, model_args, words):
    from lenszoo.registry import registry

    with pytest.raises(lenszoo.LenszooError, match=words) as info:
        registry.architecture(arch).build("classify", **model_args)
    assert "at most" in str(info.value) and "\n" not in str(info.value)  # refused, not failed while allocating


def test_train_refuses_a_model_too_large_for_memory_before_allocating_it(tmp_path):
    with registered(ProbePlugin("probe"), "probe-plugin"):
        result = cli("train", "--arch", "probe", "--model-arg", "width=100000000", "--stream", "--dataset", "A",
                     "--epochs", 1, "--epoch-size", 6, "--batch-size", 6, "--val-size", 3, "--quiet",
                     "--out", tmp_path / "run")
    one_line_error(result, "2,900,000,003 parameters", "at most 100,000,000")
    assert not (tmp_path / "run").exists()
