"""A model's metrics on raw test images: as given, averaged over the 8 rotations and flips (test-time
augmentation) and rotated. The outputs come from the inference pipeline's scorer
(:class:`lenszoo.inference.scorer.Scorer`, fp32 unless asked), the metrics from :mod:`lenszoo.metrics`."""

from __future__ import annotations

import math

import numpy as np

from .metrics import task_metrics


def scorer_of(model, device="cpu", *, tta=False, precision="fp32"):
    """The :class:`~lenszoo.inference.scorer.Scorer` of ``model``: fp32 by default, so an evaluation's
    numbers are the weights' own on any machine; ``auto``/``bf16`` measure what ``predict`` would do."""
    from .inference.scorer import Scorer

    return Scorer(model, device=device, precision=precision, tta=tta)


def rotate(images, angles_deg):
    """Rotate each ``(1, H, W)`` image about its centre by its angle in degrees, in ``torch.rot90``'s
    sense (90 equals ``rot90(k=1)``); bicubic, mirrored edges."""
    import torch
    import torch.nn.functional as F

    theta = torch.as_tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # grid_sample maps output to input (x right, y down) coordinates.
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="reflection", align_corners=False)


def rotation_variants(images, seed=0):
    """``(name, rotated images)``: quarter turns (exact) and one random angle per image."""
    import torch

    for k in (1, 2, 3):
        yield f"rot{90 * k}", torch.rot90(images, k, dims=(-2, -1))
    rng = np.random.Generator(np.random.PCG64(seed))
    angles = rng.uniform(0.0, 360.0, size=len(images))
    out = []
    for start in range(0, len(images), 512):
        out.append(rotate(images[start : start + 512], angles[start : start + 512]))
    yield "random", torch.cat(out)


def tta_outputs(model, images, device="cpu", batch_size=256, precision="fp32"):
    """Outputs averaged over the 8 rotations and flips (as ``lenszoo predict --tta``): class
    probabilities averaged, returned as log-probabilities (their softmax is the average), or the
    mean regressed value."""
    import torch

    scorer = scorer_of(model, device, tta=True, precision=precision)
    mean = torch.cat([scorer.mean_outputs(images[start:start + batch_size]).cpu()
                      for start in range(0, len(images), batch_size)])
    return (mean.clamp_min(1e-300).log() if scorer.task == "classify" else mean).float()


def evaluate_model(model, images, targets, *, task, device="cpu", rotations=False, seed=0, batch_size=256, log=None,
                   tta=False, precision="fp32"):
    """Metrics of ``model`` on raw ``images`` (and their rotations, and with test-time augmentation);
    returns ``(results, outputs)``; ``results["precision"]`` is the arithmetic used."""
    scorer = scorer_of(model, device, precision=precision)
    outputs = scorer.network_outputs(images, batch_size)
    results = {"metrics": task_metrics(task, outputs, targets), "precision": scorer.precision}
    if tta:
        averaged = tta_outputs(model, images, device, batch_size, precision=scorer.precision)
        entry = {"views": 8, "metrics": task_metrics(task, averaged, targets)}
        if task == "classify":
            entry["prediction_change_rate"] = float((averaged.argmax(1) != outputs.argmax(1)).double().mean())
        results["tta"] = entry
        if log:
            log(f"  tta (8 rotations and flips): {headline(task, entry['metrics'])}")
    if rotations:
        results["rotations"] = {}
        for name, rotated in rotation_variants(images, seed):
            rotated_out = scorer.network_outputs(rotated, batch_size)
            change = (rotated_out - outputs).abs()
            entry = {"metrics": task_metrics(task, rotated_out, targets),
                     "mean_abs_output_change": float(change.mean()), "max_abs_output_change": float(change.max())}
            if task == "classify":
                entry["prediction_change_rate"] = float((rotated_out.argmax(1) != outputs.argmax(1)).double().mean())
            results["rotations"][name] = entry
            if log:
                log(f"  {name}: {headline(task, entry['metrics'])}, mean |output change| "
                    f"{entry['mean_abs_output_change']:.3g}")
    return results, outputs


def headline(task, metrics):
    """The one-line summary of ``metrics``: accuracy and AUC, or the regression errors."""
    if task == "classify":
        auc = f", AUC {metrics['auc']:.4f}" if metrics.get("auc") is not None else ""
        return f"accuracy {metrics['accuracy']:.2%}{auc}"
    return f"MAE {metrics['mae']:.3f} dex, RMSE {metrics['rmse']:.3f}, bias {metrics['bias']:+.3f}"
