"""etn: lenszoo's Equivariant Transformer Network (shapes, checkpoints, training, pose prediction, invariance)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lenszoo
from lenszoo.archs.etn import BaseCNN, PosePredictor, canonical_grid
from lenszoo.archs.layers import pixel_grid, rotate_images, rotation_scale_matrices, sample_at
from lenszoo.checkpoint import load_checkpoint, save_checkpoint

from .arch_checks import one_adam_step_lowers_the_loss, XX, YY, rotation_change, settle_batch_norm, smooth_centred_images


def blob(cx, cy, width, brightness=1.0):
    return brightness * torch.exp(-((XX - cx) ** 2 + (YY - cy) ** 2) / (2 * width**2))


def asymmetric_image():
    """Three blobs of different sizes and brightness: no rotation maps it onto itself."""
    return (blob(0.35, 0.1, 0.1) + blob(-0.2, -0.3, 0.15, 0.6) + blob(0.0, 0.0, 0.2, 0.5))[None, None]


def identity(n):
    return torch.eye(3).expand(n, 3, 3)


def angle_error_degrees(predicted, target_degrees):
    difference = predicted - torch.as_tensor(target_degrees, dtype=torch.float32) * (math.pi / 180)
    return (torch.remainder(difference + math.pi, 2 * math.pi) - math.pi).abs() * (180 / math.pi)


@pytest.mark.parametrize("task, width", [("classify", 3), ("regress", 1)])
def test_output_shapes_for_each_task(task, width):
    model = lenszoo.create_model("etn", task=task)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, width)
    assert model.eval()(torch.rand(1, 1, 64, 64)).shape == (1, width)


def test_hyperparameters_are_recorded_for_checkpoints():
    model = lenszoo.create_model("etn", transformers=["rotation", "scale"])
    assert model.lenszoo_config["model_args"]["transformers"] == ["rotation", "scale"]
    assert [p.kind for p in model.pose_predictors] == ["rotation", "scale"]
    defaults = lenszoo.get_architecture("etn").default_config["model_args"]
    assert defaults["transformers"] == ["rotation"] and defaults["base_widths"] == [16, 32, 64, 128]


def test_checkpoint_round_trip_is_exact_and_strict(tmp_path):
    torch.manual_seed(0)
    model = settle_batch_norm(lenszoo.create_model("etn", task="regress", transformers=["rotation_scale"]))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "etn", model))
    x = smooth_centred_images(3)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_one_optimisation_step_lowers_the_loss():
    torch.manual_seed(0)
    assert one_adam_step_lowers_the_loss(lenszoo.create_model("etn"))


def test_pose_gradients_reach_the_pose_predictor():
    """The classification loss trains the pose predictor through grid_sample."""
    torch.manual_seed(0)
    model = lenszoo.create_model("etn")
    F.cross_entropy(model(smooth_centred_images(4)), torch.tensor([0, 1, 2, 0])).backward()
    grads = [p.grad for p in model.pose_predictors.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_rotation_pose_predictor_recovers_applied_rotations_after_short_training():
    """Trained to report the pose of one image turned by 0-90 degrees, it reports the pose of
    turns it never saw, because turning the image shifts its polar view along the angle axis."""
    torch.manual_seed(0)
    image = asymmetric_image()
    predictor = PosePredictor("rotation")
    optimiser = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    for _ in range(60):
        degrees = torch.rand(8) * 90
        predicted, _ = predictor(rotate_images(image.expand(8, -1, -1, -1), degrees), identity(8))
        loss = (1 - torch.cos(predicted - degrees * (math.pi / 180))).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    unseen = torch.tensor([123.0, 187.5, 241.0, 302.0, 347.0])
    with torch.no_grad():
        predicted, _ = predictor.eval()(rotate_images(image.expand(5, -1, -1, -1), unseen), identity(5))
    assert angle_error_degrees(predicted, unseen).max() < 3


def test_scale_pose_predictor_learns_applied_scalings():
    torch.manual_seed(0)
    image = asymmetric_image()
    predictor = PosePredictor("scale")
    optimiser = torch.optim.Adam(predictor.parameters(), lr=1e-2)

    def scaled(log_scales):  # enlarged by exp(log_scale) about the centre, at random angles
        matrices = rotation_scale_matrices(torch.rand(len(log_scales)) * 6.28, -log_scales)
        return sample_at(image.expand(len(log_scales), -1, -1, -1), matrices, pixel_grid(64))

    for _ in range(80):
        log_scales = (torch.rand(16) - 0.5) * 2 * math.log(1.3)
        _, predicted = predictor(scaled(log_scales), identity(16))
        loss = (predicted - log_scales).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test = torch.tensor([math.log(0.85), 0.0, math.log(1.2)])
    with torch.no_grad():
        _, predicted = predictor.eval()(scaled(test), identity(3))
    assert (predicted - test).abs().max() < math.log(1.05)


def test_polar_view_turns_rotation_into_a_shift():
    n_angles = 32
    points, _, _ = canonical_grid("polar", 8, n_angles, 0.05)
    image = asymmetric_image()
    view = sample_at(image, identity(1), points)
    turned = sample_at(rotate_images(image, 90), identity(1), points)
    assert torch.allclose(turned, torch.roll(view, n_angles // 4, dims=-1), atol=1e-4)


@pytest.mark.parametrize("options", [{}, {"readout": "flatten"}])
def test_logits_are_invariant_to_rot90(options):
    """90 degrees is a whole number of angle bins, so the canonical image is the same to rounding."""
    torch.manual_seed(0)
    model = settle_batch_norm(lenszoo.create_model("etn", **options))
    x = torch.cat([smooth_centred_images(2), torch.rand(2, 1, 64, 64)])
    with torch.no_grad():
        logits = model(x)
        for k in (1, 2, 3):
            change = (model(torch.rot90(x, k, dims=(-2, -1))) - logits).norm(dim=1) / logits.norm(dim=1)
            assert change.max() < 1e-4, (k, change)


@pytest.mark.parametrize("options", [{}, {"readout": "flatten"}])
@pytest.mark.parametrize("degrees", [30, 45, 137])
def test_arbitrary_rotations_change_logits_much_less_than_the_plain_base_cnn(degrees, options):
    images = smooth_centred_images(6)
    torch.manual_seed(0)
    etn = settle_batch_norm(lenszoo.create_model("etn", **options))
    torch.manual_seed(0)
    base = BaseCNN((16, 32, 64, 128))
    plain = settle_batch_norm(nn.Sequential(base, nn.Linear(base.out_features, 3)))
    etn_change, plain_change = rotation_change(etn, images, degrees), rotation_change(plain, images, degrees)
    assert etn_change < 0.05, etn_change
    assert etn_change < 0.1 * plain_change, (etn_change, plain_change)


@pytest.mark.parametrize("bad_input", [torch.rand(64, 64), torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 32),
                                       torch.zeros(2, 1, 64, 64, dtype=torch.long)])
def test_bad_inputs_give_one_line_errors(bad_input):
    model = lenszoo.create_model("etn")
    with pytest.raises(lenszoo.LenszooError) as info:
        model(bad_input)
    assert "\n" not in str(info.value) and "etn" in str(info.value)


@pytest.mark.parametrize("options, words", [
    ({"transformer": ["rotation"]}, "no option 'transformer'"),
    ({"transformers": ["shear"]}, "transformers"),
    ({"transformers": []}, "transformers"),
    ({"n_angles": 0}, "n_angles"),
    ({"min_radius": 1.5}, "min_radius"),
    ({"base_widths": "wide"}, "base_widths"),
    ({"readout": "max"}, "readout"),
])
def test_bad_options_give_one_line_errors(options, words):
    with pytest.raises(lenszoo.LenszooError) as info:
        lenszoo.create_model("etn", **options)
    assert words in str(info.value) and "\n" not in str(info.value)
