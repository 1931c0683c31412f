"""The input contract of a set of weights: what its training images were, and a cheap check of
any image against it.

A released model is only as good as the match between a user's cutout and the images it was
trained on. The contract states that match in a checkpoint's ``config.json`` (``input_contract``):
the instrument's pixel scale, field of view and PSF, the image size, that the background is
sky-subtracted zero-mean noise, that there is no lens light, where the lens sits, whether the lens
ever changes (A/B: never), and *measured* statistics of the training images (below), widened by
the nuisances a ``robust`` recipe trained on.

``image_statistics`` measures, per image and without knowing its units (every figure is a ratio):

- ``background_level``: the mean of the quietest 8x8 blocks (lowest residual scatter about a
  plane), in units of their own scatter: 0 for a sky-subtracted image, +3 for a +3 sigma sky.
  (The image border is no estimate of the sky: in B it holds lensed light.)
- ``noise_to_peak``: that scatter (the background noise sigma) over the brightest pixel: what
  normalisation turns the noise into.
- ``centroid_offset``: distance in pixels of the centroid of light above 3 sigma from the centre.
- ``pedestal``: no pixel below the background (a min-max scaled image); ``saturated``: 1 % or
  more pixels at the maximum.

``image_flags`` compares those with the contract's accepted ranges: the training images'
0.5th-99.5th percentiles widened by ``MARGINS`` (chosen on the ``val`` split:
``benchmarks/robustness.py --calibrate``; measured rates in docs/predict.md).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import LenszooError

CONTRACT_VERSION = 1
BLOCK = 8  # pixels per side of the blocks the background is measured in
QUIET_BLOCKS = 4  # the quietest blocks taken as background
STATISTICS = ("background_level", "noise_to_peak", "centroid_offset")
# Widening of the training images' range before an image is flagged (chosen on `val`).
MARGINS = {"background_level": 0.3, "noise_to_peak": 1.2, "centroid_offset": 2.0}
PIXEL_SCALE_TOLERANCE = 0.02  # relative: a FITS pixel scale further off is flagged
SATURATED_SHARE = 0.01
FLAG_TEXT = {
    "sky": "background level off the training images' (subtract the sky)",
    "noise": "noise level off the training images' (relative to the brightest pixel)",
    "off_centre": "light centred away from the cutout's centre (centre the lens)",
    "pedestal": "no pixel below the background: a pedestal, as from min-max scaling (keep zero at zero)",
    "saturated": "1 % or more pixels at the maximum (saturated or clipped)",
    "pixel_scale": "pixel scale in the FITS header differs from the model's",
}


def _slope_basis(k: int) -> np.ndarray:
    """The two unit vectors of a tilted plane over a k x k block (centred coordinates), as columns."""
    offsets = np.arange(k) - (k - 1) / 2
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    basis = np.stack([yy.ravel(), xx.ravel()], axis=1)
    return basis / np.linalg.norm(basis, axis=0)


_SLOPES = _slope_basis(BLOCK)


def image_statistics(images) -> dict:
    """Per-image statistics of ``images`` ``(N, H, W)`` (H, W multiples of 8), as float arrays.

    Vectorised over the whole stack (``predict`` measures every image it scores): a block's
    scatter about its best-fitting plane is its scatter about its mean less the plane's two
    slopes, which are orthogonal to the mean and to each other, so no per-block fit is solved."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    n, h, w = x.shape
    if h % BLOCK or w % BLOCK or h < 2 * BLOCK or w < 2 * BLOCK:
        raise LenszooError(f"image statistics need sides that are multiples of {BLOCK} (>= {2 * BLOCK}); got {h}x{w}")
    blocks = x.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(0, 1, 3, 2, 4).reshape(n, -1, BLOCK * BLOCK)
    means = blocks.mean(-1)
    centred = blocks - means[..., None]
    tilt_y, tilt_x = centred @ _SLOPES[:, 0], centred @ _SLOPES[:, 1]
    residual = np.einsum("nbk,nbk->nb", centred, centred) - tilt_y ** 2 - tilt_x ** 2
    scatter = np.sqrt(np.maximum(residual, 0) / (BLOCK * BLOCK - 3))
    quiet = np.argpartition(scatter, QUIET_BLOCKS - 1, axis=1)[:, :QUIET_BLOCKS]  # the quietest, in any order
    sigma = np.take_along_axis(scatter, quiet, 1).mean(1)
    level = np.take_along_axis(means, quiet, 1).mean(1)
    flat = x.reshape(n, -1)
    high, low = flat.max(1), flat.min(1)
    peak = np.maximum(high, -low)
    safe_sigma = np.where(sigma > 0, sigma, np.nan)
    bright = x - (level + 3 * sigma)[:, None, None]
    np.maximum(bright, 0, out=bright)
    rows = bright.sum(2)
    total = rows.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = rows @ np.arange(h) / total - (h - 1) / 2
        cx = bright.sum(1) @ np.arange(w) / total - (w - 1) / 2
        noise_to_peak = sigma / np.where(peak > 0, peak, np.nan)
    return {
        "background_level": level / safe_sigma,
        "noise_to_peak": noise_to_peak,
        "centroid_offset": np.where(total > 0, np.hypot(cx, cy), np.nan),
        "pedestal": (low >= 0) & (level > 0),
        "saturated": np.count_nonzero(flat == high[:, None], axis=1) >= SATURATED_SHARE * h * w,
    }


def summarize(statistics: dict) -> dict:
    """The 0.5th, 50th and 99.5th percentiles of each statistic (what a contract records)."""
    out = {}
    for name in STATISTICS:
        values = np.asarray(statistics[name], dtype=float)
        values = values[np.isfinite(values)]
        out[name] = [round(float(v), 6) for v in np.percentile(values, [0.5, 50, 99.5])] if len(values) else None
    return out


def accepted_ranges(contract: dict) -> dict:
    """``{statistic: (low, high)}`` an image must fall in, from a contract's measured percentiles,
    the nuisances its weights were trained on and ``MARGINS``."""
    measured = contract.get("measured") or {}
    tolerates = contract.get("tolerates") or {}
    ranges = {}
    if measured.get("background_level"):
        low, _, high = measured["background_level"]
        sky = float(tolerates.get("sky_sigma", 0.0))
        margin = MARGINS["background_level"]
        ranges["background_level"] = (low - sky - margin, high + sky + margin)
    if measured.get("noise_to_peak"):
        low, _, high = measured["noise_to_peak"]
        top = float((tolerates.get("noise_scale") or [1.0, 1.0])[1])
        margin = MARGINS["noise_to_peak"]
        ranges["noise_to_peak"] = (low / margin, high * top * margin)
    if measured.get("centroid_offset"):
        ranges["centroid_offset"] = (0.0, measured["centroid_offset"][2] + MARGINS["centroid_offset"])
    return ranges


def image_flags(statistics: dict, contract: dict, *, pixel_scales=None) -> list[list[str]]:
    """The flags of each image (an empty list: it looks like the training images)."""
    ranges = accepted_ranges(contract)
    n = len(statistics["noise_to_peak"])
    flags = [[] for _ in range(n)]
    names = {"background_level": "sky", "noise_to_peak": "noise", "centroid_offset": "off_centre"}
    for statistic, (low, high) in ranges.items():
        values = np.asarray(statistics[statistic], dtype=float)
        outside = ~((values >= low) & (values <= high))  # NaN (no light, no noise) is outside too
        for i in np.flatnonzero(outside):
            flags[i].append(names[statistic])
    for name in ("pedestal", "saturated"):
        for i in np.flatnonzero(np.asarray(statistics[name])):
            flags[i].append(name)
    expected = contract.get("pixel_scale_arcsec")
    if pixel_scales is not None and expected:
        for i, scale in enumerate(pixel_scales):
            if scale is not None and abs(scale / expected - 1) > PIXEL_SCALE_TOLERANCE:
                flags[i].append("pixel_scale")
    return flags


# -- what a dataset's images are -------------------------------------------------------------------
def _dig(config: dict, *keys):
    for key in keys:
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


def dataset_facts(generator) -> dict:
    """The stated (not measured) part of a contract, from a generator's config."""
    config = getattr(generator, "config", {}) or {}
    pixel = _dig(config, "instrument", "band", "pixel_scale")
    num_pix = config.get("num_pix")
    psf = _dig(config, "instrument", "band", "seeing")
    facts = {
        "version": CONTRACT_VERSION,
        "dataset": generator.name,
        "image_size": [int(num_pix), int(num_pix)] if num_pix else None,
        "pixel_scale_arcsec": pixel,
        "field_of_view_arcsec": round(num_pix * pixel, 4) if num_pix and pixel else None,
        "psf_fwhm_arcsec": psf,
        "background": "sky-subtracted: zero-mean noise around no light",
        "lens_light": False,
    }
    lens = config.get("main_lens") or {}
    if "center_half_width" in lens and pixel:  # randomised lenses (C): centre drawn per image
        facts["lens_centre_max_offset_pixels"] = round(math.sqrt(2) * lens["center_half_width"] / pixel, 3)
        facts["main_lens"] = "drawn per image (power law + shear), near the centre"
    elif lens:
        offset = math.hypot(lens.get("center_x", 0.0), lens.get("center_y", 0.0))
        facts["lens_centre_max_offset_pixels"] = round(offset / pixel, 3) if pixel else None
        facts["main_lens"] = ("the same lens in every image (" + ", ".join(
            f"{k} {v:g}" for k, v in lens.items() if isinstance(v, (int, float))) +
            "): scores on real lenses do not measure substructure")
    if hasattr(generator, "background_noise"):
        facts["background_sigma"] = round(float(generator.background_noise), 8)
    return facts


def measure_contract(generator, *, n: int = 1500, split: str = "train", seed: int = 0, workers: int = 1) -> dict:
    """A generator's contract: its facts and the statistics of ``n`` of its ``split`` images
    (image i of a split is the i-th training image, so these are training images)."""
    images = _simulate_images(generator, split, n, seed, workers)
    contract = dataset_facts(generator)
    contract["measured"] = {"n": int(n), "split": split, "seed": int(seed), **summarize(image_statistics(images))}
    return contract


def _simulate_images(generator, split, n, seed, workers):
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        chunks = [(start, min(start + 250, n)) for start in range(0, n, 250)]
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render, [(generator, split, a, b, seed) for a, b in chunks]))
        return np.concatenate(parts)
    return _render((generator, split, 0, n, seed))


def _render(task):
    generator, split, start, stop, seed = task
    return np.stack([generator.simulate(split, i, seed)[0] for i in range(start, stop)])


def contract_for_weights(dataset_contract: dict, recipe: dict | None) -> dict:
    """A dataset's contract as a set of weights sees it: plus the nuisances it trained on."""
    contract = dict(dataset_contract)
    nuisance = (recipe or {}).get("nuisance")
    if isinstance(nuisance, dict):
        contract["tolerates"] = {k: v for k, v in nuisance.items() if k in ("sky_sigma", "noise_scale")}
    return contract


def describe(contract: dict) -> list[tuple[str, str]]:
    """(what, value) lines for `lenszoo info`, model cards and ONNX metadata."""
    if not contract:
        return []
    rows = []
    size = contract.get("image_size")
    if size:
        rows.append(("image size", f"{size[0]}x{size[1]} pixels, one band"))
    if contract.get("pixel_scale_arcsec"):
        rows.append(("pixel scale", f"{contract['pixel_scale_arcsec']:g} arcsec/pixel "
                                    f"(field of view {contract.get('field_of_view_arcsec'):g} arcsec); "
                                    "cut at this scale, do not resize from another"))
    if contract.get("psf_fwhm_arcsec"):
        rows.append(("PSF FWHM", f"{contract['psf_fwhm_arcsec']:g} arcsec"))
    rows.append(("background", contract.get("background", "?")))
    rows.append(("lens light", "none (subtract it)" if contract.get("lens_light") is False else "present"))
    if contract.get("lens_centre_max_offset_pixels") is not None:
        rows.append(("lens centre", f"within {contract['lens_centre_max_offset_pixels']:g} pixels of the centre"))
    if contract.get("main_lens"):
        rows.append(("main lens", contract["main_lens"]))
    ranges = accepted_ranges(contract)
    if "background_level" in ranges:
        low, high = ranges["background_level"]
        rows.append(("accepted sky level", f"{low:+.2f} to {high:+.2f} background sigma"))
    if "noise_to_peak" in ranges:
        low, high = ranges["noise_to_peak"]
        rows.append(("accepted noise / peak", f"{low:.2e} to {high:.2e}"))
    tolerates = contract.get("tolerates")
    if tolerates:
        rows.append(("trained on nuisances", ", ".join(f"{k} {v}" for k, v in tolerates.items())))
    return rows


_MEASURED: dict[str, dict] = {}  # dataset config (as JSON) -> its contract, per process


def dataset_contract(name: str, config: dict | None = None) -> dict:
    """The contract of dataset ``name`` simulated with ``config`` (None: its own): the one the
    released weights of that dataset state when the config is the dataset's own, else measured."""
    import json

    from .registry import get_dataset

    generator = get_dataset(name, **(config or {}))
    key = json.dumps([name, getattr(generator, "config", None)], sort_keys=True, default=str)
    if key not in _MEASURED:
        own = getattr(get_dataset(name), "config", None)
        if json.loads(json.dumps(own, default=str)) == json.loads(json.dumps(generator.config, default=str)):
            _MEASURED[key] = _released_contract(name)
        if _MEASURED.get(key) is None:
            _MEASURED[key] = measure_contract(generator)
    return _MEASURED[key]


def _released_contract(name: str) -> dict | None:
    from .pretrained.manifest import released_weights

    try:
        entries = released_weights()
    except LenszooError:
        return None
    for entry in entries:
        contract = entry.get("input_contract")
        if entry["dataset"] == name and contract and contract.get("version") == CONTRACT_VERSION:
            return {k: v for k, v in contract.items() if k != "tolerates"}
    return None


def weights_contract(config: dict) -> dict:
    """The contract of a checkpoint from its ``config.json``: its dataset's, for the training
    images its recorded generator config makes, plus the nuisances its recipe drew."""
    recorded = ((config.get("training_data") or {}).get("generator") or {}).get("config")
    return contract_for_weights(dataset_contract(config["dataset"], recorded), config.get("recipe"))


def model_contract(model) -> dict | None:
    """What a loaded model expects: its checkpoint's recorded contract, else its dataset's (a run
    folder); None for a model of no registered dataset (its images cannot be checked)."""
    config = getattr(model, "lenszoo_config", None) or {}
    if config.get("input_contract"):
        return config["input_contract"]
    if not config.get("dataset"):
        return None
    try:
        return weights_contract(config)
    except LenszooError:
        return None
