"""hnet: lenszoo's Harmonic Network (shapes, checkpoints, training, rotation behaviour, layers)."""


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lenszoo
from lenszoo.archs.hnet import HarmonicConv2d, MagnitudeBatchNorm, MagnitudeNonlinearity
from lenszoo.checkpoint import load_checkpoint, save_checkpoint

from .arch_checks import one_adam_step_lowers_the_loss, rotation_change, settle_batch_norm, smooth_centred_images

def plain_cnn_like_hnet():
    """A plain CNN with hnet's layout (5x5 convs, same pooling, ~16k parameters, spatial mean)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.AvgPool2d(2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2), nn.AvgPool2d(2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2), nn.AvgPool2d(2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3),
    )


@pytest.mark.parametrize("task, width", [("classify", 3), ("regress", 1)])
def test_output_shapes_for_each_task(task, width):
    model = lenszoo.create_model("hnet", task=task)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, width)
    assert model.eval()(torch.rand(1, 1, 64, 64)).shape == (1, width)


def test_hyperparameters_are_recorded_for_checkpoints():
    model = lenszoo.create_model("hnet", widths=[4, 8], depths=[1, 1])
    assert model.lenszoo_config["model_args"]["widths"] == [4, 8]
    defaults = lenszoo.get_architecture("hnet").default_config["model_args"]
    assert defaults["widths"] == [6, 8, 12, 16] and defaults["kernel_size"] == 5 and defaults["n_rings"] == 4


def test_checkpoint_round_trip_is_exact_and_strict(tmp_path):
    torch.manual_seed(0)
    model = lenszoo.create_model("hnet", task="regress")
    settle_batch_norm(model)
    folder = save_checkpoint(tmp_path / "hnet", model)
    loaded = load_checkpoint(folder)
    x = smooth_centred_images(3)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_one_optimisation_step_lowers_the_loss():
    torch.manual_seed(0)
    assert one_adam_step_lowers_the_loss(lenszoo.create_model("hnet"))


@pytest.mark.parametrize("options", [{}, {"readout": "radial"}])
def test_logits_are_invariant_to_rot90(options):
    torch.manual_seed(0)
    model = settle_batch_norm(lenszoo.create_model("hnet", **options))
    x = torch.cat([smooth_centred_images(2), torch.rand(2, 1, 64, 64)])  # noise too: exactness is not smoothness
    with torch.no_grad():
        logits = model(x)
        for k in (1, 2, 3):
            change = (model(torch.rot90(x, k, dims=(-2, -1))) - logits).norm(dim=1) / logits.norm(dim=1)
            assert change.max() < 1e-4, (k, change)


@pytest.mark.parametrize("options", [{}, {"readout": "radial"}])
@pytest.mark.parametrize("degrees", [30, 45])
def test_arbitrary_rotations_change_logits_little_and_less_than_a_plain_cnn(degrees, options):
    images = smooth_centred_images(6)
    torch.manual_seed(0)
    hnet = settle_batch_norm(lenszoo.create_model("hnet", **options))
    torch.manual_seed(0)
    plain = settle_batch_norm(plain_cnn_like_hnet())
    hnet_change, plain_change = rotation_change(hnet, images, degrees), rotation_change(plain, images, degrees)
    assert hnet_change < 0.05, hnet_change
    assert hnet_change < 0.2 * plain_change, (hnet_change, plain_change)


def test_harmonic_conv_streams_follow_order_arithmetic():
    """Rotating the input by 90 degrees rotates every output map and turns order m by e^{i m pi/2}."""
    torch.manual_seed(0)
    first = HarmonicConv2d(1, 3, in_max_order=0, out_max_order=1, real_input=True)
    second = HarmonicConv2d(3, 2, in_max_order=1, out_max_order=1)
    x = smooth_centred_images(2)
    with torch.no_grad():
        hidden = first(x)
        # image in, orders 0 and 1 out
        assert_rotated_streams(first(torch.rot90(x, 1, dims=(-2, -1))), hidden)
        # orders 0 and 1 in (as they would be for the rotated image), orders 0 and 1 out
        assert_rotated_streams(second(rotated_streams(hidden)), second(hidden))


def rotated_streams(features):
    """Order-0/1 features (B, 2 * 2 * C, H, W) as they are for the input turned 90 degrees
    counter-clockwise: every map turned, order 1 multiplied by i, i.e. (re, im) -> (-im, re)."""
    b, _, h, w = features.shape
    parts = torch.rot90(features, 1, dims=(-2, -1)).view(b, 2, 2, -1, h, w)  # (B, order, re/im, C, H, W)
    order1 = torch.stack([-parts[:, 1, 1], parts[:, 1, 0]], dim=1)
    return torch.stack([parts[:, 0], order1], dim=1).view_as(features)


def assert_rotated_streams(actual, unrotated):
    expected = rotated_streams(unrotated)
    assert torch.allclose(actual, expected, atol=1e-5 * unrotated.abs().max())


def test_harmonic_filter_has_the_stated_form():
    """Order-1 filter = R(r) e^{i(phi + beta)}: same |W| around a ring, phase advancing with the angle."""
    torch.manual_seed(0)
    conv = HarmonicConv2d(1, 1, kernel_size=5, real_input=True, in_max_order=0, out_max_order=1)
    real, imag = conv.complex_filters()
    w = torch.complex(real[1, 0, 0, 0], imag[1, 0, 0, 0]).detach()  # order 1 from order 0
    assert w[2, 2] == 0  # no phase at the centre
    right, up, left = w[2, 3], w[1, 2], w[2, 1]  # phi = 0, 90, 180 degrees at radius 1
    assert torch.allclose(up, right * 1j, atol=1e-6) and torch.allclose(left, -right, atol=1e-6)
    beta = conv.phase[1, 0, 0].detach()
    assert abs((right / right.abs() * torch.exp(-1j * beta)).imag) < 1e-5  # phase is beta (or beta + pi)


def test_mean_pooled_conv_equals_conv_then_mean_pooling():
    torch.manual_seed(0)
    conv = HarmonicConv2d(2, 3)
    x = torch.randn(2, 8, 16, 16)
    expected = F.avg_pool2d(conv(x), 2)
    conv.mean_pool = True
    assert torch.allclose(conv(x), expected, atol=1e-5)


@pytest.mark.parametrize("layer", [MagnitudeNonlinearity(4), MagnitudeBatchNorm(4)])
def test_magnitude_layers_keep_phases_and_act_on_magnitudes(layer):
    torch.manual_seed(0)
    if isinstance(layer, MagnitudeNonlinearity):
        nn.init.constant_(layer.bias, -0.5)
    z = torch.randn(8, 16, 5, 5)
    out = layer(z)
    before = torch.complex(*z.view(8, 2, 2, 4, 5, 5).unbind(2))  # (batch, order, channel, H, W)
    after = torch.complex(*out.view(8, 2, 2, 4, 5, 5).unbind(2))
    alive = after.abs() > 1e-4
    assert 0.2 < alive.float().mean() < 1  # the ReLU on magnitudes zeroes some channels, not all
    assert torch.allclose(torch.angle(after[alive]), torch.angle(before[alive]), atol=1e-4)
    if isinstance(layer, MagnitudeNonlinearity):
        assert torch.allclose(after.abs(), F.relu(before.abs() - 0.5), atol=1e-5)


@pytest.mark.parametrize("bad_input", [torch.rand(64, 64), torch.rand(2, 3, 64, 64), torch.rand(2, 1, 60, 60)])
def test_bad_input_shapes_give_one_line_errors(bad_input):
    model = lenszoo.create_model("hnet")
    with pytest.raises(lenszoo.LenszooError) as info:
        model(bad_input)
    assert "\n" not in str(info.value) and "hnet" in str(info.value)


@pytest.mark.parametrize("options, words", [
    ({"width": 8}, "no option 'width'"),
    ({"widths": [4, -1]}, "widths"),
    ({"depths": [1, 1]}, "depths"),
    ({"kernel_size": 4}, "odd"),
    ({"max_order": 0}, "max_order"),
    ({"readout": "max"}, "readout"),
    ({"radial_bins": 0}, "radial_bins"),
])
def test_bad_options_give_one_line_errors(options, words):
    with pytest.raises(lenszoo.LenszooError) as info:
        lenszoo.create_model("hnet", **options)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_radial_readout_averages_rings_that_rotations_keep_and_sees_radius():
    from lenszoo.archs.hnet import radial_bin_weights

    weights = radial_bin_weights(8, 4).reshape(4, 8, 8)
    assert torch.allclose(weights.sum(dim=(1, 2)), torch.ones(4))
    for k in (1, 2, 3):
        assert torch.equal(torch.rot90(weights, k, dims=(-2, -1)), weights)
    # The same bright ring at two radii: equal spatial means, different ring means.
    r = torch.hypot(*torch.meshgrid(torch.arange(8) - 3.5, torch.arange(8) - 3.5, indexing="ij"))
    inner, outer = (r < 1.6).float(), ((r > 2.9) & (r < 3.6)).float()
    inner, outer = inner / inner.sum(), outer / outer.sum()
    rings = radial_bin_weights(8, 4) @ torch.stack([inner.flatten(), outer.flatten()]).T
    assert not torch.allclose(rings[:, 0], rings[:, 1])
    with pytest.raises(lenszoo.LenszooError, match="radial_bins"):
        radial_bin_weights(8, 40)
