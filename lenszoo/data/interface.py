"""The one interface a dataset generator offers, and the helpers that read it.

A generator (what a ``register_datasets`` hook's factory returns) has:

- ``name`` (str), ``class_names`` (the classes, in lenszoo's order), ``config`` (a JSON-able dict
  of everything that decides its images);
- ``simulate(split, index, seed=0, *, class_name=None, noise=True) -> (image, metadata)``: image
  ``index`` of ``split`` as a float32 ``(H, W)`` array, a pure function of its arguments.

and may have ``splits`` (default: any), ``image_shape`` (default ``(64, 64)``),
``generator_name`` and ``version`` (what made the images, recorded in datasets and checkpoints),
``warm_up()`` (build expensive state once, before workers fork) and
``draw(split, index, seed, class_name=None)`` (parameters without rendering). Everything in
lenszoo reads these through the functions below, so the defaults live in one place.
"""

from __future__ import annotations

from ..errors import LenszooError, UnknownNameError


def generator_info(generator) -> dict:
    """``{"name", "version"}`` of what made a generator's images."""
    name = getattr(generator, "generator_name", None) or f"{type(generator).__module__}.{type(generator).__qualname__}"
    return {"name": name, "version": getattr(generator, "version", None)}


def generator_splits(generator) -> tuple:
    return tuple(getattr(generator, "splits", ()) or ())


def generator_image_shape(generator) -> tuple[int, int]:
    height, width = getattr(generator, "image_shape", (64, 64))
    return int(height), int(width)


def check_split(generator, split: str) -> str:
    splits = generator_splits(generator)
    if splits and split not in splits:
        raise UnknownNameError("split", split, splits)
    return split


def check_generator(generator) -> object:
    """``generator`` if it has what every generator must have, else a one-line error naming it."""
    missing = [attr for attr in ("name", "class_names", "config", "simulate") if not hasattr(generator, attr)]
    if missing:
        raise LenszooError(f"dataset generator {type(generator).__name__} lacks {', '.join(missing)}; "
                           "see lenszoo.data.interface for what a generator provides")
    return generator


def generator_record(generator) -> dict:
    """What a checkpoint records about the generator its training images came from."""
    return {"dataset": generator.name, "generator": generator_info(generator), "config": generator.config}
