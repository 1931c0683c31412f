"""Score images from disk: FITS, ``.npy`` and PNG cutouts in, one row per image out.

A survey does not stop for one bad file: every file (or image inside a file) that cannot be
scored becomes an :class:`InputProblem` naming it and the reason, and the rest are scored.
Rows are appended to the output batch by batch as whole lines, so a killed job leaves every
finished row on disk and ``--resume`` skips them (a line cut off by the kill is dropped).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LenszooError, debugging
from .tasks import CLASS_NAMES, TASKS

INPUT_SIZE = (64, 64)
SUFFIXES = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
            ".fts.gz": "fits", ".fits.fz": "fits", ".fit.fz": "fits", ".fts.fz": "fits", ".fz": "fits",
            ".npy": "npy", ".png": "png"}
READ = ".fits, .fits.gz, .fits.fz, .npy, .png"  # what the messages name
# Deflate (gzip, PNG) expands at most ~1032-fold: a header declaring more than this times the file's
# size cannot be telling the truth (a damaged file, or a "decompression bomb").
MAX_INFLATION = 1100
RESIZE_METHODS = ("bilinear", "bicubic", "area", "nearest")
RESIZE_CHUNK_PIXELS = 1 << 20  # input + output pixels resampled at once (4 MiB of float32)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
# Exit status when some inputs could not be scored (the others were).
SOME_FAILED = 3


@dataclass(frozen=True)
class InputProblem:
    source: str
    reason: str
    index: int | None = None

    @property
    def where(self) -> str:
        return self.source if self.index is None else f"{self.source}[{self.index}]"

    def __str__(self):
        return f"{self.where}: {self.reason}"


class SkipReport:
    """The inputs a run did not score, told as ``skipped ...`` lines: by default one line per
    reason when the run ends (150 files with the same flaw are one line, naming the first few),
    or with ``each`` one line per input as it is found."""

    def __init__(self, echo, *, each: bool = False):
        self.echo, self.each = echo, each
        self.by_reason: dict[str, list[InputProblem]] = {}

    def __len__(self):
        return sum(map(len, self.by_reason.values()))

    def add(self, problem: InputProblem):
        self.by_reason.setdefault(problem.reason, []).append(problem)
        if self.each:
            self.echo(f"skipped {problem}")

    def lines(self) -> list[str]:
        lines = []
        for reason, problems in self.by_reason.items():
            if len(problems) == 1:
                lines.append(f"skipped {problems[0]}")
                continue
            files = len({p.source for p in problems})
            what = f"{len(problems)} files" if all(p.index is None for p in problems) else \
                f"{len(problems)} images in {files} file{'s' if files > 1 else ''}"
            shown = problems if len(problems) <= 3 else problems[:2]
            names = ", ".join(p.where for p in shown)
            if len(shown) < len(problems):
                names += f" and {len(problems) - len(shown)} more; --list-skipped names each"
            lines.append(f"skipped {what} ({names}): {reason}")
        return lines

    def summarise(self):
        """The per-reason lines (nothing more with ``each``: every input was named already)."""
        if not self.each:
            for line in self.lines():
                self.echo(line)


class _Refused(Exception):
    """An input that cannot be scored; carries the reason."""


# -- finding and reading inputs ------------------------------------------------------------------
def input_kind(path) -> str | None:
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def find_inputs(inputs) -> tuple[list[str], list[InputProblem]]:
    """The image files named by ``inputs`` (files, or folders searched recursively for
    .fits/.fits.gz/.fits.fz/.npy/.png), in a stable order, and a problem for each input that is none."""
    files, problems, seen = [], [], set()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and input_kind(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                problems.append(InputProblem(str(item), f"folder holds no {READ} files"))
            candidates = [str(p) for p in found]
        elif path.is_file():
            if input_kind(path) is None:
                problems.append(InputProblem(str(item), f"not a file type lenszoo reads ({READ})"))
                continue
            candidates = [str(item)]
        else:
            problems.append(InputProblem(str(item), "does not exist"))
            continue
        for name in candidates:
            key = os.path.realpath(name)
            if key not in seen:
                seen.add(key)
                files.append(name)
    return files, problems


def read_images(path, *, hdu: int | None = None, info: dict | None = None) -> np.ndarray:
    """The images in one file as a float32 ``(N, H, W)`` stack; raises ``_Refused`` with the reason.

    What a file's header declares is checked against the file's size and this machine's memory
    before anything is allocated, so a damaged or hostile header costs nothing; any other failure
    to read the file is a refusal too (libraries' warnings are silenced: the reason says it)."""
    import warnings

    kind = input_kind(path)
    if kind is None:
        raise _Refused(f"not a file type lenszoo reads ({READ})")
    try:
        if os.path.getsize(path) == 0:
            raise _Refused("empty file")
    except OSError as exc:
        raise _Refused(f"cannot be read ({exc.strerror or exc})") from None
    try:
        with warnings.catch_warnings():
            if not debugging():  # the refusal says what went wrong; LENSZOO_TRACEBACK=1 shows the rest
                warnings.simplefilter("ignore")
            if kind == "fits":
                array = _read_fits(path, hdu, info)
            else:
                array = {"npy": _read_npy, "png": _read_png}[kind](path, hdu)
    except _Refused:
        raise
    except MemoryError:
        raise _Refused(f"too large to read into this machine's memory (reading needs more than "
                       f"{_bytes(_read_budget())} free); split it into smaller files") from None
    except Exception as exc:  # noqa: BLE001 -- one unreadable file never stops a survey
        raise _Refused(f"cannot be read ({type(exc).__name__}: {_short(exc)})") from None
    return _as_stack(array)


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
        raise _Refused(f"{declared} ({_bytes(stored)}), more than its {_bytes(room)} of compressed data can "
                       "hold: damaged, or a decompression bomb; write it again")
    if room is not None and not compressed and stored > room:
        raise _Refused(f"{declared} ({_bytes(stored)}) but holds {_bytes(max(room, 0))} of data: truncated or "
                       "damaged; write it again")
    budget = _read_budget()
    if pixels * channels * 4 > budget:
        raise _Refused(f"{declared} ({_bytes(pixels * channels * 4)} as float32), more than lenszoo reads from "
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
                    raise _Refused(f"has {len(hdus)} HDU(s); --hdu {hdu} does not exist")
                chosen = hdus[hdu]
                if not chosen.is_image:
                    raise _Refused(f"HDU {hdu} is a table, not an image")
                if not _fits_shape(chosen):
                    raise _Refused(f"HDU {hdu} holds no data")
            else:  # the primary HDU, or the first extension holding an image (compressed files)
                chosen = next((h for h in hdus if h.is_image and _fits_shape(h)), None)
                if chosen is None:
                    raise _Refused("no HDU holds an image")
            index = hdus.index(chosen)
            _check_fits_size(path, chosen, hdus.fileinfo(index)["datLoc"])
            data = np.asarray(chosen.data)
            if info is not None:
                info["pixel_scale"] = fits_pixel_scale(chosen.header)
    except _Refused:
        raise
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise _Refused(f"not a readable FITS file ({_short(exc)})") from None
    return _numeric(data)


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
            raise _Refused("holds pickled Python objects, which lenszoo never loads; save a numeric array") from None
        raise _Refused(f"not a readable .npy file ({_short(exc)})") from None
    except (OSError, EOFError) as exc:
        raise _Refused(f"not a readable .npy file ({_short(exc)})") from None
    if not isinstance(data, np.ndarray):
        raise _Refused("holds several arrays (an .npz archive?); save one array with numpy.save")
    return _numeric(data)


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
            raise _Refused(f"not a readable .npy file ({_short(exc)})") from None
        start = handle.tell()
    if dtype.hasobject:
        raise _Refused("holds pickled Python objects, which lenszoo never loads; save a numeric array")
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
                raise _Refused(f"a colour PNG ({mode}); lenszoo models take one band: save a single-band image")
            raise _Refused(f"PNG mode {mode} is not a single-band image")
    except _Refused:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise _Refused(f"not a readable PNG ({_short(exc)})") from None


def _numeric(data) -> np.ndarray:
    if data.dtype.names is not None or data.dtype == object:
        raise _Refused("holds records or objects, not pixel values")
    if np.iscomplexobj(data):
        raise _Refused("holds complex numbers; images must be real-valued")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise _Refused(f"holds {data.dtype} values, not numbers")
    return np.asarray(data, dtype=np.float32)


def _as_stack(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise _Refused(f"has shape {array.shape}; expected an image (H, W) or a stack of images (N, H, W)")
    if array.size == 0:
        raise _Refused(f"holds no pixels (shape {array.shape})")
    return array


def _short(exc) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def fit_size(images: np.ndarray, resize: str | None) -> np.ndarray:
    """``images`` at the model's 64×64, resampled only if asked (``resize`` names the method)."""
    height, width = images.shape[-2:]
    if (height, width) == INPUT_SIZE:
        return images
    if resize is None:
        raise _Refused(f"images are {height}×{width}; the models take 64×64: cut 64×64 cutouts, or pass "
                       f"--resize {'|'.join(RESIZE_METHODS)} to resample (the pixel scale then changes)")
    import torch
    import torch.nn.functional as F

    kwargs = {"antialias": True, "align_corners": False} if resize in ("bilinear", "bicubic") else {}
    # A few images at a time into the result: interpolate's temporaries for a whole stack cost
    # several times the stack (a compressed file can hold many thousands of images).
    out = np.empty((len(images), *INPUT_SIZE), dtype=np.float32)
    step = max(1, RESIZE_CHUNK_PIXELS // (height * width + INPUT_SIZE[0] * INPUT_SIZE[1]))
    with torch.inference_mode():
        for start in range(0, len(images), step):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + step], dtype=np.float32))[:, None]
            out[start:start + step] = F.interpolate(chunk, size=INPUT_SIZE, mode=resize, **kwargs)[:, 0].numpy()
    return out


class FileReader:
    """Reads one file into ``(source, images, indices, problems)``: a map-style dataset, so torch's
    DataLoader can read files in worker processes while the main process scores."""

    def __init__(self, files, *, hdu=None, resize=None, skip=None):
        self.files, self.hdu, self.resize = list(files), hdu, resize
        self.skip = skip or {}  # source -> indices already in the output

    def __len__(self):
        return len(self.files)

    def __getitem__(self, position):
        source, info = self.files[position], {}
        try:
            raw = read_images(source, hdu=self.hdu, info=info)
            images = fit_size(raw, self.resize)
        except _Refused as exc:
            return source, None, None, [InputProblem(source, str(exc))], None
        except MemoryError:
            return source, None, None, [InputProblem(source, "too large to resample in this machine's memory; "
                                                             "split it into smaller files")], None
        indices = np.arange(len(images))
        finite = np.isfinite(images).all(axis=(1, 2))
        problems = [InputProblem(source, "has NaN or infinite pixels; mask or fill them to score it", int(i))
                    for i in np.flatnonzero(~finite)]
        keep = finite
        done = self.skip.get(source)
        if done:
            keep = keep & ~np.isin(indices, np.fromiter(done, dtype=np.int64))
        images = images[keep]
        # Measured here, in the reading workers: the checks against the weights' contract cost the
        # scoring process nothing but a comparison.
        from .contract import image_statistics

        stats = image_statistics(images) if len(images) else None
        if stats is not None:
            scale = info.get("pixel_scale")  # a resampled image's pixels are larger by the ratio of sizes
            stats["pixel_scale"] = np.full(len(images), np.nan if scale is None
                                           else scale * raw.shape[-1] / INPUT_SIZE[1])
        return source, images, indices[keep], problems, stats


def _first(item):
    return item


def _reading_worker(parent: int, worker_id: int):
    from .runtime import end_with_parent

    end_with_parent(parent)  # a killed predict takes its readers with it


# -- scoring ---------------------------------------------------------------------------------------
def dihedral_views(images):
    """The 8 rotations and reflections of ``(N, C, H, W)`` images (the dihedral group D4)."""
    import torch

    for flipped in (images, images.flip(-1)):
        for k in range(4):
            yield torch.rot90(flipped, k, dims=(-2, -1))


def view_average(outputs_of, x, task: str, *, tta: bool = True):
    """The mean over the 8 dihedral views of ``x`` (or ``x`` alone without ``tta``) of
    ``outputs_of(view)``: class probabilities for classify (softmax first), values for regress;
    float64, shape ``(N, 3)`` or ``(N, 1)``. One implementation for predict and evaluate."""
    import torch

    views = list(dihedral_views(x)) if tta else [x]
    total = None
    for view in views:
        out = outputs_of(view).double()
        out = torch.softmax(out, 1) if task == "classify" else out.reshape(len(view), 1)
        total = out if total is None else total + out
    return total / len(views)


def model_identity(model) -> tuple[str, str]:
    """A readable id of a loaded model and the sha256 of its weights (what each row records)."""
    config = getattr(model, "lenszoo_config", None) or {}
    released = config.get("released") or {}
    source = getattr(model, "lenszoo_source", None)
    if source is not None and source.kind == "hub":
        name = f"hf-hub:{source.repo_id}" + (f"@{source.revision}" if source.revision else "")
    elif source is not None and source.kind in ("run", "checkpoint"):
        name = str(Path(source.path).resolve())
    else:
        name = f"{config.get('arch')}-{config.get('task')}-{config.get('dataset')}"
    return name, released.get("sha256") or config.get("weights_sha256") or ""


ENGINES = ("torch", "onnxruntime")


class OnnxForward:
    """The model's forward pass run by onnxruntime: exported once (and checked against PyTorch,
    ``lenszoo.export``) into a temporary file, then called like the module on normalised batches.
    On CPUs onnxruntime's fused kernels run lenszoo's nets ~1.5x faster than PyTorch
    (``benchmarks/predict.py``); the outputs agree to ~1e-6."""

    def __init__(self, model):
        import tempfile

        import torch

        from .export import export_onnx

        try:
            import onnxruntime
        except ImportError:
            raise LenszooError("--engine onnxruntime needs onnxruntime: pip install 'lenszoo[onnx]'") from None
        with tempfile.TemporaryDirectory(prefix="lenszoo-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(model, path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images):
        import torch

        return torch.from_numpy(self.session.run(None, {"images": images.float().cpu().numpy()})[0])


class Scorer:
    """Outputs of one model for raw ``(N, 64, 64)`` images: class probabilities or log10 m_a,
    averaged over the 8 dihedral transforms with ``tta``; run by PyTorch or, with
    ``engine="onnxruntime"``, by onnxruntime on the CPU."""

    def __init__(self, model, *, tta=False, device="cpu", engine="torch"):
        config = getattr(model, "lenszoo_config", None)
        if not config or "task" not in config:
            raise LenszooError("predict needs a lenszoo model (lenszoo.load(...)); this module carries no "
                               "lenszoo_config")
        if engine not in ENGINES:
            raise LenszooError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "onnxruntime" and str(device) != "cpu":
            raise LenszooError(f"--engine onnxruntime runs on the CPU; drop --device {device} or use --engine torch")
        self.model, self.tta, self.device = model.eval(), tta, device
        self.task = config["task"]
        self.preprocess = getattr(model, "preprocess", None)
        self.forward = OnnxForward(self.model) if engine == "onnxruntime" else self.model

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = self.preprocess(images) if self.preprocess is not None else torch.from_numpy(images)[:, None]
        x = x.to(self.device)
        with torch.inference_mode():
            mean = view_average(self.forward, x, self.task, tta=self.tta).float()
        return (mean if self.task == "classify" else mean.reshape(-1)).cpu().numpy()


def columns_for(task: str) -> list[str]:
    scores = [f"p_{name}" for name in CLASS_NAMES] + ["predicted_class"] if task == "classify" else ["log10_m_a"]
    return ["source", "index", *scores, "flags", "tta", "model", "model_sha256"]


def _legacy_columns(task: str) -> list[str]:  # tables of lenszoo before the flags column
    return [c for c in columns_for(task) if c != "flags"]


def rows_for(task, sources, indices, outputs, *, tta, model_name, sha, flags=None) -> list[dict]:
    rows = []
    for i, (source, index, out) in enumerate(zip(sources, indices, outputs)):
        row = {"source": source, "index": int(index)}
        if task == "classify":
            for name, p in zip(CLASS_NAMES, out):
                row[f"p_{name}"] = round(float(p), 6)
            row["predicted_class"] = CLASS_NAMES[int(np.argmax(out))]
        else:
            row["log10_m_a"] = round(float(out), 5)
        row["flags"] = ";".join(flags[i]) if flags is not None else ""
        row.update(tta=bool(tta), model=model_name, model_sha256=sha)
        rows.append(row)
    return rows


def score_files(model, files, *, tta=False, resize=None, hdu=None, batch_size=256, workers=0, device="cpu",
                skip=None, on_rows=None, on_problem=None, progress=None, engine="torch", contract=None,
                strict=False) -> dict:
    """Score every image in ``files``; rows go to ``on_rows`` batch by batch, problems to
    ``on_problem`` as they are found. Each image is checked against ``contract`` (the weights'
    input contract, lenszoo/contract.py): its row's ``flags`` say where it does not look like the
    training images, and with ``strict`` a flagged image is not scored but reported as a problem.
    Returns counts (``flagged``: images flagged, by reason)."""
    from torch.utils.data import DataLoader

    from .contract import image_flags

    if resize is not None and resize not in RESIZE_METHODS:
        raise LenszooError(f"--resize must be one of {', '.join(RESIZE_METHODS)}, got {resize!r}")
    scorer = Scorer(model, tta=tta, device=device, engine=engine)
    name, sha = model_identity(model)
    reader = FileReader(files, hdu=hdu, resize=resize, skip=skip)
    loader = DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_first,
                        prefetch_factor=4 if workers else None, persistent_workers=False,
                        worker_init_fn=functools.partial(_reading_worker, os.getpid()) if workers else None)
    counts = {"images": 0, "files": 0, "problems": 0, "skipped": sum(len(v) for v in (skip or {}).values()),
              "flagged_images": 0, "flagged": {}}
    pending: list[tuple] = []  # (sources, indices, images, flags) of images not scored yet

    def flush(final=False):
        if not pending or (not final and sum(len(p[0]) for p in pending) < batch_size):
            return
        sources, indices, images = (np.concatenate([p[k] for p in pending]) for k in range(3))
        flags = [f for p in pending for f in p[3]]
        pending.clear()
        start = 0
        while len(images) - start >= batch_size or (final and start < len(images)):
            stop = min(start + batch_size, len(images))
            outputs = scorer(images[start:stop])
            rows = rows_for(scorer.task, sources[start:stop], indices[start:stop], outputs, tta=tta,
                            model_name=name, sha=sha, flags=flags[start:stop])
            if on_rows:
                on_rows(rows)
            counts["images"] += stop - start
            if progress:
                progress(stop - start)
            start = stop
        if start < len(images):
            pending.append((sources[start:], indices[start:], images[start:], flags[start:]))

    def problem(found):
        counts["problems"] += 1
        if on_problem:
            on_problem(found)

    for source, images, indices, problems, stats in loader:
        counts["files"] += 1
        for found in problems:
            problem(found)
        if images is None or not len(images):
            continue
        flags = image_flags(stats, contract, pixel_scales=[None if np.isnan(v) else float(v)
                                                           for v in stats["pixel_scale"]]) \
            if contract else [[] for _ in range(len(images))]
        for image_flags_ in flags:
            if image_flags_:
                counts["flagged_images"] += 1
            for reason in image_flags_:
                counts["flagged"][reason] = counts["flagged"].get(reason, 0) + 1
        if strict:
            keep = np.array([not f for f in flags], dtype=bool)
            for i in np.flatnonzero(~keep):
                problem(InputProblem(source, "flagged --strict: " + ", ".join(flags[i]), int(indices[i])))
            images, indices, flags = images[keep], indices[keep], [f for f in flags if not f]
            if not len(images):
                continue
        pending.append((np.full(len(images), source, dtype=object), indices, images, flags))
        flush()
    flush(final=True)
    return counts


def flag_summary(counts: dict) -> str | None:
    """One line: how many scored images were flagged, and why (None when none were)."""
    if not counts.get("flagged_images"):
        return None
    from .contract import FLAG_TEXT

    reasons = "; ".join(f"{reason} {n} ({FLAG_TEXT[reason].split(' (')[0]})"
                        for reason, n in sorted(counts["flagged"].items(), key=lambda kv: -kv[1]))
    return (f"flagged {counts['flagged_images']} images as unlike the weights' training images: {reasons}; "
            "their rows say which in the flags column (--strict skips them); see docs/predict.md, "
            "'Real data', and `lenszoo info ARCH --dataset D` for what the weights expect")


# -- the output table ------------------------------------------------------------------------------
def output_format(out, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS.values():
            raise LenszooError(f"--format must be one of {', '.join(FORMATS.values())}, got {fmt!r}")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise LenszooError(f"cannot tell the format of --out {out} from its suffix; name it .csv, .jsonl or "
                           ".parquet, or pass --format")
    return FORMATS[suffix]


def _require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LenszooError("Parquet output needs pyarrow, which is not installed: pip install pyarrow, "
                           "or write .csv or .jsonl") from None


def require_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise LenszooError("--engine onnxruntime needs onnxruntime: pip install 'lenszoo[onnx]'") from None


# Paths are written as the file system gives them: bytes that are not UTF-8 round-trip.
ENCODING, ERRORS = "utf-8", "surrogateescape"
SHA256_RE = re.compile(r"(?:[0-9a-f]{64})?")


@dataclass
class Table:
    """An existing results table, read and checked whole: its task, its rows (typed), and
    ``keep``, the bytes of whole rows; beyond it (up to ``size``) lies the line a kill cut off."""

    path: Path
    task: str
    rows: list
    keep: int
    size: int


def _not_ours(path, why) -> LenszooError:
    return LenszooError(f"{path} is not a lenszoo predict table ({why}); lenszoo never changes it: choose another "
                        "--out")


def _damaged(path, line, why) -> LenszooError:
    return LenszooError(f"{path} line {line} is not a whole row lenszoo wrote ({why}); the table is left as it is: "
                        "remove that line, or choose a new --out")


def _task_of(names) -> str | None:
    return next((task for task in TASKS if list(names) == columns_for(task)), None)


def _is_legacy(names) -> bool:
    return any(list(names or []) == _legacy_columns(task) for task in TASKS)


def _typed_row(values: dict, columns, *, text: bool) -> dict:
    """``values`` (strings from CSV with ``text``, else JSON values) checked against what
    :func:`rows_for` writes; raises ValueError naming what is wrong."""
    row = {}
    for name in columns:
        value = values[name]
        if name in ("source", "model"):
            if not isinstance(value, str) or (name == "source" and not value):
                raise ValueError(f"{name} {value!r}")
        elif name == "index":
            if text:
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"index {value!r} is not a whole number")
                value = int(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"index {value!r} is not a whole number")
        elif name == "tta":
            if text:
                if value not in ("True", "False"):
                    raise ValueError(f"tta {value!r}")
                value = value == "True"
            elif not isinstance(value, bool):
                raise ValueError(f"tta {value!r}")
        elif name == "predicted_class":
            if value not in CLASS_NAMES:
                raise ValueError(f"predicted_class {value!r}")
        elif name == "flags":
            from .contract import FLAG_TEXT

            if not isinstance(value, str) or any(f not in FLAG_TEXT for f in value.split(";") if value):
                raise ValueError(f"flags {value!r}")
        elif name == "model_sha256":
            if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
                raise ValueError(f"model_sha256 {value!r} is not a sha256")
        else:  # p_* and log10_m_a
            try:
                if isinstance(value, bool) or not isinstance(value, str if text else (int, float)):
                    raise ValueError
                value = float(value)
            except ValueError:
                raise ValueError(f"{name} {value!r} is not a number") from None
            if not np.isfinite(value):
                raise ValueError(f"{name} {value!r} is not finite")
        row[name] = value
    return row


def _csv_records(text: str):
    """``(fields, line)`` for each whole record of ``text``, and the offset where the line a kill
    cut off starts (the text after the last newline), else ``None``. A record that runs past a
    newline and is not finished (a cut inside a quoted name) is damage, never cut away: dropping
    it could drop whole rows after it."""
    lines = io.StringIO(text, newline="").readlines()
    position = 0

    def fed():
        nonlocal position
        for line in lines:
            position += len(line)
            yield line

    reader = csv.reader(fed(), strict=True)
    records, start = [], 0
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return records, None
        except csv.Error as exc:
            at_end = position == len(text) and text[start:].count('"') % 2 == 1  # EOF inside quotes
            if at_end and "\n" not in text[start:]:
                return records, start
            raise ValueError(line, "a quoted name is cut off" if at_end else str(exc)) from None
        if position == len(text) and not text.endswith("\n"):
            if "\n" in text[start:]:
                raise ValueError(line, "a quoted name is cut off")
            return records, start
        records.append((fields, line))
        start = position


def read_table(path, fmt: str) -> Table:
    """Read and check ``path`` as a lenszoo predict table (CSV or JSON lines) without changing it.

    Refused in one line: a file whose header (or first row) is not lenszoo's, or any whole row that
    is not one lenszoo wrote (a short row, a non-integer index, a cut inside a quoted name that a
    later row follows...). Only the last, unterminated line may be cut: that is what a kill leaves.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise _not_ours(path, "it is empty, and lenszoo creates its tables whole")
    text = data.decode(ENCODING, ERRORS)
    rows = []
    if fmt == "csv":
        try:
            records, cut = _csv_records(text)
        except ValueError as exc:  # a quote out of place: ours only if the header was
            line, why = exc.args
            if line == 1 or _task_of(next(csv.reader([text.split("\n", 1)[0]]), [])) is None:
                raise _not_ours(path, "its first line is not a lenszoo header") from None
            raise _damaged(path, line, why) from None
        if not records:
            raise _not_ours(path, "it has no whole first line")
        task = _task_of(records[0][0])
        if task is None and _is_legacy(records[0][0]):
            raise _not_ours(path, "it was written by an earlier lenszoo (without the flags column)")
        if task is None:
            raise _not_ours(path, "its first line is not a lenszoo header")
        columns = columns_for(task)
        for fields, line in records[1:]:
            if len(fields) != len(columns):
                raise _damaged(path, line, f"{len(fields)} fields, a row has {len(columns)}")
            try:
                rows.append(_typed_row(dict(zip(columns, fields)), columns, text=True))
            except ValueError as exc:
                raise _damaged(path, line, str(exc)) from None
        keep = len(text) if cut is None else cut
    else:
        keep = text.rfind("\n") + 1
        task = None
        for number, line in enumerate(text[:keep].split("\n")[:-1], start=1):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            names = list(row) if isinstance(row, dict) else None
            if task is None:
                task = _task_of(names) if names else None
                if task is None and _is_legacy(names):
                    raise _not_ours(path, "it was written by an earlier lenszoo (without the flags column)")
                if task is None:
                    raise _not_ours(path, "its first line is not a lenszoo row")
                columns = columns_for(task)
            if names != columns:
                raise _damaged(path, number, "not a JSON row of the table's columns")
            try:
                rows.append(_typed_row(row, columns, text=False))
            except ValueError as exc:
                raise _damaged(path, number, str(exc)) from None
        if task is None:
            raise _not_ours(path, "it has no whole first line")
    keep_bytes = len(text[:keep].encode(ENCODING, ERRORS))
    return Table(path, task, rows, keep_bytes, len(data))


def _csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


class RowWriter:
    """The results table of one run, continued or new.

    Making it writes nothing: an existing table is read and checked first (:func:`read_table`),
    and continued only with ``resume`` and, after :meth:`check_same`, only if its rows are of the
    same task, weights and ``--tta``. The file is created whole with its header and first rows
    (an exclusive rename, so never empty and never over a file that appeared meanwhile); rows
    are then appended as whole lines, flushed to disk per batch. Parquet goes through a CSV
    journal beside it and is written at the end.
    """

    def __init__(self, out, *, fmt, columns=None, resume=False):
        self.out, self.fmt, self.columns = Path(out), fmt, list(columns) if columns else None
        self.handle = None
        self.written = 0
        if fmt == "parquet":
            _require_pyarrow()
            self.journal = self.out.with_name(f".{self.out.name}.predict-journal.csv")
            if self.out.exists():
                raise LenszooError(f"{self.out} exists (a finished Parquet table is not extended); choose a new --out")
        else:
            self.journal = self.out
        if self.journal.is_dir():
            raise LenszooError(f"--out {self.out} is a folder; give a file path for the results table")
        if not self.journal.parent.is_dir():
            raise LenszooError(f"--out {self.out}: the folder {self.journal.parent} does not exist; create it or "
                               "choose another --out")
        self.existing = read_table(self.journal, self.journal_format) if self.journal.exists() else None
        if self.existing is not None and not resume:
            raise LenszooError(f"{self.journal} exists (a lenszoo predict table of {len(self.existing.rows)} rows); "
                               "pass --resume to continue it, or choose a new --out (lenszoo never overwrites a file)")
        self.done: dict[str, set[int]] = {}
        for row in self.existing.rows if self.existing else []:
            self.done.setdefault(row["source"], set()).add(row["index"])
        if self.columns is not None:
            self._check_columns(self.columns)

    @property
    def journal_format(self):
        return "csv" if self.fmt == "parquet" else self.fmt

    @property
    def rows(self) -> int:
        """Rows in the table now."""
        return (len(self.existing.rows) if self.existing else 0) + self.written

    def _check_columns(self, columns):
        if self.existing is not None and columns_for(self.existing.task) != list(columns):
            raise LenszooError(f"{self.journal} is a lenszoo predict table of another task ({self.existing.task}: "
                               "its columns differ); choose a new --out")
        self.columns = list(columns)

    def check_same(self, sha: str, tta: bool, columns=None):
        """Refuse to continue a table holding rows of another task, other weights or another --tta."""
        if columns is not None:
            self._check_columns(columns)
        rows = self.existing.rows if self.existing else []
        other = sorted({row["model_sha256"] for row in rows} - {sha})
        if other:
            raise LenszooError(f"{self.journal} holds rows of another model (weights sha256 {other[0][:12] or 'none'}); "
                               "resume with the same model, or choose a new --out")
        if any(row["tta"] != tta for row in rows):
            raise LenszooError(f"{self.journal} was written {'without' if tta else 'with'} --tta; resume with the "
                               "same setting, or choose a new --out")

    def _encode(self, rows) -> bytes:
        if self.journal_format == "csv":
            text = "".join(_csv_line([row[c] for c in self.columns]) for row in rows)
        else:
            text = "".join(json.dumps(row) + "\n" for row in rows)
        return text.encode(ENCODING, ERRORS)

    def _write(self, handle, data: bytes):
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

    def _open(self, first: bytes = b"") -> bool:
        """Make the file writable: a new one created whole with ``first`` (CSV: after the header),
        or an existing one with the line a kill cut off dropped. True if ``first`` was written."""
        from .files import atomic_create

        if self.columns is None:
            raise ValueError("RowWriter needs its columns (check_same(..., columns=)) before it writes")
        if self.existing is not None:
            size = os.stat(self.journal).st_size
            if size != self.existing.size:
                raise LenszooError(f"{self.journal} changed while this command read it; is another program writing "
                                   "it? Choose a new --out")
            if self.existing.keep < size:  # checked above: everything before it is lenszoo's
                os.truncate(self.journal, self.existing.keep)
            self.handle = open(self.journal, "ab")
            return False
        if self.journal_format == "csv":
            first = _csv_line(self.columns).encode(ENCODING) + first
        elif not first:
            return False  # JSON lines have no header: the file begins with its first row
        try:
            atomic_create(self.journal, lambda handle: self._write(handle, first))
        except FileExistsError:
            raise LenszooError(f"{self.journal} appeared while this command was scoring; lenszoo never replaces a "
                               "file: choose a new --out") from None
        self.existing = Table(self.journal, _task_of(self.columns), [], len(first), len(first))
        self.handle = open(self.journal, "ab")
        return True

    def write(self, rows):
        if not rows:
            return
        data = self._encode(rows)
        if self.handle is not None or not self._open(data):
            self._write(self.handle, data)
        self.written += len(rows)

    def abort(self):
        """Stop without finishing: every row written so far stays, and --resume continues."""
        if self.handle is not None:
            self.handle.close()

    def close(self):
        """Finish the table (Parquet: written from the journal now). A JSON lines table that got
        no rows is not created."""
        from .files import atomic_create

        if self.handle is None:
            self._open()
        self.abort()
        if self.fmt == "parquet":
            import pyarrow.csv as pa_csv
            import pyarrow.parquet as pq

            table = pa_csv.read_csv(self.journal)
            try:
                atomic_create(self.out, lambda handle: pq.write_table(table, handle))
            except FileExistsError:
                raise LenszooError(f"{self.out} appeared while this command was scoring; lenszoo never replaces a "
                                   f"file: the rows are kept in {self.journal}") from None
            self.journal.unlink()


# -- the Python entry point -------------------------------------------------------------------------
def predict(model, inputs, *, task="classify", dataset=None, tta=False, resize=None, hdu=None, batch_size=256,
            workers=0, device="cpu", engine="torch", strict=False) -> list[dict]:
    """Rows (dicts) scoring every image in ``inputs``: files, folders, or a numpy array of
    ``(H, W)`` / ``(N, H, W)`` images. ``model`` is a loaded lenszoo model or any name
    ``lenszoo.load`` takes (``task``/``dataset`` pick released weights). Inputs that cannot be
    scored are reported as warnings; the rest are scored. ``engine="onnxruntime"`` runs the
    network with onnxruntime on the CPU. A tensor that requires grad is scored as it is (detached:
    scoring never backpropagates). Bad options are one ``LenszooError``, as on the command line.
    Each row's ``flags`` say where an image does not look like the weights' training images;
    ``strict`` leaves flagged images out (with a warning each)."""
    import warnings

    from .contract import image_flags, image_statistics, model_contract

    device = _check_predict_options(inputs, tta=tta, resize=resize, hdu=hdu, batch_size=batch_size,
                                    workers=workers, device=device, engine=engine)
    if isinstance(model, (str, os.PathLike)):
        from .resolve import load_model

        model = load_model(model, task=task, dataset=dataset, device=device)
    rows: list[dict] = []
    if isinstance(inputs, np.ndarray) or _is_tensor(inputs):
        array = _tensor_array(inputs) if _is_tensor(inputs) else inputs
        try:
            stack = fit_size(_as_stack(_numeric(array)), resize)
        except _Refused as exc:
            raise LenszooError(f"the images: {exc}") from None
        finite = np.isfinite(stack).all(axis=(1, 2))
        for i in np.flatnonzero(~finite):
            warnings.warn(str(InputProblem("array", "has NaN or infinite pixels; not scored", int(i))), stacklevel=2)
        scorer = Scorer(model, tta=tta, device=device, engine=engine)
        name, sha = model_identity(model)
        contract = model_contract(model)
        indices = np.flatnonzero(finite)
        if contract and len(indices):
            flags = image_flags(image_statistics(stack[indices]), contract)
        else:
            flags = [[] for _ in indices]
        if strict:
            for i, f in zip(indices, flags):
                if f:
                    warnings.warn(str(InputProblem("array", "flagged, not scored (strict): " + ", ".join(f), int(i))),
                                  stacklevel=2)
            indices, flags = indices[[not f for f in flags]], [f for f in flags if not f]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            rows += rows_for(scorer.task, ["array"] * len(chunk), chunk, scorer(stack[chunk]), tta=tta,
                             model_name=name, sha=sha, flags=flags[start:start + batch_size])
        return rows
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, problems = find_inputs(inputs)
    for problem in problems:
        warnings.warn(str(problem), stacklevel=2)
    score_files(model, files, tta=tta, resize=resize, hdu=hdu, batch_size=batch_size, workers=workers,
                device=device, on_rows=rows.extend, engine=engine, contract=model_contract(model), strict=strict,
                on_problem=lambda p: warnings.warn(str(p), stacklevel=3))
    return rows


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _tensor_array(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        raise LenszooError(f"the images: a {tensor.dtype} tensor cannot be read ({_short(exc)}); pass float32 "
                           "images") from None


def _check_predict_options(inputs, *, tta, resize, hdu, batch_size, workers, device, engine):
    """What ``lenszoo predict`` checks on its command line, for the Python API; the torch device."""
    import numbers

    from .runtime import resolve_device

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
    resolved = resolve_device(device)
    if engine == "onnxruntime" and resolved.type != "cpu":
        raise LenszooError("engine='onnxruntime' runs on the CPU; pass device='cpu' or engine='torch'")
    if not (isinstance(inputs, (str, os.PathLike, np.ndarray)) or _is_tensor(inputs)):
        items = list(inputs) if isinstance(inputs, (list, tuple)) else None
        if not items or not all(isinstance(i, (str, os.PathLike)) for i in items):
            if items is None:
                got = type(inputs).__name__
            elif not items:
                got = "an empty list"
            else:
                got = f"a {type(inputs).__name__} of {', '.join(sorted({type(i).__name__ for i in items}))}"
            arrays = any(isinstance(i, np.ndarray) or _is_tensor(i) for i in items or ())
            raise LenszooError("inputs must be a file or folder (str or Path), a list of them, or an (N, H, W) numpy "
                               f"array or tensor of images; got {got}" + ("; stack the arrays with numpy.stack"
                                                                          if arrays else ""))
    return resolved


# -- splitting a survey across processes (torchrun) ----------------------------------------------
def _env_whole(name: str, default: str) -> int:
    value = os.environ.get(name, default).strip()
    if not (value.isascii() and value.isdigit()):
        raise LenszooError(f"{name}={os.environ.get(name)!r} is not a whole number >= 0; torchrun sets RANK, "
                           "WORLD_SIZE and LOCAL_RANK: unset them for a single process")
    return int(value)


def launch_rank() -> tuple[int, int]:
    """``(rank, world size)`` as torchrun sets them, checked; (0, 1) for a plain run."""
    rank, world = _env_whole("RANK", "0"), _env_whole("WORLD_SIZE", "1")
    if world < 1 or rank >= world:
        raise LenszooError(f"RANK={rank} WORLD_SIZE={world}: a rank runs from 0 to WORLD_SIZE - 1; torchrun sets "
                           "them: unset them for a single process")
    return rank, world


def launch_local_rank() -> int:
    return _env_whole("LOCAL_RANK", "0")


def rank_files(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's contiguous block of the inputs, so the parts in rank order are the whole table."""
    bounds = np.linspace(0, len(files), world + 1).round().astype(int)
    return files[bounds[rank]:bounds[rank + 1]]


def part_format(fmt: str) -> str:
    return "jsonl" if fmt == "jsonl" else "csv"


def part_path(out, rank: int, world: int, fmt: str) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.part-{rank:03d}-of-{world:03d}.{part_format(fmt)}")


PART_FORMAT = "lenszoo-predict-part"


def done_marker(part: Path) -> Path:
    return part.with_name(f".{part.name}.done.json")


def check_done_marker(part: Path):
    """Refuse, before anything is written, a file at the marker's name that lenszoo did not write."""
    from .files import json_says

    marker = done_marker(part)
    if marker.exists() and not json_says(marker, "format", PART_FORMAT):
        raise LenszooError(f"{marker} exists and is not a lenszoo part marker; lenszoo never replaces it: move it "
                           "away or choose another --out")


def clear_done_marker(part: Path):
    """A part about to change is no longer finished: its marker goes first."""
    from .files import json_says

    marker = done_marker(part)
    if json_says(marker, "format", PART_FORMAT):
        marker.unlink()


def write_done_marker(part: Path, *, rows: int, task: str, tta: bool, sha: str, counts: dict | None = None):
    """Mark ``part`` finished: what a merge checks it against (its rows, task, --tta, weights,
    and the sha256 of the part file itself; none when no row was scored and no file made)."""
    from .files import atomic_write_json, sha256_file

    part = Path(part)
    atomic_write_json(done_marker(part), {
        "format": PART_FORMAT, "rows": rows, "task": task, "tta": bool(tta), "model_sha256": sha,
        "part_sha256": sha256_file(part) if part.exists() else None, **(counts or {})})


def _read_marker(part: Path) -> dict | None:
    try:
        marker = json.loads(done_marker(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != PART_FORMAT:
        return None
    rows, part_sha = marker.get("rows"), marker.get("part_sha256")
    if (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0 or marker.get("task") not in TASKS
            or not isinstance(marker.get("tta"), bool) or not isinstance(marker.get("model_sha256"), str)
            or not (part_sha is None or isinstance(part_sha, str))):
        raise LenszooError(f"{done_marker(part)} is damaged (an older lenszoo's, or edited); score {part.name} again "
                           "with the torchrun command and --resume, then merge")
    return marker


def _checked_part(part: Path, marker: dict, fmt: str) -> Table | None:
    """The rows of one finished part, checked against its marker; None for a part with no rows."""
    from .files import sha256_file

    again = "score it again (the same torchrun command with --resume), then merge"
    if not part.exists():
        if marker["rows"] == 0 and marker["part_sha256"] is None:
            return None
        raise LenszooError(f"{part.name} is missing, though its marker says it holds {marker['rows']} rows; {again}")
    if sha256_file(part) != marker["part_sha256"]:
        raise LenszooError(f"{part.name} changed after its process finished it (its sha256 differs from its "
                           f"marker's); {again}")
    table = read_table(part, fmt)
    if table.keep != table.size:
        raise LenszooError(f"{part.name} ends in a line cut off; {again}")
    problem = None
    if table.task != marker["task"]:
        problem = f"its rows are {table.task} rows, its marker says {marker['task']}"
    elif len(table.rows) != marker["rows"]:
        problem = f"{len(table.rows)} rows, its marker says {marker['rows']}"
    else:
        for number, row in enumerate(table.rows, start=2 if fmt == "csv" else 1):
            if row["model_sha256"] != marker["model_sha256"] or row["tta"] != marker["tta"]:
                problem = f"line {number} was not scored by the part's weights and --tta"
                break
    if problem:
        raise LenszooError(f"{part.name} does not match its marker ({problem}); {again}")
    return table


PART_RE = re.compile(r"part-(\d+)-of-(\d+)\.(csv|jsonl)")


def merge_parts(out, *, fmt: str) -> dict:
    """Write ``out`` from the finished parts of a torchrun predict (in rank order); the parts stay.

    Every part is checked against its marker (rows, task, --tta, weights, the part's own sha256)
    and read whole; parts being written are refused, and ``out`` is created exclusively."""
    from contextlib import ExitStack

    from .files import atomic_create, hold_lock, lock_beside

    out = Path(out)
    prefix, kind = f"{out.name}.part-", part_format(fmt)
    names = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(prefix)) if out.parent.is_dir() else []
    if not names:
        raise LenszooError(f"no parts {out.parent / (prefix + '*')} to merge; run `torchrun ... -m lenszoo predict` "
                           f"with --out {out} first")
    found = {}
    for name in names:
        match = PART_RE.fullmatch(name[len(out.name) + 1:])
        if match is None or match[3] != kind or not int(match[1]) < int(match[2]):
            raise LenszooError(f"{out.parent / name} is not a part of a {fmt} `predict --out {out}` (parts are named "
                               f"{prefix}RRR-of-NNN.{kind}); move it away, then merge")
        found[name] = (int(match[1]), int(match[2]))
    worlds = sorted({world for _, world in found.values()})
    if len(worlds) != 1:
        raise LenszooError(f"parts of runs with different process counts ({', '.join(map(str, worlds))}) are beside "
                           f"{out}; keep the parts of one run")
    world = worlds[0]
    expected = [part_path(out, rank, world, fmt) for rank in range(world)]
    with ExitStack() as locks:
        locks.enter_context(hold_lock(lock_beside(out), target=out))
        for part in expected:
            locks.enter_context(hold_lock(lock_beside(part), target=part, what="a lenszoo predict process"))
        markers = [_read_marker(p) for p in expected]
        unfinished = [p.name for p, marker in zip(expected, markers) if marker is None]
        if unfinished:
            raise LenszooError(f"parts not finished: {', '.join(unfinished)}; run the same torchrun command again "
                               "with --resume, then merge")
        if out.exists():
            raise LenszooError(f"{out} exists; lenszoo never overwrites a file: choose a new --out or move it away")
        for key, what in (("task", "tasks"), ("model_sha256", "weights"), ("tta", "--tta settings")):
            if len({marker[key] for marker in markers}) != 1:
                raise LenszooError(f"the parts were scored with different {what}; score them again with one model "
                                   "and one --tta setting")
        tables = [_checked_part(p, marker, kind) for p, marker in zip(expected, markers)]
        bodies = []
        for part, table in zip(expected, tables):
            if table is not None:
                data = part.read_bytes()
                bodies.append(data[data.index(b"\n") + 1:] if kind == "csv" else data)
        header = _csv_line(columns_for(markers[0]["task"])).encode(ENCODING) if kind == "csv" else b""
        merged = header + b"".join(bodies)
        rows = sum(marker["rows"] for marker in markers)
        try:
            if fmt == "parquet":
                _require_pyarrow()
                import pyarrow.csv as pa_csv
                import pyarrow.parquet as pq

                table = pa_csv.read_csv(io.BytesIO(merged))
                atomic_create(out, lambda handle: pq.write_table(table, handle))
            else:
                atomic_create(out, lambda handle: handle.write(merged))
        except FileExistsError:
            raise LenszooError(f"{out} appeared while merging; lenszoo never overwrites a file: choose a new --out "
                               "or move it away") from None
    return {"parts": world, "rows": rows}
