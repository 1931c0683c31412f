"""Steerable CNNs (escnn) that are exactly invariant to 90-degree rotations of a lens image.

``c8_steerable`` is a C8 steerable CNN (Weiler & Cesa 2019) sized for two CPU
cores: every feature is a *regular field* of the rotation group C8 (eight
channels that permute cyclically when the image turns by 45 degrees).
Exact invariance to rotations by multiples of 90 degrees comes from

* steerable convolutions (escnn ``R2Conv``), whose filters are exactly
  equivariant under 90-degree rotations of the pixel grid;
* normalisation shared by the channels of a field (``FieldBatchNorm``);
* strided operations only where their sampling grid is symmetric about the
  image centre (odd maps for the stride-2 blur pooling; this is checked when
  the model is built);
* a last, unpadded convolution whose kernel covers the whole 8x8 map (its
  grid is symmetric about the centre), then group pooling (max over each
  field's channels): invariant features that still weigh *where* on the map,
  relative to the lens centre, each response sits.

Rotations by the other multiples of 45 degrees are equivariant only up to the
interpolation of a rotated pixel grid, so invariance to them is approximate.

The default layout (``DEFAULT_LAYOUT``) spends compute where it buys accuracy
per second on a CPU: an unpadded 8x8 stride-2 stem (64 -> 29, no full-resolution
feature maps to normalise and pool), 3x3 steerable kernels, blur pooling
29 -> 15 -> 8, 4/8/16/24 regular fields (32 to 192 channels), widest where the
maps are smallest, and 16 fields in the global convolution. Measured on dataset A
(docs/training.md): 3x3 instead of 5x5 kernels train 1.4x faster per second at
the same accuracy per image; the global convolution instead of a spatial mean
lifts accuracy by several points at equal images seen. The spatial mean
(``global_fields=0``, optionally with a max, ``readout="mean_max"``) is blind to
where features sit: it cannot tell two kinks on opposite sides of the Einstein
ring, as a vortex line through the lens makes, from kinks anywhere.

Public API (stable; third-party plugins such as ``lenszoo-d8`` build on it):

``build_steerable_cnn(task, *, group="C8", input_size=64, widths, kernel_sizes, strides, pool, global_fields, readout, head_width, dropout)``
    a ``SteerableCNN`` for any cyclic (``"C4"``, ``"C8"``, ...) or dihedral
    (``"D4"``, ``"D8"``, ...) group; ``DEFAULT_LAYOUT`` holds c8_steerable's
    defaults.
``SteerableCNN``
    ``forward(x)`` maps ``(B, 1, 64, 64)`` to ``(B, 3)`` or ``(B, 1)``;
    ``export()`` returns an ``ExportedSteerableCNN``, the same function in plain
    PyTorch (no escnn) with batch norm folded into the convolutions;
    ``feature_map_sizes`` lists the side of every map from input to head.
``FieldBatchNorm``, ``BlurPool2d``, ``GroupMaxPool``, ``SpatialReadout``
    the plain-PyTorch layers the network is made of.

State dicts hold only learned parameters, batch-norm statistics and a
``basis_fingerprint`` of escnn's kernel basis: the same keys in train and eval
mode, strict loading in either mode, the cached escnn filters rebuilt after
every load (escnn alone would keep stale ones), and weights refused where
escnn's basis differs from the one they were trained in.
"""

from __future__ import annotations

import copy
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LenszooError
from ..hookspecs import hookimpl
from ..tasks import num_outputs

# c8_steerable's registered defaults (they become ``model_args`` in checkpoints).
DEFAULT_LAYOUT = {
    "widths": (4, 8, 16, 24),
    "kernel_sizes": (8, 3, 3, 3),
    "strides": (2, 1, 1, 1),
    "pool": (False, True, True, False),
    "head_width": 64,
    "dropout": 0.0,
    "global_fields": 16,
    "readout": "mean",
}
READOUTS = ("mean", "mean_max")

# Blur of the stride-2 pooling: the binomial [1, 2, 1] / 4 filter (sigma ~0.7 pixel),
# close to escnn's antialiasing default (sigma 0.66) at 9 instead of 25 taps.
_BLUR_1D = (0.25, 0.5, 0.25)


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


def _use_deterministic_escnn_svd():
    """escnn 1.0.11 finds the intertwiner bases of dihedral groups with scikit-learn's
    ``randomized_svd`` on an ``np.matrix``: scikit-learn >= 1.2 rejects that (escnn
    issue #112), and its unseeded random start could give a different (equally valid)
    basis in another process, where saved weights would then mean other filters.
    escnn falls back to SciPy's exact, deterministic SVD when scikit-learn is missing;
    select that fallback."""
    from escnn.group import _numerical

    _numerical.randomized_svd = None


def _gspace(group: str):
    from escnn import gspaces  # imported here: escnn costs ~3 s and only steerable models need it

    _use_deterministic_escnn_svd()
    kind, order = parse_group(group)
    return gspaces.rot2dOnR2(N=order) if kind == "C" else gspaces.flipRot2dOnR2(N=order)


def group_size(group: str) -> int:
    """Channels of one regular field: N for C_N, 2N for D_N."""
    kind, order = parse_group(group)
    return order if kind == "C" else 2 * order


_HE_STD_CACHE: dict = {}


def _he_init(conv, key):
    """escnn's generalised He initialisation of ``conv.weights``. Its per-weight standard
    deviations take a pure-Python pass over the basis (~0.2 s per layer), so they are
    cached for the process by layer signature ``key`` (group, field types, kernel)."""
    from escnn.nn import init

    if not hasattr(init, "_generalized_he_init_variances"):  # another escnn release: its public, uncached path
        init.generalized_he_init(conv.weights.data, conv.basisexpansion)
        return
    std = _HE_STD_CACHE.get(key)
    if std is None:
        std = _HE_STD_CACHE[key] = init._generalized_he_init_variances(conv.basisexpansion)
    with torch.no_grad():
        conv.weights.copy_(std * torch.randn_like(conv.weights))


# --------------------------------------------------------------------------- layers
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


# --------------------------------------------------------------------------- layout
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


# --------------------------------------------------------------------------- models
def _check_images(x, side):
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != side or x.shape[3] != side:
        raise LenszooError(
            f"expected a (batch, 1, {side}, {side}) image tensor, got shape {tuple(x.shape)}; "
            f"crop or resample the images to {side}x{side} pixels"
        )


class SteerableCNN(nn.Module):
    """A steerable CNN: escnn convolutions, field-wise batch norm, ReLU, blur pooling, an
    optional global convolution, group pooling, a spatial readout (the identity on the 1x1
    map a global convolution leaves), then a small MLP head. Build with ``build_steerable_cnn``."""

    def __init__(self, task="classify", *, group="C8", widths=DEFAULT_LAYOUT["widths"],
                 kernel_sizes=DEFAULT_LAYOUT["kernel_sizes"], strides=DEFAULT_LAYOUT["strides"],
                 pool=DEFAULT_LAYOUT["pool"], head_width=DEFAULT_LAYOUT["head_width"],
                 dropout=DEFAULT_LAYOUT["dropout"], global_fields=DEFAULT_LAYOUT["global_fields"],
                 readout=DEFAULT_LAYOUT["readout"], input_size=64):
        super().__init__()
        if isinstance(head_width, bool) or not isinstance(head_width, int) or head_width < 0:
            raise LenszooError(f"head_width must be a non-negative integer (0: a linear head), got {head_width!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise LenszooError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise LenszooError(f"input_size must be a positive integer (image side in pixels), got {input_size!r}")
        if isinstance(global_fields, bool) or not isinstance(global_fields, int) or global_fields < 0:
            raise LenszooError(f"global_fields must be a non-negative integer (0: no global convolution), "
                               f"got {global_fields!r}")
        if global_fields and readout != "mean":
            raise LenszooError(f"readout={readout!r} pools the last map, which global_fields={global_fields} "
                               "already turns into one position; use global_fields=0 with that readout")
        widths, kernel_sizes, strides, pool, sides = plan_layout(input_size, widths, kernel_sizes, strides, pool)
        kind, order = parse_group(group)
        self.task, self.group, self.group_size = task, f"{kind}{order}", group_size(group)
        self.input_size, self.feature_map_sizes = input_size, tuple(sides)
        out_features = num_outputs(task)

        from escnn import nn as enn

        self._geometric_tensor = enn.GeometricTensor
        gspace = _gspace(self.group)
        field_type = enn.FieldType(gspace, [gspace.trivial_repr])
        # (fields, kernel, padding, stride, pooled) per convolution; the first is unpadded
        layers = [(width, kernel, 0 if index == 0 else kernel // 2, stride, pooled)
                  for index, (width, kernel, stride, pooled) in enumerate(zip(widths, kernel_sizes, strides, pool))]
        if global_fields:
            # An unpadded convolution whose kernel covers the whole last map: each output field
            # weighs every position of that map (where on the ring a feature sits, and how features
            # on opposite sides relate), which a spatial mean cannot; the map's grid is symmetric
            # about its centre, so quarter turns stay exact.
            layers.append((global_fields, sides[-1], 0, 1, False))
            self.feature_map_sizes += (1,)
        self.convs, self.norms, self.pools = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for width, kernel, padding, stride, pooled in layers:
            out_type = enn.FieldType(gspace, width * [gspace.regular_repr])
            # no conv bias: the batch norm that follows has its own shift
            conv = enn.R2Conv(field_type, out_type, kernel, padding=padding, stride=stride, bias=False,
                              initialize=False)
            _he_init(conv, (self.group, field_type.representations, out_type.representations, kernel))
            self.convs.append(conv)
            self.norms.append(FieldBatchNorm(width, self.group_size))
            self.pools.append(BlurPool2d(out_type.size) if pooled else nn.Identity())
            field_type = out_type
        self.group_pool = GroupMaxPool(self.group_size)
        self.readout = SpatialReadout(readout)
        self.head = _head(self.readout.features(global_fields or widths[-1]), out_features, head_width,
                          float(dropout))
        self.register_buffer("basis_fingerprint", self._basis_fingerprint())
        self.register_state_dict_post_hook(_keep_learned_state)
        self.register_load_state_dict_pre_hook(_drop_derived_state)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def forward(self, x):
        _check_images(x, self.input_size)
        for conv, norm, pool in zip(self.convs, self.norms, self.pools):
            x = conv(self._geometric_tensor(x, conv.in_type)).tensor
            # channels-last memory makes the CPU convolutions and the depthwise blur several
            # times faster; a one-channel image cannot carry it, so the first conv's output
            # is converted (for later convs this is a no-op)
            x = x.contiguous(memory_format=torch.channels_last)
            x = pool(F.relu(norm(x), inplace=True))
        return self.head(self.readout(self.group_pool(x)))  # invariant fields, then spatial readout

    @torch.no_grad()
    def _basis_fingerprint(self) -> torch.Tensor:
        """One number per convolution that changes if escnn's kernel basis does.

        escnn computes some bases (dihedral groups' among them) numerically, so
        another escnn release or numerical library could give an equally valid but
        different basis, in which saved weights would mean other filters. The
        fingerprint is saved with the weights and checked when they are loaded."""
        values = []
        for conv in self.convs:
            # fixed, irregular probe weights and read-out pattern (a norm alone would not
            # notice an orthogonal change of basis)
            probe = torch.cos(torch.arange(conv.weights.numel(), dtype=torch.float32) * 1.3)
            kernel = conv.basisexpansion(probe).double().flatten()
            pattern = torch.cos(torch.arange(kernel.numel(), dtype=torch.float64) * 0.7)
            values.append(kernel @ pattern)
        return torch.stack(values)

    def train(self, mode: bool = True):
        super().train(mode)  # escnn expands and caches each filter when entering eval mode
        self._cache_filters(recompute=False)
        return self

    def refresh_filters(self):
        """Rebuild the filters cached in eval mode from the current weights (done after
        every ``load_state_dict``; needed only if the weights change in eval mode)."""
        self._cache_filters(recompute=True)

    @torch.no_grad()
    def _cache_filters(self, recompute: bool):
        for conv in self.convs:
            if conv.training:
                continue
            if recompute:
                kernel, bias = conv.expand_parameters()
                if bias is not None:
                    conv.expanded_bias = bias.detach()
            else:
                kernel = conv.filter
            # detached: escnn caches a tensor that keeps the autograd graph (and blocks deepcopy);
            # channels-last: so that the cached-filter convolutions run channels-last too
            conv.filter = kernel.detach().contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def export(self) -> "ExportedSteerableCNN":
        """The same eval-mode function in plain PyTorch, without escnn: each steerable
        convolution becomes a ``Conv2d`` with its batch norm folded in. ``self`` is unchanged."""
        layers = []
        for conv, norm, pool in zip(self.convs, self.norms, self.pools):
            kernel, _ = conv.expand_parameters()
            scale, shift = norm.scale_and_shift()
            plain = nn.Conv2d(conv.in_type.size, conv.out_type.size, conv.kernel_size,
                              stride=conv.stride, padding=conv.padding, bias=True)
            plain.weight.copy_(kernel * scale[:, None, None, None])
            plain.bias.copy_(shift)
            layers += [plain, nn.ReLU(inplace=True)]
            if isinstance(pool, BlurPool2d):
                layers.append(BlurPool2d(pool.channels))
        exported = ExportedSteerableCNN(nn.Sequential(*layers), GroupMaxPool(self.group_size),
                                        copy.deepcopy(self.head), self.input_size, SpatialReadout(self.readout.mode))
        if hasattr(self, "lenszoo_config"):
            exported.lenszoo_config = dict(self.lenszoo_config, exported=True)
        device = next(self.parameters()).device
        return exported.to(device=device, memory_format=torch.channels_last).eval()

    def extra_repr(self):
        return f"group={self.group}, task={self.task!r}, feature_map_sizes={self.feature_map_sizes}"


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


# --------------------------------------------------------------------------- state dict
# escnn's R2Conv stores, besides its learned ``weights``, buffers computed from
# them or from the field types (the expanded ``filter`` and bias, the sampled
# basis), and deletes or re-creates some of them when switching train/eval mode.
# A lenszoo state dict keeps only what is learned, so it is the same in both modes.
def _learned_names(model: SteerableCNN) -> set[str]:
    names = {name for name, _ in model.named_parameters()} | {"basis_fingerprint"}
    for prefix, module in model.named_modules():
        if isinstance(module, FieldBatchNorm):
            names.update(f"{prefix}.{name}" for name, _ in module.named_buffers())
    return names


def _keep_learned_state(model, state_dict, prefix, local_metadata):
    learned = {prefix + name for name in _learned_names(model)}
    for key in [k for k in state_dict if k.startswith(prefix) and k not in learned]:
        del state_dict[key]


def _persistent_buffers(model: nn.Module) -> dict:
    """Every buffer torch would save, by state-dict key; escnn shares one sampled
    basis between layers, so duplicates are kept (``named_buffers`` drops them)."""
    buffers = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                buffers[f"{prefix}.{name}" if prefix else name] = buffer
    return buffers


def _derived_names(model: SteerableCNN) -> set[str]:
    names = set(_persistent_buffers(model)) - _learned_names(model)
    for index in range(len(model.convs)):  # present in eval mode only
        names.update({f"convs.{index}.filter", f"convs.{index}.expanded_bias"})
    return names


def _drop_derived_state(model, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    # Fill the model's own derived buffers with their current values (nothing is
    # reported missing) and ignore derived entries saved by escnn in the other mode;
    # _refresh_after_load then recomputes them from the loaded weights.
    saved = state_dict.get(prefix + "basis_fingerprint")
    if saved is not None and not (
        saved.shape == model.basis_fingerprint.shape
        and torch.allclose(saved.double().cpu(), model.basis_fingerprint.double().cpu(), rtol=1e-3, atol=1e-3)
    ):
        raise LenszooError(
            "these weights were saved with a different escnn kernel basis (another escnn release or numerical "
            "library), so they would compute other filters here; load them with the escnn version they were "
            "trained with, or use a model exported with SteerableCNN.export()"
        )
    current = _persistent_buffers(model)
    for name in _derived_names(model):
        key = prefix + name
        if name in current:
            state_dict[key] = current[name]
        else:
            state_dict.pop(key, None)


def _refresh_after_load(model, incompatible_keys):
    model.refresh_filters()


def build_steerable_cnn(task="classify", *, group="C8", input_size=64, **layout) -> SteerableCNN:
    """A steerable CNN for ``task`` on symmetry group ``group`` (``"C8"``, ``"D8"``, ...).

    ``layout`` keys: ``widths`` (regular fields per convolution), ``kernel_sizes``,
    ``strides`` (of each convolution), ``pool`` (stride-2 blur pooling after each
    convolution), ``global_fields`` (regular fields of a last unpadded convolution
    over the whole final map; 0 for none, then ``readout`` pools the map: ``"mean"``
    or ``"mean_max"``), ``head_width`` (hidden units of the MLP head; 0 for a linear
    head), ``dropout``; missing keys take ``DEFAULT_LAYOUT``'s values. ``input_size``
    is the side of the square input image; the layout is checked against it.
    """
    unknown = set(layout) - set(DEFAULT_LAYOUT)
    if unknown:
        raise LenszooError(
            f"unknown steerable-CNN option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_LAYOUT)}"
        )
    return SteerableCNN(task, group=group, input_size=input_size, **{**DEFAULT_LAYOUT, **layout})


def build_c8_steerable(task="classify", **layout) -> SteerableCNN:
    return build_steerable_cnn(task, group="C8", **layout)


@hookimpl
def register_architectures(register):
    register(
        "c8_steerable",
        build_c8_steerable,
        tasks=("classify", "regress"),
        description="escnn C8 steerable CNN, regular fields, exactly invariant to 90-degree rotations; "
                    "built for fast CPU training",
        paper="Weiler & Cesa 2019, arXiv:1911.08251",
        **{key: list(value) if isinstance(value, tuple) else value for key, value in DEFAULT_LAYOUT.items()},
    )
