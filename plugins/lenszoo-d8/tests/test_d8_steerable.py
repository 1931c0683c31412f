"""lenszoo-d8: an external plugin whose d8_steerable is exactly invariant to 90-degree
rotations and to flips, saves and loads exactly, exports to plain PyTorch and learns."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import lenszoo
import lenszoo_d8
from lenszoo.cli import main as lenszoo_cli
from lenszoo.registry import registry

# the eight symmetries of the square: D8 contains all of them exactly
SQUARE_SYMMETRIES = {
    "rot90": lambda x: torch.rot90(x, 1, dims=(2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, dims=(2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(2, 3)),
    "flip_horizontal": lambda x: torch.flip(x, dims=(3,)),
    "flip_vertical": lambda x: torch.flip(x, dims=(2,)),
    "transpose": lambda x: x.transpose(2, 3),
    "anti_transpose": lambda x: torch.rot90(x, 2, dims=(2, 3)).transpose(2, 3),
}
MAX_ROT45_CHANGE = 0.5  # of the between-image spread of the logits; see test_c8_steerable


def smooth_lens_images(n, seed=0):
    """Smooth ring-plus-blobs images, zero outside radius 28 (45-degree rotations keep them in frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] - 31.5
    images = np.zeros((n, 64, 64))
    for image in images:
        image += np.exp(-(np.hypot(xx - rng.normal(0, 2), yy - rng.normal(0, 2)) - rng.uniform(8, 16)) ** 2 / 8)
        for _ in range(4):
            cx, cy = rng.uniform(-15, 15, 2)
            image += rng.uniform(0.2, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(1.5, 4) ** 2))
        image *= np.hypot(xx, yy) < 28
    return torch.from_numpy(images.astype(np.float32))[:, None]


def with_batch_statistics(model, images):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(images)
    return model.eval()


def relative_change(reference, other):
    return ((other - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(scope="module")
def images():
    return smooth_lens_images(8)


@pytest.fixture(scope="module")
def d8_model(images):
    torch.manual_seed(0)
    return with_batch_statistics(lenszoo_d8.build_d8_steerable("classify"), images)


# --------------------------------------------------------------------------- plugin registration
def test_is_skipped_unless_allowed():
    # the root conftest pins LENSZOO_PLUGINS="" (built-ins only)
    assert "d8_steerable" not in lenszoo.list_models()
    info = {p.name: p for p in registry.plugins()}["d8_steerable"]
    assert info.status == "skipped" and not info.builtin


def test_loads_as_an_external_plugin(use_plugins):
    use_plugins("lenszoo-d8")
    info = {p.name: p for p in registry.plugins()}["d8_steerable"]
    assert (info.status, info.builtin, info.package, info.version) == ("loaded", False, "lenszoo-d8", "0.1.0")
    assert info.hooks == ("register_architectures",)
    assert "d8_steerable" in lenszoo.list_models(task="regress")
    arch = lenszoo.get_architecture("d8_steerable")
    assert (arch.plugin, arch.package) == ("d8_steerable", "lenszoo-d8")


def test_cli_shows_the_plugin_and_its_architecture(use_plugins):
    use_plugins("lenszoo-d8")
    runner = CliRunner()
    plugins = runner.invoke(lenszoo_cli, ["plugins"])
    assert plugins.exit_code == 0, plugins.output
    row = next(line for line in plugins.output.splitlines() if line.startswith("d8_steerable"))
    assert row.split() == ["d8_steerable", "external", "lenszoo-d8", "0.1.0", "architectures", "loaded"]
    listing = runner.invoke(lenszoo_cli, ["list", "d8*"])
    assert listing.exit_code == 0, listing.output
    assert any(line.split()[:3] == ["d8_steerable", "classify,regress", "d8_steerable"]
               for line in listing.output.splitlines())


@pytest.mark.parametrize("task, outputs", [("classify", 3), ("regress", 1)])
def test_output_shapes(use_plugins, task, outputs):
    use_plugins("lenszoo-d8")
    model = lenszoo.create_model("d8_steerable", task=task)
    assert model.group == "D8"
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, outputs)
    model_args = json.loads(json.dumps(model.lenszoo_config["model_args"]))
    rebuilt = lenszoo.create_model("d8_steerable", task=task, **model_args)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


# --------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("symmetry", sorted(SQUARE_SYMMETRIES))
def test_square_symmetries_change_eval_logits_below_1e4(d8_model, images, symmetry):
    with torch.no_grad():
        logits = d8_model(images)
        assert relative_change(logits, logits.mean(0, keepdim=True).expand_as(logits)) > 1e-2
        assert relative_change(logits, d8_model(SQUARE_SYMMETRIES[symmetry](images))) < 1e-4


def test_c8_steerable_alone_is_not_flip_invariant(images):
    # what the reflections add: the same check fails for the rotation-only network
    torch.manual_seed(0)
    c8 = with_batch_statistics(lenszoo.create_model("c8_steerable"), images)
    with torch.no_grad():
        assert relative_change(c8(images), c8(SQUARE_SYMMETRIES["flip_horizontal"](images))) > 1e-3


def test_rot45_plus_flip_changes_logits_by_a_bounded_amount(d8_model, images, record_property):
    from scipy import ndimage

    flipped = torch.flip(images, dims=(3,))
    rotated = torch.from_numpy(np.stack([ndimage.rotate(im[0].numpy(), 45, reshape=False, order=3)
                                         for im in flipped]))[:, None]
    with torch.no_grad():
        logits, moved = d8_model(images), d8_model(rotated)
    spread = (logits - logits.mean(0)).norm(dim=1).mean()
    change = ((moved - logits).norm(dim=1).mean() / spread).item()
    record_property("rot45_flip_change_over_spread", change)
    print(f"d8_steerable rot45+flip: change / between-image spread = {change:.3f}, "
          f"max change / logit scale = {relative_change(logits, moved):.3f}")
    assert change < MAX_ROT45_CHANGE


# --------------------------------------------------------------------------- save / load / export
def test_strict_save_load_into_a_new_model_gives_identical_outputs(d8_model, images):
    state = d8_model.state_dict()
    fresh = lenszoo_d8.build_d8_steerable("classify").eval()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(images), d8_model(images))


def test_exported_path_equals_the_escnn_path_and_keeps_the_symmetries(d8_model, images):
    exported = d8_model.export()
    assert not any(type(m).__module__.startswith("escnn") for m in exported.modules())
    with torch.no_grad():
        expected = d8_model(images)
        assert (exported(images) - expected).abs().max() < 1e-5
        assert relative_change(expected, exported(SQUARE_SYMMETRIES["flip_vertical"](images))) < 1e-4


def test_weights_saved_in_another_process_load_exactly(d8_model, images, tmp_path):
    # escnn computes D8's kernel basis numerically: it must come out the same in a fresh process
    script = textwrap.dedent(f"""
        import torch, lenszoo_d8
        torch.manual_seed(3)
        model = lenszoo_d8.build_d8_steerable("classify").eval()
        images = torch.load({str(tmp_path / "images.pt")!r})
        with torch.no_grad():
            torch.save({{"state": model.state_dict(), "logits": model(images)}}, {str(tmp_path / "saved.pt")!r})
    """)
    torch.save(images, tmp_path / "images.pt")
    subprocess.run([sys.executable, "-c", script], check=True)
    saved = torch.load(tmp_path / "saved.pt", weights_only=True)
    fresh = lenszoo_d8.build_d8_steerable("classify").eval()
    fresh.load_state_dict(saved["state"], strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh(images), saved["logits"], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- learning
def test_one_optimisation_step_decreases_the_loss(images):
    torch.manual_seed(1)
    model = lenszoo_d8.build_d8_steerable("classify").train()
    batch = torch.cat([images, torch.flip(images, dims=(3,))])
    targets = (torch.arange(len(images)) % 3).repeat(2)  # a mirrored copy keeps its label
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = F.cross_entropy(model(batch), targets)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(model(batch), targets)
    assert after < before
