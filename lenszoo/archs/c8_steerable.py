"""``c8_steerable``: the steerable-CNN family (``lenszoo.archs.steerable``) on the rotation group C8.

A thin entry point, as timm's are: it picks the group and the registered default layout;
everything else lives in the family module, imported (with torch and escnn) only when a model
is built, so listing architectures stays cheap. Names that plugins imported from here
(``build_steerable_cnn``, ``SteerableCNN``, the layers) are re-exported lazily.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from .options import lazy_attributes
from .steerable_defaults import DEFAULT_LAYOUT  # c8_steerable registers the family's layout as it is


def build_c8_steerable(task="classify", **layout):
    from .steerable import build_steerable_cnn

    return build_steerable_cnn(task, group="C8", **layout)


def build_c8_inference(task="classify", **layout):
    """The plain-PyTorch inference form of ``build_c8_steerable(task, **layout)``: the module
    ``SteerableCNN.export()`` returns, untrained, to load an exported state dict into. No escnn."""
    from .steerable_layers import exported_skeleton

    return exported_skeleton(task, group="C8", **{**DEFAULT_LAYOUT, **layout})


@hookimpl
def register_architectures(register):
    register(
        "c8_steerable",
        build_c8_steerable,
        tasks=("classify", "regress"),
        description="escnn C8 steerable CNN, regular fields, exactly invariant to 90-degree rotations; "
                    "built for fast CPU training",
        paper="Weiler & Cesa 2019, arXiv:1911.08251",
        model_args={key: list(value) if isinstance(value, tuple) else value for key, value in DEFAULT_LAYOUT.items()},
        parameters={"classify": 104_431, "regress": 104_301},  # at the default model_args; a test checks them
        role="equivariant", order=1,
        inference_builder=build_c8_inference,
    )


__getattr__ = lazy_attributes(".steerable", __package__)  # the family's names, imported on first use
