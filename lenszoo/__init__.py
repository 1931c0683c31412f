"""lenszoo: a model zoo for dark-matter substructure in strong gravitational lensing.

    >>> import lenszoo
    >>> lenszoo.list_models()
    >>> model = lenszoo.create_model("resnet50", task="classify")
    >>> model = lenszoo.load("c8_steerable", task="classify", dataset="B")

Importing lenszoo is cheap: torch, timm, escnn and lenstronomy are imported
only where a model or dataset needs them.
"""

__version__ = "0.1.0"

from .errors import LenszooError, UnknownNameError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .registry import (  # noqa: E402
    create_model,
    get_architecture,
    get_dataset,
    list_datasets,
    list_models,
    registry,
)
from .tasks import CLASS_NAMES, TASKS  # noqa: E402


def load(name, task="classify", dataset=None, *, tag=None, device="cpu", trainable=False):
    """A pretrained model in eval mode, with its config and preprocessing attached.

    ``name`` is an architecture with released weights (then ``task``, ``dataset`` and ``tag``
    pick them; ``"c8_steerable.robust"`` is ``tag="robust"``; ``dataset`` is needed where there
    are weights for several datasets), ``"hf-hub:ORG/NAME@REV"``, or a path to a checkpoint folder
    or run directory (``./name`` for a folder in the working directory). Steerable models come in
    their plain-PyTorch inference form (the same outputs, no escnn import); ``trainable=True``
    gives the trainable module, for fine-tuning. ``model.lenszoo_config["input_contract"]`` says
    what images the weights expect.
    """
    from .pretrained.load import load_model

    return load_model(name, task=task, dataset=dataset, device=device, trainable=trainable, tag=tag)

def predict(model, inputs, task="classify", dataset=None, *, tta=False, resize=None, hdu=None, batch_size=256,
            workers=0, device="cpu", engine="torch", precision="auto", strict=False):
    """Score images: ``inputs`` are FITS/.npy/PNG files, folders of them, or an array (or tensor)
    of ``(H, W)`` / ``(N, H, W)`` images; returns one dict per image (class probabilities or
    log10 m_a, flags, the precision, the model and its weights' sha256), as ``lenszoo predict``
    writes them. ``model`` is a loaded lenszoo model or any name ``lenszoo.load`` takes
    (``task``/``dataset`` pick released weights). Options as on the command line: ``tta``,
    ``resize``, ``hdu``, ``batch_size``, ``workers``, ``device``, ``engine`` ("torch" or
    "onnxruntime"), ``precision`` ("auto": bf16 where the hardware has it natively, "fp32",
    "bf16"), ``strict`` (leave out images unlike the weights' training images). Inputs that
    cannot be scored are warnings; the rest are scored. Bad options are one ``LenszooError``."""
    import os
    import warnings

    from .contract import model_contract
    from .inference.inputs import array_chunks, array_images, file_chunks, find_inputs
    from .inference.options import check_api_options
    from .inference.pipeline import ListSink, score
    from .inference.scorer import input_size

    device = check_api_options(inputs, tta=tta, resize=resize, hdu=hdu, batch_size=batch_size, workers=workers,
                               device=device, engine=engine, precision=precision)
    if isinstance(model, (str, os.PathLike)):
        from .pretrained.load import load_model

        model = load_model(model, task=task, dataset=dataset, device=device)

    def warn(problem):
        warnings.warn(str(problem), stacklevel=2)

    if isinstance(inputs, (str, os.PathLike, list, tuple)):
        files, problems = find_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
        for problem in problems:
            warn(problem)
        chunks = file_chunks(files, workers=workers, hdu=hdu, resize=resize, size=input_size(model))
    else:  # an array or a tensor (check_api_options allows nothing else)
        chunks = array_chunks(array_images(inputs, resize=resize, size=input_size(model)))
    rows = ListSink()
    score(model, chunks, rows, tta=tta, device=device, engine=engine, precision=precision, batch_size=batch_size,
          contract=model_contract(model), strict=strict, on_problem=warn)
    return list(rows)


__all__ = [
    "__version__",
    "CLASS_NAMES",
    "TASKS",
    "LenszooError",
    "UnknownNameError",
    "create_model",
    "get_architecture",
    "get_dataset",
    "hookimpl",
    "list_datasets",
    "list_models",
    "load",
    "predict",
    "registry",
]
