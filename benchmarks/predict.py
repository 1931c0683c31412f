"""End-to-end `lenszoo predict` speed against each engine's bare forward pass, per precision, in one run.

    python benchmarks/predict.py                       # c8_steerable classify A, 8,192 images
    python benchmarks/predict.py --arch hnet --n 4096 --workers 0
    python benchmarks/predict.py --engines torch --precisions fp32      # one path only
    python benchmarks/predict.py --n 1024 --record predict-speed.json   # a quick check, figures kept

Writes the same synthetic lenses (a ring plus noise; the content does not change the speed) as
FITS cubes and as .npy stacks into a temporary folder. Then, for each path (PyTorch in fp32,
PyTorch under bfloat16 autocast, onnxruntime in fp32), it times the bare forward pass on
normalised in-memory batches, and the pipeline `lenszoo predict` runs (lenszoo/inference:
reading in worker processes, the contract checks, normalisation, batching, rows written and
synced per batch) from each folder into a CSV (and Parquet with --formats csv,parquet). The
one-time set-up (loading, onnxruntime's export and check) is outside the timings.

Printed: images/s of every row; each end-to-end row as a share of its own path's bare forward
and of the fastest bare forward of the run (issue 32's goal: >= 70 %); and the arithmetic:
the model's FLOPs per image and this machine's fp32 and bf16 matmul rates, so each row's share
of the peak of its precision says how close it runs to what these cores can do. On a CPU
without native bfloat16 (no avx512_bf16 / amx_bf16) bf16 is emulated and slow; `predict
--precision auto` then runs fp32. Run it on an idle machine; the figures are this machine's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATHS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"))


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


def bare_forward(scorer, normalised, batch_size: int) -> float:
    """Images/s of the network alone (in the scorer's engine and precision) on normalised batches."""
    import torch

    best = 0.0
    for _ in range(2):  # the first pass warms up the kernels
        started = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(normalised), batch_size):
                scorer.forward(normalised[s:s + batch_size])
        best = max(best, len(normalised) / (time.perf_counter() - started))
    return best


def end_to_end(model, scorer, folder: Path, out: Path, *, fmt: str, batch_size: int,
               workers: int) -> tuple[float, int]:
    """Images/s of the predict pipeline from ``folder``'s files into a new table ``out``, and the
    images it scored."""
    from lenszoo.contract import model_contract
    from lenszoo.inference.inputs import file_chunks, find_inputs
    from lenszoo.inference.pipeline import score
    from lenszoo.inference.scorer import input_size
    from lenszoo.inference.table import columns_for
    from lenszoo.inference.writer import RowWriter

    files, problems = find_inputs([folder])
    assert not problems, problems
    contract = model_contract(model)
    writer = RowWriter(out, fmt=fmt, columns=columns_for(scorer.task))
    started = time.perf_counter()
    counts = score(model, file_chunks(files, workers=workers, size=input_size(model)), writer, scorer=scorer,
                   batch_size=batch_size, contract=contract)
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


def matmul_gflops(precision: str, seconds: float = 1.0) -> float:
    """The rate this machine reaches on a square matmul in ``precision`` (fp32, or bf16 as torch runs
    it here: native where the CPU has it, emulated where not): a practical ceiling for a dense
    network in that precision. The side grows until one product takes ~0.1 s (2048 or more for
    fp32 on a CPU; emulated bf16 stays small), then the best of ``seconds`` of products counts."""
    import torch

    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    size = 256
    while True:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        started = time.perf_counter()
        a @ b
        if time.perf_counter() - started > 0.1 or size >= 4096:
            break
        size *= 2
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - started) / 1e9)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="c8_steerable")
    parser.add_argument("--task", default="classify")
    parser.add_argument("--dataset", default="A")
    parser.add_argument("--n", type=int, default=8192, help="images")
    parser.add_argument("--per-file", type=int, default=512, help="images per FITS cube / .npy stack")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--engines", default="torch,onnxruntime", help="comma-separated: torch, onnxruntime")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16 (bf16: torch only)")
    parser.add_argument("--formats", default="csv", help="comma-separated tables written: csv, parquet")
    parser.add_argument("--record", type=Path, help="Also write the figures as JSON here.")
    args = parser.parse_args(argv)
    if args.n < 1 or args.per_file < 1 or args.batch_size < 1 or args.workers < 0:
        parser.error("--n, --per-file and --batch-size must be >= 1, --workers >= 0")
    engines, precisions = args.engines.split(","), args.precisions.split(",")
    formats = [f for f in args.formats.split(",") if f]
    if "onnxruntime" in engines:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime is not installed (pip install 'lenszoo[onnx]'): no onnxruntime rows")
            engines.remove("onnxruntime")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            print("pyarrow is not installed (pip install pyarrow): no Parquet rows")
            formats.remove("parquet")
    paths = [p for p in PATHS if p[0] in engines and p[1] in precisions]
    if not paths:
        parser.error(f"no path to measure: engines {args.engines}, precisions {args.precisions}")

    import torch
    from astropy.io import fits

    import lenszoo
    from lenszoo.inference.scorer import Scorer
    from lenszoo.runtime import hardware_name, native_bf16

    try:
        model = lenszoo.load(args.arch, task=args.task, dataset=args.dataset)
    except lenszoo.LenszooError:  # no released weights: the speed is the same with random ones
        model = lenszoo.create_model(args.arch, task=args.task).eval()
    images = synthetic_lenses(args.n)
    cpu = torch.device("cpu")
    print(f"{args.arch} ({model.lenszoo_config.get('form', 'trainable')}), {args.n} images in files of "
          f"{args.per_file}, batch {args.batch_size}, {args.workers} reading worker(s), {torch.get_num_threads()} "
          f"torch threads; {hardware_name(cpu)}, {'native' if native_bf16(cpu) else 'no native (emulated)'} bfloat16")
    peaks = {precision: matmul_gflops(precision) for precision in sorted({p for _, p in paths})}
    rows = []  # (path, what, images/s)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "fits").mkdir()
        (tmp / "npy").mkdir()
        for i, start in enumerate(range(0, args.n, args.per_file)):
            chunk = images[start:start + args.per_file]
            fits.PrimaryHDU(chunk).writeto(tmp / "fits" / f"cube{i:04d}.fits")
            np.save(tmp / "npy" / f"stack{i:04d}.npy", chunk)
        normalised = model.preprocess(images)
        for engine, precision in paths:
            path = f"{engine} {precision}"
            scorer = Scorer(model, engine=engine, precision=precision)  # onnxruntime: exported and checked here
            rows.append((path, "bare forward (normalised, in memory)", bare_forward(scorer, normalised,
                                                                                  args.batch_size)))
            for kind in ("fits", "npy"):
                for fmt in formats:
                    out = tmp / f"{kind}-{engine}-{precision}.{fmt}"
                    rate, scored = end_to_end(model, scorer, tmp / kind, out, fmt=fmt, batch_size=args.batch_size,
                                              workers=args.workers)
                    assert scored == args.n, (scored, args.n)
                    rows.append((path, f"predict {kind.upper()} -> {fmt.upper()}", rate))
    for precision, peak in peaks.items():  # measured again after the rows: a shared machine varies
        peaks[precision] = max(peak, matmul_gflops(precision))
    flops = flops_per_image(model)
    bare = {path: rate for path, what, rate in rows if what.startswith("bare")}
    fastest_path = max(bare, key=bare.get)
    fastest = bare[fastest_path]
    width = max(len(f"[{path}] {what}") for path, what, _ in rows)
    print(f"  {'':<{width}}  {'img/s':>8}  {'own bare':>8}  {'fastest':>8}  {'of peak':>7}")
    record_rows = []
    for path, what, rate in rows:
        precision = path.split()[1]
        own, of_fastest, share = rate / bare[path], rate / fastest, rate * flops / 1e9 / peaks[precision]
        print(f"  {f'[{path}] {what}':<{width}}  {rate:8,.0f}  {own:8.0%}  {of_fastest:8.0%}  {share:7.0%}")
        record_rows.append({"path": path, "what": what, "images_per_s": round(rate, 1), "of_own_bare": round(own, 6),
                            "of_fastest_bare": round(of_fastest, 6), "of_matmul_peak": round(share, 6)})
    end_to_end_best = max(rate for _, what, rate in rows if what.startswith("predict"))
    print(f"  fastest bare forward: {fastest_path}, {fastest:,.0f} img/s; best end to end {end_to_end_best:,.0f} "
          f"img/s = {end_to_end_best / fastest:.0%} of it (goal >= 70 %)")
    print(f"  {flops / 1e6:,.1f} MFLOP per image; matmul peak here: "
          + ", ".join(f"{p} {g:,.0f} GFLOP/s (at most {g * 1e9 / flops:,.0f} img/s)" for p, g in peaks.items())
          + "; 'of peak' is each row's FLOP rate over the peak of its precision")
    if "bf16" in peaks and not native_bf16(cpu):
        print("  (no native bfloat16 here: bf16 rows and its matmul rate are torch's emulation, which convolutions "
              "can outrun, so bf16 shares above 100 % say nothing about a ceiling)")
    if args.record:
        from lenszoo.files import atomic_write_json

        atomic_write_json(args.record, {
            "format": "lenszoo-predict-speed", "arch": args.arch, "task": args.task, "n": args.n,
            "per_file": args.per_file, "batch_size": args.batch_size, "workers": args.workers,
            "threads": torch.get_num_threads(), "hardware": hardware_name(cpu), "native_bf16": native_bf16(cpu),
            "mflop_per_image": round(flops / 1e6, 2), "matmul_gflops": {k: round(v, 1) for k, v in peaks.items()},
            "fastest_bare": fastest_path, "best_end_to_end_of_fastest_bare": round(end_to_end_best / fastest, 4),
            "rows": record_rows, "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()
