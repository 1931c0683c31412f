"""lenszoo plugin adding ``d8_steerable``: a steerable CNN on the dihedral group D8.

Lens images have no preferred handedness: a mirrored lens is as likely as the
original. D8 holds the eight rotations by multiples of 45 degrees *and* the
eight reflections, so besides being exactly invariant to 90-degree rotations
(like ``c8_steerable``) the network is exactly invariant to horizontal and
vertical flips and transposes, with no flip augmentation needed.

A regular D8 field has 16 channels (C8's has 8), so the default widths are
half of ``c8_steerable``'s field counts with a wider last layer: about the same
channels and compute. The network itself is lenszoo's public steerable-CNN
builder (``lenszoo.archs.steerable.build_steerable_cnn``) with ``group="D8"``;
this module uses only lenszoo's public API.
"""

from lenszoo import hookimpl
from lenszoo.archs.steerable_defaults import DEFAULT_LAYOUT

__version__ = "0.1.0"

# The registered defaults become ``model_args`` in checkpoints: the steerable family's layout
# (lenszoo.archs.steerable_defaults: an unpadded 8x8 stride-2 stem, blur pooling 29 -> 15 -> 8)
# with D8's own widths and kernels, read out by the spatial mean (the MLP after group pooling).
D8_LAYOUT = {
    **DEFAULT_LAYOUT,
    "widths": (2, 4, 8, 16),  # regular D8 fields: 32, 64, 128, 256 channels
    "kernel_sizes": (8, 5, 5, 5),
    "global_fields": 0,
}


def build_d8_steerable(task="classify", **layout):
    """A D8 steerable CNN for ``task``; ``layout`` overrides ``D8_LAYOUT`` (see ``build_steerable_cnn``)."""
    from lenszoo.archs.steerable import build_steerable_cnn  # here: torch and escnn load only to build

    return build_steerable_cnn(task, group="D8", **{**D8_LAYOUT, **layout})


@hookimpl
def register_architectures(register):
    register(
        "d8_steerable",
        build_d8_steerable,
        tasks=("classify", "regress"),
        description="escnn D8 steerable CNN (rotations and reflections), exactly invariant to 90-degree "
                    "rotations and to flips; external plugin",
        paper="Weiler & Cesa 2019, arXiv:1911.08251",
        model_args={key: list(value) if isinstance(value, tuple) else value for key, value in D8_LAYOUT.items()},
        parameters={"classify": 30_961, "regress": 30_831},  # at the default model_args; a test checks them
    )
