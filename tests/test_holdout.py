"""The holdout split: its own seed space, read only by `lenszoo evaluate` (issue 29, item 1)."""

import json

import numpy as np

from lenszoo.data import simulate_dataset

from .test_train import SMALL, cli, tiny_arch  # noqa: F401


def test_holdout_images_are_their_own_and_no_earlier_split_changed():
    from lenszoo.registry import get_dataset

    generator = get_dataset("A")
    held = generator.simulate("holdout", 0)[0]
    for split in ("train", "val", "test"):
        assert not np.array_equal(held, generator.simulate(split, 0)[0])
    # appending the split kept the earlier seed spaces: test image 0 of A is what it always was
    assert generator.image_seed("test", 0) == 11938930114347372051


def test_training_refuses_the_holdout_split_and_evaluate_reads_it(tiny_arch, tmp_path):
    holdout, train = tmp_path / "A-holdout", tmp_path / "A-train"
    simulate_dataset("A", "holdout", 2, holdout)
    simulate_dataset("A", "train", 4, train)
    for args in (["--data", holdout], ["--data", train, "--val-data", holdout]):
        result = cli("train", "--arch", "tiny", *args, "--epochs", "1", "--batch-size", "4", "--quiet",
                     "--out", tmp_path / "run")
        assert result.exit_code == 1 and "'holdout' split" in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert cli("train", "--arch", "tiny", *SMALL, "--epochs", "1", "--out", tmp_path / "ok").exit_code == 0
    result = cli("evaluate", tmp_path / "ok", "--data", holdout, "--split", "holdout", "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert record["split"] == "holdout" and record["n"] == 6
