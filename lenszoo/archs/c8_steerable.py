"""``c8_steerable``: the steerable-CNN family (``lenszoo.archs.steerable``) on the rotation group C8.

A thin entry point, as timm's are: it picks the group and the registered default layout;
everything else lives in the family module. Names that plugins imported from here
(``build_steerable_cnn``, ``SteerableCNN``, ``DEFAULT_LAYOUT``, the layers) are re-exported.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from .steerable import (  # noqa: F401 - re-exported: this module was the family's home before 0.2
    DEFAULT_LAYOUT,
    READOUTS,
    BlurPool2d,
    ExportedSteerableCNN,
    FieldBatchNorm,
    GroupMaxPool,
    SpatialReadout,
    SteerableCNN,
    _use_deterministic_escnn_svd,
    build_steerable_cnn,
    group_size,
    parse_group,
    plan_layout,
)


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
