"""End-to-end `lenszoo predict` speed against the model's bare forward pass, in one run.

    python benchmarks/predict.py                       # c8_steerable classify A, 8,192 images
    python benchmarks/predict.py --arch hnet --n 4096 --workers 0
    python benchmarks/predict.py --engines torch          # skip the onnxruntime rows

Writes the same synthetic lenses (a ring plus noise; the content does not change the speed) as
FITS cubes and as .npy stacks into a temporary folder, then times: the bare forward pass on
normalised in-memory batches, and `predict` from each folder to a CSV (reading in worker
processes, normalisation, batching, writing rows). Prints images/s and the ratio to the bare
forward speed, for each engine (PyTorch, and onnxruntime when installed: ``--engine
onnxruntime``); ratios to PyTorch's bare forward pass. Last, the arithmetic: the model's FLOPs per
image and this machine's fp32 matmul rate, i.e. the images/s no implementation of these weights
could beat here. Run it on an idle machine; the figures are this machine's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_lenses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] - 31.5
    radius = np.hypot(yy, xx)
    out = np.empty((n, 64, 64), np.float32)
    for start in range(0, n, 1024):
        k = min(1024, n - start)
        ring = np.exp(-((radius[None] - rng.uniform(10, 18, (k, 1, 1))) ** 2) / 8)
        out[start:start + k] = ring + rng.normal(0, 0.05, (k, 64, 64))
    return out


def bare_forward(model, images, batch_size: int, engine: str = "torch") -> float:
    import torch

    from lenszoo.inference.scorer import OnnxForward

    forward = OnnxForward(model) if engine == "onnxruntime" else model
    best = 0.0
    for _ in range(2):  # the first pass warms up the kernels
        started = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                forward(model.preprocess(images[s:s + batch_size]))
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def end_to_end(model, folder: Path, out: Path, *, batch_size: int, workers: int,
               engine: str = "torch") -> tuple[float, int]:
    from lenszoo.inference.inputs import file_chunks, find_inputs
    from lenszoo.inference.pipeline import score
    from lenszoo.inference.table import RowWriter, columns_for

    files, problems = find_inputs([folder])
    assert not problems, problems
    writer = RowWriter(out, fmt="csv", columns=columns_for(model.lenszoo_config["task"]))
    started = time.perf_counter()  # includes onnxruntime's export and check (seconds, once per run)
    counts = score(model, file_chunks(files, workers=workers), writer, batch_size=batch_size, engine=engine)
    writer.close()
    return counts["images"] / (time.perf_counter() - started), counts["images"]


def flops_per_image(model) -> float:
    """Floating-point operations (a multiply-add counts two) of one forward pass, by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(model.preprocess(torch.zeros(1, 64, 64)))
    return float(counter.get_total_flops())


def matmul_gflops(size: int = 2048, repeats: int = 8) -> float:
    """The fp32 rate this machine's BLAS reaches on a large square matmul: a practical ceiling for
    any dense network here."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - started) / 1e9)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="c8_steerable")
    parser.add_argument("--task", default="classify")
    parser.add_argument("--dataset", default="A")
    parser.add_argument("--n", type=int, default=8192, help="images")
    parser.add_argument("--per-file", type=int, default=512, help="images per FITS cube / .npy stack")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--engines", default="torch,onnxruntime", help="comma-separated: torch, onnxruntime")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    if "onnxruntime" in engines:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime is not installed (pip install 'lenszoo[onnx]'): torch rows only")
            engines.remove("onnxruntime")

    import torch
    from astropy.io import fits

    import lenszoo

    try:
        model = lenszoo.load(args.arch, task=args.task, dataset=args.dataset)
    except lenszoo.LenszooError:  # no released weights: the speed is the same with random ones
        model = lenszoo.create_model(args.arch, task=args.task).eval()
    images = synthetic_lenses(args.n)
    print(f"{args.arch} ({model.lenszoo_config.get('form', 'trainable')}), {args.n} images in files of "
          f"{args.per_file}, batch {args.batch_size}, {args.workers} reading worker(s), {torch.get_num_threads()} "
          "torch threads")
    peak_before = matmul_gflops()  # measured before and after the rows; a shared machine varies
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "fits").mkdir()
        (tmp / "npy").mkdir()
        for i, start in enumerate(range(0, args.n, args.per_file)):
            chunk = images[start:start + args.per_file]
            fits.PrimaryHDU(chunk).writeto(tmp / "fits" / f"cube{i:04d}.fits")
            np.save(tmp / "npy" / f"stack{i:04d}.npy", chunk)
        bare = None
        rows = []
        for engine in engines:
            rate = bare_forward(model, torch.from_numpy(images), args.batch_size, engine)
            bare = bare or rate  # the first engine's bare forward pass is the reference
            rows.append((f"[{engine}] bare forward (normalised, in memory)", rate, rate / bare))
            for kind in ("fits", "npy"):
                rate, n = end_to_end(model, tmp / kind, tmp / f"{kind}-{engine}.csv", batch_size=args.batch_size,
                                     workers=args.workers, engine=engine)
                assert n == args.n
                rows.append((f"[{engine}] predict from {kind.upper()} files to CSV", rate, rate / bare))
    width = max(len(r[0]) for r in rows)
    for name, rate, ratio in rows:
        share = f"{ratio:6.0%} of torch's bare forward"
        print(f"  {name:<{width}}  {rate:8,.0f} img/s  {share}")
    # What the arithmetic allows: images/s at the machine's own matmul rate, against the best measured
    flops, peak = flops_per_image(model), max(peak_before, matmul_gflops())
    fastest = max(rate for _, rate, _ in rows)
    print(f"  {flops / 1e6:,.1f} MFLOP per image; fp32 matmul peak here {peak:,.0f} GFLOP/s -> at most "
          f"{peak * 1e9 / flops:,.0f} img/s if every layer ran at the matmul rate; the fastest row above runs at "
          f"{fastest * flops / 1e9:,.0f} GFLOP/s ({fastest * flops / 1e9 / peak:.0%} of the peak)")


if __name__ == "__main__":
    main()
