"""The steerable-CNN family's default layout (``lenszoo.archs.steerable``), without torch.

Its variants register their layouts as this one or as changes to it: ``c8_steerable`` (here)
takes it as it is; ``d8_steerable`` (plugins/lenszoo-d8) changes widths, kernels and the read-out.
Kept apart from the network module so that registering a variant imports no torch or escnn; the
builder fills missing keys from it. Why each value is what it is: ``lenszoo.archs.steerable``.
"""

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
