"""Images, measures and checks shared by the tests of several architectures."""

import math

import torch
import torch.nn.functional as F

from lenszoo.archs.layers import rotate_images

COORDS = (torch.arange(64) + 0.5) / 32 - 1
YY, XX = torch.meshgrid(COORDS, COORDS, indexing="ij")


def smooth_centred_images(n, seed=0):
    """Elongated, rotation-sensitive features (a lopsided arc and a bar) that fade well inside the frame."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        radius, arc_phase, bar_angle, cx, cy, brightness = torch.rand(6, generator=gen).tolist()
        r, phi = torch.hypot(XX, YY), torch.atan2(YY, XX)
        arc = torch.exp(-(r - 0.35 - 0.2 * radius) ** 2 / (2 * 0.1**2)) * (1 + torch.cos(phi - 6.28 * arc_phase)) / 2
        c, s = math.cos(6.28 * bar_angle), math.sin(6.28 * bar_angle)
        dx, dy = XX - 0.4 * cx + 0.2, YY - 0.4 * cy + 0.2
        u, v = dx * c + dy * s, -dx * s + dy * c
        bar = (0.5 + brightness) * torch.exp(-u**2 / (2 * 0.3**2) - v**2 / (2 * 0.12**2))
        images.append((arc + bar) * torch.exp(-((XX**2 + YY**2) ** 4) / 0.3))
    return torch.stack(images)[:, None]


def settle_batch_norm(model, seed=0):
    """A few train-mode passes so eval-mode batch norm uses data statistics, then eval mode."""
    model.train()
    with torch.no_grad():
        for step in range(3):
            model(smooth_centred_images(16, seed=100 + step))
    return model.eval()


def rotation_change(model, images, degrees):
    """Mean logit change under rotation, relative to the mean logit distance between the images."""
    with torch.no_grad():
        logits = model(images)
        rotated = model(rotate_images(images, degrees))
    between_images = torch.cdist(logits, logits).sum() / (len(images) * (len(images) - 1))
    return ((rotated - logits).norm(dim=1).mean() / between_images).item()


def one_adam_step_lowers_the_loss(model) -> bool:
    """One Adam step on a fixed small classification batch lowers its loss (the model can learn)."""
    x, y = smooth_centred_images(12, seed=1), torch.arange(12) % 3
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = F.cross_entropy(model(x), y)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return F.cross_entropy(model(x), y).item() < loss.item()
