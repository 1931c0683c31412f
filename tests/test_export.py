"""`lenszoo export --onnx`: every built-in architecture as an ONNX graph that onnxruntime runs
with PyTorch's outputs; a clear error for a model that cannot be expressed."""

import json
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

import lenszoo
from lenszoo.checkpoint import save_checkpoint
from lenszoo.cli import main
from lenszoo.errors import LenszooError
from lenszoo.export import export_onnx


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def lenses(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] - 31.5
    ring = np.exp(-((np.hypot(yy, xx) - rng.uniform(10, 18, (n, 1, 1))) ** 2) / 8)
    return (ring + rng.normal(0, 0.05, (n, 64, 64))).astype(np.float32)


@pytest.mark.parametrize("arch, task", [("hnet", "regress"), ("etn", "classify"), ("resnet50", "classify"),
                                        ("c8_steerable", "classify"), ("radial_profile", "regress")])
def test_each_architecture_exports_and_onnxruntime_gives_pytorchs_outputs(tmp_path, arch, task):
    torch.manual_seed(0)
    if arch == "c8_steerable":  # the released weights, in their plain-torch inference form
        model, source = lenszoo.load("c8_steerable", task="classify", dataset="B"), "c8_steerable"
        args = ["--dataset", "B"]
    else:
        source, args = save_checkpoint(tmp_path / arch, lenszoo.create_model(arch, task=task), dataset="A"), []
        model = lenszoo.load(source)
    out = tmp_path / f"{arch}.onnx"
    result = cli("export", source, *args, "--onnx", out)
    assert result.exit_code == 0, result.output
    images = model.preprocess(lenses(5, seed=1))  # (N, 64, 64) -> (N, 1, 64, 64); another batch size than the export's
    with torch.no_grad():
        expected = model(images).numpy()
    got = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"images": images.numpy()})[0]
    assert got.shape == expected.shape == (5, 3 if task == "classify" else 1)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata["arch"] == arch and metadata["weights_sha256"] == model.lenszoo_config["weights_sha256"]
    assert "per_image_max_abs" in metadata["normalization"]


def test_an_existing_file_is_never_replaced(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"mine")
    result = cli("export", "c8_steerable", "--dataset", "A", "--onnx", out)
    assert result.exit_code != 0 and "exists" in result.stderr and "Traceback" not in result.output
    assert out.read_bytes() == b"mine"


def test_released_weights_carry_their_input_contract_into_the_onnx_metadata(tmp_path):
    import onnx

    out = tmp_path / "r.onnx"
    result = cli("export", "radial_profile", "--dataset", "B", "--onnx", out)
    assert result.exit_code == 0, result.output
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    contract = json.loads(metadata["input_contract"])
    assert contract["pixel_scale_arcsec"] == 0.08 and contract["image_size"] == [64, 64]
    assert contract["measured"]["background_level"] is not None


def test_a_model_onnx_cannot_express_is_one_error_and_leaves_no_file(tmp_path):
    class Spectral(torch.nn.Module):
        lenszoo_config = {"arch": "spectral", "task": "regress"}

        def forward(self, x):
            flat = x.flatten(2)
            return torch.linalg.eigvalsh(flat @ flat.transpose(1, 2))[:, :, :1].reshape(-1, 1)

    with pytest.raises(LenszooError, match="spectral does not export to ONNX"):
        export_onnx(Spectral(), tmp_path / "s.onnx", check=False)
    assert list(tmp_path.iterdir()) == []
