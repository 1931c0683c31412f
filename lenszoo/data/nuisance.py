"""What a real cutout carries that the simulated training images do not: a sky residual and
a different noise level. One implementation for training (``--nuisance``, whose recipes are in ``train/config.py``), for the robustness
benchmark and for measuring ``predict``'s input flags.

Everything here works on *raw* images (the units a dataset stores, before ``preprocess``): a sky
offset is a constant in units of the dataset's background noise sigma, and extra noise is
Gaussian with the sigma that takes the background noise from sigma to ``scale * sigma``. Noise
cannot be taken out of a noisy image, so scales below 1 are refused.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LenszooError

def background_sigma(generator) -> float:
    """The background noise sigma of a generator's images, in its raw image units."""
    sigma = getattr(generator, "background_noise", None)
    if sigma is None:
        raise LenszooError(f"dataset {getattr(generator, 'name', generator)!r} does not say its background noise "
                           "(a generator attribute `background_noise`), so nuisances cannot be drawn in its units; "
                           "train it with --nuisance none")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise LenszooError(f"dataset {getattr(generator, 'name', generator)!r} reports a background noise of "
                           f"{sigma!r}; nuisances need a positive sigma")
    return sigma


def add_sky(images: np.ndarray, offset_sigma, sigma: float) -> np.ndarray:
    """``images + offset_sigma * sigma`` (a scalar or one offset per image)."""
    images = np.asarray(images, dtype=np.float32)
    offset = np.asarray(offset_sigma, dtype=np.float32).reshape((-1,) + (1,) * (images.ndim - 1)) \
        if np.ndim(offset_sigma) else np.float32(offset_sigma)
    return images + offset * np.float32(sigma)


def scale_noise(images: np.ndarray, scale, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise so the background noise becomes ``scale * sigma`` (scale >= 1; one per image or one)."""
    images = np.asarray(images, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float64)
    if np.any(scale < 1):
        raise LenszooError(f"noise can only be added, not removed: scale must be >= 1, got {scale.min():g}")
    extra = sigma * np.sqrt(scale ** 2 - 1.0)
    if extra.ndim:
        extra = extra.reshape((-1,) + (1,) * (images.ndim - 1))
    return images + (rng.standard_normal(images.shape) * extra).astype(np.float32)


class NuisanceAugment:
    """Per-batch nuisances for training, drawn from a torch generator the caller seeds: a sky
    offset and extra noise per image, on raw images ``(N, ..., H, W)`` (torch tensors)."""

    def __init__(self, recipe: dict, sigma: float):
        self.sky_sigma = float(recipe.get("sky_sigma", 0.0))
        low, high = recipe.get("noise_scale", (1.0, 1.0))
        if not (0 <= self.sky_sigma and 1.0 <= low <= high):
            raise LenszooError(f"bad nuisance recipe {recipe!r}: need sky_sigma >= 0 and 1 <= noise_scale low <= high")
        self.noise_low, self.noise_high, self.sigma = float(low), float(high), float(sigma)

    def __call__(self, images, generator):
        import torch

        n = images.shape[0]
        shape = (n,) + (1,) * (images.ndim - 1)
        sky = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.sky_sigma
        scale = self.noise_low + torch.rand(n, generator=generator, dtype=torch.float64) * (self.noise_high - self.noise_low)
        extra = self.sigma * torch.sqrt(scale ** 2 - 1.0)
        noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
        return images + (sky * self.sigma).to(images.dtype).reshape(shape) + noise * extra.to(images.dtype).reshape(shape)
