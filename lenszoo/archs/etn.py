"""``etn``: the registered entry point of Equivariant Transformer Networks (``lenszoo.archs.equivariant_transformer``).

This module needs no torch: listing or describing the architecture stays cheap, and the
network (and torch) is imported when a model is built. Names the network module defines are
re-exported lazily, so ``from lenszoo.archs.etn import ...`` keeps working.
"""

from __future__ import annotations

from ..errors import LenszooError
from ..hookspecs import hookimpl
from ..tasks import num_outputs
from .options import MAX_LAYERS, MAX_WIDTH, check_options, lazy_attributes, positive_int, positive_ints
DEFAULTS = dict(transformers=("rotation",), pose_channels=8, pose_depth=3, n_radii=16, n_angles=64,
                min_radius=0.05, base_widths=(16, 32, 64, 128), dropout=0.0, mask_outside_disc=True, readout="mean")
READOUTS = ("mean", "flatten")


def _number_in(value, low, high) -> bool:
    """True for a real number in [low, high)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high


def build_etn(task, **options):
    from .equivariant_transformer import ETN, TRANSFORMERS  # torch: the options are checked against the network

    opts = check_options("etn", options, DEFAULTS)
    transformers = (opts["transformers"],) if isinstance(opts["transformers"], str) else tuple(opts["transformers"])
    unknown = [t for t in transformers if t not in TRANSFORMERS]
    if unknown or not transformers:
        raise LenszooError(
            f"etn option transformers={opts['transformers']!r} is invalid; "
            f"give a list of {', '.join(map(repr, TRANSFORMERS))}, e.g. ['rotation']")
    for name, maximum in (("pose_channels", MAX_WIDTH), ("pose_depth", MAX_LAYERS), ("n_radii", 128), ("n_angles", 512)):
        positive_int("etn", name, opts[name], maximum)
    if opts["pose_depth"] < 2 or opts["n_radii"] < 2 or opts["n_angles"] < 4:
        raise LenszooError("etn needs pose_depth >= 2, n_radii >= 2 and n_angles >= 4; the defaults are 3, 16, 64")
    if not _number_in(opts["min_radius"], 0, 1) or opts["min_radius"] == 0:
        raise LenszooError(f"etn option min_radius={opts['min_radius']!r} must lie in (0, 1); use e.g. 0.05")
    if not _number_in(opts["dropout"], 0, 1):
        raise LenszooError(f"etn option dropout={opts['dropout']!r} must lie in [0, 1); use e.g. 0.3")
    if not isinstance(opts["mask_outside_disc"], bool):
        raise LenszooError(f"etn option mask_outside_disc={opts['mask_outside_disc']!r} is invalid; use true or false")
    if opts["readout"] not in READOUTS:
        raise LenszooError(f"etn option readout={opts['readout']!r} is invalid; use one of: {', '.join(READOUTS)}")
    base_widths = positive_ints("etn", "base_widths", opts["base_widths"], maximum=MAX_WIDTH)
    return ETN(num_outputs(task), **{**opts, "transformers": transformers, "base_widths": base_widths})


@hookimpl
def register_architectures(register):
    register(
        "etn",
        build_etn,
        tasks=("classify", "regress"),
        description="Equivariant Transformer Network: pose predicted in polar (or log-polar) coordinates "
                    "(cyclic convs, heat-map, circular mean) and undone with grid_sample, "
                    "then a plain CNN; rotation-invariant up to interpolation",
        paper="Tai et al. 2019, arXiv:1901.11399",
        model_args={k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULTS.items()},
        parameters={"classify": 98_788, "regress": 98_530},  # at the default model_args; a test checks them
        role="equivariant", order=3,
    )


__getattr__ = lazy_attributes(".equivariant_transformer", __package__)  # the family's names, imported on first use
