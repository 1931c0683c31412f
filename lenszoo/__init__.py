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
    from .weights import load as _load

    return _load(name, task=task, dataset=dataset, device=device, trainable=trainable, tag=tag)

def predict(model, inputs, task="classify", dataset=None, **options):
    """Score images: ``inputs`` are FITS/.npy/PNG files, folders of them, or an array of
    ``(H, W)`` / ``(N, H, W)`` images; returns one dict per image (class probabilities or
    log10 m_a, the model and its weights' sha256), as ``lenszoo predict`` writes them. Options:
    ``tta``, ``resize``, ``hdu``, ``batch_size``, ``workers``, ``device``, ``engine`` ("torch" or
    "onnxruntime")."""
    from .scoring import predict as _predict

    return _predict(model, inputs, task=task, dataset=dataset, **options)



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
