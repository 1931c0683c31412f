"""The radial-profile control: fixed rotation-invariant image features, then an MLP.

Every feature is a weighted sum over pixels whose weight depends on the pixel's distance from
the image centre only (rings), or whose modulus does not change when the image turns about it
(the quadrupole and the azimuthal amplitudes ``|a_m|``). Pixel offsets are symmetric under the
dihedral group of the square, so quarter turns and flips permute pixels within a ring and leave
the features equal up to float rounding; other angles change them only by resampling.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import check_image_batch, linear_ring_weights

MOMENT_NAMES = ("flux", "mean_radius", "rms_radius", "quadrupole", "ring_radius")


def pixel_offsets(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (x, y) of each pixel centre from the image centre, in pixels (x right, y up)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
    return cols.flatten(), -rows.flatten()


def ring_weights(size: int, rings: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rings, size*size) ring-averaging weights over the inscribed disc, and the ring radii (pixels).

    Ring centres are evenly spaced in (0, size/2); pixels outside the disc get no weight, so a
    rotation (which keeps the disc inside the image) cannot bring in empty corners.
    """
    x, y = pixel_offsets(size)
    radius = torch.hypot(x, y)
    outer = size / 2
    centres = (torch.arange(rings, dtype=torch.float64) + 0.5) * (outer / rings)
    weights = linear_ring_weights(radius, centres) * (radius <= outer)
    return weights / weights.sum(1, keepdim=True).clamp(min=1e-12), centres


class ProfileFeatures(nn.Module):
    """(B, 1, N, N) images -> (B, F) rotation-invariant features; no learned parameters.

    Features: the ring means (``profile_bins``); with ``moments``, the mean flux in the disc, the
    flux-weighted mean and rms radius, the quadrupole modulus |sum I r^2 e^{2i phi}| / sum I r^2
    and the radius at which the profile peaks (a soft arg-max); with ``azimuthal_orders`` M > 0,
    |a_m| / a_0 for m = 1..M in ``azimuthal_rings`` rings. Moments weight by the positive part of
    the image, so sky noise cannot make a denominator vanish.
    """

    def __init__(self, size: int = 64, profile_bins: int = 32, moments: bool = True, azimuthal_orders: int = 0,
                 azimuthal_rings: int = 8):
        super().__init__()
        self.size, self.moments, self.orders = size, moments, azimuthal_orders
        profile, centres = ring_weights(size, profile_bins)
        self.register_buffer("profile_weights", profile.float(), persistent=False)
        self.register_buffer("profile_radii", (centres / (size / 2)).float(), persistent=False)
        x, y = pixel_offsets(size)
        scale = size / 2  # radii in units of the disc radius, so features are O(1)
        x, y = x / scale, y / scale
        inside = (torch.hypot(x, y) <= 1).double()
        self.register_buffer("disc", (inside / inside.sum()).float(), persistent=False)
        radius = torch.hypot(x, y) * inside
        # quadrupole: r^2 e^{2i phi} = (x^2 - y^2) + 2ixy, exact under quarter turns and flips
        moment_rows = torch.stack([inside, radius, radius**2, (x**2 - y**2) * inside, 2 * x * y * inside])
        self.register_buffer("moment_weights", moment_rows.float(), persistent=False)
        if azimuthal_orders:
            rings, _ = ring_weights(size, azimuthal_rings)
            phi = torch.atan2(y, x)
            orders = torch.arange(azimuthal_orders + 1, dtype=torch.float64)
            # snapped so that pixels related by quarter turns get bit-identical factors
            cos = torch.cos(orders[:, None] * phi[None, :]).round(decimals=12)
            sin = torch.sin(orders[:, None] * phi[None, :]).round(decimals=12)
            basis = torch.cat([rings[:, None, :] * cos[None], rings[:, None, :] * sin[None]], dim=1)
            self.register_buffer("azimuthal_weights", basis.reshape(-1, size * size).float(), persistent=False)
        self.num_features = profile_bins + (len(MOMENT_NAMES) if moments else 0) + azimuthal_rings * azimuthal_orders
        self.azimuthal_rings = azimuthal_rings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], self.size * self.size).float()
        profile = flat @ self.profile_weights.T
        parts = [profile]
        if self.moments:
            positive = flat.clamp(min=0)
            sums = positive @ self.moment_weights.T  # (B, 5): sum I, sum I r, sum I r^2, Re Q, Im Q
            total = sums[:, :1].clamp(min=1e-6)
            second = sums[:, 2:3].clamp(min=1e-6)
            peak = torch.softmax(profile.clamp(min=0) * 20, dim=1)  # soft arg-max over rings
            parts += [
                flat @ self.disc[:, None],
                sums[:, 1:2] / total,
                (second / total).sqrt(),
                (sums[:, 3:4].square() + sums[:, 4:5].square()).sqrt() / second,  # not hypot: ONNX lacks it
                (peak * self.profile_radii).sum(1, keepdim=True),
            ]
        if self.orders:
            coefficients = (flat @ self.azimuthal_weights.T).reshape(x.shape[0], self.azimuthal_rings, 2, self.orders + 1)
            modulus = (coefficients[:, :, 0].square() + coefficients[:, :, 1].square()).sqrt()  # (B, rings, M + 1)
            parts.append((modulus[:, :, 1:] / modulus[:, :, :1].clamp(min=1e-6)).flatten(1))
        return torch.cat(parts, dim=1)


class RadialProfileNet(nn.Module):
    """ProfileFeatures, standardised by batch norm (no affine: a fixed rescaling once trained),
    then an MLP with ``hidden`` widths."""

    def __init__(self, num_outputs: int, profile_bins: int = 32, moments: bool = True, azimuthal_orders: int = 0,
                 azimuthal_rings: int = 8, hidden=(64, 64), dropout: float = 0.0, size: int = 64):
        super().__init__()
        self.features = ProfileFeatures(size, profile_bins, moments, azimuthal_orders, azimuthal_rings)
        layers: list[nn.Module] = [nn.BatchNorm1d(self.features.num_features, affine=False)]
        width = self.features.num_features
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(nn.Linear(width, num_outputs))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, "radial_profile")
        return self.head(self.features(x))
