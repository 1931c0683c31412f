"""Physical sanity of datasets A and B: what a lensing image must look like."""

import math

import numpy as np
import pytest

import lenszoo
from lenszoo.data import physics
from lenszoo.data.deflection import point_mass_deflection

COSMOLOGY = {"H0": 70.0, "Om0": 0.3, "Ob0": 0.05, "z_lens": 0.5, "z_source": 1.0}


def test_einstein_radius_uses_angular_diameter_distances():
    # Proper angular-diameter distances give 1.66"; the seed's luminosity distances gave 1.28".
    assert physics.einstein_radius_arcsec(1e12, COSMOLOGY) == pytest.approx(1.6645, abs=1e-3)
    assert physics.einstein_radius_arcsec(1e10, COSMOLOGY) == pytest.approx(0.16645, abs=1e-4)
    assert physics.einstein_radius_arcsec(3e8, COSMOLOGY) == pytest.approx(0.02883, abs=1e-4)
    masses = np.array([1e6, 1e8, 1e10])
    radii = physics.einstein_radius_arcsec(masses, COSMOLOGY)
    np.testing.assert_allclose(radii / radii[0], np.sqrt(masses / masses[0]))


def test_subhalo_masses_follow_the_power_law():
    rng = np.random.default_rng(1)
    masses = physics.draw_power_law_masses(rng, 20000, 1e6, 1e10, -0.9)
    assert masses.min() >= 1e6 and masses.max() <= 1e10
    for m in (1e7, 1e8, 1e9):  # CDF of dN/dm ~ m^-0.9 is (m^0.1 - a^0.1) / (b^0.1 - a^0.1)
        expected = (m**0.1 - 1e6**0.1) / (1e10**0.1 - 1e6**0.1)
        assert np.mean(masses <= m) == pytest.approx(expected, abs=0.015)


def test_point_mass_deflection_matches_lenstronomy():
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(2)
    x, y = rng.uniform(-3, 3, (2, 500))
    radii = rng.uniform(0.005, 0.2, 25)
    px, py = rng.uniform(-2, 2, (2, 25))
    reference = LensModel(["POINT_MASS"] * 25).alpha(
        x, y, [{"theta_E": t, "center_x": a, "center_y": b} for t, a, b in zip(radii, px, py)])
    ours = point_mass_deflection(x, y, radii, px, py)
    np.testing.assert_allclose(ours[0], reference[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours[1], reference[1], rtol=1e-12, atol=1e-15)


def test_rendered_image_matches_lenstronomy_point_mass_profiles():
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    generator = lenszoo.get_dataset("A")
    model = generator.model
    realization = generator.draw("test", 1, class_name="cdm")
    kwargs_lens = generator.kwargs_lens(realization)
    points = kwargs_lens[2]
    listed = kwargs_lens[:2] + [{"theta_E": t, "center_x": x, "center_y": y} for t, x, y in
                                zip(points["einstein_radii"], points["positions_x"], points["positions_y"])]
    reference = ImageModel(model.sim.data_class, model.sim.psf_class,
                           lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * 25),
                           source_model_class=model.sim.source_model_class,
                           kwargs_numerics=generator.config["numerics"])
    source = [{**model.kwargs_source, "center_x": realization.source_x, "center_y": realization.source_y}]
    expected = reference.image(listed, source)
    ours = generator.render(realization, noise=False)
    np.testing.assert_allclose(ours, expected.astype(np.float32), rtol=1e-6, atol=1e-6 * expected.max())


@pytest.mark.parametrize("name", ["A", "B"])
def test_images_are_finite_with_positive_flux(name):
    generator = lenszoo.get_dataset(name)
    for index in range(3):
        for noise in (True, False):
            image, meta = generator.simulate("train", index, noise=noise)
            assert image.shape == (64, 64) and image.dtype == np.float32
            assert np.isfinite(image).all() and image.sum() > 0
            assert meta["class_name"] == lenszoo.CLASS_NAMES[index]
            if not noise:
                assert image.min() >= 0
                # A magnitude-20 source, magnified by the strong lens (a ring: several times).
                band = generator.config["instrument"]["band"]
                source_counts = 10 ** (0.4 * (band["magnitude_zero_point"] - 20.0))
                assert 3 < image.sum() / source_counts < 100


@pytest.mark.parametrize("name", ["A", "B"])
def test_arc_sits_at_the_einstein_radius(name):
    generator = lenszoo.get_dataset(name)
    x, y = generator.pixel_coordinates()
    radius = np.hypot(x, y)
    pixel = generator.config["instrument"]["band"]["pixel_scale"]
    expected = generator.derived()["einstein_radius_pixels"]  # 16.5 px for A, 20.8 px for B
    for index in range(0, 15, 3):
        image, _ = generator.simulate("val", index, noise=False)
        bright = image > 0.2 * image.max()
        arc_radius = (radius[bright] * image[bright]).sum() / image[bright].sum() / pixel
        assert abs(arc_radius - expected) < 2.0, (index, arc_radius, expected)


@pytest.mark.parametrize("name", ["A", "B"])
def test_no_sub_and_cdm_differ_only_where_subhalos_deflect_light(name):
    generator = lenszoo.get_dataset(name)
    x, y = generator.pixel_coordinates()
    pixel = generator.config["instrument"]["band"]["pixel_scale"]
    for index in range(4):
        smooth, smooth_meta = generator.simulate("train", index, class_name="no_sub", noise=False)
        lumpy, lumpy_meta = generator.simulate("train", index, class_name="cdm", noise=False)
        assert (smooth_meta["source_x"], smooth_meta["source_y"]) == (lumpy_meta["source_x"], lumpy_meta["source_y"])
        assert lumpy_meta["n_subhalos"] == 25 and smooth_meta["n_subhalos"] == 0
        realization = generator.draw("train", index, class_name="cdm")
        radii = physics.einstein_radius_arcsec(realization.masses_msun, generator.config["cosmology"])
        alpha_x, alpha_y = point_mass_deflection(x, y, radii, realization.positions_x, realization.positions_y)
        subhalo_deflection_pixels = np.hypot(alpha_x, alpha_y) / pixel
        difference = np.abs(lumpy.astype(float) - smooth)
        assert difference.max() > 0.01 * smooth.max()  # the subhalos do show
        # Where the subhalos bend light by < 0.05 pixel, the two images agree.
        assert difference[subhalo_deflection_pixels < 0.05].sum() < 0.01 * difference.sum()


def test_vortex_length_follows_the_axion_mass():
    log10_masses = [-22.0, -22.5, -23.0, -23.5, -24.0]
    generators = {m: lenszoo.get_dataset("A", axion={"log10_mass_min_ev": m, "log10_mass_max_ev": m})
                  for m in log10_masses}
    changes = []
    reference, reference_meta = generators[-22.0].simulate("test", 2, noise=False)
    for m in log10_masses:
        realization = generators[m].draw("test", 2)
        half_length = 3e-24 / 10**m  # 3.0" at 1e-24 eV, 0.03" at 1e-22 eV
        assert realization.vortex_half_length_arcsec == pytest.approx(half_length)
        distance = np.hypot(realization.positions_x, realization.positions_y)
        assert distance.max() == pytest.approx(half_length)
        assert realization.masses_msun.sum() == pytest.approx(3e10) and realization.masses_msun.size == 100
        # All elements lie on one line through the centre at the drawn angle.
        cross = realization.positions_x * math.sin(realization.vortex_angle) - \
            realization.positions_y * math.cos(realization.vortex_angle)
        assert np.abs(cross).max() < 1e-12
        image, meta = generators[m].simulate("test", 2, noise=False)
        assert meta["log10_axion_mass"] == pytest.approx(m)
        assert meta["vortex_angle"] == reference_meta["vortex_angle"]
        changes.append(np.abs(image.astype(float) - reference).sum() / reference.sum())
    # Relative to a point-like vortex, the image changes more the longer (lighter) the vortex.
    assert changes[0] == 0 and all(a < b for a, b in zip(changes, changes[1:]))
    assert changes[1] < 1e-3 and changes[-1] > 0.05


@pytest.mark.parametrize("name", ["A", "B"])
def test_noise_matches_the_instrument_background(name):
    generator = lenszoo.get_dataset(name)
    clean, _ = generator.simulate("test", 0, noise=False)
    noisy, _ = generator.simulate("test", 0, noise=True)
    background = generator.model.background_noise  # sky + read noise, counts/s
    # Where the lens is faint, photon noise is negligible and the noise is the background alone.
    dark = generator.model.sim.flux_noise(clean.astype(float)) < 0.1 * background
    assert dark.sum() > 200
    residual = (noisy - clean)[dark]
    assert residual.std() == pytest.approx(background, rel=0.1)
    # On the arc, photon noise adds to it.
    bright = clean > 0.5 * clean.max()
    assert (noisy - clean)[bright].std() > 1.5 * background
    assert abs(residual.mean()) < 0.2 * residual.std()


def test_metadata_describes_the_image():
    generator = lenszoo.get_dataset("B")
    for index in range(9):
        image, meta = generator.simulate("train", index)
        name = meta["class_name"]
        assert meta["label"] == lenszoo.CLASS_NAMES.index(name)
        assert abs(meta["source_x"]) <= 0.35 and abs(meta["source_y"]) <= 0.35
        if name == "axion":
            assert -24 <= meta["log10_axion_mass"] <= -22
            assert meta["axion_mass_ev"] == pytest.approx(10 ** meta["log10_axion_mass"])
            assert meta["n_subhalos"] == 100 and meta["subhalo_mass_total_msun"] == pytest.approx(3e10)
        else:
            assert math.isnan(meta["axion_mass_ev"]) and math.isnan(meta["log10_axion_mass"])
        if name == "cdm":
            assert 25 * 1e6 <= meta["subhalo_mass_total_msun"] <= 25 * 1e10
        if name == "no_sub":
            assert meta["n_subhalos"] == 0 and meta["subhalo_mass_total_msun"] == 0
        # The stored seed alone re-creates the image.
        again, _ = generator.simulate_from_seed(meta["seed"], name)
        assert again.tobytes() == image.tobytes()
