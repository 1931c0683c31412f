"""What a model's inputs go through: the one image normalisation lenszoo uses for training and
inference, and ``Preprocess``, which every built or loaded model carries.

Each image is divided by its largest absolute pixel value, so its brightest
pixel becomes 1 (the seed scaled by the maximum too, but through a uint8 round
trip that wrapped negative noise pixels). The scale is per image, so nothing
has to be estimated from a training set and the same call works on any data.
``NORMALIZATION`` names it in dataset manifests and checkpoint configs;
``normalizer_from_config`` turns such a record back into the function.
"""

from __future__ import annotations

import numpy as np

from .errors import LenszooError

NORMALIZATION = {"name": "per_image_max_abs", "version": 1}


def _is_torch_tensor(x) -> bool:
    # Checked by type name so that normalising numpy arrays never imports torch.
    return type(x).__module__.startswith("torch") and hasattr(x, "amax")


def normalize(images):
    """``images / max|images|`` per image (over the last two axes), as float32.

    Takes a numpy array or a torch tensor of shape ``(..., H, W)`` and returns
    the same type and shape. An all-zero image is returned unchanged.
    """
    if _is_torch_tensor(images):
        if images.ndim < 2:
            raise LenszooError(f"normalize expects images of shape (..., H, W); got shape {tuple(images.shape)}")
        x = images.float()
        scale = x.abs().amax(dim=(-2, -1), keepdim=True)
        return x / scale.where(scale > 0, scale.new_ones(()))
    x = np.asarray(images, dtype=np.float32)
    if x.ndim < 2:
        raise LenszooError(f"normalize expects images of shape (..., H, W); got shape {x.shape}")
    scale = np.abs(x).max(axis=(-2, -1), keepdims=True)
    scale[scale == 0] = 1.0
    return (x / scale).astype(np.float32, copy=False)


def identity(images):
    """No normalisation (ablations only): float32 of the same type."""
    if _is_torch_tensor(images):
        return images.float()
    return np.asarray(images, dtype=np.float32)


# name -> {version: function}; a changed formula gets a new version, never an edit.
_NORMALIZERS = {
    "per_image_max_abs": {1: normalize},
    "none": {1: identity},
}


def normalizer_from_config(config):
    """The function a ``NORMALIZATION``-style record (``{"name", "version"}``) names."""
    if isinstance(config, str):
        config = {"name": config, "version": 1}
    if not isinstance(config, dict) or "name" not in config:
        raise LenszooError(
            f"a normalisation record is a dict like {NORMALIZATION}; got {config!r}"
        )
    name, version = config["name"], config.get("version", 1)
    if name not in _NORMALIZERS:
        raise LenszooError(
            f"unknown normalisation {name!r}; this lenszoo knows: {', '.join(sorted(_NORMALIZERS))} "
            "(upgrade lenszoo if the checkpoint or dataset came from a newer one)"
        )
    versions = _NORMALIZERS[name]
    if version not in versions:
        raise LenszooError(
            f"normalisation {name!r} version {version!r} is unknown; known versions: "
            f"{', '.join(map(str, sorted(versions)))} (upgrade lenszoo)"
        )
    return versions[version]


class Preprocess:
    """What a model's inputs go through: any real-valued images (numpy or torch, shape
    ``(..., H, W)``) become float32 tensors normalised as the model was trained.

    Images with NaN or infinite pixels are refused (a network turns them into NaN logits, which
    read as the first class); mask or fill such pixels first. One-channel models get the channel
    axis they need: ``(H, W)`` becomes ``(1, 1, H, W)`` and ``(N, H, W)`` becomes ``(N, 1, H, W)``,
    as ``lenszoo.predict`` takes them; other shapes are left as given (the model checks them).
    """

    def __init__(self, normalization, input_size=(1, 64, 64)):
        self.normalization = normalization
        self.input_size = tuple(input_size)
        self._normalize = normalizer_from_config(normalization)

    def __call__(self, images):
        import torch

        if isinstance(images, torch.Tensor):
            tensor = images
        else:
            try:
                array = np.asarray(images)
            except (TypeError, ValueError) as exc:
                raise LenszooError(f"cannot read the images as an array ({exc}); pass a numpy array or a tensor") from None
            if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise LenszooError(f"images must hold numbers, got an array of {array.dtype}")
            if np.iscomplexobj(array):
                raise LenszooError("images must be real-valued, got complex numbers")
            tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tensor.is_complex():
            raise LenszooError("images must be real-valued, got a complex tensor")
        tensor = tensor.float()
        if tensor.ndim < 2:
            raise LenszooError(f"images must have shape (..., H, W), got {tuple(tensor.shape)}")
        # A NaN or infinite pixel makes its image's sum non-finite, so one cheap reduction clears a
        # batch; only a batch it does not clear (or whose sums overflow) is checked pixel by pixel.
        if not bool(torch.isfinite(tensor.sum(dim=(-2, -1))).all()):
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                flat = finite.reshape(-1, *tensor.shape[-2:]).all(dim=(-2, -1))
                bad = int((~flat).nonzero()[0, 0])
                raise LenszooError(f"image {bad} (of {flat.numel()}) has NaN or infinite pixels; mask or fill them "
                                   "before scoring (a network would turn them into NaN outputs)")
        out = self._normalize(tensor)
        if self.input_size[0] == 1 and out.ndim in (2, 3):
            out = out.reshape(-1, 1, *out.shape[-2:])
        return out

    def __repr__(self):
        return f"Preprocess({self.normalization!r})"
