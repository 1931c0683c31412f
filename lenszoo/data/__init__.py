"""Lensing simulations, dataset storage, streaming and DeepLense import.

Cheap to import: lenstronomy, astropy and numba load when a generator first
renders an image; torch loads when a PyTorch dataset class is first used.

    >>> from lenszoo.data import StoredDataset, normalize
    >>> train = StoredDataset("data/B-train", task="classify")
    >>> image, label = train[0]              # (1, 64, 64) float32 tensor, torch.long
"""

from ..tasks import CLASS_NAMES
from .deeplense import DeepLenseFolder, import_deeplense, read_deeplense_file
from .generate import simulate_dataset
from .lensing import SPLITS, LensingSimulator, default_config, variant
from .matched import MatchedLensingSimulator
from .normalization import NORMALIZATION, normalize, normalizer_from_config
from .storage import META_DTYPE, read_manifest, verify_dataset

# PyTorch datasets: imported on first use so that `lenszoo simulate` never pays for torch.
_TORCH_NAMES = ("StoredDataset", "StreamingDataset", "DeepLenseDataset")


def __getattr__(name):
    if name in _TORCH_NAMES:
        from . import torch_datasets

        return getattr(torch_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLASS_NAMES",
    "NORMALIZATION",
    "SPLITS",
    "META_DTYPE",
    "DeepLenseDataset",
    "DeepLenseFolder",
    "LensingSimulator",
    "MatchedLensingSimulator",
    "StoredDataset",
    "StreamingDataset",
    "default_config",
    "variant",
    "import_deeplense",
    "normalize",
    "normalizer_from_config",
    "read_deeplense_file",
    "read_manifest",
    "simulate_dataset",
    "verify_dataset",
]
