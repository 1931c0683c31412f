"""One model's outputs for batches of raw images: preprocessing, the engine that runs the network
(PyTorch or onnxruntime), the precision it runs in, test-time augmentation, and the identity
each row records. One implementation for ``predict`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LenszooError
from .options import ENGINES, check_precision

# What bf16 may change against fp32 on a model's holdout/test split before ``auto`` keeps fp32 for
# it: accuracy (a fraction: 0.001 is 0.1 point) and regression MAE (dex). Measured per released
# model by benchmarks/bf16_parity.py and recorded in its manifest entry (``bf16_parity``).
BF16_LIMITS = {"accuracy_change": 0.001, "mae_change": 0.005}


def dihedral_views(images):
    """The 8 rotations and reflections of ``(N, C, H, W)`` images (the dihedral group D4)."""
    import torch

    for flipped in (images, images.flip(-1)):
        for k in range(4):
            yield torch.rot90(flipped, k, dims=(-2, -1))


def view_average(outputs_of, x, task: str, *, tta: bool = True):
    """The mean over the 8 dihedral views of ``x`` (or ``x`` alone without ``tta``) of
    ``outputs_of(view)``: class probabilities for classify (softmax first), values for regress;
    float64, shape ``(N, 3)`` or ``(N, 1)``. One implementation for predict and evaluate."""
    import torch

    views = list(dihedral_views(x)) if tta else [x]
    total = None
    for view in views:
        out = outputs_of(view).double()
        out = torch.softmax(out, 1) if task == "classify" else out.reshape(len(view), 1)
        total = out if total is None else total + out
    return total / len(views)


def model_identity(model) -> tuple[str, str]:
    """A readable id of a loaded model and the sha256 of its weights (what each row records)."""
    config = getattr(model, "lenszoo_config", None) or {}
    released = config.get("released") or {}
    source = getattr(model, "lenszoo_source", None)
    if source is not None and source.kind == "hub":
        name = f"hf-hub:{source.repo_id}" + (f"@{source.revision}" if source.revision else "")
    elif source is not None and source.kind in ("run", "checkpoint"):
        name = str(Path(source.path).resolve())
    else:
        tag = config.get("tag")  # tagged weights are named as their folder and card are: ARCH-TASK-DATASET.TAG
        name = f"{config.get('arch')}-{config.get('task')}-{config.get('dataset')}" + (f".{tag}" if tag else "")
    return name, released.get("sha256") or config.get("weights_sha256") or ""


def input_size(model) -> tuple[int, int]:
    """The ``(H, W)`` of the images ``model`` takes (its config's ``input_size``; 64×64 by default)."""
    size = (getattr(model, "lenszoo_config", None) or {}).get("input_size") or (1, 64, 64)
    return int(size[-2]), int(size[-1])


# -- precision ---------------------------------------------------------------------------------------
def bf16_parity(config: dict) -> dict | None:
    """What bf16 changed against fp32 for these weights, as measured and recorded: the manifest
    entry's ``bf16_parity`` (attached at load, ``config["released"]``), else the checkpoint
    config's own; None when never measured."""
    for parity in ((config.get("released") or {}).get("bf16_parity"), config.get("bf16_parity")):
        if isinstance(parity, dict):
            return parity
    return None


def bf16_keeps_parity(parity: dict | None) -> bool:
    """False when a recorded change is beyond ``BF16_LIMITS`` (an unmeasured model is trusted)."""
    for key, limit in BF16_LIMITS.items():
        value = (parity or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= limit:
            return False
    return True


def choose_precision(requested: str, model, device, engine: str = "torch") -> tuple[str, str]:
    """``(precision, why)``: ``fp32`` or ``bf16`` for ``requested`` (``auto``, ``fp32``, ``bf16``).

    ``auto`` is bf16 where ``device`` computes it natively (a CUDA GPU; a CPU with AVX512-BF16 or
    AMX) and the model's recorded bf16 parity is within ``BF16_LIMITS``, else fp32; onnxruntime
    runs fp32 only."""
    from ..runtime import native_bf16

    check_precision(requested)
    if requested == "bf16" and engine != "torch":
        raise LenszooError(f"--precision bf16 runs with --engine torch; {engine} scores in fp32: drop --precision "
                           "or use --engine torch")
    if requested != "auto":
        return requested, "asked for"
    if engine != "torch":
        return "fp32", f"{engine} runs fp32"
    if not native_bf16(device):
        return "fp32", f"no native bfloat16 on this {'CPU' if device.type == 'cpu' else device.type}"
    if not bf16_keeps_parity(bf16_parity(getattr(model, "lenszoo_config", None) or {})):
        return "fp32", "these weights' measured bf16 parity is outside the limits"
    return "bf16", f"native bfloat16 on this {'CPU' if device.type == 'cpu' else device.type}"


# -- engines ----------------------------------------------------------------------------------------
class OnnxForward:
    """The model's forward pass run by onnxruntime: exported once (and checked against PyTorch,
    ``lenszoo.export``) into a temporary file, then called like the module on normalised batches.
    On CPUs onnxruntime's fused kernels run lenszoo's nets ~1.5x faster than PyTorch
    (``benchmarks/predict.py``); the outputs agree to ~1e-6."""

    def __init__(self, model):
        import tempfile

        import torch

        from ..export import export_onnx
        from .options import require_onnxruntime

        require_onnxruntime()
        import onnxruntime

        with tempfile.TemporaryDirectory(prefix="lenszoo-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(model, path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            # Idle threads sleep instead of spinning: the reading workers and the row writer need
            # those cores between batches (measured: end to end 57-73 % of bare with spinning,
            # 75-77 % without, on a loaded 2-core machine; bare speed alike).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images):
        import torch

        return torch.from_numpy(self.session.run(None, {"images": images.float().cpu().numpy()})[0])


class Scorer:
    """Outputs of one model for raw ``(N, H, W)`` images: class probabilities or log10 m_a,
    averaged over the 8 dihedral transforms with ``tta``; run by PyTorch (in fp32, or under
    bfloat16 autocast with ``precision="bf16"``, outputs back in float32) or, with
    ``engine="onnxruntime"``, by onnxruntime on the CPU. ``precision="auto"`` is decided by
    :func:`choose_precision`; ``self.precision`` says what was used."""

    def __init__(self, model, *, tta=False, device="cpu", engine="torch", precision="auto"):
        import torch

        config = getattr(model, "lenszoo_config", None)
        if not config or "task" not in config:
            raise LenszooError("predict needs a lenszoo model (lenszoo.load(...)); this module carries no "
                               "lenszoo_config")
        if engine not in ENGINES:
            raise LenszooError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        device = torch.device(device)
        if engine == "onnxruntime" and device.type != "cpu":
            raise LenszooError(f"--engine onnxruntime runs on the CPU; drop --device {device} or use --engine torch")
        self.precision, _ = choose_precision(precision, model, device, engine)
        self.model, self.tta, self.device = model.eval(), bool(tta), device
        self.task = config["task"]
        self.name, self.sha = model_identity(model)
        self.preprocess = getattr(model, "preprocess", None)
        self.network = OnnxForward(self.model) if engine == "onnxruntime" else self.model

    def forward(self, x):
        """The network's float32 outputs for a normalised batch, in this scorer's precision."""
        from ..runtime import autocast

        with autocast(self.precision, self.device):
            out = self.network(x)
        return out.float()

    def prepare(self, images):
        """Raw ``(N, H, W)`` (or ``(N, 1, H, W)``) images preprocessed as the model was trained, on
        this scorer's device."""
        import torch

        if not isinstance(images, torch.Tensor):
            images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        x = self.preprocess(images) if self.preprocess is not None else images[:, None]
        return x.to(self.device, non_blocking=True)

    def mean_outputs(self, images):
        """:func:`view_average` of raw ``images`` (float64: class probabilities or values, over the
        8 views with ``tta``), on this scorer's device."""
        import torch

        with torch.inference_mode():
            return view_average(self.forward, self.prepare(images), self.task, tta=self.tta)

    def network_outputs(self, images, batch_size=256):
        """The network's own outputs for raw ``images`` (logits for classify), float32 on the CPU,
        ``batch_size`` images per forward pass."""
        import torch

        with torch.inference_mode():
            out = [self.forward(self.prepare(images[start:start + batch_size])).cpu()
                   for start in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    def __call__(self, images) -> np.ndarray:
        mean = self.mean_outputs(images).float()
        return (mean if self.task == "classify" else mean.reshape(-1)).cpu().numpy()
