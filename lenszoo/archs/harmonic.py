"""Harmonic Network (Worrall et al. 2017): lenszoo's own PyTorch implementation.

A harmonic feature map holds complex channels in streams of rotation order
m = 0..max_order. Rotating the input by an angle t rotates each stream's map
and multiplies it by e^{imt}, so magnitudes are rotation-invariant and the
magnitude read-out at the end gives invariant logits.

Tensors are real, laid out as (B, orders * 2 * C, H, W): for each order, C
real parts then C imaginary parts. A complex convolution is then one real
``conv2d`` with a block filter [[Re W, -Im W], [Im W, Re W]] per pair of
input and output orders.

Exactness: the harmonic filters are sampled on an odd square grid centred on
the kernel, which rotations by 90 degrees map onto itself, convolutions pad
symmetrically, and 2x2 mean pooling only runs on even maps, whose pooling
windows rotations by 90 degrees permute; so logits are invariant to
``torch.rot90`` up to float rounding, and approximately invariant to other
angles (filters are smooth in angle; pixels and pooling are not).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LenszooError
from .layers import check_image_batch, linear_ring_weights

_EPS = 1e-6  # keeps |z| and d|z|/dz finite where a feature is exactly zero


def harmonic_basis(kernel_size: int, n_rings: int, order: int, bandwidth: float) -> tuple[torch.Tensor, ...]:
    """Sampled pieces of W(r, phi) = R(r) e^{i(m phi + beta)} on a kernel_size^2 grid.

    Returns ``(rings, cos_mphi, sin_mphi)``: ``rings`` (n_rings, k*k) holds a
    Gaussian of width ``bandwidth`` pixels around each ring radius, so a
    learned profile (one value per ring) interpolates smoothly in r; the two
    others (k*k,) are the angular factor. For m != 0 the centre pixel, where
    the phase is undefined, is zero.
    """
    half = (kernel_size - 1) / 2
    offsets = torch.arange(kernel_size, dtype=torch.float64) - half
    rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
    x, y = cols.flatten(), -rows.flatten()  # y up: phi counter-clockwise on screen
    radius, phi = torch.hypot(x, y), torch.atan2(y, x)
    ring_radii = torch.linspace(0, half, n_rings, dtype=torch.float64)
    rings = torch.exp(-((radius[None, :] - ring_radii[:, None]) ** 2) / (2 * bandwidth**2))
    if order != 0:
        rings[:, radius == 0] = 0
    # cos/sin of m*phi are snapped so that grid points related by 90 degrees get bit-identical values
    cos_mphi = torch.cos(order * phi).round(decimals=12)
    sin_mphi = torch.sin(order * phi).round(decimals=12)
    return rings.float(), cos_mphi.float(), sin_mphi.float()


class HarmonicConv2d(nn.Module):
    """Complex convolution from orders 0..in_max_order to orders 0..out_max_order.

    Order arithmetic: the filter from input order m_in to output order m_out
    has rotation order m = m_out - m_in. Each (m_out, m_in) pair and channel
    pair has its own radial profile (``n_rings`` values) and phase offset.
    ``real_input=True`` takes a real (B, C, H, W) order-0 input (the image).
    Padding is ``kernel_size // 2`` on every side, so maps keep their size;
    ``mean_pool=True`` follows the convolution with 2x2 mean pooling (even
    maps only), computed as one stride-2 convolution with the filter
    box-blurred to (k+1)x(k+1): the same numbers for about a third of the work.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, n_rings: int = 4,
                 in_max_order: int = 1, out_max_order: int = 1, real_input: bool = False,
                 ring_bandwidth: float = 0.5, mean_pool: bool = False):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise LenszooError(f"harmonic kernel_size must be odd and >= 3, got {kernel_size}; use 3, 5 or 7")
        if n_rings < 2:
            raise LenszooError(f"harmonic filters need n_rings >= 2, got {n_rings}; use e.g. 4")
        if real_input and in_max_order != 0:
            raise LenszooError("a real input carries only rotation order 0; pass in_max_order=0")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.real_input, self.mean_pool = kernel_size, real_input, mean_pool
        self.in_orders, self.out_orders = in_max_order + 1, out_max_order + 1
        pairs = [(m_out, m_in) for m_out in range(self.out_orders) for m_in in range(self.in_orders)]
        with torch.device("cpu"):  # fixed numbers, computed even while the model is sized on the meta device
            basis = [harmonic_basis(kernel_size, n_rings, m_out - m_in, ring_bandwidth) for m_out, m_in in pairs]
        self.register_buffer("rings", torch.stack([b[0] for b in basis]), persistent=False)  # (P, R, k*k)
        self.register_buffer("cos_mphi", torch.stack([b[1] for b in basis]), persistent=False)  # (P, k*k)
        self.register_buffer("sin_mphi", torch.stack([b[2] for b in basis]), persistent=False)
        # He-style scale: each output real channel sums over this many input real channels
        in_parts = 1 if real_input else 2
        fan_in = self.in_orders * in_parts * in_channels * self.rings.square().sum(dim=(1, 2)).mean()
        std = math.sqrt(2.0 / float(fan_in))
        self.radial = nn.Parameter(torch.randn(len(pairs), out_channels, in_channels, n_rings) * std)
        self.phase = nn.Parameter(torch.rand(len(pairs), out_channels, in_channels) * (2 * math.pi))

    def complex_filters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary filters, each (out_orders, in_orders, C_out, C_in, k, k)."""
        profile = torch.einsum("pocr,prk->pock", self.radial, self.rings)
        cos_b, sin_b = torch.cos(self.phase)[..., None], torch.sin(self.phase)[..., None]
        cos_m, sin_m = self.cos_mphi[:, None, None, :], self.sin_mphi[:, None, None, :]
        real = profile * (cos_m * cos_b - sin_m * sin_b)  # R cos(m phi + beta)
        imag = profile * (sin_m * cos_b + cos_m * sin_b)  # R sin(m phi + beta)
        shape = (self.out_orders, self.in_orders, self.out_channels, self.in_channels,
                 self.kernel_size, self.kernel_size)
        return real.reshape(shape), imag.reshape(shape)

    def block_filter(self) -> torch.Tensor:
        """The real conv2d weight realising the complex convolution."""
        real, imag = self.complex_filters()
        if self.real_input:  # input has real parts only: (re, im) out = (Re W, Im W) * x
            block = torch.stack([real, imag], dim=1)  # (O_out, 2, O_in=1, C_out, C_in, k, k)
        else:
            row_real = torch.stack([real, -imag], dim=3)  # re out = Re W * re - Im W * im
            row_imag = torch.stack([imag, real], dim=3)  # im out = Im W * re + Re W * im
            block = torch.stack([row_real, row_imag], dim=1)  # (O_out, 2, O_in, C_out, 2, C_in, k, k)
            block = block.permute(0, 1, 3, 2, 4, 5, 6, 7)
        k = self.kernel_size
        return block.reshape(self.out_orders * 2 * self.out_channels, -1, k, k)

    def as_plain_conv(self) -> nn.Conv2d:
        """The same map as a plain ``nn.Conv2d`` whose filter is computed once (for export: ONNX
        needs kernels of known shape, not ones built from parameters at run time)."""
        with torch.no_grad():
            weight = self.block_filter()
            if self.mean_pool:
                weight = sum(F.pad(weight, (b, 1 - b, a, 1 - a)) for a in (0, 1) for b in (0, 1)) / 4
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], stride=2 if self.mean_pool else 1,
                         padding=self.kernel_size // 2, bias=False)
        with torch.no_grad():
            conv.weight.copy_(weight)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.block_filter()
        if not self.mean_pool:
            return F.conv2d(x, weight, padding=self.kernel_size // 2)
        # mean of the 2x2 outputs (2i + a, 2j + b) = one filter shifted by (a, b) and averaged
        pooled = sum(F.pad(weight, (b, 1 - b, a, 1 - a)) for a in (0, 1) for b in (0, 1)) / 4
        return F.conv2d(x, pooled, stride=2, padding=self.kernel_size // 2)


def _split_streams(x: torch.Tensor, orders: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts, each (B, orders, C, H, W)."""
    b, channels, h, w = x.shape
    parts = x.view(b, orders, 2, channels // (2 * orders), h, w)  # explicit sizes: an empty batch works too
    return parts[:, :, 0], parts[:, :, 1]


def magnitudes(x: torch.Tensor, orders: int) -> torch.Tensor:
    """|z| of every complex channel: (B, orders * 2 * C, H, W) -> (B, orders, C, H, W)."""
    real, imag = _split_streams(x, orders)
    return (real.square() + imag.square() + _EPS).sqrt()


def _rescale(x: torch.Tensor, orders: int, factor: torch.Tensor) -> torch.Tensor:
    """Multiply each complex channel by a real (B, orders, C, H, W) factor, keeping its phase."""
    b, channels, h, w = x.shape
    return (x.view(b, orders, 2, channels // (2 * orders), h, w) * factor[:, :, None]).view_as(x)


class MagnitudeNonlinearity(nn.Module):
    """z -> f(|z| + b) z / |z|: acts on magnitudes only, so every order keeps its phase."""

    def __init__(self, channels: int, max_order: int = 1, activation=F.relu):
        super().__init__()
        self.orders, self.activation = max_order + 1, activation
        self.bias = nn.Parameter(torch.zeros(self.orders, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag = magnitudes(x, self.orders)
        return _rescale(x, self.orders, self.activation(mag + self.bias[None, :, :, None, None]) / mag)


class MagnitudeBatchNorm(nn.Module):
    """Batch norm of magnitudes, then the activation: z -> f(BN(|z|)) z / |z|.

    Statistics are per (order, channel) over batch and space, which rotations
    do not change; folding the activation in saves a pass over the features.
    """

    def __init__(self, channels: int, max_order: int = 1, activation=F.relu, momentum: float = 0.1):
        super().__init__()
        self.orders, self.activation = max_order + 1, activation
        self.norm = nn.BatchNorm2d(self.orders * channels, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag = magnitudes(x, self.orders)
        b, o, c, h, w = mag.shape
        normed = self.norm(mag.view(b, o * c, h, w)).view_as(mag)
        return _rescale(x, self.orders, self.activation(normed) / mag)


def radial_bin_weights(size: int, bins: int) -> torch.Tensor:
    """(bins, size*size) averaging weights over rings about the map centre.

    A pixel's ring is set by its distance from the centre, which quarter turns
    (and, up to the pixel grid, any rotation) leave unchanged, so ring means are
    invariant while still telling the centre from the Einstein ring and the edge.
    Each pixel is shared linearly between the two nearest ring radii, so a
    feature that moves a little in radius moves a little between rings.
    """
    if bins < 2:
        raise LenszooError(f"hnet radial read-out needs radial_bins >= 2, got {bins}; use e.g. 4")
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    radius = torch.hypot(offsets[:, None], offsets[None, :]).flatten()
    centres = torch.linspace(float(radius.min()), float(radius.max()), bins, dtype=torch.float64)
    spacing = centres[1] - centres[0]
    totals = (1 - (radius[None, :] - centres[:, None]).abs() / spacing).clamp(min=0).sum(1)
    if (totals < 0.5).any():
        raise LenszooError(f"hnet radial read-out: {bins} rings on a {size}x{size} map leave a ring almost "
                           "empty; use fewer radial_bins")
    return linear_ring_weights(radius, centres).float()


class HNet(nn.Module):
    """Harmonic Network: harmonic convs in stages, 2x2 mean pooling ending each stage but the last,
    invariant read-out (magnitudes summed over orders, then a spatial mean or ring means), MLP head."""

    def __init__(self, num_outputs: int, widths=(6, 8, 12, 16), depths=(1, 1, 2, 2), kernel_size: int = 5,
                 n_rings: int = 4, max_order: int = 1, ring_bandwidth: float = 0.5, batch_norm: bool = True,
                 head_hidden: int = 32, readout: str = "mean", radial_bins: int = 4, input_size: int = 64):
        super().__init__()
        self.orders = max_order + 1
        self.pools = len(widths) - 1
        self.readout = readout
        layers: list[nn.Module] = []
        in_channels, real_input = 1, True
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for layer in range(depth):
                # pooling is linear, so pooling before the nonlinearity keeps equivariance
                # and runs the elementwise magnitude work on a 4x smaller map
                layers.append(HarmonicConv2d(
                    in_channels, width, kernel_size, n_rings,
                    in_max_order=0 if real_input else max_order, out_max_order=max_order,
                    real_input=real_input, ring_bandwidth=ring_bandwidth,
                    mean_pool=layer == depth - 1 and stage < self.pools))
                norm = MagnitudeBatchNorm if batch_norm else MagnitudeNonlinearity
                layers.append(norm(width, max_order))
                in_channels, real_input = width, False
        self.features = nn.Sequential(*layers)
        features = in_channels
        if readout == "radial":
            self.final_size = input_size // 2**self.pools
            self.register_buffer("ring_weights", radial_bin_weights(self.final_size, radial_bins), persistent=False)
            features = in_channels * radial_bins
        self.head = nn.Sequential(nn.Linear(features, head_hidden), nn.ReLU(), nn.Linear(head_hidden, num_outputs))

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) or (B, C * radial_bins): per channel, magnitudes summed over orders, averaged over
        the map or over each ring about its centre."""
        check_image_batch(x, "hnet", multiple_of=2**self.pools)
        maps = magnitudes(self.features(x), self.orders).sum(dim=1)
        if self.readout == "mean":
            return maps.mean(dim=(-2, -1))
        if maps.shape[-1] != self.final_size:
            raise LenszooError(f"hnet with the radial read-out was built for {self.final_size * 2**self.pools}-pixel "
                               f"images, got {x.shape[-1]}; pass (B, 1, 64, 64) batches")
        return (maps.flatten(2) @ self.ring_weights.T).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.invariant_features(x))
