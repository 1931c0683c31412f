"""Simulation throughput: images/s per class with 1 and N workers, and end to end into a directory.

    .venv/bin/python benchmarks/simulate.py [--dataset A] [--images 600] [--workers 2]

Per class, each measurement simulates ``--images`` images (noise on) after a
warm-up, first in this process, then split across ``--workers`` forked
processes; the best of ``--repeats`` measurements is printed (other load only
ever slows a run down). "cpu img/s" divides by the CPU time the simulating processes
actually got, which stays meaningful on a shared machine where wall-clock
rates drop with other load (the load average is printed for that reason).
Goal (issue 3): >= 600 images/s per core for cdm, near-linear in workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

import torch

torch.set_num_threads(2)  # benchmark convention; the simulation itself uses no torch

import lenszoo  # noqa: E402
from lenszoo.data.generate import _pool_context, simulate_dataset  # noqa: E402

_generator = None


def _simulate(args):
    class_name, start, stop = args
    cpu = time.process_time()
    for index in range(start, stop):
        _generator.simulate("train", index, class_name=class_name)
    return time.process_time() - cpu


def measure(class_name: str, images: int, workers: int) -> tuple[float, float]:
    """(wall images/s, images per CPU-second) for ``images`` images on ``workers`` processes."""
    if workers == 1:
        start = time.perf_counter()
        cpu = _simulate((class_name, 0, images))
        return images / (time.perf_counter() - start), images / cpu
    bounds = [images * w // workers for w in range(workers + 1)]
    tasks = [(class_name, bounds[w], bounds[w + 1]) for w in range(workers)]
    with _pool_context().Pool(workers) as pool:
        pool.map(_simulate, [(class_name, 0, 1)] * workers)  # processes up before the clock starts
        start = time.perf_counter()
        cpu = sum(pool.map(_simulate, tasks, chunksize=1))
        wall = time.perf_counter() - start
    return images / wall, images / cpu


def compare_point_masses(generator, images: int = 200, repeats: int = 3):
    """CPU ms per noise-free render: lenszoo's batched point masses vs a list of lenstronomy POINT_MASS."""
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    model = generator.model
    for class_name in ("cdm", "axion"):
        cases = []
        for index in range(images):
            realization = generator.draw("train", index, class_name=class_name)
            kwargs_lens = generator.kwargs_lens(realization)
            points = kwargs_lens[2]
            listed = kwargs_lens[:2] + [{"theta_E": t, "center_x": x, "center_y": y} for t, x, y in
                                        zip(points["einstein_radii"], points["positions_x"], points["positions_y"])]
            source = [{**model.kwargs_source, "center_x": realization.source_x, "center_y": realization.source_y}]
            cases.append((kwargs_lens, listed, source))
        count = len(cases[0][1]) - 2
        reference = ImageModel(model.sim.data_class, model.sim.psf_class,
                               lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * count),
                               source_model_class=model.sim.source_model_class,
                               kwargs_numerics=generator.config["numerics"])
        ours, theirs = [], []
        for _ in range(repeats):
            start = time.process_time()
            for kwargs_lens, _, source in cases:
                model.image_model.image(kwargs_lens, source, lens_light_add=False, point_source_add=False)
            ours.append(time.process_time() - start)
            start = time.process_time()
            for _, listed, source in cases:
                reference.image(listed, source, lens_light_add=False, point_source_add=False)
            theirs.append(time.process_time() - start)
        print(f"{class_name:<6} render: batched point masses {min(ours) / images * 1e3:.2f} ms, "
              f"{count} lenstronomy POINT_MASS {min(theirs) / images * 1e3:.2f} ms "
              f"({min(theirs) / min(ours):.1f}x)")


def best(measurements) -> tuple[float, float]:
    """Highest wall-clock and highest per-CPU-second rate over repeated measurements."""
    walls, cpus = zip(*measurements)
    return max(walls), max(cpus)


def main():
    global _generator
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="A")
    parser.add_argument("--images", type=int, default=600, help="images per class and measurement")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many measurements")
    parser.add_argument("--compare-point-mass", action="store_true",
                        help="also time rendering against a list of lenstronomy POINT_MASS profiles")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # plugin import warnings are not what is measured here

    _generator = lenszoo.get_dataset(args.dataset)
    start = time.perf_counter()
    _generator.warm_up()
    print(f"dataset {args.dataset}; warm-up (imports, lenstronomy objects, kernel) {time.perf_counter() - start:.1f} s")
    print(f"cpus {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f} "
          "(a load above the core count means the wall-clock rates below are shared)")
    header = f"{'class':<8} {'1w img/s':>9} {'1w cpu img/s':>13} {f'{args.workers}w img/s':>9} " \
             f"{f'{args.workers}w cpu img/s':>13} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for class_name in _generator.class_names:
        one_wall, one_cpu = best(measure(class_name, args.images, 1) for _ in range(args.repeats))
        many_wall, many_cpu = best(measure(class_name, args.images, args.workers) for _ in range(args.repeats))
        print(f"{class_name:<8} {one_wall:9.0f} {one_cpu:13.0f} {many_wall:9.0f} {many_cpu:13.0f} "
              f"{many_wall / one_wall:6.2f}")

    if args.compare_point_mass:
        compare_point_masses(_generator, repeats=args.repeats)

    out = tempfile.mkdtemp(prefix="lenszoo-bench-")
    try:
        for workers in sorted({1, args.workers}):
            summary = simulate_dataset(_generator, "val", args.images // 3 or 1, os.path.join(out, str(workers)),
                                       workers=workers, shard_size=200, progress=False)
            print(f"end to end (mixed classes, written to disk), {workers} worker(s): "
                  f"{summary['images_per_second']:.0f} img/s")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
