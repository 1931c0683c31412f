"""The steerable-CNN family (escnn): networks exactly invariant to 90-degree rotations of a lens image.

This module is the family; ``c8_steerable`` (here, in lenszoo) and ``d8_steerable`` (the
``lenszoo-d8`` plugin) are thin entry points that pick a group and a default layout.

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
    (``"D4"``, ``"D8"``, ...) group; ``DEFAULT_LAYOUT`` (``steerable_defaults.py``)
    holds the family's defaults, which c8_steerable registers.
``SteerableCNN``
    ``forward(x)`` maps ``(B, 1, 64, 64)`` to ``(B, 3)`` or ``(B, 1)``;
    ``export()`` returns an ``ExportedSteerableCNN``, the same function in plain
    PyTorch (no escnn) with batch norm folded into the convolutions;
    ``feature_map_sizes`` lists the side of every map from input to head.
``FieldBatchNorm``, ``BlurPool2d``, ``GroupMaxPool``, ``SpatialReadout``
    the plain-PyTorch layers the network is made of (``lenszoo.archs.steerable_layers``).

State dicts hold only learned parameters, batch-norm statistics and a
``basis_fingerprint`` of escnn's kernel basis: the same keys in train and eval
mode, strict loading in either mode, the cached escnn filters rebuilt after
every load (escnn alone would keep stale ones), and weights refused where
escnn's basis differs from the one they were trained in.
"""

from __future__ import annotations

import copy


import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LenszooError
from ..tasks import num_outputs
from .steerable_layers import (  # noqa: F401 - the layers are part of the family's public API
    MAX_FIELDS,
    MAX_HIDDEN,
    READOUTS,
    BlurPool2d,
    ExportedSteerableCNN,
    FieldBatchNorm,
    GroupMaxPool,
    SpatialReadout,
    _check_images,
    _head,
    exported_skeleton,
    group_size,
    parse_group,
    plan_layout,
)
from .steerable_defaults import DEFAULT_LAYOUT  # noqa: E402, F401 - the family's layout, part of its API


# --------------------------------------------------------------------------- groups
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


# --------------------------------------------------------------------------- models
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
        if isinstance(head_width, bool) or not isinstance(head_width, int) or not 0 <= head_width <= MAX_HIDDEN:
            raise LenszooError(f"head_width must be an integer >= 0 (0: a linear head) and at most {MAX_HIDDEN:,}, "
                               f"got {head_width!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise LenszooError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise LenszooError(f"input_size must be a positive integer (image side in pixels), got {input_size!r}")
        if isinstance(global_fields, bool) or not isinstance(global_fields, int) or not 0 <= global_fields <= MAX_FIELDS:
            raise LenszooError(f"global_fields must be an integer >= 0 (0: no global convolution) and at most "
                               f"{MAX_FIELDS}, got {global_fields!r}")
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
