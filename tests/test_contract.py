"""The input contract: image statistics without knowing units, accepted ranges, flags."""

import numpy as np
import pytest

from lenszoo.contract import (accepted_ranges, contract_for_weights, dataset_facts, describe, image_flags,
                              image_statistics, measure_contract, summarize)
from lenszoo.data.nuisance import add_sky, scale_noise
from lenszoo.errors import LenszooError


@pytest.fixture(scope="module")
def b_images():
    from lenszoo.registry import get_dataset

    generator = get_dataset("B")
    return generator, np.stack([generator.simulate("val", i)[0] for i in range(150)])


@pytest.fixture(scope="module")
def b_contract():
    from lenszoo.registry import get_dataset

    return measure_contract(get_dataset("B"), n=300)


def test_statistics_are_unit_free_and_find_the_sky_under_lensed_light(b_images):
    generator, images = b_images
    sigma = generator.background_noise
    clean = image_statistics(images)
    scaled = image_statistics(images * 37.0)
    for name in ("background_level", "noise_to_peak", "centroid_offset"):
        assert np.allclose(clean[name], scaled[name], rtol=1e-6, equal_nan=True)
    # the background is found in the quietest blocks, within ~0.6 sigma of zero (the border is not sky)
    assert np.all(np.abs(clean["background_level"]) < 0.7)
    sky = image_statistics(add_sky(images, 3.0, sigma))["background_level"]
    assert np.all(sky - clean["background_level"] > 2.4)
    noisy = image_statistics(scale_noise(images, 2.0, sigma, np.random.default_rng(0)))["noise_to_peak"]
    assert np.median(noisy / clean["noise_to_peak"]) > 1.7


def test_flags_pass_clean_images_and_catch_sky_noise_pedestal_and_pixel_scale(b_images, b_contract):
    generator, images = b_images
    sigma = generator.background_noise
    rate = lambda imgs, flag: np.mean([flag in f for f in image_flags(image_statistics(imgs), b_contract)])  # noqa
    assert np.mean([bool(f) for f in image_flags(image_statistics(images), b_contract)]) <= 0.02
    assert rate(add_sky(images, 3.0, sigma), "sky") >= 0.95
    assert rate(add_sky(images, -3.0, sigma), "sky") >= 0.95
    assert rate(scale_noise(images, 2.0, sigma, np.random.default_rng(1)), "noise") >= 0.95
    low, high = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    minmax = (images - low) / (high - low) * 65535
    assert rate(minmax, "pedestal") == 1.0 and rate(minmax, "sky") >= 0.95
    flags = image_flags(image_statistics(images[:3]), b_contract, pixel_scales=[0.08, 0.1, None])
    assert ["pixel_scale" in f for f in flags] == [False, True, False]


def test_a_robust_contract_accepts_the_nuisances_it_trained_on(b_contract):
    robust = contract_for_weights(b_contract, {"nuisance": {"name": "sky_noise", "sky_sigma": 3.0,
                                                            "noise_scale": [1.0, 3.0]}})
    plain, wide = accepted_ranges(b_contract), accepted_ranges(robust)
    assert wide["background_level"][1] == pytest.approx(plain["background_level"][1] + 3.0)
    assert wide["noise_to_peak"][1] == pytest.approx(plain["noise_to_peak"][1] * 3.0)
    assert ("trained on nuisances", "sky_sigma 3.0, noise_scale [1.0, 3.0]") in describe(robust)


def test_facts_and_description_say_what_the_weights_expect(b_contract):
    facts = dataset_facts(__import__("lenszoo.registry", fromlist=["get_dataset"]).get_dataset("B"))
    assert facts["pixel_scale_arcsec"] == 0.08 and facts["image_size"] == [64, 64]
    assert facts["lens_light"] is False and "same lens in every image" in facts["main_lens"]
    text = dict(describe(b_contract))
    assert "0.08 arcsec/pixel" in text["pixel scale"] and "do not resize" in text["pixel scale"]
    assert summarize({"background_level": [np.nan], "noise_to_peak": [1.0], "centroid_offset": [2.0]})[
        "background_level"] is None


def test_odd_sizes_are_refused():
    with pytest.raises(LenszooError, match="multiples of 8"):
        image_statistics(np.zeros((1, 60, 60)))


def test_preprocess_takes_stacks_without_a_channel_axis():
    """`model.preprocess` accepts (N, 64, 64) and (64, 64), as `lenszoo.predict` does (issue 28, item 6)."""
    import lenszoo

    model = lenszoo.create_model("radial_profile", task="classify").eval()
    images = np.random.default_rng(0).normal(size=(3, 64, 64))
    assert tuple(model.preprocess(images).shape) == (3, 1, 64, 64)
    assert tuple(model.preprocess(images[0]).shape) == (1, 1, 64, 64)
    assert tuple(model.preprocess(images[:, None]).shape) == (3, 1, 64, 64)  # already with its channel
    assert model(model.preprocess(images)).shape == (3, 3)
