"""radial_profile: the shortcut control (invariance, what its features measure, training, bad options)."""

import pytest
import torch

import lenszoo
from lenszoo.archs.layers import rotate_images
from lenszoo.archs.profile_features import MOMENT_NAMES, ProfileFeatures

from .arch_checks import XX, YY, one_adam_step_lowers_the_loss, rotation_change, settle_batch_norm, smooth_centred_images


def ring(radius, width=0.04):
    """A thin ring of ``radius`` (in units of half the image) about the centre."""
    return torch.exp(-((torch.hypot(XX, YY) - radius) ** 2) / (2 * width**2))[None, None]


@pytest.mark.parametrize("options", [{}, {"azimuthal_orders": 6}])
def test_outputs_are_invariant_to_quarter_turns_and_flips(options):
    torch.manual_seed(0)
    model = settle_batch_norm(lenszoo.create_model("radial_profile", **options))
    x = torch.cat([smooth_centred_images(3), torch.rand(3, 1, 64, 64)])
    with torch.no_grad():
        logits = model(x)
        views = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, 2, 3)] + [torch.flip(x, (-1,)), x.transpose(-2, -1)]
        for view in views:
            assert torch.allclose(model(view), logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("degrees", [17, 45, 137])
def test_any_rotation_changes_outputs_only_by_resampling(degrees):
    """Turning a smooth image about its centre moves the outputs far less than a pixel-reading model's."""
    images = smooth_centred_images(6)
    torch.manual_seed(0)
    model = settle_batch_norm(lenszoo.create_model("radial_profile"))
    torch.manual_seed(0)
    pixels = settle_batch_norm(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 64, 3)))
    change, plain = rotation_change(model, images, degrees), rotation_change(pixels, images, degrees)
    assert change < 0.02, change
    assert change < 0.05 * plain, (change, plain)
    features = ProfileFeatures()
    turned = features(rotate_images(images, degrees))
    assert torch.allclose(turned, features(images), atol=1e-2)  # bilinear resampling of peaked images


def test_the_features_measure_the_profile_the_flux_and_the_ring():
    features = ProfileFeatures(profile_bins=32)
    for radius in (0.3, 0.55):
        values = features(ring(radius))[0]
        profile = values[:32]
        peak_bin = int(profile.argmax())
        assert abs((peak_bin + 0.5) / 32 - radius) <= 1 / 32  # the ring's bin
        moments = dict(zip(MOMENT_NAMES, values[32:].tolist()))
        assert abs(moments["ring_radius"] - radius) < 0.03
        assert abs(moments["mean_radius"] - radius) < 0.03
        assert moments["quadrupole"] < 1e-3  # round
    # a lopsided image has a quadrupole; a brighter one more flux
    bar = torch.exp(-(XX**2) / (2 * 0.3**2) - YY**2 / (2 * 0.05**2))[None, None]
    quadrupole = MOMENT_NAMES.index("quadrupole") + 32
    assert features(bar)[0, quadrupole] > 0.5
    flux = MOMENT_NAMES.index("flux") + 32
    assert torch.isclose(features(2 * bar)[0, flux], 2 * features(bar)[0, flux])


def test_azimuthal_amplitudes_see_a_lump_the_profile_cannot_place():
    """Moving a lump round the ring leaves every feature alone; the |a_m| tell a lump from a ring."""
    lump = lambda angle: torch.exp(-((XX - 0.5 * torch.cos(torch.tensor(angle))) ** 2
                                     + (YY - 0.5 * torch.sin(torch.tensor(angle))) ** 2) / (2 * 0.05**2))[None, None]
    features = ProfileFeatures(azimuthal_orders=4)
    first, moved = features(lump(0.0)), features(lump(torch.pi / 2))
    assert torch.allclose(first, moved, atol=1e-4)
    amplitudes = slice(features.num_features - features.azimuthal_rings * 4, None)
    assert features(lump(0.0))[0, amplitudes].max() > 0.5 > features(ring(0.5))[0, amplitudes].max()


@pytest.mark.parametrize("task, width", [("classify", 3), ("regress", 1)])
def test_output_shapes_and_learning(task, width):
    model = lenszoo.create_model("radial_profile", task=task)
    assert model(torch.rand(4, 1, 64, 64)).shape == (4, width)
    if task == "classify":
        assert one_adam_step_lowers_the_loss(model)


def test_loading_does_not_import_timm_or_escnn():
    import subprocess
    import sys

    code = ("import sys, lenszoo; lenszoo.create_model('radial_profile'); "
            "print(sorted(m for m in ('timm', 'escnn', 'lenstronomy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("options, words", [
    ({"bins": 32}, "no option 'bins'"),
    ({"profile_bins": 1}, "profile_bins"),
    ({"azimuthal_orders": -1}, "azimuthal_orders"),
    ({"moments": "yes"}, "moments"),
    ({"hidden": "wide"}, "hidden"),
    ({"dropout": 1.5}, "dropout"),
])
def test_bad_options_give_one_line_errors(options, words):
    with pytest.raises(lenszoo.LenszooError) as info:
        lenszoo.create_model("radial_profile", **options)
    assert words in str(info.value) and "\n" not in str(info.value)
