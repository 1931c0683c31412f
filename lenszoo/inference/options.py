"""The choices ``lenszoo predict`` and ``lenszoo.predict`` offer, in one place: the command line's
click choices are made from these, and the Python API checks its arguments against them.
Imports nothing heavy (the CLI reads it to build its options)."""

from __future__ import annotations

import os

from ..errors import LenszooError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}  # --out suffix -> format
RESIZE_METHODS = ("bilinear", "bicubic", "area", "nearest")
ENGINES = ("torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the hardware runs it natively (scorer.choose_precision)
SOME_FAILED = 3  # exit status when some inputs could not be scored (the others were)


def check_precision(precision, name: str = "--precision") -> None:
    """A one-line error unless ``precision`` is one of :data:`PRECISIONS` (``name``: what the user typed)."""
    if precision not in PRECISIONS:
        raise LenszooError(f"{name} must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_api_options(inputs, *, tta, resize, hdu, batch_size, workers, device, engine, precision):
    """What ``lenszoo predict`` checks on its command line, for the Python API; the torch device."""
    import numbers

    import numpy as np

    from ..runtime import resolve_device
    from .readers import is_tensor

    def whole(value, name, least, what):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise LenszooError(f"{name} must be a whole number >= {least} ({what}), got {value!r}")

    whole(batch_size, "batch_size", 1, "images scored at once")
    whole(workers, "workers", 0, "processes reading files while the model scores; 0 reads in this process")
    if hdu is not None:
        whole(hdu, "hdu", 0, "the FITS HDU to read; None reads the first holding an image")
    if resize is not None and resize not in RESIZE_METHODS:
        raise LenszooError(f"resize must be None (64×64 images only) or one of {', '.join(RESIZE_METHODS)}, "
                           f"got {resize!r}")
    if not isinstance(tta, (bool, np.bool_)):
        raise LenszooError(f"tta must be True or False, got {tta!r}")
    if engine not in ENGINES:
        raise LenszooError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    check_precision(precision, "precision")
    resolved = resolve_device(device)
    if engine == "onnxruntime" and resolved.type != "cpu":
        raise LenszooError("engine='onnxruntime' runs on the CPU; pass device='cpu' or engine='torch'")
    if engine == "onnxruntime" and precision == "bf16":
        raise LenszooError("precision='bf16' runs with engine='torch'; onnxruntime scores in fp32")
    if not (isinstance(inputs, (str, os.PathLike, np.ndarray)) or is_tensor(inputs)):
        items = list(inputs) if isinstance(inputs, (list, tuple)) else None
        if not items or not all(isinstance(i, (str, os.PathLike)) for i in items):
            if items is None:
                got = type(inputs).__name__
            elif not items:
                got = "an empty list"
            else:
                got = f"a {type(inputs).__name__} of {', '.join(sorted({type(i).__name__ for i in items}))}"
            arrays = any(isinstance(i, np.ndarray) or is_tensor(i) for i in items or ())
            raise LenszooError("inputs must be a file or folder (str or Path), a list of them, or an (N, H, W) numpy "
                               f"array or tensor of images; got {got}" + ("; stack the arrays with numpy.stack"
                                                                          if arrays else ""))
    return resolved


def output_format(out, fmt: str | None) -> str:
    from pathlib import Path

    if fmt:
        if fmt not in FORMATS.values():
            raise LenszooError(f"--format must be one of {', '.join(FORMATS.values())}, got {fmt!r}")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise LenszooError(f"cannot tell the format of --out {out} from its suffix; name it .csv, .jsonl or "
                           ".parquet, or pass --format")
    return FORMATS[suffix]


def require_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise LenszooError("--engine onnxruntime needs onnxruntime: pip install 'lenszoo[onnx]'") from None


def require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LenszooError("Parquet output needs pyarrow, which is not installed: pip install pyarrow, "
                           "or write .csv or .jsonl") from None
