"""One prepared check of lenszoo on a GPU machine, in a few minutes, printing one table.

    python benchmarks/gpu_check.py                      # on a GPU: the real sizes (about 5 minutes)
    python benchmarks/gpu_check.py --tiny --device cpu  # the same steps at a tiny size (CI runs this)

Steps, each through lenszoo's own command line (what a user runs):
1. simulate a small stored training set (dataset A, `--workers` processes);
2. train `c8_steerable` and `resnet50` for a fixed number of images with bf16 autocast and
   channels_last: images/s;
3. train the same run again, stopped after its first step and resumed to the end: are the final
   weights identical? (on a GPU kernels need not be bitwise deterministic: the largest
   difference is printed either way);
4. write synthetic lenses as .npy stacks and `lenszoo predict` them (bf16): images/s end to end
   against the bare forward pass of the same model on the same images in memory.

Nothing here depends on a GPU: `--device cpu` runs every step, which is how it is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {  # images per step of the check: (train set per class, training images, predict images)
    "full": (4000, 48_000, 100_000),
    "tiny": (4, 24, 64),
}


def lenszoo(*args, env=None) -> tuple[str, float]:
    """Run ``python -m lenszoo ARGS``; its stdout and the seconds it took (errors stop the check)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lenszoo", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
                              [str(REPO), os.environ.get("PYTHONPATH", "")])})
    if done.returncode != 0:
        raise SystemExit(f"lenszoo {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout, time.perf_counter() - started


def weights_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    return max(float((ta[k].double() - tb[k].double()).abs().max()) if ta[k].numel() else 0.0 for k in ta)


def synthetic_lenses(n: int, seed: int = 0) -> np.ndarray:
    """Rings plus noise: the content does not change the speed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] - 31.5
    radius = np.hypot(yy, xx)
    out = np.empty((n, 64, 64), np.float32)
    for start in range(0, n, 2048):
        k = min(2048, n - start)
        out[start:start + k] = np.exp(-((radius[None] - rng.uniform(10, 18, (k, 1, 1))) ** 2) / 8) \
            + rng.normal(0, 0.05, (k, 64, 64))
    return out


def bare_forward(images: np.ndarray, device: str, precision: str, batch: int) -> float:
    """images/s of the released c8_steerable (classify, A) on in-memory images, best of two passes."""
    import torch

    import lenszoo

    model = lenszoo.load("c8_steerable", dataset="A", device=device)
    best = 0.0
    for _ in range(2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            for s in range(0, len(images), batch):
                model(model.preprocess(images[s:s + batch]).to(device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes (seconds; what CI runs on a CPU).")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, help="Also write the table's figures here.")
    args = parser.parse_args(argv)
    per_class, train_images, predict_images = SIZES["tiny" if args.tiny else "full"]
    batch = 8 if args.tiny else 256
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lenszoo-gpu-check-") as scratch:
        scratch = Path(scratch)
        _, seconds = lenszoo("simulate", "--dataset", "A", "--split", "train", "--n-per-class", per_class,
                             "--out", scratch / "train", "--workers", args.workers, "-q")
        rows.append(("simulate A train", f"{3 * per_class:,} images", f"{3 * per_class / seconds:,.0f} img/s"))
        epochs = 2
        common = ["--data", scratch / "train", "--val-fraction", "0.25", "--recipe", "cpu", "--epochs", epochs,
                  "--epoch-size", train_images // epochs, "--batch-size", batch, "--precision", args.precision,
                  "--channels-last", "--device", args.device, "--workers", min(args.workers, 4), "--quiet"]
        for arch in ("c8_steerable", "resnet50"):
            run, stopped = scratch / f"{arch}-run", scratch / f"{arch}-stopped"
            out, seconds = lenszoo("train", "--arch", arch, *common, "--out", run)
            rate = json.loads(out.strip().splitlines()[-1])["images_seen"] / seconds
            lenszoo("train", "--arch", arch, *common, "--out", stopped, "--max-minutes", "1e-6")
            lenszoo("train", "--resume", "--out", stopped)
            diff = weights_difference(run / "last" / "model.safetensors", stopped / "last" / "model.safetensors")
            rows.append((f"train {arch} ({args.precision}, channels_last)", f"{train_images:,} images",
                         f"{rate:,.0f} img/s (whole command)"))
            rows.append((f"resume {arch}", "stopped after 1 step", "identical weights" if diff == 0
                         else f"largest weight difference {diff:.2e}"))
        images = synthetic_lenses(predict_images)
        folder = scratch / "lenses"
        folder.mkdir()
        per_file = max(1, predict_images // 100)
        for k, start in enumerate(range(0, predict_images, per_file)):
            np.save(folder / f"{k:04d}.npy", images[start:start + per_file])
        bare = bare_forward(images, args.device, args.precision, 256)
        _, seconds = lenszoo("predict", "c8_steerable", "--dataset", "A", folder, "--out", scratch / "s.csv",
                             "--device", args.device, "--precision", args.precision, "--workers",
                             min(args.workers, 4), "--quiet")
        end_to_end = predict_images / seconds
        rows.append((f"c8_steerable bare forward ({args.precision})", f"{predict_images:,} images",
                     f"{bare:,.0f} img/s"))
        rows.append((f"predict .npy -> CSV ({args.precision})", f"{predict_images:,} images",
                     f"{end_to_end:,.0f} img/s ({end_to_end / bare:.0%} of bare, whole command)"))
    device = args.device
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            device = f"{device}: {torch.cuda.get_device_name()}"
    except Exception:  # noqa: BLE001 - the name is decoration
        pass
    print(f"lenszoo GPU check on {device}, {time.perf_counter() - started:.0f} s in all\n")
    from lenszoo.markdown import table

    print(table(["step", "size", "result"], rows))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
