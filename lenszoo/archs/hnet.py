"""``hnet``: the registered entry point of Harmonic Networks (``lenszoo.archs.harmonic``).

This module needs no torch: listing or describing the architecture stays cheap, and the
network (and torch) is imported when a model is built. Names the network module defines are
re-exported lazily, so ``from lenszoo.archs.hnet import ...`` keeps working.
"""

from __future__ import annotations

from ..errors import LenszooError
from ..hookspecs import hookimpl
from ..tasks import num_outputs
from .options import MAX_HIDDEN, MAX_WIDTH, check_options, lazy_attributes, positive_int, positive_ints

READOUTS = ("mean", "radial")
DEFAULTS = dict(widths=(6, 8, 12, 16), depths=(1, 1, 2, 2), kernel_size=5, n_rings=4, max_order=1,
                ring_bandwidth=0.5, batch_norm=True, head_hidden=32, readout="mean", radial_bins=4)


def build_hnet(task, **options):
    opts = check_options("hnet", options, DEFAULTS)
    widths = positive_ints("hnet", "widths", opts["widths"], maximum=MAX_WIDTH)
    depths = positive_ints("hnet", "depths", opts["depths"], length=len(widths), maximum=16)
    for name, maximum in (("kernel_size", 33), ("n_rings", 64), ("head_hidden", MAX_HIDDEN)):
        positive_int("hnet", name, opts[name], maximum)
    if not isinstance(opts["batch_norm"], bool):
        raise LenszooError(f"hnet option batch_norm={opts['batch_norm']!r} is invalid; use true or false")
    if not isinstance(opts["max_order"], int) or isinstance(opts["max_order"], bool) or not 1 <= opts["max_order"] <= 8:
        raise LenszooError(f"hnet option max_order={opts['max_order']!r} is invalid; use 1 (orders 0 and 1) or more, at most 8")
    if opts["readout"] not in READOUTS:
        raise LenszooError(f"hnet option readout={opts['readout']!r} is invalid; use one of: {', '.join(READOUTS)}")
    positive_int("hnet", "radial_bins", opts["radial_bins"], maximum=64)
    bandwidth = opts["ring_bandwidth"]
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
        raise LenszooError(f"hnet option ring_bandwidth={opts['ring_bandwidth']!r} must be > 0; use e.g. 0.5 pixels")
    from .harmonic import HNet

    return HNet(num_outputs(task), **{**opts, "widths": widths, "depths": depths})


@hookimpl
def register_architectures(register):
    register(
        "hnet",
        build_hnet,
        tasks=("classify", "regress"),
        description="Harmonic Network: complex rotation-order 0/1 streams, harmonic filters, "
                    "magnitude nonlinearity and batch norm, invariant magnitude read-out; "
                    "exactly invariant to 90-degree rotations, approximately to any angle",
        paper="Worrall et al. 2017, arXiv:1612.04642",
        model_args={k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULTS.items()},
        parameters={"classify": 15_703, "regress": 15_637},  # at the default model_args; a test checks them
        role="equivariant", order=2,
    )


__getattr__ = lazy_attributes(".harmonic", __package__)  # the family's names, imported on first use
