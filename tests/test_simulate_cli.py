"""`lenszoo simulate`: the command users run, and its one-line errors."""

import numpy as np
import pytest
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main
from lenszoo.data import StoredDataset, read_manifest


def run(*args):
    return CliRunner().invoke(main, ["simulate", *map(str, args)])


def assert_one_line_error(result, text):
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("Warning: lenszoo plugin")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert text in lines[0], lines[0]


def test_simulate_writes_a_dataset_and_a_preview(tmp_path):
    out, preview = tmp_path / "B-test", tmp_path / "grid.png"
    result = run("--dataset", "B", "--split", "test", "--n-per-class", 2, "--out", out, "--workers", 2,
                 "--seed", 5, "--preview", preview)
    assert result.exit_code == 0, result.output
    assert "B/test: 6 images in 1 shards" in result.output and f"preview: {preview}" in result.output
    manifest = read_manifest(out)
    assert manifest["seed"] == 5 and manifest["noise"] is True and manifest["num_images"] == 6
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image, target = StoredDataset(out)[2]
    assert image.shape == (1, 64, 64) and int(target) == 2


def test_no_noise_flag_and_quiet(tmp_path):
    result = run("-d", "A", "-s", "train", "-n", 1, "-o", tmp_path / "clean", "--no-noise", "--quiet")
    assert result.exit_code == 0 and result.output.strip() == ""
    assert read_manifest(tmp_path / "clean")["noise"] is False
    stored = np.load(tmp_path / "clean" / "images-00000.npy")
    expected, _ = lenszoo.get_dataset("A").simulate("train", 0, noise=False)
    assert stored[0, 0].tobytes() == expected.tobytes()


def test_sharded_run_reports_what_is_missing(tmp_path):
    result = run("-d", "A", "-s", "val", "-n", 2, "-o", tmp_path / "d", "--shard-size", 2, "--shard", "1/3")
    assert result.exit_code == 0, result.output
    assert "job 1/3" in result.output and "2 of 3 shards still missing" in result.output


@pytest.mark.parametrize("args, text", [
    (["-d", "C", "-s", "test", "-n", 2], "unknown dataset 'C'"),
    (["-d", "b", "-s", "test", "-n", 2], "known: A, B"),
    (["-d", "A", "-s", "test", "-n", 0], "--n-per-class must be a whole number > 0; got 0"),
    (["-d", "A", "-s", "test", "-n", -5], "--n-per-class must be a whole number > 0; got -5"),
    (["-d", "A", "-s", "test", "-n", 2, "--shard", "2of3"], "--shard must look like I/N"),
    (["-d", "A", "-s", "test", "-n", 2, "--shard", "0/3"], "I counts from 1"),
    (["-d", "A", "-s", "test", "-n", 2, "--shard", "4/3"], "1 <= I <= N"),
    (["-d", "A", "-s", "testing", "-n", 2], "unknown split 'testing'"),
    (["-d", "A", "-s", "test", "-n", 2, "--workers", 0], "--workers must be a whole number > 0"),
    (["-d", "A", "-s", "test", "-n", 2, "--preview", "grid.jpg"], "--preview writes a PNG"),
])
def test_bad_input_gives_one_clear_error(tmp_path, args, text):
    if "--preview" in args:
        args = [*args[:-1], tmp_path / args[-1]]
    assert_one_line_error(run(*args, "--out", tmp_path / "out"), text)
    assert not (tmp_path / "out").exists()  # checked before anything is simulated


def test_existing_directory_with_another_config_is_refused(tmp_path):
    out = tmp_path / "d"
    assert run("-d", "A", "-s", "test", "-n", 1, "-o", out, "-q").exit_code == 0
    result = run("-d", "A", "-s", "test", "-n", 2, "-o", out)
    assert_one_line_error(result, "holds a dataset made with different settings (n_per_class: 1 there, 2 here")
    assert "choose another --out" in result.output
    result = run("-d", "A", "-s", "test", "-n", 1, "-o", out, "--no-noise")
    assert_one_line_error(result, "noise: True there, False here")


def test_simulate_is_registered_through_the_plugin_hook():
    from lenszoo.registry import registry

    assert {"simulate", "import-deeplense"} <= set(registry.commands)
    assert set(lenszoo.list_datasets()) >= {"A", "B"}
    assert registry.dataset("A").plugin == "lensing_datasets"
