"""How strongly substructure marks an image, and how much of that a smooth lens cannot mimic.

Every generator draws an image's nuisances (lens, source, noise) from streams that do not depend
on its class, so one image seed renders the same lens with no substructure, with CDM subhalos and
with a vortex. The imprint of the substructure is the difference ``d`` of the noise-free images in
units of the smooth image's pixel noise. Two numbers per image:

- ``known``: ``|d|``, the discriminability d' of an observer who knows every other parameter of the
  image (for Gaussian noise, error rate Phi(-d'/2) between the two hypotheses);
- ``marginal``: what is left of it after the dataset's nuisances (the generator's ``nuisances``:
  on C the lens's Einstein radius, slope, ellipticity, shear and centre, the source's brightness,
  shape and position, its clumps) are refitted, starting from their true values, to the image
  with substructure: lens modellers' detection criterion, the chi^2 that the best smooth model
  cannot remove (``marginal**2``). The refit is local (Gauss-Newton with Broyden updates); a real
  smooth model reaches the residual it reports, so ``marginal`` is if anything too high.

``marginal`` is about what an observer who must infer the nuisances too can still use (a
network is such an observer); an image whose ``marginal`` is below ~1 carries no usable trace of
its substructure.
"""

from __future__ import annotations

import numpy as np

from ..errors import LenszooError
from ..metrics import MASS_BIN_EDGES, mass_bin_masks

SUBSTRUCTURE_CLASSES = ("cdm", "axion")
_RELATIVE_STEP = 1e-3  # finite-difference step: 1e-3 of a parameter (at least 1e-4 in its units)
REFIT_ROUNDS, REFIT_STEPS = 3, 8  # smooth refit: rounds of fresh derivatives, Broyden steps in each


def pixel_sigma(generator, smooth: np.ndarray) -> np.ndarray:
    """Per-pixel noise of ``smooth`` under the generator's noise model (background, then Poisson)."""
    model = generator.model
    return np.sqrt(model.background_noise**2 + model.sim.flux_noise(smooth) ** 2)


def _render(generator, realization) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # a refit's trial step may blow up: it is then halved
        return generator.render(realization, noise=False).astype(np.float64).ravel()


def nuisance_derivatives(generator, smooth_realization, smooth: np.ndarray) -> np.ndarray:
    """(pixels, nuisances) forward differences of the noise-free image, per unit of each nuisance."""
    values = generator.nuisances(smooth_realization)
    columns = []
    for name, value in values.items():
        step = _RELATIVE_STEP * max(abs(value), 0.1)
        moved = generator.with_nuisances(smooth_realization, {name: value + step})
        columns.append((_render(generator, moved) - smooth) / step)
    return np.stack(columns, axis=1) if columns else np.zeros((smooth.size, 0))


def unexplained(imprint: np.ndarray, derivatives: np.ndarray) -> np.ndarray:
    """``imprint`` minus its least-squares fit by the columns of ``derivatives`` (all noise-whitened)."""
    return imprint - derivatives @ _fit(derivatives, imprint)


def _column_scale(derivatives: np.ndarray) -> np.ndarray:
    """Each column's norm (1 for an empty one): solving on unit columns keeps lstsq well scaled."""
    scale = np.linalg.norm(derivatives, axis=0)
    return np.where(scale > 0, scale, 1.0)


def _fit(derivatives: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``target`` on the columns of ``derivatives``."""
    if derivatives.shape[1] == 0:
        return np.zeros(0)
    scale = _column_scale(derivatives)
    coefficients, *_ = np.linalg.lstsq(derivatives / scale, target, rcond=1e-8)
    return coefficients / scale


def refit_residual(generator, smooth_realization, derivatives: np.ndarray, target: np.ndarray, sigma: np.ndarray,
                   *, smooth: np.ndarray | None = None, rounds: int = REFIT_ROUNDS, steps: int = REFIT_STEPS) -> float:
    """Norm of ``target`` (a noise-free image over ``sigma``) minus the best smooth image found by
    moving the nuisances from their true values (whitened ``derivatives`` there given).

    Each round takes Gauss-Newton steps from the derivatives where it starts, kept up to date by
    Broyden's rank-one updates (one render per step), each step halved while it does not help; the
    next round measures the derivatives afresh. A real smooth lens reaches the returned residual,
    so the best smooth fit is at least this good. ``smooth``: the image of ``smooth_realization``,
    if already rendered."""
    start = generator.nuisances(smooth_realization)
    names = list(start)
    offsets = np.zeros(len(names))  # nuisance changes, in their own units
    current = smooth_realization
    residual = target - (_render(generator, current) if smooth is None else smooth) / sigma
    best = float(np.linalg.norm(residual))
    for round_ in range(rounds):
        if round_:  # the current image is target - residual: no need to render it again
            derivatives = nuisance_derivatives(generator, current, (target - residual) * sigma) / sigma[:, None]
        scale = _column_scale(derivatives)
        jacobian = derivatives / scale  # per unit-norm move of each nuisance
        began = best
        for _ in range(steps):
            step, *_ = np.linalg.lstsq(jacobian, residual, rcond=1e-8)
            for _halving in range(4):
                trial_offsets = offsets + step / scale
                moved = generator.with_nuisances(
                    smooth_realization, {n: start[n] + float(o) for n, o in zip(names, trial_offsets)})
                trial = target - _render(generator, moved) / sigma
                norm = float(np.linalg.norm(trial))
                if norm < best:  # False for inf and nan too
                    break
                step = step / 2
            else:
                break
            # Broyden: make the Jacobian reproduce the change this step actually made
            jacobian = jacobian + np.outer((residual - trial) - jacobian @ step, step) / float(step @ step)
            improved = best - norm
            offsets, current, residual, best = trial_offsets, moved, trial, norm
            if improved < 0.002 * best:
                break
        if began - best < 0.002 * best:
            break
    return best


_REQUIRED = ("image_seed", "draw_from_seed", "render", "nuisances", "with_nuisances", "model")


def image_signal(generator, split: str, index: int, seed: int = 0) -> dict:
    """Both signals of image ``index`` of ``split``, rendered as every class with its nuisances."""
    image_seed = generator.image_seed(split, index, seed)
    smooth_realization = generator.draw_from_seed(image_seed, "no_sub")
    smooth = _render(generator, smooth_realization)
    sigma = pixel_sigma(generator, smooth)
    derivatives = nuisance_derivatives(generator, smooth_realization, smooth) / sigma[:, None]
    out = {"nuisances": sorted(generator.nuisances(smooth_realization)), "log10_axion_mass": float("nan")}
    for name in SUBSTRUCTURE_CLASSES:
        if name not in generator.class_names:
            continue
        realization = generator.draw_from_seed(image_seed, name)
        image = _render(generator, realization)
        imprint = (image - smooth) / sigma
        out[name] = (float(np.linalg.norm(imprint)),
                     refit_residual(generator, smooth_realization, derivatives, image / sigma, sigma,
                                    smooth=smooth))
        if name == "axion":
            out["log10_axion_mass"] = float(realization.log10_axion_mass)
    return out


_worker_generator = None


def _init_worker(generator):
    global _worker_generator
    _worker_generator = generator


def _worker_signal(args):
    return image_signal(_worker_generator, *args)


def substructure_signal(generator, n: int, *, split: str = "test", seed: int = 0, workers: int = 1) -> dict:
    """Both signals of the first ``n`` images of ``split``, per substructure class.

    Returns ``{"cdm": {"known": array, "marginal": array}, "axion": {...}, "log10_axion_mass": array,
    "nuisances": [names...]}``; image ``i`` is index ``i`` of the split rendered as every class with
    the same nuisances, so the result does not depend on ``workers``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LenszooError(f"the signal needs a whole number of images >= 1, got {n!r}; pass --n 200 or so")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise LenszooError(f"--workers must be a whole number >= 1, got {workers!r}")
    missing = [attribute for attribute in _REQUIRED if not hasattr(generator, attribute)]
    if missing:
        raise LenszooError(f"dataset {getattr(generator, 'name', generator)!r} cannot be measured: its generator "
                           f"lacks {', '.join(missing)} (see docs/datasets.md, 'Substructure signal')")
    classes = [c for c in SUBSTRUCTURE_CLASSES if c in generator.class_names]
    if "no_sub" not in generator.class_names or not classes:
        raise LenszooError(f"dataset {generator.name} has no no_sub class to compare its substructure with")
    tasks = [(split, index, seed) for index in range(n)]
    if workers == 1:
        rows = [image_signal(generator, *task) for task in tasks]
    else:
        from .generate import _pool_context

        with _pool_context().Pool(min(workers, n), initializer=_init_worker, initargs=(generator,)) as pool:
            rows = pool.map(_worker_signal, tasks, chunksize=1)
    result = {name: {"known": np.array([row[name][0] for row in rows]),
                     "marginal": np.array([row[name][1] for row in rows])} for name in classes}
    names = sorted({name for row in rows for name in row["nuisances"]})
    return {**result, "log10_axion_mass": np.array([row["log10_axion_mass"] for row in rows]), "nuisances": names}


def summarize_signal(signal: dict) -> list[dict]:
    """Rows of the signal table: each class, then the vortex by log10 m_a bin (the regression's bins)."""
    rows = []

    def row(label, known, marginal):
        def stats(values):
            return [float(v) for v in np.percentile(values, [16, 50, 84])] if values.size else [float("nan")] * 3

        rows.append({"sample": label, "n": int(known.size), "known": stats(known), "marginal": stats(marginal),
                     "marginal_at_least_1": float(np.mean(marginal >= 1)) if marginal.size else float("nan"),
                     "marginal_at_least_5": float(np.mean(marginal >= 5)) if marginal.size else float("nan")})

    for name in SUBSTRUCTURE_CLASSES:
        if name in signal:
            row(name, signal[name]["known"], signal[name]["marginal"])
    if "axion" in signal:
        masses = signal["log10_axion_mass"]
        for (low, high), inside in mass_bin_masks(masses):
            row(f"axion, log10 m_a in [{low:g}, {high:g}{']' if high == MASS_BIN_EDGES[-1] else ')'}",
                signal["axion"]["known"][inside], signal["axion"]["marginal"][inside])
    return rows
