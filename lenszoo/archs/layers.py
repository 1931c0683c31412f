"""Plain-torch helpers shared by lenszoo's own architectures.

Coordinates follow ``torch.nn.functional.grid_sample`` with
``align_corners=False``: x runs left to right and y top to bottom over
[-1, 1], and (0, 0) is the centre of the image, so rotations and scalings
below act about the image centre, where lenszoo's datasets put the lens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import LenszooError
from .options import check_options, positive_int, positive_ints  # noqa: F401 - their old home


def check_image_batch(x, arch: str, multiple_of: int = 1) -> None:
    """Fail in one line unless ``x`` is a (B, 1, N, N) float batch with N a multiple of ``multiple_of``."""
    if not isinstance(x, torch.Tensor):
        raise LenszooError(f"{arch} expects a torch.Tensor of shape (B, 1, 64, 64), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise LenszooError(
            f"{arch} expects a batch of one-channel square images (B, 1, 64, 64), got shape {tuple(x.shape)}; "
            "add the batch and channel axes with x.view(-1, 1, 64, 64)"
        )
    if x.shape[2] % multiple_of:
        raise LenszooError(
            f"{arch} needs an image size divisible by {multiple_of}, got {x.shape[2]}; "
            "resize or crop the images (lenszoo datasets are 64x64)"
        )
    if not x.is_floating_point():
        raise LenszooError(f"{arch} expects floating-point images, got {x.dtype}; convert with x.float()")


def rotation_scale_matrices(angles: torch.Tensor, log_scales: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, 3) matrices that rotate by ``angles`` (radians) and scale by ``exp(log_scales)``.

    Used as a sampling map, ``out(p) = image(M p)``: the output shows the image
    rotated counter-clockwise on screen by the angle and shrunk by the scale factor.
    """
    cos, sin = torch.cos(angles), torch.sin(angles)
    scale = torch.ones_like(angles) if log_scales is None else torch.exp(log_scales)
    zeros, ones = torch.zeros_like(angles), torch.ones_like(angles)
    rows = [
        torch.stack([scale * cos, -scale * sin, zeros], dim=-1),
        torch.stack([scale * sin, scale * cos, zeros], dim=-1),
        torch.stack([zeros, zeros, ones], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def sample_at(images: torch.Tensor, matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``images`` read at ``matrices @ points``: (B, C, N, N), (B, 3, 3), (H, W, 2) -> (B, C, H, W).

    ``points`` are normalised (x, y) coordinates; bilinear, zero outside the image.
    """
    grid = torch.einsum("bij,hwj->bhwi", matrices[:, :2, :2], points) + matrices[:, None, None, :2, 2]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def pixel_grid(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised (x, y) centres of a size x size image's pixels, shape (size, size, 2)."""
    centres = (torch.arange(size, device=device, dtype=dtype) * 2 + 1) / size - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y], dim=-1)


def rotate_images(images: torch.Tensor, degrees) -> torch.Tensor:
    """``images`` rotated counter-clockwise on screen about their centre (bilinear, zero fill).

    ``rotate_images(x, 90)`` equals ``torch.rot90(x, 1, dims=(-2, -1))`` up to rounding.
    """
    degrees = torch.as_tensor(degrees, dtype=images.dtype, device=images.device).expand(images.shape[0])
    matrices = rotation_scale_matrices(degrees * (math.pi / 180))
    return sample_at(images, matrices, pixel_grid(images.shape[-1], images.device, images.dtype))


def circular_mask(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 inside the disc inscribed in a size x size image, 0 outside, shape (size, size)."""
    return (pixel_grid(size, device, dtype).square().sum(-1) <= 1).to(dtype)


def linear_ring_weights(radius: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(rings, pixels) weights sharing each pixel linearly between the two ring ``centres`` nearest
    its ``radius`` (evenly spaced centres), each row summing to 1: ring means that move smoothly
    when a feature moves a little in radius, and that rotations leave unchanged (radius is)."""
    spacing = centres[1] - centres[0]
    weights = (1 - (radius[None, :] - centres[:, None]).abs() / spacing).clamp(min=0)
    return weights / weights.sum(1, keepdim=True).clamp(min=1e-12)
