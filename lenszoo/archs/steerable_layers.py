"""The plain-PyTorch parts of lenszoo's steerable CNNs (``lenszoo.archs.steerable``).

Each layer commutes with the channel permutations of a regular field (or acts on invariant
fields), so a network made of them and escnn's steerable convolutions keeps its symmetry;
none needs escnn, so an exported network runs on plain PyTorch. ``plan_layout`` checks a
layout against the input size: strided steps only where the sampling grid stays symmetric.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LenszooError
from ..tasks import num_outputs
from .options import MAX_HIDDEN  # noqa: F401 - the head's bound, used by the family module

# Size bounds of a layout: a regular field of C8 is 8 channels (16 for D8), and escnn expands every
# filter in memory, so 128 fields a layer and 16 layers keep the largest model near lenszoo's limit.
MAX_FIELDS = 128
MAX_CONV_LAYERS = 16

READOUTS = ("mean", "mean_max")

# Blur of the stride-2 pooling: the binomial [1, 2, 1] / 4 filter (sigma ~0.7 pixel),
# close to escnn's antialiasing default (sigma 0.66) at 9 instead of 25 taps.
_BLUR_1D = (0.25, 0.5, 0.25)


class FieldBatchNorm(nn.Module):
    """Batch norm with one mean, variance, scale and shift per field, shared by its
    ``group_size`` channels, so it commutes with the group's channel permutations
    (what escnn's ``InnerBatchNorm`` computes, without its copies)."""

    def __init__(self, num_fields: int, group_size: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_fields, self.group_size = num_fields, group_size
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_fields))
        self.bias = nn.Parameter(torch.zeros(num_fields))
        self.register_buffer("running_mean", torch.zeros(num_fields))
        self.register_buffer("running_var", torch.ones(num_fields))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        batch, channels, height, width = x.shape
        if self.training:
            self.num_batches_tracked.add_(1)
        args = (self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps)
        if x.is_contiguous(memory_format=torch.channels_last):
            # (B, H, W, fields, group) is a view of channels-last memory: no copy
            fields = x.permute(0, 2, 3, 1).reshape(-1, self.num_fields, self.group_size)
            return F.batch_norm(fields, *args).view(batch, height, width, channels).permute(0, 3, 1, 2)
        fields = x.reshape(batch, self.num_fields, self.group_size * height, width)
        return F.batch_norm(fields, *args).view(batch, channels, height, width)

    def scale_and_shift(self):
        """Per-channel ``(scale, shift)`` of the eval-mode transform ``x * scale + shift``."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return scale.repeat_interleave(self.group_size), shift.repeat_interleave(self.group_size)

    def extra_repr(self):
        return f"{self.num_fields} fields x {self.group_size} channels, eps={self.eps}, momentum={self.momentum}"


class BlurPool2d(nn.Module):
    """Antialiased stride-2 pooling: a fixed binomial blur, then every other pixel.

    Zero padding of 1 around a 3-tap filter samples a grid symmetric about the
    map's centre exactly when the map side is odd, so rotations by 90 degrees and
    reflections commute with it. (escnn's ``PointwiseAvgPoolAntialiased`` computes
    the same kind of blur but cannot be exported to plain PyTorch.)
    """

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor(_BLUR_1D)
        kernel = (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3).contiguous()
        self.channels = channels
        self.register_buffer("kernel", kernel, persistent=False)  # fixed: not part of the state dict

    def forward(self, x):
        return F.conv2d(x, self.kernel, stride=2, padding=1, groups=self.channels)

    def extra_repr(self):
        return f"{self.channels} channels, binomial 3x3, stride 2"


class GroupMaxPool(nn.Module):
    """Max over the channels of each regular field: a rotation-invariant map per field."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        return x.unflatten(1, (-1, self.group_size)).amax(dim=2)

    def extra_repr(self):
        return f"group_size={self.group_size}"


class SpatialReadout(nn.Module):
    """Invariant fields ``(B, F, H, W)`` to ``(B, F)`` (spatial mean) or ``(B, 2F)`` (mean and max).

    Both are symmetric functions of the pixels, so they keep the invariance of the fields; the max
    keeps a strong local response (one perturbed patch of an arc) that a mean over the map dilutes."""

    def __init__(self, mode: str = "mean"):
        super().__init__()
        if mode not in READOUTS:
            raise LenszooError(f"unknown readout {mode!r}; choose one of: {', '.join(READOUTS)}")
        self.mode = mode

    def forward(self, x):
        mean = x.mean(dim=(2, 3))
        return mean if self.mode == "mean" else torch.cat([mean, x.amax(dim=(2, 3))], dim=1)

    def features(self, fields: int) -> int:
        return fields if self.mode == "mean" else 2 * fields

    def extra_repr(self):
        return self.mode


def _head(in_features: int, out_features: int, head_width: int, dropout: float) -> nn.Sequential:
    if head_width:
        return nn.Sequential(
            nn.Linear(in_features, head_width), nn.ELU(), nn.Dropout(dropout), nn.Linear(head_width, out_features)
        )
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, out_features))


def _as_tuple(name, value, length, kind):
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        value = [value] * length
    value = tuple(value)
    if len(value) != length:
        raise LenszooError(f"{name} has {len(value)} entries but widths has {length}; give one per convolution layer")
    for item in value:
        if kind is bool and not isinstance(item, bool):
            raise LenszooError(f"{name} must hold true/false per layer, got {item!r}")
        if kind is int and (isinstance(item, bool) or not isinstance(item, int) or item < 1):
            raise LenszooError(f"{name} must hold positive integers, got {item!r}")
    return value


def plan_layout(input_size: int, widths, kernel_sizes, strides, pool):
    """Check a layout and return the map side after each stage (input first).

    The first convolution is unpadded (the lens sits in the middle of the stamp
    and its border is sky); the others are zero-padded by ``kernel_size // 2``.
    A strided operation keeps exact 90-degree equivariance only if its windows
    cover the padded map exactly, i.e. ``(side + 2 * padding - kernel) % stride == 0``.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
        raise LenszooError(f"widths must be a non-empty list of field counts per layer, got {widths!r}")
    widths = _as_tuple("widths", widths, len(widths), int)
    n_layers = len(widths)
    if n_layers > MAX_CONV_LAYERS or max(widths) > MAX_FIELDS:
        raise LenszooError(f"widths={list(widths)!r} is too large; give at most {MAX_CONV_LAYERS} layers of at most "
                           f"{MAX_FIELDS} fields each")
    kernel_sizes = _as_tuple("kernel_sizes", kernel_sizes, n_layers, int)
    strides = _as_tuple("strides", strides, n_layers, int)
    pool = _as_tuple("pool", pool, n_layers, bool)
    sides = [input_size]
    side = input_size
    for index, (kernel, stride, pooled) in enumerate(zip(kernel_sizes, strides, pool)):
        padding = 0 if index == 0 else kernel // 2
        span = side + 2 * padding - kernel
        if kernel > side:
            raise LenszooError(
                f"layer {index}: a {kernel}x{kernel} kernel does not fit the {side}x{side} map it convolves; "
                f"use smaller kernel_sizes or less downsampling"
            )
        if span % stride:
            raise LenszooError(
                f"layer {index}: a stride-{stride} {kernel}x{kernel} convolution on a {side}x{side} map samples a grid "
                f"that is not symmetric about the centre, which breaks exact rotation invariance; "
                f"change its kernel size or stride so that (side + 2*{padding} - kernel) is divisible by the stride"
            )
        side = span // stride + 1
        sides.append(side)
        if pooled:
            if side % 2 == 0:
                raise LenszooError(
                    f"layer {index}: stride-2 pooling of an even {side}x{side} map breaks exact rotation invariance; "
                    f"change kernel_sizes or strides so that the map side before pooling is odd"
                )
            side = (side + 1) // 2
            sides.append(side)
    return widths, kernel_sizes, strides, pool, sides


# --------------------------------------------------------------------------- groups
def parse_group(group: str) -> tuple[str, int]:
    """``"C8"`` -> ``("C", 8)``; ``"D8"`` -> ``("D", 8)`` (rotations and reflections)."""
    match = re.fullmatch(r"([CD])(\d+)", str(group).strip().upper())
    if not match or int(match.group(2)) < 1:
        raise LenszooError(
            f"unknown symmetry group {group!r}; use 'C<N>' (N rotations) or 'D<N>' (N rotations and reflections), e.g. 'C8'"
        )
    kind, order = match.group(1), int(match.group(2))
    if order % 4:
        raise LenszooError(
            f"group {group!r} does not contain the 90-degree rotation, so the network would not be exactly "
            f"invariant on the pixel grid; use an order divisible by 4, e.g. '{kind}4' or '{kind}8'"
        )
    return kind, order


def group_size(group: str) -> int:
    """Channels of one regular field: N for C_N, 2N for D_N."""
    kind, order = parse_group(group)
    return order if kind == "C" else 2 * order


# --------------------------------------------------------------------------- the exported network
def _check_images(x, side):
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != side or x.shape[3] != side:
        raise LenszooError(
            f"expected a (batch, 1, {side}, {side}) image tensor, got shape {tuple(x.shape)}; "
            f"crop or resample the images to {side}x{side} pixels"
        )


class ExportedSteerableCNN(nn.Module):
    """Plain-PyTorch inference copy of a ``SteerableCNN`` (made by ``SteerableCNN.export()``)."""

    def __init__(self, features: nn.Sequential, group_pool: GroupMaxPool, head: nn.Sequential, input_size: int,
                 readout: SpatialReadout | None = None):
        super().__init__()
        self.features, self.group_pool, self.head = features, group_pool, head
        self.readout = readout or SpatialReadout("mean")
        self.input_size = input_size

    def forward(self, x):
        _check_images(x, self.input_size)
        x = self.features(x)  # channels-last weights make every conv output channels-last
        return self.head(self.readout(self.group_pool(x)))


def exported_skeleton(task="classify", *, group="C8", input_size=64, widths, kernel_sizes, strides, pool,
                      head_width, dropout, global_fields, readout) -> ExportedSteerableCNN:
    """An ``ExportedSteerableCNN`` with the module structure ``SteerableCNN.export()`` gives for
    this layout, for loading an exported state dict: inference without escnn."""
    widths, kernel_sizes, strides, pool, sides = plan_layout(input_size, widths, kernel_sizes, strides, pool)
    size = group_size(group)
    specs = [(width, kernel, 0 if index == 0 else kernel // 2, stride, pooled)
             for index, (width, kernel, stride, pooled) in enumerate(zip(widths, kernel_sizes, strides, pool))]
    if global_fields:
        specs.append((global_fields, sides[-1], 0, 1, False))
    layers, channels = [], 1
    for width, kernel, padding, stride, pooled in specs:
        layers += [nn.Conv2d(channels, width * size, kernel, stride=stride, padding=padding, bias=True),
                   nn.ReLU(inplace=True)]
        channels = width * size
        if pooled:
            layers.append(BlurPool2d(channels))
    readout_layer = SpatialReadout(readout)
    head = _head(readout_layer.features(global_fields or widths[-1]), num_outputs(task), head_width, float(dropout))
    model = ExportedSteerableCNN(nn.Sequential(*layers), GroupMaxPool(size), head, input_size, readout_layer)
    return model.to(memory_format=torch.channels_last).eval()
