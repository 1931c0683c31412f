"""Nuisance augmentation (`lenszoo train --nuisance`): the draws, their units, exact resume."""

import json

import numpy as np
import pytest
import torch

from lenszoo.data.nuisance import NuisanceAugment, add_sky, background_sigma, scale_noise
from lenszoo.errors import LenszooError
from lenszoo.train.augment import BatchAugment
from lenszoo.train.config import NUISANCE_RECIPES

from .test_train import SMALL, assert_same_weights, cli, tiny_arch, val_history  # noqa: F401


def test_sky_and_noise_draws_have_the_recipes_ranges_in_units_of_sigma():
    sigma = 0.01
    augment = NuisanceAugment(NUISANCE_RECIPES["sky_noise"], sigma)
    zeros = torch.zeros(2000, 1, 64, 64)
    out = augment(zeros, torch.Generator().manual_seed(1))
    sky = out.mean(dim=(1, 2, 3)) / sigma  # per-image offset, noise averaged away
    assert -3.1 < float(sky.min()) < -2.7 and 2.7 < float(sky.max()) < 3.1
    extra = (out - out.mean(dim=(2, 3), keepdim=True)).std(dim=(1, 2, 3)) / sigma  # sqrt(scale^2 - 1)
    scale = torch.sqrt(extra ** 2 + 1)
    assert 0.95 < float(scale.min()) < 1.1 and 2.8 < float(scale.max()) < 3.1
    again = augment(zeros, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # a pure function of the generator's seed


def test_batch_augment_draws_nuisances_on_raw_images_then_normalises():
    from lenszoo.data import normalize

    raw = torch.rand(8, 1, 8, 8) * 5
    augment = BatchAugment("none", 0, nuisance=NuisanceAugment({"sky_sigma": 3.0}, 0.1), normalize=normalize)
    out = augment(0, 0, raw)
    assert torch.allclose(out.abs().amax(dim=(2, 3)), torch.ones(8, 1))
    assert not torch.allclose(out, normalize(raw))
    with pytest.raises(ValueError):
        BatchAugment("none", 0, nuisance=NuisanceAugment({}, 0.1))


def test_numpy_helpers_and_their_refusals():
    images = np.zeros((2, 4, 4), dtype=np.float32)
    assert np.allclose(add_sky(images, [1, -2], 0.5)[:, 0, 0], [0.5, -1.0])
    noisy = scale_noise(np.zeros((1, 200, 200)), 2.0, 0.1, np.random.default_rng(0))
    assert abs(noisy.std() - 0.1 * np.sqrt(3)) < 0.005
    with pytest.raises(LenszooError, match="only be added"):
        scale_noise(images, 0.5, 0.1, np.random.default_rng(0))
    with pytest.raises(LenszooError, match="--nuisance none"):
        background_sigma(object())


def test_datasets_state_their_background_noise():
    from lenszoo.registry import get_dataset

    for name in ("A", "B", "C-hst"):
        assert 1e-4 < background_sigma(get_dataset(name)) < 1.0


def test_nuisance_training_is_recorded_changes_the_run_and_resumes_exactly(tiny_arch, tmp_path):
    reference, stopped, plain = tmp_path / "reference", tmp_path / "stopped", tmp_path / "plain"
    args = ["--arch", "tiny", *SMALL, "--augment", "rot90flip", "--nuisance", "sky_noise"]
    assert cli("train", *args, "--out", reference).exit_code == 0
    assert cli("train", "--arch", "tiny", *SMALL, "--augment", "rot90flip", "--out", plain).exit_code == 0
    config = json.loads((reference / "best" / "config.json").read_text())
    assert config["recipe"]["nuisance"] == {"name": "sky_noise", **NUISANCE_RECIPES["sky_noise"]}
    assert config["training_data"]["nuisance"]["background_sigma"] > 0
    assert "nuisance" not in json.loads((plain / "best" / "config.json").read_text())["recipe"]
    assert val_history(reference) != val_history(plain)

    assert cli("train", *args, "--out", stopped, "--max-minutes", "1e-6").exit_code == 0
    for _ in range(10):
        result = cli("train", "--resume", "--out", stopped, "--max-minutes", "0.002")
        assert result.exit_code == 0, result.output
        if json.loads(result.output.strip().splitlines()[-1])["status"] == "finished":
            break
    for name in ("best", "last"):
        assert_same_weights(reference / name / "model.safetensors", stopped / name / "model.safetensors")


def test_runs_from_before_nuisance_resume_as_none(tiny_arch, tmp_path):
    run = tmp_path / "old"
    assert cli("train", "--arch", "tiny", *SMALL, "--out", run, "--max-minutes", "1e-6").exit_code == 0
    record = json.loads((run / "run.json").read_text())
    del record["config"]["nuisance"]
    (run / "run.json").write_text(json.dumps(record))
    result = cli("train", "--resume", "--out", run)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["status"] == "finished"
