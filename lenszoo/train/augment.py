"""Randomness that a run can replay: derived seeds, the per-step RNG state, batch augmentation.

Every random choice of a run is a pure function of ``(seed, purpose, epoch, step, rank)``:
that is what makes a killed run resume to the same weights.
"""

from __future__ import annotations

import random

import numpy as np

# Purposes mixed into derived seeds so no two random streams coincide.
INIT, SHUFFLE, STEP, AUGMENT, VAL_SPLIT, NUISANCE = range(6)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that depends on ``seed`` and every key (order matters)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def seed_step(seed: int, epoch: int, step: int, rank: int):
    """Seed every global RNG for one step (dropout and anything else a model draws)."""
    import torch

    value = derive_seed(seed, STEP, epoch, step, rank)
    torch.manual_seed(value)
    np.random.seed(value & 0xFFFFFFFF)
    random.seed(value)


def augment_batch(images, mode: str, generator):
    """Random flips and/or quarter turns per image: exact on the pixel grid, no interpolation."""
    import torch

    if mode == "none":
        return images
    images = images.clone()
    n = images.shape[0]
    if mode in ("flip", "rot90flip"):
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
        images[flip] = images[flip].flip(-1)
    if mode in ("rot90", "rot90flip"):
        turns = torch.randint(0, 4, (n,), generator=generator)
        for k in (1, 2, 3):
            sel = turns == k
            if sel.any():
                images[sel] = torch.rot90(images[sel], k, dims=(-2, -1))
    return images


class BatchAugment:
    """The augmentation of batch ``(epoch, step)`` on ``rank``: its own generators, seeded from those.

    With ``nuisance`` (a ``lenszoo.data.nuisance.NuisanceAugment``) the batch arrives raw: the
    nuisances are drawn on the raw images, which are then normalised with ``normalize``, and the
    pixel-grid symmetries come last (they commute with per-image normalisation)."""

    def __init__(self, mode: str, seed: int, rank: int = 0, *, nuisance=None, normalize=None):
        if (nuisance is None) != (normalize is None):
            raise ValueError("nuisance augmentation needs the normalisation that follows it")
        self.mode, self.seed, self.rank = mode, seed, rank
        self.nuisance, self.normalize = nuisance, normalize

    def __call__(self, epoch: int, step: int, images):
        import torch

        if self.nuisance is not None:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, NUISANCE, epoch, step, self.rank))
            images = self.normalize(self.nuisance(images, generator))
        if self.mode == "none":
            return images
        generator = torch.Generator().manual_seed(derive_seed(self.seed, AUGMENT, epoch, step, self.rank))
        return augment_batch(images, self.mode, generator)
