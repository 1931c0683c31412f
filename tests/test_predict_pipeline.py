"""One inference pipeline (issue 31, item 2; issue 32, item 2): `score(model, inputs, sink)` feeds any
sink batch by batch, formats a batch's rows at once exactly as the csv module would, writes them
in a thread of its own without giving up a finished batch, and keeps up with the engine."""

import csv
import io
import json

import numpy as np
import pytest

import lenszoo
from lenszoo.contract import model_contract
from lenszoo.inference.inputs import array_chunks, file_chunks, find_inputs
from lenszoo.inference.pipeline import ListSink, score
from lenszoo.inference.table import columns_for, csv_line
from lenszoo.inference.writer import Rows

from .test_bad_input import REPO


@pytest.fixture(scope="module")
def model():
    return lenszoo.load("radial_profile", dataset="A")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(31)
    yy, xx = np.mgrid[:64, :64] - 31.5
    ring = np.exp(-((np.hypot(yy, xx) - 14) ** 2) / 8)
    return (ring[None] * rng.uniform(0.5, 2, (7, 1, 1)) + rng.normal(0, 0.05, (7, 64, 64))).astype(np.float32)


AWKWARD = ["plain.npy", "with,comma.npy", 'with"quote.npy', "with\nnewline.npy", "bytes-\udcff.npy", " lead.npy"]


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_a_batch_is_formatted_at_once_exactly_as_the_csv_module_writes_each_row(task):
    rng = np.random.default_rng(0)
    n = len(AWKWARD)
    outputs = rng.dirichlet(np.ones(3), n) if task == "classify" else rng.normal(-23, 1, n)
    outputs[0] = [1e-9, 0.5, 0.5 - 1e-9] if task == "classify" else 1e-7  # tiny values: written as repr
    flags = ["", "sky", "sky;noise", "", "pedestal", ""]
    rows = Rows(task, AWKWARD, range(n), outputs, flags, tta=True, precision="bf16", model="hf-hub:o/n,x", sha="ab" * 32)
    dicts = rows.dicts()
    assert [list(d) for d in dicts] == [columns_for(task)] * n
    assert rows.csv_text() == "".join(csv_line([d[c] for c in columns_for(task)]) for d in dicts)
    assert [json.loads(line) for line in rows.jsonl_text().splitlines()] == \
        [json.loads(json.dumps(d)) for d in dicts]
    back = list(csv.reader(io.StringIO(rows.csv_text(), newline="")))
    assert [r[0] for r in back] == AWKWARD and {r[columns_for(task).index("precision")] for r in back} == {"bf16"}
    if task == "classify":
        assert [d["predicted_class"] for d in dicts] == [["no_sub", "cdm", "axion"][k] for k in outputs.argmax(1)]
        assert dicts[1]["p_cdm"] == round(float(outputs[1, 1]), 6)
    else:
        assert dicts[1]["log10_m_a"] == round(float(outputs[1]), 5)


class Batches:
    """A sink of one's own: anything with write(rows)."""

    def __init__(self, fail_at=None):
        self.sizes, self.fail_at = [], fail_at

    def write(self, rows):
        if len(self.sizes) + 1 == self.fail_at:
            raise OSError(28, "No space left on device")
        self.sizes.append(len(rows))


def test_any_sink_gets_the_rows_batch_by_batch_and_arrays_and_files_give_the_same_rows(model, images, tmp_path):
    sink = Batches()
    counts = score(model, array_chunks(images), sink, batch_size=3)
    assert sink.sizes == [3, 3, 1] and counts["images"] == 7
    np.save(tmp_path / "a.npy", images[:4])
    np.save(tmp_path / "b.npy", images[4:])
    files, _ = find_inputs([tmp_path])
    from_files, from_array = ListSink(), ListSink()
    contract = model_contract(model)
    score(model, file_chunks(files), from_files, batch_size=3, contract=contract)
    score(model, array_chunks(images), from_array, batch_size=5, contract=contract)
    strip = ("source", "index")
    assert [{k: v for k, v in r.items() if k not in strip} for r in from_files] == \
        [{k: v for k, v in r.items() if k not in strip} for r in from_array]
    assert [(r["source"].rsplit("/", 1)[-1], r["index"]) for r in from_files] == \
        [("a.npy", i) for i in range(4)] + [("b.npy", i) for i in range(3)]
    assert from_array == lenszoo.predict(model, images, batch_size=2)


def test_a_failing_sink_stops_the_writing_and_its_error_reaches_the_caller(model, images):
    sink = Batches(fail_at=2)
    with pytest.raises(OSError, match="No space left"):
        score(model, array_chunks(np.concatenate([images] * 3)), sink, batch_size=2)
    assert sink.sizes == [2]  # nothing after the batch that failed: no gap in a table


def test_an_interrupted_run_writes_every_batch_scored_before_it(model, images, monkeypatch):
    from lenszoo.inference.scorer import Scorer

    real, calls = Scorer.__call__, []

    def interrupted(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(Scorer, "__call__", interrupted)
    sink = Batches()
    with pytest.raises(KeyboardInterrupt):
        score(model, array_chunks(images), sink, batch_size=2)
    assert sink.sizes == [2, 2]


# -- the speed benchmark ---------------------------------------------------------------------------------
def test_the_predict_benchmark_reports_every_path_against_the_fastest_bare_forward_and_the_peaks(tmp_path,
                                                                                               capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_benchmark", REPO / "benchmarks" / "predict.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = tmp_path / "speed.json"
    bench.main(["--arch", "radial_profile", "--n", "24", "--per-file", "10", "--batch-size", "8", "--workers", "0",
                "--engines", "torch,onnxruntime", "--precisions", "fp32,bf16", "--record", str(record)])
    out = capsys.readouterr().out
    saved = json.loads(record.read_text())
    paths = {row["path"] for row in saved["rows"]}
    assert {"torch fp32", "torch bf16"} <= paths  # and onnxruntime fp32 where it is installed
    for path in paths:
        whats = [row["what"] for row in saved["rows"] if row["path"] == path]
        assert whats[0].startswith("bare forward") and {"predict FITS -> CSV", "predict NPY -> CSV"} <= set(whats)
    fastest = max(row["images_per_s"] for row in saved["rows"] if row["what"].startswith("bare"))
    for row in saved["rows"]:
        assert row["images_per_s"] > 0 and row["of_matmul_peak"] > 0
        assert row["of_fastest_bare"] == pytest.approx(row["images_per_s"] / fastest, rel=1e-3, abs=1e-5)
    assert set(saved["matmul_gflops"]) == {"fp32", "bf16"} and saved["mflop_per_image"] > 0
    assert "fastest bare forward:" in out and "matmul peak here: bf16" in out and "fp32" in out
