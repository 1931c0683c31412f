"""`lenszoo signal`: the substructure's imprint in units of the noise, and what nuisances cannot mimic."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main as lenszoo_cli
from lenszoo.data.signal import nuisance_derivatives, pixel_sigma, refit_residual, substructure_signal, unexplained


def render(generator, realization):
    return generator.render(realization, noise=False).astype(np.float64).ravel()


@pytest.fixture(scope="module")
def c_hst():
    return lenszoo.get_dataset("C-hst")


def test_a_change_of_the_smooth_lens_is_absorbed_by_the_nuisances(c_hst):
    smooth_realization = c_hst.draw("test", 0, class_name="no_sub")
    smooth = render(c_hst, smooth_realization)
    sigma = pixel_sigma(c_hst, smooth)
    values = c_hst.nuisances(smooth_realization)
    moved = c_hst.with_nuisances(smooth_realization, {"theta_main": values["theta_main"] + 0.01,
                                                      "lens_e1": values["lens_e1"] + 0.01,
                                                      "source.center_x": values["source.center_x"] + 0.01})
    imprint = (render(c_hst, moved) - smooth) / sigma
    derivatives = nuisance_derivatives(c_hst, smooth_realization, smooth) / sigma[:, None]
    known = np.linalg.norm(imprint)
    assert known > 100  # a plain change of the image...
    # ...that a smooth lens reproduces: the refit absorbs it (a linear fit alone leaves ~18 %)
    assert refit_residual(c_hst, smooth_realization, derivatives, render(c_hst, moved) / sigma, sigma) < 0.01 * known
    assert np.linalg.norm(unexplained(imprint, derivatives)) > 0.05 * known


def test_nuisances_round_trip_and_leave_the_class_alone(c_hst):
    cdm = c_hst.draw("test", 1, class_name="cdm")
    values = c_hst.nuisances(cdm)
    assert {"theta_main", "slope", "shear_gamma1", "source.R_sersic"} <= set(values)
    assert c_hst.nuisances(c_hst.with_nuisances(cdm, values)) == values
    moved = c_hst.with_nuisances(cdm, {"source.magnitude": values["source.magnitude"] + 1})
    assert moved.source["magnitude"] == values["source.magnitude"] + 1 and cdm.source["magnitude"] == values["source.magnitude"]
    assert np.array_equal(moved.masses_msun, cdm.masses_msun)
    assert lenszoo.get_dataset("A").nuisances(lenszoo.get_dataset("A").draw("test", 0)).keys() == {"source_x", "source_y"}


def test_more_substructure_mass_leaves_more_signal():
    light = lenszoo.get_dataset("C-hst", substructure={"mass_fraction_range": [0.002, 0.0021]})
    heavy = lenszoo.get_dataset("C-hst", substructure={"mass_fraction_range": [0.02, 0.0201]})
    weak, strong = (substructure_signal(g, 1)["axion"] for g in (light, heavy))
    # the same lens, source and vortex, ten times its mass
    assert strong["known"][0] > 3 * weak["known"][0]
    assert strong["marginal"][0] > 3 * weak["marginal"][0]
    assert 0 < weak["marginal"][0] <= weak["known"][0]


def test_the_command_prints_the_table_writes_json_and_never_replaces_a_users_file(tmp_path):
    runner = CliRunner()
    out = tmp_path / "A-signal.json"
    args = ["signal", "--dataset", "A", "--n", "3", "--json", str(out)]
    result = runner.invoke(lenszoo_cli, args)
    assert result.exit_code == 0, result.output
    assert "marginal" in result.output and "cdm" in result.output
    record = json.loads(out.read_text())
    assert record["format"] == "lenszoo-signal" and record["nuisances"] == ["source_x", "source_y"]
    assert len(record["images"]["cdm"]["marginal"]) == 3
    assert all(m > 1 for m in record["images"]["cdm"]["marginal"])  # A's subhalos are plain to see
    # its own file is rewritten; the same figures whatever the worker count
    again = runner.invoke(lenszoo_cli, args + ["--workers", "2"])
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["images"] == record["images"]
    mine = tmp_path / "notes.json"
    mine.write_text("{}")
    refused = runner.invoke(lenszoo_cli, ["signal", "--dataset", "A", "--n", "1", "--json", str(mine)])
    assert refused.exit_code == 1 and "never replaces" in refused.output and mine.read_text() == "{}"
    for bad, expected in ((["--n", "0"], ">= 1"), (["--split", "tran"], "did you mean")):
        result = runner.invoke(lenszoo_cli, ["signal", "--dataset", "A", *bad])
        assert result.exit_code != 0 and expected in result.output and "Traceback" not in result.output


def test_a_generator_without_nuisances_is_refused_in_one_line():
    from types import SimpleNamespace

    from lenszoo.errors import LenszooError

    plugin_generator = SimpleNamespace(name="mine", class_names=("no_sub", "cdm"), image_seed=None, render=None)
    with pytest.raises(LenszooError, match="lacks draw_from_seed, nuisances, with_nuisances, model"):
        substructure_signal(plugin_generator, 1)
