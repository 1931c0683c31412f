"""`lenszoo evaluate`: metrics that agree with each other, rotation robustness, plots, errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lenszoo
from lenszoo.tasks import num_outputs


class EvalArchitectures:
    """In-process test architectures: one exactly invariant to pixel permutations, one not."""

    @staticmethod
    @lenszoo.hookimpl
    def register_architectures(register):
        register("pixelwise", build_pixelwise, description="1x1 conv + mean: invariant to any pixel permutation")
        register("strided", build_strided, description="strided conv: not rotation invariant")


def build_pixelwise(task):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(1, 8, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_outputs(task)))


def build_strided(task):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(1, 4, 7, stride=5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, num_outputs(task)))


@pytest.fixture
def archs():
    from lenszoo.registry import registry

    registry.register_plugin(EvalArchitectures, name="eval-test-archs")
    yield
    registry.unregister_plugin("eval-test-archs")


@pytest.fixture(scope="module")
def test_data(tmp_path_factory):
    from lenszoo.data import simulate_dataset

    path = tmp_path_factory.mktemp("data") / "A-test"
    simulate_dataset("A", "test", 10, path, seed=5, progress=False)
    return path


def checkpoint(tmp_path, arch, task="classify", dataset="A", seed=0):
    import torch

    from lenszoo.checkpoint import save_checkpoint
    from lenszoo.data import NORMALIZATION

    torch.manual_seed(seed)
    model = lenszoo.create_model(arch, task=task)
    return save_checkpoint(tmp_path / f"{arch}-{task}", model, dataset=dataset, normalization=NORMALIZATION)


def cli(*args):
    from lenszoo.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_classification_metrics_agree_and_plots_are_written(archs, tmp_path, test_data):
    folder = checkpoint(tmp_path, "strided")
    out = tmp_path / "eval"
    result = cli("evaluate", folder, "--data", test_data, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    printed = json.loads(result.output[result.output.index("{"):])
    assert printed["metrics"] == record["metrics"]

    metrics = record["metrics"]
    matrix = np.array(metrics["confusion_matrix"])
    assert (record["arch"], record["task"], record["dataset"], record["split"], record["n"]) == \
        ("strided", "classify", "A", "test", 30)
    assert matrix.sum() == 30 and (matrix.sum(1) == 10).all()  # rows: true classes, 10 each
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / 30)
    assert set(metrics["auc_per_class"]) == {"no_sub", "cdm", "axion"}
    assert metrics["auc"] == pytest.approx(np.mean(list(metrics["auc_per_class"].values())))
    assert record["rotations"] is None
    for png in ("roc_curves.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # The same model scored through the Python API on the same images gives the same accuracy.
    import torch

    from lenszoo.checkpoint import load_checkpoint
    from lenszoo.data import StoredDataset

    model = load_checkpoint(folder)
    data = StoredDataset(test_data, "classify")
    images = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        predicted = model(images).argmax(1).numpy()
    assert metrics["accuracy"] == pytest.approx(float((predicted == data.targets).mean()))


def test_rotation_metrics_separate_invariant_from_non_invariant_models(archs, tmp_path, test_data):
    changes = {}
    for arch in ("pixelwise", "strided"):
        out = tmp_path / arch
        result = cli("evaluate", checkpoint(tmp_path, arch), "--data", test_data, "--rotations", "--out", out)
        assert result.exit_code == 0, result.output
        rotations = json.loads((out / "results.json").read_text())["rotations"]
        assert set(rotations) == {"rot90", "rot180", "rot270", "random"}
        changes[arch] = {name: entry["mean_abs_output_change"] for name, entry in rotations.items()}
        for entry in rotations.values():
            assert {"accuracy", "auc", "confusion_matrix"} <= set(entry["metrics"])
    for name in ("rot90", "rot180", "rot270"):
        assert changes["pixelwise"][name] < 1e-5  # exact pixel permutations
        assert changes["strided"][name] > 1e-3
    assert 0 < changes["pixelwise"]["random"] < changes["strided"]["random"]  # interpolation only


def test_continuous_rotation_agrees_with_quarter_turns():
    import torch

    from lenszoo.evaluate import rotate

    images = torch.randn(3, 1, 64, 64)
    assert torch.allclose(rotate(images, [0, 0, 0]), images, atol=1e-5)
    turned = rotate(images, [90, 180, 270])
    for i, k in enumerate((1, 2, 3)):
        assert torch.allclose(turned[i], torch.rot90(images[i], k, dims=(-2, -1)), atol=1e-4)


def test_regression_evaluation_on_another_dataset(archs, tmp_path):
    folder = checkpoint(tmp_path, "pixelwise", task="regress", dataset="A")
    out = tmp_path / "eval"
    result = cli("evaluate", folder, "--dataset", "B", "--n-per-class", 8, "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert (record["task"], record["dataset"], record["trained_on"], record["n"]) == ("regress", "B", "A", 8)
    metrics = record["metrics"]
    assert metrics["rmse"] == pytest.approx(np.sqrt(metrics["mse"]))
    assert metrics["rmse"] >= metrics["mae"] >= abs(metrics["bias"])
    assert (out / "scatter.png").is_file()

    report = cli("report", out)
    assert report.exit_code == 0, report.output
    assert "| pixelwise | B |" in report.output and f"{metrics['mae']:.4f}" in report.output


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_evaluate_errors_are_one_line(archs, tmp_path, test_data):
    folder = checkpoint(tmp_path, "pixelwise")
    assert_one_line_error(cli("evaluate", tmp_path / "no" / "such"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("evaluate", tmp_path / "empty"), "neither a run directory")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    assert_one_line_error(cli("evaluate", run), "no best checkpoint yet", "--resume")
    assert_one_line_error(cli("evaluate", folder, "--task", "regress"), "is a 'classify' model")
    assert_one_line_error(cli("evaluate", folder, "--split", "dev"), "unknown split")
    assert_one_line_error(cli("evaluate", folder, "--data", test_data, "--dataset", "B"), "holds dataset 'A'")
    assert_one_line_error(cli("evaluate", folder, "--data", test_data, "--split", "val"), "holds the 'test' split")
    assert_one_line_error(cli("evaluate", "pixelwise", "--dataset", "B"), "no released weights")


def test_tta_evaluation_is_invariant_to_the_eight_transforms_and_reported(tmp_path):
    """--tta scores the average over the dihedral group: the same for every rotation or flip of
    the test images, and it lands in results.json and on the results page."""
    import torch

    import lenszoo
    from lenszoo.evaluate import evaluate_model, tta_outputs
    from lenszoo.inference.scorer import dihedral_views

    torch.manual_seed(0)
    model = lenszoo.create_model("hnet", task="classify").eval()
    images = torch.rand(12, 1, 64, 64)
    targets = torch.arange(12) % 3
    outputs = [tta_outputs(model, view, "cpu", 256) for view in dihedral_views(images)]
    for out in outputs[1:]:  # log-probabilities of the averaged probabilities
        torch.testing.assert_close(out, outputs[0], atol=1e-4, rtol=1e-4)
    results, plain = evaluate_model(model, images, targets, task="classify", tta=True)
    assert (plain.log_softmax(1) - outputs[0]).abs().max() > 1e-3  # the net itself is not invariant
    assert results["tta"]["views"] == 8 and 0 <= results["tta"]["prediction_change_rate"] <= 1
    assert results["tta"]["metrics"]["accuracy"] == float((outputs[0].argmax(1) == targets).double().mean())


def test_precision_is_chosen_recorded_and_checked(archs, tmp_path, test_data):
    """--precision: fp32 by default (the weights' own figures), bf16 on request (close to fp32 for a
    small net), auto recorded as what it picked; a wrong value is a one-line error before any work."""
    folder = checkpoint(tmp_path, "strided")
    records = {}
    for precision in ("fp32", "bf16", "auto"):
        out = tmp_path / f"eval-{precision}"
        result = cli("evaluate", folder, "--data", test_data, "--out", out,
                     *(["--precision", precision] if precision != "fp32" else []))
        assert result.exit_code == 0, result.output
        records[precision] = json.loads((out / "results.json").read_text())
    assert records["fp32"]["precision"] == "fp32" and records["bf16"]["precision"] == "bf16"
    assert records["auto"]["precision"] in ("fp32", "bf16")
    assert abs(records["bf16"]["metrics"]["auc"] - records["fp32"]["metrics"]["auc"]) < 0.2
    result = cli("evaluate", folder, "--data", test_data, "--precision", "fp16")
    assert result.exit_code != 0 and "fp16" in result.output and "Traceback" not in result.output
    from lenszoo.errors import LenszooError
    from lenszoo.evaluate import run_evaluation

    with pytest.raises(LenszooError, match="precision must be one of"):
        run_evaluation(str(folder), data_dir=test_data, out=tmp_path / "never", precision="half")
    assert not (tmp_path / "never").exists()
