"""The data layer's name for the normalisation it records in dataset manifests: the function
belongs with the models (``lenszoo.preprocess``), whose weights were trained on it."""

from ..preprocess import NORMALIZATION, normalize, normalizer_from_config  # noqa: F401
