"""Reading one image file (FITS, ``.npy``, PNG) into a float32 ``(N, H, W)`` stack, or a reason not to.

What a file's header declares is believed only as far as the file can back it: sizes are
checked against the bytes the file holds and this machine's memory before anything is allocated.
Every failure is a :class:`Refused` carrying the reason; nothing here raises anything else.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import debugging


def is_tensor(value) -> bool:
    """A torch tensor, known by its type's module so that checking never imports torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


SUFFIXES = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
            ".fts.gz": "fits", ".fits.fz": "fits", ".fit.fz": "fits", ".fts.fz": "fits", ".fz": "fits",
            ".npy": "npy", ".png": "png"}
READ = ".fits, .fits.gz, .fits.fz, .npy, .png"  # what the messages name
# Deflate (gzip, PNG) expands at most ~1032-fold: a header declaring more than this times the file's
# size cannot be telling the truth (a damaged file, or a "decompression bomb").
MAX_INFLATION = 1100


class Refused(Exception):
    """An input that cannot be scored; carries the reason."""


def input_kind(path) -> str | None:
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def read_images(path, *, hdu: int | None = None, info: dict | None = None) -> np.ndarray:
    """The images in one file as a float32 ``(N, H, W)`` stack; raises ``Refused`` with the reason.

    What a file's header declares is checked against the file's size and this machine's memory
    before anything is allocated, so a damaged or hostile header costs nothing; any other failure
    to read the file is a refusal too (libraries' warnings are silenced: the reason says it)."""
    import warnings

    kind = input_kind(path)
    if kind is None:
        raise Refused(f"not a file type lenszoo reads ({READ})")
    try:
        if os.path.getsize(path) == 0:
            raise Refused("empty file")
    except OSError as exc:
        raise Refused(f"cannot be read ({exc.strerror or exc})") from None
    try:
        with warnings.catch_warnings():
            if not debugging():  # the refusal says what went wrong; LENSZOO_TRACEBACK=1 shows the rest
                warnings.simplefilter("ignore")
            if kind == "fits":
                array = _read_fits(path, hdu, info)
            else:
                array = {"npy": _read_npy, "png": _read_png}[kind](path, hdu)
    except Refused:
        raise
    except MemoryError:
        raise Refused(f"too large to read into this machine's memory (reading needs more than "
                      f"{_bytes(_read_budget())} free); split it into smaller files") from None
    except Exception as exc:  # noqa: BLE001 -- one unreadable file never stops a survey
        raise Refused(f"cannot be read ({type(exc).__name__}: {short(exc)})") from None
    return as_stack(array)


def _read_budget() -> int:
    """The most bytes of float32 pixels lenszoo reads from one file: a quarter of this machine's
    memory (a file is read whole, and several are in flight while the model scores)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 16 << 30
    return max(total // 4, 256 << 20)


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _check_declared(shape, *, stored: int, room: int | None, compressed=False, channels=1,
                    what="its header declares"):
    """Refuse a file whose header declares more data (``stored`` bytes) than the file has ``room``
    for (None: not checkable), or more float32 pixels than memory allows."""
    shape = tuple(int(n) for n in shape)
    pixels = int(np.prod(shape, dtype=object)) if shape else 0
    declared = f"{what} {'×'.join(map(str, shape))} pixels"
    if room is not None and compressed and stored > room * MAX_INFLATION:
        raise Refused(f"{declared} ({_bytes(stored)}), more than its {_bytes(room)} of compressed data can "
                      "hold: damaged, or a decompression bomb; write it again")
    if room is not None and not compressed and stored > room:
        raise Refused(f"{declared} ({_bytes(stored)}) but holds {_bytes(max(room, 0))} of data: truncated or "
                      "damaged; write it again")
    budget = _read_budget()
    if pixels * channels * 4 > budget:
        raise Refused(f"{declared} ({_bytes(pixels * channels * 4)} as float32), more than lenszoo reads from "
                      f"one file here ({_bytes(budget)}, a quarter of this machine's memory); split it into "
                       "smaller files")


def fits_pixel_scale(header) -> float | None:
    """The pixel scale in arcsec a FITS header states (CD matrix or CDELT), or None."""
    try:
        if "CD1_1" in header or "CD2_1" in header:
            scale = float(np.hypot(header.get("CD1_1", 0.0), header.get("CD2_1", 0.0)))
        elif "CDELT1" in header:
            scale = abs(float(header["CDELT1"]))
        else:
            return None
    except (TypeError, ValueError):
        return None
    return scale * 3600.0 if np.isfinite(scale) and scale > 0 else None


def _read_fits(path, hdu, info=None):
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdus:
            if hdu is not None:
                if hdu >= len(hdus):
                    raise Refused(f"has {len(hdus)} HDU(s); --hdu {hdu} does not exist")
                chosen = hdus[hdu]
                if not chosen.is_image:
                    raise Refused(f"HDU {hdu} is a table, not an image")
                if not _fits_shape(chosen):
                    raise Refused(f"HDU {hdu} holds no data")
            else:  # the primary HDU, or the first extension holding an image (compressed files)
                chosen = next((h for h in hdus if h.is_image and _fits_shape(h)), None)
                if chosen is None:
                    raise Refused("no HDU holds an image")
            index = hdus.index(chosen)
            _check_fits_size(path, chosen, hdus.fileinfo(index)["datLoc"])
            data = np.asarray(chosen.data)
            if info is not None:
                info["pixel_scale"] = fits_pixel_scale(chosen.header)
    except Refused:
        raise
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise Refused(f"not a readable FITS file ({short(exc)})") from None
    return numeric(data)


def _fits_shape(hdu) -> tuple:
    """The image shape an HDU's header declares (read from the header only; () when it has none)."""
    shape = tuple(getattr(hdu, "shape", None) or ())
    return shape if all(shape) else ()


def _check_fits_size(path, hdu, data_start: int):
    from astropy.io.fits import CompImageHDU

    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    stored = int(hdu.size)  # BITPIX/8 × the NAXISn: the bytes its data take in the file
    if isinstance(hdu, CompImageHDU):  # tiles compressed without a bound on the ratio: memory decides
        _check_declared(_fits_shape(hdu), stored=stored, room=None)
    elif gzipped:
        _check_declared(_fits_shape(hdu), stored=stored, room=size, compressed=True)
    else:
        _check_declared(_fits_shape(hdu), stored=stored, room=size - data_start)


def _read_npy(path, hdu):
    _check_npy_header(path)
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise Refused("holds pickled Python objects, which lenszoo never loads; save a numeric array") from None
        raise Refused(f"not a readable .npy file ({short(exc)})") from None
    except (OSError, EOFError) as exc:
        raise Refused(f"not a readable .npy file ({short(exc)})") from None
    if not isinstance(data, np.ndarray):
        raise Refused("holds several arrays (an .npz archive?); save one array with numpy.save")
    return numeric(data)


def _check_npy_header(path):
    """Shape and dtype from the header, checked against the bytes after it before ``np.load``
    allocates the array (a header can declare terabytes)."""
    fmt = np.lib.format
    with open(path, "rb") as handle:
        try:
            version = fmt.read_magic(handle)
            reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if reader is None:
                return  # other versions hold unicode field names (records): np.load refuses them
            shape, _, dtype = reader(handle)
        except ValueError as exc:
            raise Refused(f"not a readable .npy file ({short(exc)})") from None
        start = handle.tell()
    if dtype.hasobject:
        raise Refused("holds pickled Python objects, which lenszoo never loads; save a numeric array")
    stored = int(np.prod(shape, dtype=object)) * dtype.itemsize
    _check_declared(shape, stored=stored, room=os.path.getsize(path) - start, what=f"its header declares {dtype}")


def _png_header(path):
    """``(width, height, bytes per row of raw data, channels decoded)`` from a PNG's IHDR, or None
    when it has none (PIL then says what the file is)."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(29)
    if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    stored = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)  # samples per pixel in the file
    return width, height, 1 + (width * stored * depth + 7) // 8, 1 if colour == 0 else 3  # colour: read as RGB


def _read_png(path, hdu):
    from PIL import Image, UnidentifiedImageError

    header = _png_header(path)
    if header is not None:
        width, height, row_bytes, channels = header
        _check_declared((height, width), stored=height * row_bytes, room=os.path.getsize(path), compressed=True,
                        channels=channels)  # every channel is decoded as float32
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("L", "I", "I;16", "I;16B", "I;16L", "F", "1"):
                return np.asarray(image, dtype=np.float32)
            if mode in ("LA", "RGB", "RGBA", "P", "PA"):
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
                if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
                    return rgb[..., 0]  # grey saved as colour
                raise Refused(f"a colour PNG ({mode}); lenszoo models take one band: save a single-band image")
            raise Refused(f"PNG mode {mode} is not a single-band image")
    except Refused:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise Refused(f"not a readable PNG ({short(exc)})") from None


def numeric(data) -> np.ndarray:
    if data.dtype.names is not None or data.dtype == object:
        raise Refused("holds records or objects, not pixel values")
    if np.iscomplexobj(data):
        raise Refused("holds complex numbers; images must be real-valued")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise Refused(f"holds {data.dtype} values, not numbers")
    return np.asarray(data, dtype=np.float32)


def as_stack(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise Refused(f"has shape {array.shape}; expected an image (H, W) or a stack of images (N, H, W)")
    if array.size == 0:
        raise Refused(f"holds no pixels (shape {array.shape})")
    return array


def short(exc) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
