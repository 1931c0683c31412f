"""``radial_profile``: the registered entry point of the radial-profile control (``lenszoo.archs.profile_features``).

A control, not a contender: a fixed, exactly rotation-invariant layer reduces each image to its
azimuthally averaged radial profile and a few global moments (flux, radii, quadrupole, ring
radius), and a small MLP reads them. It knows nothing of substructure morphology, so what it
reaches on a dataset is what a global shortcut is worth there, and a network's margin over it is
the signal that needs the image. ``azimuthal_orders > 0`` adds per-ring Fourier amplitudes
``|a_m|``, which do see lumps (still rotation-invariant). Needs no torch until a model is built.
"""

from __future__ import annotations

from ..errors import LenszooError
from ..hookspecs import hookimpl
from ..tasks import num_outputs
from .options import MAX_HIDDEN, check_options, lazy_attributes, positive_int, positive_ints

DEFAULTS = dict(profile_bins=32, moments=True, azimuthal_orders=0, azimuthal_rings=8, hidden=(64, 64), dropout=0.0)


def build_radial_profile(task, **options):
    opts = check_options("radial_profile", options, DEFAULTS)
    positive_int("radial_profile", "profile_bins", opts["profile_bins"], maximum=256)
    positive_int("radial_profile", "azimuthal_rings", opts["azimuthal_rings"], maximum=256)
    if opts["profile_bins"] < 2 or opts["azimuthal_rings"] < 2:
        raise LenszooError("radial_profile needs profile_bins >= 2 and azimuthal_rings >= 2; the defaults are 32 and 8")
    orders = opts["azimuthal_orders"]
    if not isinstance(orders, int) or isinstance(orders, bool) or not 0 <= orders <= 64:
        raise LenszooError(f"radial_profile option azimuthal_orders={orders!r} is invalid; use 0 (none) or m_max, at most 64, e.g. 6")
    if not isinstance(opts["moments"], bool):
        raise LenszooError(f"radial_profile option moments={opts['moments']!r} is invalid; use true or false")
    dropout = opts["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LenszooError(f"radial_profile option dropout={dropout!r} must lie in [0, 1); use e.g. 0.1")
    hidden = positive_ints("radial_profile", "hidden", opts["hidden"], maximum=MAX_HIDDEN)
    from .profile_features import RadialProfileNet

    return RadialProfileNet(num_outputs(task), **{**opts, "hidden": hidden})


@hookimpl
def register_architectures(register):
    register(
        "radial_profile",
        build_radial_profile,
        tasks=("classify", "regress"),
        description="Control: azimuthally averaged radial profile (32 rings) and global moments as a fixed "
                    "layer, then an MLP; exactly invariant to quarter turns and flips, to any rotation up to "
                    "resampling; blind to substructure morphology",
        paper="lenszoo control (issue 16): what a global shortcut is worth",
        model_args={k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULTS.items()},
        parameters={"classify": 6_787, "regress": 6_657},  # at the default model_args; a test checks them
        role="control", order=4,
    )


__getattr__ = lazy_attributes(".profile_features", __package__)  # the family's names, imported on first use
