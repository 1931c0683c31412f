"""`lenszoo predict` and `lenszoo.predict` fed bad input: hostile headers, killed parents, many flawed
files, bad options from Python. One bad file never stops a survey; a bad option is one clear error."""

import gzip
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

import lenszoo
from lenszoo.errors import LenszooError
from lenszoo.inference.options import SOME_FAILED

from .test_bad_input import cli

REPO = Path(__file__).resolve().parents[1]
MODEL = "radial_profile"  # tiny, with released weights for dataset A


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return rng.normal(0, 1, (6, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return lenszoo.load(MODEL, dataset="A")


def run_predict(*args, quiet=True):
    result = cli("predict", MODEL, "--dataset", "A", *args, *(["--quiet"] if quiet else []))
    assert "Traceback" not in result.output, result.output
    return result


def scored(out):
    import csv

    with open(out, newline="") as handle:
        return [(Path(r["source"]).name, int(r["index"])) for r in csv.DictReader(handle)]


def skipped_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("skipped ")]


# -- hostile headers: sizes declared far beyond the file ---------------------------------------------
def png_claiming(path, width, height):
    """A valid 8×8 PNG whose IHDR (CRC fixed) claims width × height."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def fits_header_claiming(shape):
    """A FITS primary header declaring float32 data of ``shape`` (NAXIS1 first), and no data."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", len(shape))]
                         + [(f"NAXIS{i}", n) for i, n in enumerate(shape, 1)])
    return header.tostring().encode("ascii")


def fz_claiming(path, shape):
    """A small tile-compressed image whose ZNAXISn cards are rewritten to claim ``shape``."""
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((2, 64, 64), np.int16))]).writeto(path)
    raw = path.read_bytes()
    for i, n in enumerate(shape, 1):
        at = raw.index(f"ZNAXIS{i} =".encode())
        raw = raw[:at] + f"{f'ZNAXIS{i}':8}= {n:>20}".ljust(80).encode() + raw[at + 80:]
    path.write_bytes(raw)


def npy_claiming(path, shape):
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": shape})
        handle.write(bytes(64))


BOMBS = {
    "bomb.png": lambda p: png_claiming(p, 100_000, 100_000),
    "bomb.fits": lambda p: p.write_bytes(fits_header_claiming((100_000, 100_000, 100))),
    "bomb.fits.gz": lambda p: p.write_bytes(gzip.compress(fits_header_claiming((100_000, 100_000, 100)))),
    "bomb.fits.fz": lambda p: fz_claiming(p, (100_000, 100_000, 100)),
    "bomb.npy": lambda p: npy_claiming(p, (200_000, 200_000)),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_header_declaring_more_than_the_file_holds_is_one_skipped_line(tmp_path, images, name):
    folder = tmp_path / "survey"
    folder.mkdir()
    np.save(folder / "a-good.npy", images[:2])
    BOMBS[name](folder / name)
    np.save(folder / "z-good.npy", images[2:3])
    out = tmp_path / "scores.csv"
    result = run_predict(folder, "--out", out, "--workers", 0)
    assert result.exit_code == SOME_FAILED, result.output
    lines = skipped_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"skipped {folder / name}: its header declares"), result.stderr
    assert "damaged" in lines[0] or "split it" in lines[0], lines[0]
    assert scored(out) == [("a-good.npy", 0), ("a-good.npy", 1), ("z-good.npy", 0)]


def test_every_hostile_header_at_once_through_a_reading_worker(tmp_path, images):
    folder = tmp_path / "survey"
    folder.mkdir()
    for name, make in BOMBS.items():
        make(folder / name)
    np.save(folder / "good.npy", images[:3])
    out = tmp_path / "scores.csv"
    result = run_predict(folder, "--out", out, "--workers", 1)
    assert result.exit_code == SOME_FAILED, result.output
    assert sorted(line.split(": ")[0].rsplit("/", 1)[1] for line in skipped_lines(result)) == sorted(BOMBS)
    assert "5 not scored" in result.stderr.strip().splitlines()[-1]
    assert scored(out) == [("good.npy", 0), ("good.npy", 1), ("good.npy", 2)]


@pytest.mark.parametrize("error", [MemoryError, RuntimeError, KeyError])
def test_any_failure_reading_one_file_skips_that_file(tmp_path, images, monkeypatch, error):
    import lenszoo.inference.readers

    real = lenszoo.inference.readers._read_npy

    def flaky(path, hdu):
        if Path(path).name == "bad.npy":
            raise error("the reader broke")
        return real(path, hdu)

    monkeypatch.setattr(lenszoo.inference.readers, "_read_npy", flaky)
    for name in ("bad.npy", "good.npy"):
        np.save(tmp_path / name, images[:2])
    out = tmp_path / "scores.csv"
    result = run_predict(tmp_path / "bad.npy", tmp_path / "good.npy", "--out", out, "--workers", 0)
    assert result.exit_code == SOME_FAILED, result.output
    lines = skipped_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"skipped {tmp_path / 'bad.npy'}: "), result.stderr
    assert scored(out) == [("good.npy", 0), ("good.npy", 1)]


RESIZE_PEAK = """
import numpy as np
import torch
from lenszoo.inference.inputs import fit_size

def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

torch.set_num_threads(1)                       # as in a reading worker
stack = np.ones((10000, 32, 32), np.float32)   # 39 MiB; resampled to 64x64: 156 MiB
fit_size(stack[:8], "bilinear")                # torch's own start-up allocations
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")                            # peak RSS := RSS now
before = kib("VmRSS")
out = fit_size(stack, "bilinear")
print((kib("VmHWM") - before) / 1024 - out.nbytes / 2**20)
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="measures peak memory through /proc")
def test_resize_holds_little_beyond_the_resampled_images():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", RESIZE_PEAK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    overhead_mib = float(done.stdout)
    assert overhead_mib < 24, f"resampling took {overhead_mib:.0f} MiB beyond its result"


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "area", "nearest"])
def test_resampling_in_chunks_matches_resampling_at_once(images, method, monkeypatch):
    import torch.nn.functional as F

    import lenszoo.inference.inputs

    monkeypatch.setattr(lenszoo.inference.inputs, "RESIZE_CHUNK_PIXELS", 3 * (48 * 48 + 64 * 64), raising=False)
    stack = np.concatenate([images] * 2)[:, 8:56, 8:56].copy()  # 12 images of 48×48, 3 at a time
    kwargs = {"antialias": True, "align_corners": False} if method in ("bilinear", "bicubic") else {}
    whole = F.interpolate(torch.from_numpy(stack)[:, None], size=(64, 64), mode=method, **kwargs)[:, 0].numpy()
    np.testing.assert_allclose(lenszoo.inference.inputs.fit_size(stack, method), whole, atol=1e-6)


# -- a killed predict takes its reading workers with it ----------------------------------------------
def _stat(pid):
    """(parent pid, state, start time) of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def _children(pid):
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat and stat[0] == pid:
                found[int(entry.name)] = stat[2]
    return found


def _running(pid, started):
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X") and stat[2] == started


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("workers", [None, 2], ids=["default-workers", "two-workers"])
def test_reading_workers_die_with_a_killed_predict(tmp_path, workers):
    folder = tmp_path / "survey"
    folder.mkdir()
    stack = np.random.default_rng(0).normal(size=(32, 64, 64)).astype(np.float32)  # 512 KiB: fills a pipe
    for i in range(16):
        np.save(folder / f"{i:02d}.npy", stack)
    command = [sys.executable, "-m", "lenszoo", "predict", MODEL, "--dataset", "A", str(folder), "--out", str(tmp_path / "s.csv"),
               "--quiet", *(["--workers", str(workers)] if workers else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        readers = {}
        while time.monotonic() < deadline and len(readers) < (workers or 1) and process.poll() is None:
            readers = _children(process.pid)
            time.sleep(0.02)
        assert len(readers) == (workers or 1), "predict started no reading workers"
        os.kill(process.pid, signal.SIGSTOP)  # the readers fill their queues while nobody takes from them
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGKILL)  # the parent only: its readers are orphaned
        process.wait(timeout=30)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and any(_running(pid, t) for pid, t in readers.items()):
            time.sleep(0.1)
        assert not [pid for pid, t in readers.items() if _running(pid, t)], "reading workers outlived predict"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- how skipped inputs are told --------------------------------------------------------------------
def test_skipped_lines_go_to_stderr_beside_the_progress_bar(tmp_path, images):
    np.save(tmp_path / "good.npy", images[:2])
    (tmp_path / "garbage.fits").write_bytes(b"not a fits file" * 10)
    result = run_predict(tmp_path / "good.npy", tmp_path / "garbage.fits", "--out", tmp_path / "s.csv",
                         "--workers", 0, quiet=False)
    assert result.exit_code == SOME_FAILED, result.output
    assert "skipped" not in result.stdout, result.stdout
    assert len(skipped_lines(result)) == 1 and "garbage.fits" in skipped_lines(result)[0], result.stderr


def test_fpacked_fits_in_a_folder_are_scored(tmp_path):
    folder = tmp_path / "survey"
    folder.mkdir()
    cutouts = np.random.default_rng(1).integers(-300, 3000, (3, 64, 64)).astype(np.int16)  # RICE: lossless
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(cutouts)]).writeto(folder / "tiles.fits.fz")
    out = tmp_path / "scores.csv"
    result = run_predict(folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert scored(out) == [("tiles.fits.fz", 0), ("tiles.fits.fz", 1), ("tiles.fits.fz", 2)]
    direct = run_predict(folder / "tiles.fits.fz", "--out", tmp_path / "direct.csv")
    assert direct.exit_code == 0, direct.output
    assert scored(tmp_path / "direct.csv") == scored(out)
    expected = lenszoo.predict(MODEL, cutouts.astype(np.float32), dataset="A")
    import csv

    with open(out, newline="") as handle:
        for row, want in zip(csv.DictReader(handle), expected):
            assert [float(row[c]) for c in ("p_no_sub", "p_cdm", "p_axion")] == pytest.approx(
                [want[c] for c in ("p_no_sub", "p_cdm", "p_axion")], abs=2e-6)


@pytest.mark.parametrize("each", [False, True], ids=["summary", "list-skipped"])
def test_many_inputs_with_one_flaw_are_one_line_unless_each_is_asked_for(tmp_path, images, each):
    folder = tmp_path / "survey"
    folder.mkdir()
    edged = images[0].copy()
    edged[:, 0] = np.nan  # NaN edges, as a cutout at a detector's border has
    for i in range(40):
        np.save(folder / f"edge-{i:02d}.npy", edged)
    np.save(folder / "good.npy", images[:2])
    (folder / "garbage.fits").write_bytes(b"not a fits file" * 10)
    result = run_predict(folder, "--out", tmp_path / "s.csv", "--workers", 0, *(["--list-skipped"] if each else []))
    assert result.exit_code == SOME_FAILED, result.output
    lines = skipped_lines(result)
    nan_lines = [line for line in lines if "NaN" in line]
    if each:
        assert len(nan_lines) == 40 and all(line.startswith(f"skipped {folder}/edge-") for line in nan_lines), lines
    else:
        assert len(nan_lines) == 1, lines
        assert nan_lines[0].startswith("skipped 40 images in 40 files (") and "edge-00.npy[0]" in nan_lines[0]
        assert "38 more; --list-skipped names each" in nan_lines[0], nan_lines[0]
    assert len(lines) == len(nan_lines) + 1 and any("garbage.fits" in line for line in lines)
    assert "41 not scored" in result.stderr.strip().splitlines()[-1]
    assert scored(tmp_path / "s.csv") == [("good.npy", 0), ("good.npy", 1)]


# -- the Python API checks its arguments like the CLI ------------------------------------------------
API_ERRORS = [pytest.param(options, fragment, id=",".join(f"{k}={v}" for k, v in options.items()), marks=marks)
              for options, fragment, marks in [
    ({"batch_size": -1}, "batch_size must be a whole number >= 1", ()),
    ({"batch_size": 0}, "batch_size must be a whole number >= 1", ()),
    ({"batch_size": 2.5}, "batch_size must be a whole number >= 1", ()),
    ({"workers": -1}, "workers must be a whole number >= 0", ()),
    ({"resize": "lanczos"}, "resize must be None (64×64 images only) or one of bilinear", ()),
    ({"hdu": -1}, "hdu must be a whole number >= 0", ()),
    ({"tta": "yes"}, "tta must be True or False", ()),
    ({"engine": "tensorrt"}, "engine must be one of torch, onnxruntime", ()),
    ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16", ()),
    ({"precision": "bf16", "engine": "onnxruntime"}, "precision='bf16' runs with engine='torch'", ()),
    ({"device": "tpu"}, "unknown device 'tpu'", ()),
    ({"device": "cuda"}, "no CUDA GPU is visible; use cpu or auto",
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
]]


@pytest.mark.parametrize("options, fragment", API_ERRORS)
@pytest.mark.parametrize("given", ["array", "folder"])
def test_python_predict_refuses_bad_options_in_one_clear_error(tmp_path, images, model, options, fragment, given):
    np.save(tmp_path / "good.npy", images[:2])
    with pytest.raises(LenszooError) as caught:
        lenszoo.predict(model, images[:2] if given == "array" else tmp_path, **options)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("options, fragment", [
    (["--precision", "fp16"], "'fp16' is not one of 'auto', 'fp32', 'bf16'"),
    (["--precision", "bf16", "--engine", "onnxruntime"], "--precision bf16 runs with --engine torch"),
], ids=["unknown", "bf16-onnxruntime"])
def test_a_precision_predict_cannot_run_is_one_line_before_anything_is_written(tmp_path, images, options, fragment):
    from .test_bad_input import one_line_error

    np.save(tmp_path / "x.npy", images[:2])
    one_line_error(run_predict(tmp_path / "x.npy", "--out", tmp_path / "s.csv", *options), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.mark.parametrize("inputs, fragment", [
    (lambda x: [x[0], x[1]], "stack the arrays with numpy.stack"),
    (lambda x: [], "got an empty list"),
    (lambda x: None, "got NoneType"),
], ids=["list-of-arrays", "empty-list", "none"])
def test_python_predict_names_inputs_it_cannot_take(images, model, inputs, fragment):
    with pytest.raises(LenszooError, match="inputs must be a file or folder") as caught:
        lenszoo.predict(model, inputs(images))
    assert fragment in str(caught.value)


def test_a_tensor_that_requires_grad_is_scored_as_it_is(images, model):
    tensor = torch.from_numpy(images[:3].copy()).requires_grad_()
    rows = lenszoo.predict(model, tensor)
    assert rows == lenszoo.predict(model, images[:3])
    assert tensor.grad is None and tensor.requires_grad
