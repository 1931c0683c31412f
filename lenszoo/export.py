"""``lenszoo export``: a model as an ONNX graph, checked against PyTorch.

Steerable models export in their plain-torch inference form; modules that build their
filters from parameters at run time (the Harmonic Network's) offer ``as_plain_conv()`` and are
swapped for the equivalent fixed convolution first. The graph takes ``images`` of shape
``(N, 1, 64, 64)``, already normalised (``model.preprocess``; the normalisation is recorded in
the graph's metadata), and returns ``outputs``: logits ``(N, 3)`` or log10 m_a ``(N, 1)``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

from .errors import LenszooError

OPSET = 17


def exportable_copy(model):
    """A copy of ``model`` whose run-time-built convolutions are fixed ``nn.Conv2d`` layers."""
    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        for child_name, child in list(module.named_children()):
            if hasattr(child, "as_plain_conv"):
                setattr(module, child_name, child.as_plain_conv())
    return clone


def check_onnx_path(path) -> Path:
    path = Path(path)
    if path.exists():
        raise LenszooError(f"{path} exists; lenszoo never overwrites a file: choose a new --onnx path")
    if path.suffix.lower() != ".onnx":
        raise LenszooError(f"--onnx {path}: name the file NAME.onnx")
    if not path.parent.is_dir():
        raise LenszooError(f"--onnx {path}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise LenszooError(f"--onnx {path}: the folder {path.parent} is not writable; choose another folder or "
                           "fix its permissions")
    return path


def export_onnx(model, path, *, opset: int = OPSET, check: bool = True) -> dict:
    """Write ``model`` to ``path`` (a new file) as ONNX; with ``check``, compare onnxruntime's
    outputs with PyTorch's on a batch of normalised random lenses. Returns what was checked."""
    import torch

    from .files import publish_new, temporary_path

    path = check_onnx_path(path)
    config = getattr(model, "lenszoo_config", None) or {}
    arch = config.get("arch", type(model).__name__)
    plain = exportable_copy(model)
    example = torch.zeros(2, 1, 64, 64)
    staging = temporary_path(path)
    try:
        with warnings.catch_warnings():  # tracer notes about our own input checks; the result is verified below
            warnings.simplefilter("ignore")
            torch.onnx.export(plain, (example,), str(staging), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["outputs"],
                              dynamic_axes={"images": {0: "batch"}, "outputs": {0: "batch"}})
    except OSError:  # the disk or the folder, not the model: the CLI says which, in one line
        staging.unlink(missing_ok=True)
        raise
    except Exception as exc:  # the exporter's own words say which operation it cannot express
        staging.unlink(missing_ok=True)
        reason = " ".join(str(exc).split())[:300]
        raise LenszooError(f"{arch} does not export to ONNX ({type(exc).__name__}: {reason})") from None
    try:
        _add_metadata(staging, config)
        result = {"arch": arch, "opset": opset, "path": str(path)}
        if check:
            result.update(check_onnx(staging, model))
        try:
            publish_new(staging, path)
        except FileExistsError:
            raise LenszooError(f"{path} appeared while exporting; lenszoo never overwrites a file: choose a new "
                               "--onnx path") from None
    finally:
        staging.unlink(missing_ok=True)
    return result


def _add_metadata(path: Path, config: dict):
    try:
        import onnx
    except ImportError:  # the graph is complete without it; only the metadata is skipped
        return
    graph = onnx.load(str(path))
    for key in ("arch", "task", "dataset", "tag", "weights_sha256", "lenszoo_version"):
        if config.get(key) is not None:
            graph.metadata_props.add(key=key, value=str(config[key]))
    for key in ("normalization", "class_names", "input_contract"):  # input_contract: what images it expects
        if config.get(key) is not None:
            graph.metadata_props.add(key=key, value=json.dumps(config[key]))
    onnx.save(graph, str(path))


def check_onnx(path, model, n: int = 16, seed: int = 0) -> dict:
    """Largest difference between onnxruntime's and PyTorch's outputs, relative to the outputs' scale."""
    import numpy as np
    import torch

    try:
        import onnxruntime
    except ImportError:
        raise LenszooError("checking the export needs onnxruntime: pip install 'lenszoo[onnx]', or pass "
                           "--no-check") from None
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(64.0) - 31.5, torch.arange(64.0) - 31.5, indexing="ij")
    ring = torch.exp(-((torch.hypot(yy, xx) - 14) ** 2) / 8)
    raw = ring * torch.rand(n, 1, 1, generator=generator) + 0.05 * torch.randn(n, 64, 64, generator=generator)
    images = model.preprocess(raw) if getattr(model, "preprocess", None) is not None else raw[:, None]
    with torch.no_grad():
        expected = model.eval()(images).float().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    scale = float(np.abs(expected).max()) or 1.0
    relative = float(np.abs(got - expected).max()) / scale
    if not relative < 1e-4:
        raise LenszooError(f"the ONNX graph differs from the PyTorch model by {relative:.2g} of the outputs' scale; "
                           "not written (report this with the model's name)")
    return {"checked_images": n, "max_relative_difference": relative}
