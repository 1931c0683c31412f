"""Equivariant Transformer Network (Tai et al. 2019): lenszoo's own PyTorch implementation.

Each transformer layer resamples the image into canonical coordinates of its
transformation group, where the transformation becomes a translation: polar
(r, theta) for rotation about the image centre, log-polar (log r, theta) for
scale, or both. A small CNN that is cyclic along theta turns that view into
a heat-map whose centroid is the pose (a circular mean on the periodic angle
axis, an expectation on log r). Rotating the input shifts the heat-map, so
the predicted pose moves with the input by construction; undoing it
canonicalises the image. Layers compose their transforms as 3x3 matrices;
the composed transform is applied to the input once, with ``grid_sample``,
and a plain CNN classifies (or regresses) the canonical image.

Poses are rotations about the image centre and scalings about it, because
lenszoo's lens images are centred; no translation is predicted.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import check_image_batch, circular_mask, pixel_grid, rotation_scale_matrices, sample_at

# what each transformer layer predicts, and the coordinates it predicts it in
TRANSFORMERS = {
    "rotation": ("polar", True, False),  # (grid, predicts angle, predicts log-scale)
    "scale": ("log-polar", False, True),
    "rotation_scale": ("log-polar", True, True),
}


def canonical_grid(kind: str, n_radii: int, n_angles: int, min_radius: float) -> tuple[torch.Tensor, ...]:
    """Sampling points of a polar or log-polar view, centred on the image centre.

    Returns ``(points, angles, log_radii)``: ``points`` (n_radii, n_angles, 2)
    are normalised image (x, y) coordinates; angles run counter-clockwise on
    screen, so rotating the image counter-clockwise by t shifts the view by
    +t along the angle axis. Radii reach the edge of the inscribed disc.
    """
    angles = torch.arange(n_angles, dtype=torch.float64) * (2 * math.pi / n_angles)
    if kind == "polar":
        radii = (torch.arange(n_radii, dtype=torch.float64) + 0.5) / n_radii
    else:
        radii = torch.logspace(math.log10(min_radius), 0, n_radii, dtype=torch.float64)
    x = radii[:, None] * torch.cos(angles)[None, :]
    y = -radii[:, None] * torch.sin(angles)[None, :]  # image y runs downwards
    return torch.stack([x, y], dim=-1).float(), angles.float(), radii.log().float()


class CyclicConv(nn.Module):
    """3x3 convolution of a (B, C, radius, angle) view: circular padding along the angle,
    zeros along the radius, so a shift along the angle shifts the output exactly."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 0, 0), mode="circular")
        return self.conv(F.pad(x, (0, 0, 1, 1)))


class PosePredictor(nn.Module):
    """One transformer layer's pose: ``kind`` is 'rotation', 'scale' or 'rotation_scale'.

    ``forward(images, matrices)`` looks at ``images`` through ``matrices`` (the
    transform composed so far) and returns ``(angles, log_scales)``, each (B,)
    or None when the layer does not predict it. With ``matrices`` the identity,
    rotating the image counter-clockwise by t adds t to the angle, and
    enlarging it by s adds log s to the log-scale.
    """

    def __init__(self, kind: str = "rotation", channels: int = 8, depth: int = 3, n_radii: int = 16,
                 n_angles: int = 64, min_radius: float = 0.05):
        super().__init__()
        if kind not in TRANSFORMERS:
            raise LenszooError(f"unknown pose kind {kind!r}; use one of {', '.join(map(repr, TRANSFORMERS))}")
        grid_kind, self.predicts_angle, self.predicts_scale = TRANSFORMERS[kind]
        self.kind = kind
        with torch.device("cpu"):  # fixed numbers, computed even while the model is sized on the meta device
            points, angles, log_radii = canonical_grid(grid_kind, n_radii, n_angles, min_radius)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("cos_angles", torch.cos(angles), persistent=False)
        self.register_buffer("sin_angles", torch.sin(angles), persistent=False)
        self.register_buffer("log_radii", log_radii, persistent=False)
        # the scale that maps the heat-map centroid to the middle of the radius range
        self.reference_log_radius = float(log_radii.mean())
        layers: list[nn.Module] = []
        in_channels = 1
        for _ in range(depth - 1):
            # instance norm: per-image, per-channel statistics over the whole view, which a shift
            # along it leaves unchanged; unlike batch norm, a pose never depends on the other
            # images in the batch or on train/eval mode (and short trainings converge much faster)
            layers += [CyclicConv(in_channels, channels), nn.GroupNorm(channels, channels), nn.ReLU(inplace=True)]
            in_channels = channels
        layers.append(CyclicConv(in_channels, 1, bias=True))
        self.heat = nn.Sequential(*layers)

    def view(self, images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        """The (B, 1, radius, angle) canonical-coordinate view of ``images`` seen through ``matrices``."""
        return sample_at(images, matrices, self.points)

    def forward(self, images: torch.Tensor, matrices: torch.Tensor):
        logits = self.heat(self.view(images, matrices)).flatten(1)
        heat = torch.softmax(logits, dim=1).view(-1, *self.points.shape[:2])  # (B, radius, angle), sums to 1
        angles = log_scales = None
        if self.predicts_angle:
            over_angle = heat.sum(dim=1)
            # circular mean: the angle axis has no ends
            angles = torch.atan2(over_angle @ self.sin_angles, over_angle @ self.cos_angles)
        if self.predicts_scale:
            log_scales = heat.sum(dim=2) @ self.log_radii - self.reference_log_radius
        return angles, log_scales

    def transform(self, images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3) sampling map that undoes this layer's predicted pose."""
        angles, log_scales = self(images, matrices)
        if angles is None:
            angles = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)
        # the view at angle a of the output must show the input at angle a + pose: rotate back
        return rotation_scale_matrices(-angles, log_scales)


class BaseCNN(nn.Module):
    """Plain CNN for the canonical image: a 5x5 stride-2 conv, then 3x3 stride-2 convs,
    each with batch norm and ReLU, then a spatial mean. Strided convs instead of pooling
    layers, and a stride-2 first layer: on 2 CPU cores images seen per second matter."""

    def __init__(self, widths=(16, 32, 64, 128), readout: str = "mean", input_size: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = 1, input_size
        for stage, width in enumerate(widths):
            kernel = 5 if stage == 0 else 3
            layers += [nn.Conv2d(in_channels, width, kernel, stride=2, padding=kernel // 2, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_channels, size = width, (size + 1) // 2
        # The canonical image has its pose undone, so where a feature sits carries information:
        # "flatten" keeps it, "mean" (a spatial average) drops it.
        if readout == "mean":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.out_features = in_channels
        else:
            layers += [nn.Flatten()]
            self.out_features = in_channels * size * size
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ETN(nn.Module):
    """Transformer layers that canonicalise the pose, then a plain CNN and a linear head."""

    def __init__(self, num_outputs: int, transformers=("rotation",), pose_channels: int = 8, pose_depth: int = 3,
                 n_radii: int = 16, n_angles: int = 64, min_radius: float = 0.05,
                 base_widths=(16, 32, 64, 128), dropout: float = 0.0, mask_outside_disc: bool = True,
                 readout: str = "mean"):
        super().__init__()
        self.pose_predictors = nn.ModuleList(
            PosePredictor(kind, pose_channels, pose_depth, n_radii, n_angles, min_radius) for kind in transformers)
        self.mask_outside_disc = mask_outside_disc
        self.base = BaseCNN(base_widths, readout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.base.out_features, num_outputs))

    def canonical_transform(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3): the sampling map composed from every transformer layer's pose."""
        matrices = torch.eye(3, device=images.device, dtype=images.dtype).expand(images.shape[0], 3, 3)
        for predictor in self.pose_predictors:
            matrices = matrices @ predictor.transform(images, matrices)
        return matrices

    def canonicalize(self, images: torch.Tensor) -> torch.Tensor:
        """The images with their predicted poses undone, resampled once."""
        check_image_batch(images, "etn")
        size = images.shape[-1]
        points = pixel_grid(size, images.device, images.dtype)
        canonical = sample_at(images, self.canonical_transform(images), points)
        if self.mask_outside_disc:  # corners leave and enter the frame as the image turns
            canonical = canonical * circular_mask(size, images.device, images.dtype)
        return canonical

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(self.canonicalize(x)))
